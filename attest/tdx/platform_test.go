package tdx_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/tdx"
)

// TestRealPCKPlatformRequirements checks MemoryIntegrity, SMTDisabled and
// StaticPlatform against the PCK certificate of the Sapphire Rapids sample:
// SGX type scalable (1, not scalable with integrity), dynamic platform, SMT
// enabled. Each requirement rejects it with CheckPlatformInfo naming the
// field; without them it is accepted.
func TestRealPCKPlatformRequirements(t *testing.T) {
	tests := map[string]struct {
		mutate func(*tdx.ReferenceValues)
		want   string
	}{
		"memory integrity": {func(r *tdx.ReferenceValues) { r.MemoryIntegrity = true }, "MemoryIntegrity"},
		"smt disabled":     {func(r *tdx.ReferenceValues) { r.SMTDisabled = true }, "SMTDisabled"},
		"static platform":  {func(r *tdx.ReferenceValues) { r.StaticPlatform = true }, "StaticPlatform"},
	}
	ev := realSample(t, testdata.RawQuote, false)
	// Without the requirements the platform checks pass, and the sample is
	// refused only for want of collateral (it carries none here).
	_, err := validator(t, []tdx.ReferenceValues{realRefVals(t)}, sampleTime).Validate(context.Background(), ev, realReportData(t))
	requireCheck(t, err, attest.CheckRevocation)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rv := realRefVals(t)
			tc.mutate(&rv)
			_, err := validator(t, []tdx.ReferenceValues{rv}, sampleTime).Validate(context.Background(), ev, realReportData(t))
			requireCheck(t, err, attest.CheckPlatformInfo)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestTCBEvaluationDataNumber checks MinTCBEvaluationDataNumber against the
// tcbEvaluationDataNumber of the simulated collateral (17): a higher
// minimum rejects with CheckCollateral; without collateral the quote is
// refused whatever the minimum, for the missing CRLs (revocation).
func TestTCBEvaluationDataNumber(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, nil)
	var rd [64]byte
	withCollateral := e.issue(t, e.dev, rd)
	without, err := tdx.NewIssuer(tdx.IssuerConfig{TSM: e.dev.TSM(), DisableDeviceFallback: true}).Issue(ctx, rd)
	require.NoError(t, err)
	tests := map[string]struct {
		minimum int
		ev      []byte
		check   attest.Check
		want    string // empty: accepted
	}{
		"at the minimum":                {minimum: 17, ev: withCollateral},
		"below the minimum":             {minimum: 18, ev: withCollateral, check: attest.CheckCollateral, want: "tcbEvaluationDataNumber 17 is below MinTCBEvaluationDataNumber 18"},
		"no minimum without collateral": {minimum: 0, ev: without, check: attest.CheckRevocation, want: "IntelSGXRootCA.der"},
		"minimum without collateral":    {minimum: 1, ev: without, check: attest.CheckRevocation, want: "IntelSGXRootCA.der"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rv := e.dev.ReferenceValues()
			rv.MinTCBEvaluationDataNumber = tc.minimum
			_, err := validator(t, []tdx.ReferenceValues{rv}, time.Now()).Validate(ctx, tc.ev, rd)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			requireCheck(t, err, tc.check)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestSimulatedPCKPlatformRequirements: a platform whose PCK certificate
// says scalable with integrity, static and SMT disabled meets all three
// requirements; each deviation, and a certificate without the platform
// configuration (PCK Processor CA), is rejected naming the field.
func TestSimulatedPCKPlatformRequirements(t *testing.T) {
	ctx := context.Background()
	strict := func(c *sim.TDXDeviceConfig) {
		c.SGXType, c.DynamicPlatform, c.SMTEnabled = 2, false, false
	}
	e := newSimEnv(t, strict)
	rv := e.dev.ReferenceValues()
	rv.MemoryIntegrity, rv.SMTDisabled, rv.StaticPlatform = true, true, true
	var rd [64]byte
	_, err := validator(t, []tdx.ReferenceValues{rv}, time.Now()).Validate(ctx, e.issue(t, e.dev, rd), rd)
	require.NoError(t, err)
	tests := map[string]struct {
		mutate func(*sim.TDXDeviceConfig)
		want   string
	}{
		"scalable":           {func(c *sim.TDXDeviceConfig) { c.SGXType = 1 }, "the PCK certificate's SGX type is scalable, MemoryIntegrity requires scalable with integrity"},
		"standard":           {func(c *sim.TDXDeviceConfig) { c.SGXType = 0 }, "SGX type is standard"},
		"smt":                {func(c *sim.TDXDeviceConfig) { c.SMTEnabled = true }, "SMT is enabled on this platform, SMTDisabled requires"},
		"dynamic":            {func(c *sim.TDXDeviceConfig) { c.DynamicPlatform = true }, "dynamic platform (packages can be added), StaticPlatform requires"},
		"no platform config": {func(c *sim.TDXDeviceConfig) { c.NoPlatformConfig = true }, "no platform configuration (a PCK Processor CA certificate); SMTDisabled and StaticPlatform need one"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := e.dev.Config()
			tc.mutate(&cfg)
			dev, err := e.auth.NewDevice(cfg)
			require.NoError(t, err)
			_, err = validator(t, []tdx.ReferenceValues{rv}, time.Now()).Validate(ctx, e.issue(t, dev, rd), rd)
			requireCheck(t, err, attest.CheckPlatformInfo)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
