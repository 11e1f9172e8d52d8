package tdx_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/evidence"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/tdx"
)

// issueWith returns evidence of dev for rd carrying arts (nothing else).
func issueWith(t testing.TB, dev *sim.TDXDevice, rd [64]byte, arts []evidence.Artifact) []byte {
	t.Helper()
	ev, err := tdx.NewIssuer(tdx.IssuerConfig{TSM: dev.TSM(), DisableDeviceFallback: true, Artifacts: arts}).Issue(context.Background(), rd)
	require.NoError(t, err)
	return ev
}

func collateral(t testing.TB, dev *sim.TDXDevice, opts sim.TDXCollateralOptions) []evidence.Artifact {
	t.Helper()
	arts, err := dev.Collateral(opts)
	require.NoError(t, err)
	return arts
}

// without returns arts without the document at url.
func without(arts []evidence.Artifact, url string) []evidence.Artifact {
	var out []evidence.Artifact
	for _, a := range arts {
		if a.URL != url {
			out = append(out, a)
		}
	}
	return out
}

// TestCollateralFailsClosed runs the production configuration (defaults,
// --offline) against quotes whose collateral is missing, stale, replayed
// or refuses the platform, and names the check that rejects each.
func TestCollateralFailsClosed(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, nil)
	now := time.Now()
	var rd [64]byte
	rd[2] = 2
	good := collateral(t, e.dev, sim.TDXCollateralOptions{})
	tcbInfoURL := good[0].URL
	qeURL := pcs.QeIdentityURL()
	pckCRLURL := pcs.PckCrlURL("platform")
	otherQE := make([]byte, 32)
	otherQE[0] = 1
	tests := map[string]struct {
		arts []evidence.Artifact
		want attest.Check
	}{
		"no collateral":      {nil, attest.CheckRevocation},
		"no TCB info":        {without(good, tcbInfoURL), attest.CheckCollateral},
		"no QE identity":     {without(good, qeURL), attest.CheckCollateral},
		"no PCK CRL":         {without(good, pckCRLURL), attest.CheckRevocation},
		"no root CRL":        {without(good, sim.IntelRootCRLURL), attest.CheckRevocation},
		"foreign QE":         {collateral(t, e.dev, sim.TDXCollateralOptions{QEMrSigner: otherQE}), attest.CheckQEIdentity},
		"QE out of date":     {collateral(t, e.dev, sim.TDXCollateralOptions{QEStatus: "OutOfDate"}), attest.CheckTCBStatus},
		"TCB out of date":    {collateral(t, e.dev, sim.TDXCollateralOptions{TCBStatus: "OutOfDate"}), attest.CheckTCBStatus},
		"TCB revoked":        {collateral(t, e.dev, sim.TDXCollateralOptions{TCBStatus: "Revoked"}), attest.CheckTCBStatus},
		"SW hardening":       {collateral(t, e.dev, sim.TDXCollateralOptions{TCBStatus: "SWHardeningNeeded"}), attest.CheckTCBStatus},
		"foreign TDX module": {collateral(t, e.dev, sim.TDXCollateralOptions{MrSignerSeam: make48(1)}), attest.CheckTDXModule},
		"PCK revoked":        {collateral(t, e.dev, sim.TDXCollateralOptions{RevokePCK: true}), attest.CheckRevocation},
		"TCB signer revoked": {collateral(t, e.dev, sim.TDXCollateralOptions{RevokeTCBSigner: true}), attest.CheckCollateral},
		"expired collateral": {collateral(t, e.dev, sim.TDXCollateralOptions{
			IssuedAt: now.Add(-40 * 24 * time.Hour), NextUpdate: now.Add(-10 * 24 * time.Hour)}), attest.CheckRevocation},
		"old but unexpired collateral": {collateral(t, e.dev, sim.TDXCollateralOptions{
			IssuedAt: now.Add(-20 * 24 * time.Hour), NextUpdate: now.Add(10 * 24 * time.Hour)}), attest.CheckRevocation},
		"old TCB info only": {append(without(good, tcbInfoURL), collateral(t, e.dev, sim.TDXCollateralOptions{
			IssuedAt: now.Add(-20 * 24 * time.Hour), NextUpdate: now.Add(10 * 24 * time.Hour)})[0]), attest.CheckCollateral},
		"collateral from the future": {collateral(t, e.dev, sim.TDXCollateralOptions{
			IssuedAt: now.Add(24 * time.Hour), NextUpdate: now.Add(30 * 24 * time.Hour)}), attest.CheckRevocation},
		"collateral of another root": {collateral(t, newSimEnv(t, func(c *sim.TDXDeviceConfig) { *c = e.dev.Config() }).dev, sim.TDXCollateralOptions{}), attest.CheckRevocation},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := validator(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, now).Validate(ctx, issueWith(t, e.dev, rd, tc.arts), rd)
			requireCheck(t, err, tc.want)
		})
	}
	t.Run("fresh collateral", func(t *testing.T) {
		res, err := validator(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, now).Validate(ctx, issueWith(t, e.dev, rd, good), rd)
		require.NoError(t, err)
		assert.Equal(t, tdx.StatusUpToDate, res.TCBStatus)
	})
}

func make48(b byte) []byte {
	out := make([]byte, 48)
	out[0] = b
	return out
}

// TestAllowedTCBStatuses: a reference value opts in to statuses other than
// UpToDate, and the result reports the status.
func TestAllowedTCBStatuses(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, nil)
	now := time.Now()
	var rd [64]byte
	for _, tc := range []struct{ tcb, qe, want string }{
		{"SWHardeningNeeded", "", tdx.StatusSWHardeningNeeded},
		{"ConfigurationNeeded", "OutOfDate", tdx.StatusOutOfDateConfigurationNeeded},
		{"UpToDate", "OutOfDate", tdx.StatusOutOfDate},
	} {
		ev := issueWith(t, e.dev, rd, collateral(t, e.dev, sim.TDXCollateralOptions{TCBStatus: tc.tcb, QEStatus: tc.qe}))
		rv := e.dev.ReferenceValues()
		_, err := validator(t, []tdx.ReferenceValues{rv}, now).Validate(ctx, ev, rd)
		requireCheck(t, err, attest.CheckTCBStatus)
		require.ErrorContains(t, err, tc.want)

		rv.AllowedTCBStatuses = []string{tdx.StatusUpToDate, tc.want}
		res, err := validator(t, []tdx.ReferenceValues{rv}, now).Validate(ctx, ev, rd)
		require.NoError(t, err, tc.want)
		assert.Equal(t, tc.want, res.TCBStatus)
	}
	// Revoked cannot be allowed.
	rv := e.dev.ReferenceValues()
	rv.AllowedTCBStatuses = []string{tdx.StatusRevoked}
	fes := attest.FieldErrors(rv.Validate())
	require.Len(t, fes, 1)
	assert.Equal(t, "AllowedTCBStatuses[0]", fes[0].Path)
	_, err := tdx.NewValidator(tdx.Config{ReferenceValues: []tdx.ReferenceValues{rv}})
	require.Error(t, err)
}

// TestCarriedCollateralNeverReplacesFresherCached: the verifier holds
// collateral that marks the platform OutOfDate; evidence carrying older,
// still valid collateral that says UpToDate must not win, also once the
// cached copy is past the cache's TTL. Newer carried collateral does win.
func TestCarriedCollateralNeverReplacesFresherCached(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, nil)
	t0 := time.Now()
	clock := t0
	cache := certcache.New(certcache.Config{Offline: true, Now: func() time.Time { return clock }})
	ns := validator(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, t0).CacheNamespace()
	for _, a := range collateral(t, e.dev, sim.TDXCollateralOptions{TCBStatus: "OutOfDate", IssuedAt: t0.Add(-time.Hour)}) {
		cache.Put(ns, certcache.Artifact{URL: a.URL, Header: a.Header, Body: a.Body})
	}
	var rd [64]byte
	old := issueWith(t, e.dev, rd, collateral(t, e.dev, sim.TDXCollateralOptions{IssuedAt: t0.Add(-3 * time.Hour)}))
	for _, after := range []time.Duration{0, 2 * time.Hour} {
		clock = t0.Add(after)
		_, err := validatorWith(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, clock, cache).Validate(ctx, old, rd)
		requireCheck(t, err, attest.CheckTCBStatus)
		require.ErrorContains(t, err, "OutOfDate")
	}
	clock = t0
	newer := issueWith(t, e.dev, rd, collateral(t, e.dev, sim.TDXCollateralOptions{IssuedAt: t0.Add(-time.Minute)}))
	res, err := validatorWith(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, t0, cache).Validate(ctx, newer, rd)
	require.NoError(t, err)
	assert.Equal(t, tdx.StatusUpToDate, res.TCBStatus)
}

// TestBundledCollateralOffline: --offline uses the collateral an operator
// seeded (its age counts from the seeding), never skips the checks.
func TestBundledCollateralOffline(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, nil)
	t0 := time.Now()
	cache := certcache.New(certcache.Config{Offline: true, Now: func() time.Time { return t0 }})
	ns := validator(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, t0).CacheNamespace()
	// Collateral issued 20 days ago, seeded now: usable for the maximum age.
	for _, a := range collateral(t, e.dev, sim.TDXCollateralOptions{IssuedAt: t0.Add(-20 * 24 * time.Hour), NextUpdate: t0.Add(20 * 24 * time.Hour)}) {
		cache.Put(ns, certcache.Artifact{URL: a.URL, Header: a.Header, Body: a.Body})
	}
	var rd [64]byte
	ev := issueWith(t, e.dev, rd, nil)
	_, err := validatorWith(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, t0.Add(time.Hour), cache).Validate(ctx, ev, rd)
	require.NoError(t, err)
	_, err = validatorWith(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, t0.Add(8*24*time.Hour), cache).Validate(ctx, ev, rd)
	requireCheck(t, err, attest.CheckRevocation)
	require.ErrorContains(t, err, "older than the maximum age")
}
