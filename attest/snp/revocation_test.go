package snp_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-sev-guest/kds"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/evidence"
	"github.com/contrast-cc/contrast/attest/snp"
)

// crlURL is where the simulated (and the real Milan) ASK's CRL lives.
var crlURL = kds.CrlLinkByRole("Milan", "ASK")

// withArtifacts replaces the artifacts the evidence carries.
func withArtifacts(t testing.TB, ev []byte, arts ...evidence.Artifact) []byte {
	t.Helper()
	fr, err := evidence.Unmarshal(ev)
	require.NoError(t, err)
	fr.Artifacts = arts
	out, err := evidence.Marshal(fr)
	require.NoError(t, err)
	return out
}

// signedCRL returns a CRL of e's simulated ARK with the given validity.
func (e *simEnv) signedCRL(t testing.TB, thisUpdate, nextUpdate time.Time, revokeASK bool) []byte {
	t.Helper()
	crl, err := e.auth.SignCRL(thisUpdate, nextUpdate, revokeASK)
	require.NoError(t, err)
	return crl
}

// productionValidator is the validator the Coordinator builds from a
// manifest (manifest.Validators passes reference values, cache and logger
// only, so every other setting is the default), with --offline.
func productionValidator(t testing.TB, rv snp.ReferenceValues, cache *certcache.Cache, now time.Time) *snp.Validator {
	t.Helper()
	v, err := snp.NewValidator(snp.Config{ReferenceValues: []snp.ReferenceValues{rv}, Cache: cache, Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	return v
}

func TestRevocationFailsClosed(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, true)
	now := time.Now()
	var rd [64]byte
	rd[1] = 1
	ev := e.issue(t, rd)
	tests := map[string]struct {
		arts []evidence.Artifact
	}{
		"no CRL": {},
		"expired CRL carried": {arts: []evidence.Artifact{{URL: crlURL,
			Body: e.signedCRL(t, now.Add(-40*24*time.Hour), now.Add(-10*24*time.Hour), false)}}},
		"old but unexpired CRL carried": {arts: []evidence.Artifact{{URL: crlURL,
			Body: e.signedCRL(t, now.Add(-30*24*time.Hour), now.Add(10*24*time.Hour), false)}}},
		"CRL from the future": {arts: []evidence.Artifact{{URL: crlURL,
			Body: e.signedCRL(t, now.Add(24*time.Hour), now.Add(10*24*time.Hour), false)}}},
		"fresh CRL revoking the ASK": {arts: []evidence.Artifact{{URL: crlURL,
			Body: e.signedCRL(t, now.Add(-time.Hour), now.Add(7*24*time.Hour), true)}}},
		"CRL not signed by the ARK": {arts: []evidence.Artifact{{URL: crlURL,
			Body: newSimEnv(t, true).signedCRL(t, now.Add(-time.Hour), now.Add(7*24*time.Hour), false)}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v := productionValidator(t, e.dev.ReferenceValues(), certcache.New(certcache.Config{Offline: true}), now)
			_, err := v.Validate(ctx, withArtifacts(t, ev, tc.arts...), rd)
			requireCheck(t, err, attest.CheckRevocation)
		})
	}
	t.Run("fresh CRL carried", func(t *testing.T) {
		v := productionValidator(t, e.dev.ReferenceValues(), certcache.New(certcache.Config{Offline: true}), now)
		_, err := v.Validate(ctx, withArtifacts(t, ev, evidence.Artifact{URL: crlURL,
			Body: e.signedCRL(t, now.Add(-time.Hour), now.Add(7*24*time.Hour), false)}), rd)
		require.NoError(t, err)
	})
}

// TestCarriedCRLNeverReplacesFresherCachedCRL: the verifier holds a CRL that
// revokes the ASK; evidence carrying an older CRL (from before the
// revocation, still inside its validity) must not win, also once the cached
// copy is past the cache's TTL.
func TestCarriedCRLNeverReplacesFresherCachedCRL(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, true)
	t0 := time.Now()
	clock := t0
	cache := certcache.New(certcache.Config{Offline: true, Now: func() time.Time { return clock }})
	ns := productionValidator(t, e.dev.ReferenceValues(), cache, t0).CacheNamespace()
	cache.Put(ns, certcache.Artifact{URL: crlURL, Body: e.signedCRL(t, t0.Add(-time.Hour), t0.Add(7*24*time.Hour), true)})
	var rd [64]byte
	old := withArtifacts(t, e.issue(t, rd), evidence.Artifact{URL: crlURL,
		Body: e.signedCRL(t, t0.Add(-3*time.Hour), t0.Add(7*24*time.Hour), false)})
	for _, after := range []time.Duration{0, 2 * time.Hour} {
		clock = t0.Add(after)
		v := productionValidator(t, e.dev.ReferenceValues(), cache, clock)
		_, err := v.Validate(ctx, old, rd)
		requireCheck(t, err, attest.CheckRevocation)
		assert.ErrorContains(t, err, "revoked")
	}
}

// TestCarriedCRLNotKeptForOtherChips: a CRL that one peer's evidence carried
// is used for that validation only.
func TestCarriedCRLNotKeptForOtherChips(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, true)
	now := time.Now()
	v := productionValidator(t, e.dev.ReferenceValues(), certcache.New(certcache.Config{Offline: true}), now)
	var rd [64]byte
	_, err := v.Validate(ctx, withArtifacts(t, e.issue(t, rd), evidence.Artifact{URL: crlURL,
		Body: e.signedCRL(t, now.Add(-time.Hour), now.Add(7*24*time.Hour), false)}), rd)
	require.NoError(t, err)

	cfg := e.dev.Config()
	cfg.ChipID[0] ^= 1
	other, err := e.auth.NewDevice(cfg)
	require.NoError(t, err)
	rv := e.dev.ReferenceValues()
	rv.AllowedChipIDs = nil
	v = productionValidator(t, rv, certcache.New(certcache.Config{Offline: true}), now)
	_, err = v.Validate(ctx, withArtifacts(t, e.issue(t, rd), evidence.Artifact{URL: crlURL,
		Body: e.signedCRL(t, now.Add(-time.Hour), now.Add(7*24*time.Hour), false)}), rd)
	require.NoError(t, err)
	ev, err := snp.NewIssuer(snp.IssuerConfig{TSM: other.TSM(), DisableDeviceFallback: true}).Issue(ctx, rd)
	require.NoError(t, err)
	_, err = v.Validate(ctx, withArtifacts(t, ev), rd)
	requireCheck(t, err, attest.CheckRevocation)
}
