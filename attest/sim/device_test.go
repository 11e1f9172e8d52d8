package sim_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
)

func TestSNPDeviceFile(t *testing.T) {
	a, err := sim.NewSNPAuthority()
	require.NoError(t, err)
	orig, err := a.NewDevice(sim.DefaultSNPDeviceConfig())
	require.NoError(t, err)
	file, err := orig.MarshalDeviceFile()
	require.NoError(t, err)
	// the file holds the device key, never a key of the authority
	assert.Equal(t, 1, bytes.Count(file, []byte("PRIVATE KEY-----\\n"))/2)

	hostData := sha256.Sum256([]byte("policy"))
	dev, err := sim.ParseSNPDeviceFile(file, hostData)
	require.NoError(t, err)
	assert.Equal(t, hostData, dev.Config().HostData)

	v, err := snp.NewValidator(snp.Config{ReferenceValues: []snp.ReferenceValues{orig.ReferenceValues()}, ExpectedHostData: hostData[:], Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	var rd [64]byte
	rd[0] = 1
	ev, err := snp.NewIssuer(dev.IssuerConfig()).Issue(context.Background(), rd)
	require.NoError(t, err)
	res, err := v.Validate(context.Background(), ev, rd)
	require.NoError(t, err)
	assert.Equal(t, hostData[:], res.PolicyDigest)

	// the loaded device can change what its VCEK does not certify, nothing else
	cfg := dev.Config()
	cfg.HostData = [32]byte{9}
	require.NoError(t, dev.Reconfigure(cfg))
	cfg.TCB.SnpSpl++
	require.Error(t, dev.Reconfigure(cfg))

	// a device file from another authority does not validate against this root
	b, err := sim.NewSNPAuthority()
	require.NoError(t, err)
	other, err := b.NewDevice(orig.Config())
	require.NoError(t, err)
	otherFile, err := other.MarshalDeviceFile()
	require.NoError(t, err)
	odev, err := sim.ParseSNPDeviceFile(otherFile, hostData)
	require.NoError(t, err)
	ev, err = snp.NewIssuer(odev.IssuerConfig()).Issue(context.Background(), rd)
	require.NoError(t, err)
	_, err = v.Validate(context.Background(), ev, rd)
	check, _ := attest.FailedCheck(err)
	assert.Equal(t, attest.CheckChain, check, "%v", err)
}

func TestParseSNPDeviceFileRejects(t *testing.T) {
	a, err := sim.NewSNPAuthority()
	require.NoError(t, err)
	dev, err := a.NewDevice(sim.DefaultSNPDeviceConfig())
	require.NoError(t, err)
	other, err := a.NewDevice(sim.DefaultSNPDeviceConfig())
	require.NoError(t, err)
	file, err := dev.MarshalDeviceFile()
	require.NoError(t, err)
	otherFile, err := other.MarshalDeviceFile()
	require.NoError(t, err)
	var f, o map[string]any
	require.NoError(t, json.Unmarshal(file, &f))
	require.NoError(t, json.Unmarshal(otherFile, &o))
	cases := map[string]struct {
		mutate func(map[string]any)
		want   string
	}{
		"unknown field":     {func(m map[string]any) { m["RootKey"] = "x" }, "unknown field"},
		"real platform":     {func(m map[string]any) { m["Platform"] = "snp" }, "platform"},
		"another's key":     {func(m map[string]any) { m["Key"] = o["Key"] }, "not the VCEK's key"},
		"short measurement": {func(m map[string]any) { m["Measurement"] = "00" }, "Measurement"},
		"chain out of order": {func(m map[string]any) {
			s := m["Chain"].(string)
			i := bytes.Index([]byte(s), []byte("-----END CERTIFICATE-----\n")) + len("-----END CERTIFICATE-----\n")
			m["Chain"] = s[i:] + s[:i]
		}, "not signed by"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			m := map[string]any{}
			for k, v := range f {
				m[k] = v
			}
			tc.mutate(m)
			b, err := json.Marshal(m)
			require.NoError(t, err)
			_, err = sim.ParseSNPDeviceFile(b, [32]byte{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func annotation(t testing.TB, doc []byte, extra []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(doc)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	buf.Write(extra)
	return []byte(base64.StdEncoding.EncodeToString(buf.Bytes()))
}

const initdata = "algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\n'''\n"

func TestInitDataDigest(t *testing.T) {
	got, err := sim.InitDataDigest(annotation(t, []byte(initdata), nil))
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256([]byte(initdata)), got, "the digest is over the raw TOML, as Kata computes it")

	var two bytes.Buffer
	for range 2 {
		zw := gzip.NewWriter(&two)
		_, _ = zw.Write([]byte(initdata))
		_ = zw.Close()
	}
	cases := map[string][]byte{
		"not base64":          []byte("%%%"),
		"base64 with newline": append(annotation(t, []byte(initdata), nil), '\n'),
		"not gzip":            []byte(base64.StdEncoding.EncodeToString([]byte(initdata))),
		"two gzip members":    []byte(base64.StdEncoding.EncodeToString(two.Bytes())),
		"trailing bytes":      annotation(t, []byte(initdata), []byte{0}),
		"not TOML":            annotation(t, []byte("algorithm = \n"), nil),
		"sha384":              annotation(t, []byte("algorithm = \"sha384\"\nversion = \"0.1.0\"\n[data]\n"), nil),
		"no version":          annotation(t, []byte("algorithm = \"sha256\"\n[data]\n"), nil),
		"no data":             annotation(t, []byte("algorithm = \"sha256\"\nversion = \"0.1.0\"\n"), nil),
		"not UTF-8":           annotation(t, []byte("algorithm = \"sha256\"\nversion = \"\xff\"\n[data]\n"), nil),
	}
	for name, ann := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := sim.InitDataDigest(ann)
			require.ErrorIs(t, err, sim.ErrInitData)
		})
	}
}

// FuzzInitDataDigest: any annotation value yields an error or the SHA-256 of
// a well-formed initdata document that decodes from it.
func FuzzInitDataDigest(f *testing.F) {
	f.Add(annotation(f, []byte(initdata), nil))
	f.Add([]byte("H4sIAAAAAAAA/w=="))
	f.Fuzz(func(t *testing.T, ann []byte) {
		d, err := sim.InitDataDigest(ann)
		if err != nil {
			require.ErrorIs(t, err, sim.ErrInitData)
			return
		}
		assert.NotEqual(t, [32]byte{}, d)
	})
}
