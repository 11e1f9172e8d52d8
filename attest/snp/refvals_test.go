package snp_test

import (
	"context"
	"testing"
	"time"

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
	res, err := v.Validate(context.Background(), realSample(t, nil), realReportData())
	require.NoError(t, err)
	assert.Equal(t, attest.PlatformSNP, res.Platform)
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

func TestUnenforced(t *testing.T) {
	r := realRefVals(t)
	r.CPUs = 4
	assert.Empty(t, r.Unenforced(), "CPUs is informative")
	r.APEIP = attest.HexBytes{0, 0x80, 0xb0, 0x04}
	require.NoError(t, r.Validate())
	un := r.Unenforced()
	require.Len(t, un, 1)
	assert.Equal(t, "APEIP", un[0].Path)
}
