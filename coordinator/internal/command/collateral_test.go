package command

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/evidence"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/attest/tdx"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// productionValidators parses args as the coordinator binary does and
// builds the validators of a manifest (through manifest.Parse) with the
// options the binary would use.
func productionValidators(t *testing.T, m *manifest.Manifest, args ...string) []attest.Validator {
	t.Helper()
	o := &Options{}
	cmd := newCommand(o, slog.New(slog.DiscardHandler), nil)
	require.NoError(t, cmd.ParseFlags(append([]string{"--platform", "snp-simulated", "--in-memory-store"}, args...)))
	require.NoError(t, o.Validate())
	parsed, err := manifest.Parse(coordinatortest.JSON(m))
	require.NoError(t, err)
	vs, err := parsed.Validators(o.ValidatorOptions(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	return vs
}

func issue(t *testing.T, iss attest.Issuer, rd [64]byte, arts func([]evidence.Artifact) []evidence.Artifact) []byte {
	t.Helper()
	ev, err := iss.Issue(context.Background(), rd)
	require.NoError(t, err)
	if arts == nil {
		return ev
	}
	fr, err := evidence.Unmarshal(ev)
	require.NoError(t, err)
	fr.Artifacts = arts(fr.Artifacts)
	ev, err = evidence.Marshal(fr)
	require.NoError(t, err)
	return ev
}

// TestProductionValidatorsFailClosed: the Coordinator's default
// configuration (and --offline) refuses simulated evidence whose CRL or
// collateral is missing, stale or refuses the platform, names the check,
// and accepts the simulated platforms' fresh evidence.
func TestProductionValidatorsFailClosed(t *testing.T) {
	p, err := coordinatortest.SharedPlatform()
	require.NoError(t, err)
	snpDev, err := p.Device([32]byte{1}, nil)
	require.NoError(t, err)
	tdxAuth, err := sim.NewTDXAuthority()
	require.NoError(t, err)
	tdxDev, err := tdxAuth.NewDevice(sim.DefaultTDXDeviceConfig())
	require.NoError(t, err)
	m := p.Manifest(coordinatortest.NewPolicy("coordinator"), nil)
	m.ReferenceValues.TDX = []tdx.ReferenceValues{tdxDev.ReferenceValues()}
	// The simulated SNP and TDX platforms are one manifest's two lists.
	snpIss := snp.NewIssuer(snpDev.IssuerConfig())
	tdxIss := tdx.NewIssuer(tdxDev.IssuerConfig())
	now := time.Now()
	outOfDate, err := tdxDev.Collateral(sim.TDXCollateralOptions{TCBStatus: "OutOfDate"})
	require.NoError(t, err)
	otherSigner := make([]byte, 32)
	otherSigner[31] = 0xff
	foreignQE, err := tdxDev.Collateral(sim.TDXCollateralOptions{QEMrSigner: otherSigner})
	require.NoError(t, err)
	oldCRL, err := p.Authority.SignCRL(now.Add(-2*time.Hour), now.Add(24*time.Hour), false)
	require.NoError(t, err)
	none := func([]evidence.Artifact) []evidence.Artifact { return nil }
	replace := func(arts []evidence.Artifact) func([]evidence.Artifact) []evidence.Artifact {
		return func([]evidence.Artifact) []evidence.Artifact { return arts }
	}
	var rd [64]byte
	rd[9] = 9
	tests := map[string]struct {
		args []string
		iss  attest.Issuer
		arts func([]evidence.Artifact) []evidence.Artifact
		want attest.Check
	}{
		"snp fresh":                      {iss: snpIss},
		"snp fresh offline":              {args: []string{"--offline"}, iss: snpIss},
		"tdx fresh":                      {iss: tdxIss},
		"tdx fresh offline":              {args: []string{"--offline"}, iss: tdxIss},
		"snp without CRL":                {iss: snpIss, arts: none, want: attest.CheckRevocation},
		"snp without CRL offline":        {args: []string{"--offline"}, iss: snpIss, arts: none, want: attest.CheckRevocation},
		"snp CRL over max age":           {args: []string{"--collateral-max-age", "1h"}, iss: snpIss, arts: replace([]evidence.Artifact{{URL: p.Authority.CRLURL(), Body: oldCRL}}), want: attest.CheckRevocation},
		"tdx without collateral":         {iss: tdxIss, arts: none, want: attest.CheckRevocation},
		"tdx without collateral offline": {args: []string{"--offline"}, iss: tdxIss, arts: none, want: attest.CheckRevocation},
		"tdx out of date":                {iss: tdxIss, arts: replace(outOfDate), want: attest.CheckTCBStatus},
		"tdx foreign QE":                 {iss: tdxIss, arts: replace(foreignQE), want: attest.CheckQEIdentity},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			vs := productionValidators(t, m, tc.args...)
			res, err := attest.ValidateAny(context.Background(), vs, issue(t, tc.iss, rd, tc.arts), rd)
			if tc.want == "" {
				require.NoError(t, err)
				assert.NotEmpty(t, res.Platform)
				return
			}
			require.Error(t, err)
			got, ok := attest.FailedCheck(err)
			require.True(t, ok, "not a CheckError: %v", err)
			assert.Equal(t, tc.want, got, "error: %v", err)
		})
	}
}
