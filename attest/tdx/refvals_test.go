package tdx_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/tdx"
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
	r.Platform = "Metal-QEMU-SNP"
	r.MrTd = nil
	r.MrSeam = []byte{1}
	r.Rtmrs[2] = nil
	r.Xfam = []byte{1, 2}
	r.TdAttributes = []byte{1, 0, 0, 0, 0, 0, 0, 0}
	r.MinimumTeeTcbSvn = []byte{1}
	r.MinTCBEvaluationDataNumber = -1
	r.AllowedPIIDs = []attest.HexBytes{{1}}
	got := fieldPaths(r.Validate())
	want := map[string]string{
		"Platform":                   `unknown TDX platform "Metal-QEMU-SNP"`,
		"MrTd":                       "missing",
		"MrSeam":                     "must be 48 bytes, got 1",
		"Rtmrs[2]":                   "missing",
		"Xfam":                       "must be 8 bytes, got 2",
		"TdAttributes":               "debug attribute requires AllowDebug",
		"MinimumTeeTcbSvn":           "must be 16 bytes, got 1",
		"MinTCBEvaluationDataNumber": "must not be negative",
		"AllowedPIIDs[0]":            "must be 16 bytes, got 1",
	}
	assert.Equal(t, want, got)
}

func TestOptionalFields(t *testing.T) {
	r := realRefVals(t)
	r.TdAttributes, r.MinimumTeeTcbSvn, r.MinimumQeSvn, r.MinimumPceSvn = nil, nil, nil, nil
	require.NoError(t, r.Validate())
	got := fieldPaths((&tdx.ReferenceValues{}).Validate())
	assert.Equal(t, map[string]string{
		"MrTd": "missing", "MrSeam": "missing", "Xfam": "missing",
		"Rtmrs[0]": "missing", "Rtmrs[1]": "missing", "Rtmrs[2]": "missing", "Rtmrs[3]": "missing",
	}, got)
}

func TestPlatformNames(t *testing.T) {
	testCases := map[string]bool{
		"": true, "tdx": true, "Metal-QEMU-TDX": true, "metal-qemu-tdx": true, "Metal-QEMU-TDX-GPU": true,
		"K3s-QEMU-TDX": true, "RKE2-QEMU-TDX": true,
		"Metal-QEMU-SNP": false, "snp": false, "TDX-Simulated": false, "sgx": false,
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

func TestRtrmsAlias(t *testing.T) {
	r := realRefVals(t)
	rtmrs := r.Rtmrs
	b, err := json.Marshal(map[string]any{"MrTd": r.MrTd, "MrSeam": r.MrSeam, "Xfam": r.Xfam, "Rtrms": rtmrs})
	require.NoError(t, err)
	var old tdx.ReferenceValues
	require.NoError(t, json.Unmarshal(b, &old))
	require.NoError(t, old.Validate())

	// The alias is validated under its own name.
	bad := old
	bad.Rtrms = &[4]attest.HexBytes{rtmrs[0], {1}, rtmrs[2], rtmrs[3]}
	assert.Equal(t, map[string]string{"Rtrms[1]": "must be 48 bytes, got 1"}, fieldPaths(bad.Validate()))

	both := old
	both.Rtmrs = rtmrs
	assert.Contains(t, fieldPaths(both.Validate()), "Rtrms")
}

// TestOriginalShapeAgainstSimulatedTD validates a simulated TD against a
// reference value in the original Contrast's shape: no TdAttributes,
// MinimumTeeTcbSvn, MinimumQeSvn or MinimumPceSvn. The defaults accept the
// default TD (SEPT_VE_DISABLE only) and reject a debug TD or other
// attributes.
func TestOriginalShapeAgainstSimulatedTD(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, nil)
	rv := e.dev.ReferenceValues()
	rv.TdAttributes, rv.MinimumTeeTcbSvn, rv.MinimumQeSvn, rv.AllowDebug = nil, nil, nil, false
	var rd [64]byte
	testCases := map[string]struct {
		mutate func(*sim.TDXDeviceConfig)
		rv     func(*tdx.ReferenceValues)
		want   attest.Check
	}{
		"default TD accepted":     {},
		"rtrms alias accepted":    {rv: func(r *tdx.ReferenceValues) { rtmrs := r.Rtmrs; r.Rtrms, r.Rtmrs = &rtmrs, [4]attest.HexBytes{} }},
		"debug TD rejected":       {mutate: func(c *sim.TDXDeviceConfig) { c.TdAttributes[0] |= 1 }, want: attest.CheckDebug},
		"other attributes":        {mutate: func(c *sim.TDXDeviceConfig) { c.TdAttributes[3] |= 0x40 }, want: attest.CheckTDAttributes},
		"pce svn at minimum":      {rv: func(r *tdx.ReferenceValues) { r.MinimumPceSvn = ptr(uint16(11)) }},
		"pce svn below minimum":   {rv: func(r *tdx.ReferenceValues) { r.MinimumPceSvn = ptr(uint16(12)) }, want: attest.CheckPCESVN},
		"qe svn below minimum":    {rv: func(r *tdx.ReferenceValues) { r.MinimumQeSvn = ptr(uint16(9)) }, want: attest.CheckQESVN},
		"unenforced fields parse": {rv: func(r *tdx.ReferenceValues) { r.MinTCBEvaluationDataNumber, r.CPUs = 17, 2 }},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			dev := e.dev
			if tc.mutate != nil {
				cfg := e.dev.Config()
				tc.mutate(&cfg)
				var err error
				dev, err = e.auth.NewDevice(cfg)
				require.NoError(t, err)
			}
			r := rv
			if tc.rv != nil {
				tc.rv(&r)
			}
			_, err := validator(t, []tdx.ReferenceValues{r}, time.Now()).Validate(ctx, e.issue(t, dev, rd), rd)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			requireCheck(t, err, tc.want)
		})
	}
}

// TestUnenforced: only CPUs, which the quote does not carry, is listed;
// MinTCBEvaluationDataNumber, MemoryIntegrity, SMTDisabled and
// StaticPlatform are enforced (see platform_test.go).
func TestUnenforced(t *testing.T) {
	r := realRefVals(t)
	r.MinTCBEvaluationDataNumber, r.MemoryIntegrity, r.SMTDisabled, r.StaticPlatform = 17, true, true, true
	assert.Empty(t, r.Unenforced())
	r.CPUs = 4
	var paths []string
	for _, fe := range r.Unenforced() {
		paths = append(paths, fe.Path)
	}
	assert.Equal(t, []string{"CPUs"}, paths)
}

func ptr[T any](v T) *T { return &v }
