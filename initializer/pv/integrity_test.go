package pv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestChooseIntegrity checks the decision of a new volume's integrity
// protection from what the kernel offers.
func TestChooseIntegrity(t *testing.T) {
	cases := map[string]struct {
		k       Kernel
		want    Integrity
		wantWhy string
	}{
		"no device-mapper (this CI machine)": {Kernel{}, IntegrityNone, "no device-mapper"},
		"targets unknown":                    {Kernel{DeviceMapper: true, TargetsErr: errors.New("permission denied")}, IntegrityNone, "cannot be listed: permission denied"},
		"crypt only": {Kernel{DeviceMapper: true, Targets: []string{"crypt", "linear", "striped"}}, IntegrityNone,
			"no device-mapper integrity target (registered: crypt, linear, striped)"},
		"crypt and integrity":             {Kernel{DeviceMapper: true, Targets: []string{"crypt", "integrity", "linear"}}, IntegrityHMACSHA256, "integrity and crypt targets"},
		"integrity, crypt still a module": {Kernel{DeviceMapper: true, Targets: []string{"integrity", "linear"}}, IntegrityHMACSHA256, "loaded on the first open"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, why := ChooseIntegrity(tc.k)
			assert.Equal(t, tc.want, got)
			assert.Contains(t, why, tc.wantWhy)
		})
	}
}

// TestProbeKernel checks the probe against /proc/misc on this machine: a
// kernel without device-mapper is reported as such, one with it lists its
// targets (or says why not).
func TestProbeKernel(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("device-mapper is Linux only")
	}
	misc, err := os.ReadFile("/proc/misc")
	require.NoError(t, err)
	k := ProbeKernel()
	assert.Equal(t, bytes.Contains(misc, []byte(" device-mapper\n")), k.DeviceMapper)
	if !k.DeviceMapper {
		assert.Nil(t, k.Targets)
		mode, why := ChooseIntegrity(k)
		assert.Equal(t, IntegrityNone, mode)
		t.Logf("integrity here: %s (%s)", mode, why)
		return
	}
	if k.TargetsErr == nil {
		assert.NotEmpty(t, k.Targets, "a kernel with device-mapper registers at least linear")
	}
	mode, why := ChooseIntegrity(k)
	t.Logf("integrity here: %s (%s); targets %v, error %v", mode, why, k.Targets, k.TargetsErr)
}

// dmAnswer builds a DM_LIST_VERSIONS answer as the kernel writes it: the
// dm_ioctl header, then dm_target_versions records aligned to 8 bytes.
func dmAnswer(names []string, flags uint32) []byte {
	order := binary.NativeEndian
	buf := make([]byte, 4096)
	off := sizeofDMIoctl
	prev := -1
	for _, n := range names {
		if prev >= 0 {
			order.PutUint32(buf[prev:], uint32(off-prev))
		}
		order.PutUint32(buf[off:], 0)
		order.PutUint32(buf[off+4:], 1)
		copy(buf[off+16:], n+"\x00")
		prev = off
		off += 16 + len(n) + 1
		off = (off + 7) &^ 7
	}
	order.PutUint32(buf[12:], uint32(off))
	order.PutUint32(buf[16:], sizeofDMIoctl)
	order.PutUint32(buf[28:], flags)
	return buf
}

func TestParseTargetVersions(t *testing.T) {
	order := binary.NativeEndian
	got, err := parseTargetVersions(dmAnswer([]string{"striped", "linear", "integrity", "crypt", "error"}, 0), order)
	require.NoError(t, err)
	assert.Equal(t, []string{"crypt", "error", "integrity", "linear", "striped"}, got)

	none, err := parseTargetVersions(dmAnswer(nil, 0), order)
	require.NoError(t, err)
	assert.Empty(t, none)

	cases := map[string]struct {
		buf  func() []byte
		want string
	}{
		"short":       {func() []byte { return make([]byte, 100) }, "short"},
		"buffer full": {func() []byte { return dmAnswer([]string{"linear"}, dmBufferFullFlag) }, "does not fit"},
		"data beyond the buffer": {func() []byte {
			b := dmAnswer([]string{"linear"}, 0)
			order.PutUint32(b[12:], 1<<20)
			return b
		}, "claims"},
		"next out of range": {func() []byte {
			b := dmAnswer([]string{"linear", "crypt"}, 0)
			order.PutUint32(b[sizeofDMIoctl:], 4000)
			return b
		}, "invalid device-mapper target record"},
		"next too small": {func() []byte {
			b := dmAnswer([]string{"linear", "crypt"}, 0)
			order.PutUint32(b[sizeofDMIoctl:], 4)
			return b
		}, "invalid device-mapper target record"},
		"unterminated": {func() []byte {
			b := dmAnswer([]string{"linear"}, 0)
			order.PutUint32(b[12:], uint32(sizeofDMIoctl+16+3))
			return b
		}, "unterminated"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := parseTargetVersions(tc.buf(), order)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestParseHeaderIntegrity(t *testing.T) {
	cases := map[string]struct {
		metadata string
		want     string
		wantErr  string
	}{
		// cryptsetup 2.6.1 luksDump --dump-json-metadata of a volume Prepare formatted (segments only)
		"aes-xts alone":      {metadata: `{"keyslots":{},"segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096}}}`, want: "none"},
		"hmac-sha256":        {metadata: `{"segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096,"integrity":{"type":"hmac(sha256)","journal_encryption":"none","journal_integrity":"none"}}}}`, want: "hmac(sha256)"},
		"no crypt segment":   {metadata: `{"segments":{"0":{"type":"linear"}}}`, wantErr: "no crypt segment"},
		"two crypt segments": {metadata: `{"segments":{"0":{"type":"crypt"},"1":{"type":"crypt"}}}`, wantErr: "2 crypt segments"},
		"not JSON":           {metadata: `LUKS header information`, wantErr: "reading the LUKS2 metadata"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := parseHeaderIntegrity([]byte(tc.metadata))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// FuzzParseHeaderIntegrity: the LUKS2 metadata comes from the host's
// device. Parsing never panics, and a result is either an error or one
// non-empty mode.
func FuzzParseHeaderIntegrity(f *testing.F) {
	f.Add([]byte(`{"segments":{"0":{"type":"crypt","integrity":{"type":"hmac(sha256)"}}}}`))
	f.Add([]byte(`{"segments":{"0":{"type":"crypt"}}}`))
	f.Add([]byte(`{"segments":{"0":{"type":"crypt","integrity":null}}}`))
	f.Fuzz(func(t *testing.T, metadata []byte) {
		got, err := parseHeaderIntegrity(metadata)
		if err == nil && got == "" {
			t.Fatal("no mode and no error")
		}
	})
}

// fakeCryptsetup writes a cryptsetup stand-in that reports no LUKS header
// (or one whose metadata is header), records the arguments of luksFormat
// and of a mapping open in the returned file and accepts every key.
func fakeCryptsetup(t *testing.T, header string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	args := filepath.Join(dir, "calls.args")
	isLuks := "exit 1"
	if header != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "header.json"), []byte(header), 0o600))
		isLuks = "exit 0"
	}
	script := "#!/bin/sh\ncase \"$1\" in\n" +
		"isLuks) " + isLuks + " ;;\n" +
		"luksFormat) cat >/dev/null; echo \"$@\" >> " + args + "; exit 0 ;;\n" +
		"luksDump) cat " + filepath.Join(dir, "header.json") + "; exit 0 ;;\n" +
		"open) cat >/dev/null; [ \"$2\" = --test-passphrase ] || echo \"$@\" >> " + args + "; exit 0 ;;\n" +
		"esac\nexit 9\n"
	prog := filepath.Join(dir, "cryptsetup")
	require.NoError(t, os.WriteFile(prog, []byte(script), 0o700)) //nolint:gosec // an executable test stand-in
	return prog, args
}

// TestPrepareIntegrity checks the luksFormat arguments of each decision:
// --integrity hmac-sha256 where the kernel has the integrity target, none
// where it has not, and a configured mode over the kernel's.
func TestPrepareIntegrity(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh for the cryptsetup stand-in")
	}
	withIntegrity := Kernel{DeviceMapper: true, Targets: []string{"crypt", "integrity"}}
	cases := map[string]struct {
		configured    Integrity
		kernel        Kernel
		wantIntegrity bool
		wantErr       string
	}{
		"kernel with integrity":           {kernel: withIntegrity, wantIntegrity: true},
		"kernel without integrity":        {kernel: Kernel{DeviceMapper: true, Targets: []string{"crypt"}}},
		"kernel without device-mapper":    {kernel: Kernel{}},
		"configured none over the kernel": {configured: IntegrityNone, kernel: withIntegrity},
		"configured hmac-sha256":          {configured: IntegrityHMACSHA256, kernel: Kernel{}, wantIntegrity: true},
		"unknown mode":                    {configured: "crc32", kernel: withIntegrity, wantErr: `unknown integrity mode "crc32"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			prog, argsFile := fakeCryptsetup(t, "")
			o := &Opener{Cryptsetup: prog, Integrity: tc.configured, Kernel: func() Kernel { return tc.kernel }}
			formatted, err := o.Prepare(t.Context(), Volume{Name: "data", Claim: "data"}, "/dev/contrast-pv/data", bytes.Repeat([]byte{1}, KeySize))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				assert.NoFileExists(t, argsFile, "nothing formatted")
				return
			}
			require.NoError(t, err)
			assert.True(t, formatted)
			b, err := os.ReadFile(argsFile)
			require.NoError(t, err)
			args := strings.Fields(string(b))
			assert.Contains(t, args, "aes-xts-plain64")
			if tc.wantIntegrity {
				assert.Contains(t, string(b), "--integrity hmac-sha256")
			} else {
				assert.NotContains(t, args, "--integrity")
			}
			assert.Equal(t, "/dev/contrast-pv/data", args[len(args)-1])
		})
	}
}

// TestOpenRefusesIntegrityDowngrade checks that a volume whose header
// records no integrity is not mapped where the kernel formats volumes with
// integrity, and is where it does not (or the opener is configured so).
func TestOpenRefusesIntegrityDowngrade(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh for the cryptsetup stand-in")
	}
	plain := `{"segments":{"0":{"type":"crypt","encryption":"aes-xts-plain64"}}}`
	withIntegrity := Kernel{DeviceMapper: true, Targets: []string{"crypt", "integrity"}}
	for name, tc := range map[string]struct {
		configured Integrity
		kernel     Kernel
		refused    bool
	}{
		"kernel with integrity":    {kernel: withIntegrity, refused: true},
		"kernel without integrity": {kernel: Kernel{DeviceMapper: true, Targets: []string{"crypt"}}},
		"configured none":          {configured: IntegrityNone, kernel: withIntegrity},
	} {
		t.Run(name, func(t *testing.T) {
			prog, calls := fakeCryptsetup(t, plain)
			o := &Opener{Cryptsetup: prog, Integrity: tc.configured, Kernel: func() Kernel { return tc.kernel }}
			v := Volume{Name: "data", Claim: "data"}
			err := o.Open(t.Context(), v, "/dev/contrast-pv/data", t.TempDir(), bytes.Repeat([]byte{1}, KeySize))
			if tc.refused {
				require.ErrorIs(t, err, ErrIntegrityDowngrade)
				assert.NoFileExists(t, calls, "neither formatted nor mapped")
				return
			}
			// the stand-in maps nothing, so the open fails after it, on
			// the missing mapper device; what matters is that it was asked
			require.Error(t, err)
			require.NotErrorIs(t, err, ErrIntegrityDowngrade)
			b, rerr := os.ReadFile(calls)
			require.NoError(t, rerr)
			assert.Equal(t, "open --type luks2 --key-file - /dev/contrast-pv/data contrast-pv-data\n", string(b), "mapped, not formatted")
		})
	}
}
