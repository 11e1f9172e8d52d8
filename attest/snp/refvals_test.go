package snp_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-sev-guest/kds"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/snp"
)

func fieldPaths(err error) map[string]string {
	out := map[string]string{}
	for _, fe := range attest.FieldErrors(err) {
		out[fe.Path] = fe.Err.Error()
	}
	return out
}

func TestValidateReportsEveryError(t *testing.T) {
	r := realRefVals(t)
	r.Platform = "Metal-QEMU-TDX"
	r.ProductName = "Naples"
	r.TrustedMeasurement = []byte{1}
	r.MinimumTCB.SNPVersion, r.MinimumTCB.TEEVersion = nil, nil
	r.MinimumLaunchTCB = &snp.TCB{}
	r.AllowDebug = false
	r.PlatformInfo = nil
	r.AllowedChipIDs = append(r.AllowedChipIDs, attest.HexBytes{1})
	r.APEIP = attest.HexBytes{1, 2, 3}
	got := fieldPaths(r.Validate())
	want := map[string]string{
		"Platform":                           `unknown SNP platform "Metal-QEMU-TDX"`,
		"ProductName":                        "",
		"TrustedMeasurement":                 "must be 48 bytes, got 1",
		"MinimumTCB.TEEVersion":              "missing",
		"MinimumTCB.SNPVersion":              "missing",
		"MinimumLaunchTCB.BootloaderVersion": "missing",
		"MinimumLaunchTCB.TEEVersion":        "missing",
		"MinimumLaunchTCB.SNPVersion":        "missing",
		"MinimumLaunchTCB.MicrocodeVersion":  "missing",
		"GuestPolicy.Debug":                  "debug policy requires AllowDebug",
		"PlatformInfo":                       "missing",
		"AllowedChipIDs[1]":                  "must be 64 bytes, got 1",
		"APEIP":                              "must be 4 bytes, got 3",
	}
	require.Len(t, got, len(want), "got %v", got)
	for path, msg := range want {
		require.Contains(t, got, path)
		assert.Contains(t, got[path], msg, path)
	}
}

func TestValidateMissingFields(t *testing.T) {
	got := fieldPaths((&snp.ReferenceValues{}).Validate())
	for _, path := range []string{"ProductName", "TrustedMeasurement", "MinimumTCB.BootloaderVersion", "MinimumTCB.TEEVersion", "MinimumTCB.SNPVersion", "MinimumTCB.MicrocodeVersion", "PlatformInfo"} {
		assert.Equal(t, "missing", got[path], path)
	}
}

func TestPlatformNames(t *testing.T) {
	testCases := map[string]bool{
		"": true, "snp": true, "Metal-QEMU-SNP": true, "metal-qemu-snp": true, "Metal-QEMU-SNP-GPU": true,
		"K3s-QEMU-SNP": true, "K3s-QEMU-SNP-GPU": true, "AKS-CLH-SNP": true,
		"Metal-QEMU-TDX": false, "tdx": false, "SNP-Simulated": false, "Metal-QEMU-SNP ": false, "sgx": false,
	}
	for platform, ok := range testCases {
		t.Run(platform, func(t *testing.T) {
			r := realRefVals(t)
			r.Platform = attest.Platform(platform)
			err := r.Validate()
			if ok {
				require.NoError(t, err)
				assert.False(t, r.Simulated())
				return
			}
			assert.Contains(t, fieldPaths(err), "Platform")
		})
	}
}

// TestOriginalPlatformNameValidates checks that an entry naming the
// original's platform is validated as hardware (embedded AMD roots).
func TestOriginalPlatformNameValidates(t *testing.T) {
	r := realRefVals(t)
	r.Platform = "Metal-QEMU-SNP"
	v := offlineValidator(t, []snp.ReferenceValues{r}, sampleTime)
	assert.Equal(t, attest.PlatformSNP, v.Platform())
	// Every reference-value check passes; no AMD CRL is available offline
	// for the real roots (go-sev-guest ships none), so revocation refuses.
	_, err := v.Validate(context.Background(), realSample(t, nil), realReportData())
	requireCheck(t, err, attest.CheckRevocation)
}

func TestMinimumMitigationVector(t *testing.T) {
	e := newSimEnv(t)
	var rd [64]byte
	ev := e.issue(t, rd)
	testCases := map[string]struct {
		vector  uint64
		wantErr bool
	}{
		"none required": {vector: 0},
		"bit required":  {vector: 1, wantErr: true},
		"high bit":      {vector: 1 << 63, wantErr: true},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			rv := e.dev.ReferenceValues()
			rv.MinimumMitigationVector = tc.vector
			_, err := offlineValidator(t, []snp.ReferenceValues{rv}, time.Now()).Validate(context.Background(), ev, rd)
			if !tc.wantErr {
				require.NoError(t, err)
				return
			}
			requireCheck(t, err, attest.CheckMitigation)
		})
	}
}

// TestUnenforced: CPUs and APEIP are not in the report; both are listed
// when set.
func TestUnenforced(t *testing.T) {
	r := realRefVals(t)
	assert.Empty(t, r.Unenforced())
	r.CPUs = 4
	r.APEIP = attest.HexBytes{0, 0x80, 0xb0, 0x04}
	require.NoError(t, r.Validate())
	var paths []string
	for _, fe := range r.Unenforced() {
		paths = append(paths, fe.Path)
		assert.Contains(t, fe.Err.Error(), "TrustedMeasurement")
	}
	assert.Equal(t, []string{"CPUs", "APEIP"}, paths)
}

// turinTCB encodes a TCB_VERSION in the Turin layout of AMD's SEV-SNP ABI
// specification (56860, TCB_VERSION for family 1Ah): byte 0 FMC_SPL, 1
// BOOT_LOADER, 2 TEE, 3 SNP, 4–6 reserved, 7 MICROCODE. Milan and Genoa
// have BOOT_LOADER at 0, TEE at 1, 2–5 reserved, SNP at 6, MICROCODE at 7.
func turinTCB(fmc, bl, tee, snpSPL, ucode uint8) uint64 {
	return uint64(fmc) | uint64(bl)<<8 | uint64(tee)<<16 | uint64(snpSPL)<<24 | uint64(ucode)<<56
}

// TestTurinTCBLayout documents why Turin reference values are refused: the
// go-sev-guest version in go.mod decodes every TCB_VERSION with the
// Milan/Genoa layout, so a Turin report's SNP SPL would be read from a
// reserved byte (always 0) and its FMC SPL taken for the bootloader. When
// this test fails, go-sev-guest decodes Turin: lift the refusal in
// ReferenceValues.Validate and check the Turin TCB against the manifest.
func TestTurinTCBLayout(t *testing.T) {
	parts := kds.DecomposeTCBVersion(kds.TCBVersion(turinTCB(1, 2, 3, 4, 5)))
	assert.Equal(t, kds.TCBParts{BlSpl: 1, TeeSpl: 2, Spl4: 3, Spl5: 4, UcodeSpl: 5}, parts,
		"go-sev-guest reads the Turin FMC SPL as bootloader and SNP SPL 0")
}

// TestTurinRefused: a Turin entry is refused, naming the field and why,
// whatever else it sets, by Validate and therefore by NewValidator.
func TestTurinRefused(t *testing.T) {
	r := realRefVals(t)
	r.ProductName = "Turin"
	got := fieldPaths(r.Validate())
	require.Len(t, got, 1, "got %v", got)
	assert.Contains(t, got["ProductName"], "Turin is not supported")
	assert.Contains(t, got["ProductName"], "FMC")

	_, err := snp.NewValidator(snp.Config{ReferenceValues: []snp.ReferenceValues{realRefVals(t), r}})
	require.Error(t, err)
	assert.Contains(t, fieldPaths(err), "[1].ProductName")
}
