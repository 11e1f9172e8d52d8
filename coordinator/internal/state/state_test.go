package state_test

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/internal/history"
	"github.com/contrast-cc/contrast/coordinator/internal/seed"
	"github.com/contrast-cc/contrast/coordinator/internal/state"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

func TestLifecycle(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	require.Equal(t, state.ModeEmpty, a.Mode())
	_, err := a.History(ctx)
	require.ErrorIs(t, err, state.ErrNoManifest)

	req1 := f.request("web")
	res := set(t, a, req1)
	require.Equal(t, state.ModeReady, a.Mode())
	require.Len(t, res.SeedShares, 1)
	require.Len(t, res.Salt, seed.Size)
	gen1 := res.Snapshot
	assert.EqualValues(t, 1, gen1.Generation)

	leafKey := coordinatortest.OwnerKey()
	mc, err := a.IssueMeshCert(t.Context(), gen1, f.attest(t, gen1, f.web), &leafKey.PublicKey)
	require.NoError(t, err)
	leaf1 := parsePEM(t, mc.Leaf)
	assert.Equal(t, []string{"web"}, leaf1.DNSNames)
	verify(t, leaf1, gen1.Mesh.Cert, gen1.Root.Cert)
	secret1 := mc.WorkloadSecret
	require.Len(t, secret1, 32)

	// Unknown policy.
	_, err = a.IssueMeshCert(t.Context(), gen1, f.attest(t, gen1, coordinatortest.NewPolicy("intruder")), &leafKey.PublicKey)
	require.ErrorIs(t, err, state.ErrUnknownPolicy)

	// Unauthorized update.
	m2, pols2 := f.manifest("web", "10.0.0.7")
	_, err = a.SetManifest(ctx, state.SetRequest{Manifest: m2, Policies: pols2, Client: &coordinatortest.OwnerKey().PublicKey})
	require.ErrorIs(t, err, state.ErrNotOwner)
	_, err = a.SetManifest(ctx, state.SetRequest{Manifest: m2, Policies: pols2})
	require.ErrorIs(t, err, state.ErrNotOwner)

	// Authorized update rotates the mesh CA; the root stays.
	res2 := set(t, a, state.SetRequest{Manifest: m2, Policies: pols2, Client: f.ownerPub, Expected: &gen1.Transition})
	gen2 := res2.Snapshot
	assert.Empty(t, res2.SeedShares)
	assert.EqualValues(t, 2, gen2.Generation)
	assert.Equal(t, gen1.Root.PEM, gen2.Root.PEM)
	coordinatortest.RequireMeshCARotated(t, leaf1, gen1.Mesh.Cert, gen2.Mesh.Cert, gen2.Root.Cert)
	mc2, err := a.IssueMeshCert(t.Context(), gen2, f.attest(t, gen2, f.web), &leafKey.PublicKey)
	require.NoError(t, err)
	leaf2 := parsePEM(t, mc2.Leaf)
	assert.Len(t, leaf2.IPAddresses, 1)
	verify(t, leaf2, gen2.Mesh.Cert, gen2.Root.Cert)
	assert.Equal(t, secret1, mc2.WorkloadSecret)

	// Stale compare-and-swap.
	m3, pols3 := f.manifest("web", "10.0.0.8")
	_, err = a.SetManifest(ctx, state.SetRequest{Manifest: m3, Policies: pols3, Client: f.ownerPub, Expected: &gen1.Transition})
	require.ErrorIs(t, err, state.ErrConflict)

	// Restart: recovery mode.
	b := f.authority(t)
	require.Equal(t, state.ModeRecovery, b.Mode())
	_, err = b.SetManifest(ctx, state.SetRequest{Manifest: m3, Policies: pols3, Client: f.ownerPub})
	require.ErrorIs(t, err, state.ErrRecoveryMode)
	_, err = b.History(ctx)
	require.ErrorIs(t, err, state.ErrRecoveryMode)

	wrong, err := seed.New()
	require.NoError(t, err)
	_, err = b.Recover(ctx, state.RecoverRequest{Seed: make([]byte, 32), Salt: wrong.Salt()})
	require.ErrorIs(t, err, state.ErrWrongSeed)
	_, err = b.Recover(ctx, state.RecoverRequest{Seed: []byte("short"), Salt: res.Salt})
	require.ErrorIs(t, err, state.ErrInvalidSeed)
	require.NotErrorIs(t, err, state.ErrWrongSeed)
	_, err = b.Recover(ctx, state.RecoverRequest{Seed: make([]byte, 32), Salt: []byte("short")})
	require.ErrorIs(t, err, state.ErrInvalidSeed)

	rr := recovery(t, res)
	snap, err := b.Recover(ctx, rr)
	require.NoError(t, err)
	require.Equal(t, state.ModeReady, b.Mode())
	assert.Equal(t, gen2.Root.PEM, snap.Root.PEM)
	assert.Equal(t, gen2.Mesh.PEM, snap.Mesh.PEM)
	assert.Equal(t, gen2.Transition, snap.Transition)
	mc3, err := b.IssueMeshCert(t.Context(), snap, f.attest(t, snap, f.web), &leafKey.PublicKey)
	require.NoError(t, err)
	assert.Equal(t, secret1, mc3.WorkloadSecret)
	verify(t, parsePEM(t, mc3.Leaf), gen2.Mesh.Cert, gen1.Root.Cert)
	_, err = b.Recover(ctx, rr)
	require.ErrorIs(t, err, state.ErrNotInRecovery)

	v, err := b.History(ctx)
	require.NoError(t, err)
	assert.Equal(t, [][]byte{req1.Manifest, m2}, v.Manifests)
	assert.Len(t, v.Policies, 2)

	// The recovered authority continues the chain.
	res3 := set(t, b, state.SetRequest{Manifest: m3, Policies: pols3, Client: f.ownerPub, Expected: &snap.Transition})
	assert.EqualValues(t, 3, res3.Snapshot.Generation)
}

func TestSetManifestRejects(t *testing.T) {
	f := newFixture(t)
	m, pols := f.manifest("web")
	testCases := map[string]struct {
		manifest []byte
		policies [][]byte
		want     error
	}{
		"missing policy document": {manifest: m, policies: pols[:1], want: state.ErrInvalidPolicies},
		"extra policy document":   {manifest: m, policies: append(pols, []byte("other")), want: state.ErrInvalidPolicies},
		"invalid manifest":        {manifest: []byte(`{"Policies":{}}`), policies: nil},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			a := f.authority(t)
			_, err := a.SetManifest(t.Context(), state.SetRequest{Manifest: tc.manifest, Policies: tc.policies})
			require.Error(t, err)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			} else {
				var ve *manifest.ValidationError
				require.ErrorAs(t, err, &ve)
			}
			assert.Equal(t, state.ModeEmpty, a.Mode())
		})
	}
}

func TestConcurrentOwnersExactlyOneWins(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	base := f.first(t, a).Snapshot.Transition

	const owners = 8
	var wg sync.WaitGroup
	errs := make([]error, owners)
	for i := range owners {
		wg.Go(func() {
			_, errs[i] = a.SetManifest(ctx, f.ownerRequest(&base, "web", "10.0.0."+string(rune('1'+i))))
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
		} else {
			require.ErrorIs(t, err, state.ErrConflict)
		}
	}
	assert.Equal(t, 1, wins)
	assert.EqualValues(t, 2, a.Current().Generation)
}

// A pointer another writer stored that does not verify is refused: the
// Authority keeps its generation and refuses updates (fails closed).
func TestStoreConflictFromAnotherWriter(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	a := f.authority(t)
	res1 := f.first(t, a)
	other, err := seed.New()
	require.NoError(t, err)
	pointers := map[string][]byte{
		"garbage":        []byte(`{}`),
		"foreign key":    mustJSON(t, signed(other.HistorySigningKey(), res1.Snapshot.Transition, 1)),
		"foreign, later": mustJSON(t, signed(other.HistorySigningKey(), history.HashOf([]byte("x")), 2)),
	}
	for name, p := range pointers {
		t.Run(name, func(t *testing.T) {
			f.store.SetLatestRaw(p)
			for range 2 {
				_, err := a.SetManifest(ctx, f.ownerRequest(&res1.Snapshot.Transition, "web", "x"))
				require.ErrorIs(t, err, state.ErrConflict)
				assert.Equal(t, res1.Snapshot, a.Current(), "the unverified pointer is not adopted")
			}
		})
	}
}

// Two Coordinators with the same seed share the store: after a conflict the
// loser reloads what the winner installed, and its next update (with the
// new expected transition) succeeds instead of aborting until a restart.
func TestConflictReloadsVerifiedLatest(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	req1 := f.request("web")
	res1 := set(t, a, req1)
	b := f.authority(t)
	_, err := b.Recover(ctx, recovery(t, res1))
	require.NoError(t, err)

	req2 := f.ownerRequest(&res1.Snapshot.Transition, "web", "10.0.0.2")
	res2 := set(t, b, req2)

	// a has not refreshed since b installed generation 2: SetManifest
	// reads the stored pointer first, adopts the verified generation 2 and
	// then refuses the stale expected transition.
	_, err = a.SetManifest(ctx, f.ownerRequest(&res1.Snapshot.Transition, "web", "10.0.0.3"))
	require.ErrorIs(t, err, state.ErrConflict)
	assert.Contains(t, err.Error(), "the latest is generation 2")
	cur := a.Current()
	assert.EqualValues(t, 2, cur.Generation)
	assert.Equal(t, res2.Snapshot.Transition, cur.Transition)
	assert.Equal(t, res2.Snapshot.Mesh.Cert.Raw, cur.Mesh.Cert.Raw)
	v, err := a.History(ctx)
	require.NoError(t, err)
	assert.Equal(t, [][]byte{req1.Manifest, req2.Manifest}, v.Manifests)

	res3 := set(t, a, f.ownerRequest(&cur.Transition, "web", "10.0.0.3"))
	assert.EqualValues(t, 3, res3.Snapshot.Generation)

	// And the other way round, without an expected transition: b adopts
	// generation 3 before it writes, so its update is generation 4.
	res4 := set(t, b, f.ownerRequest(nil, "web", "10.0.0.4"))
	assert.EqualValues(t, 4, res4.Snapshot.Generation)
	assert.Equal(t, res3.Snapshot.Transition, mustChain(t, f, res4.Snapshot.Transition)[2])
}

// An older pointer put back behind a running Coordinator's back verifies
// with its key but is not adopted: updates fail until the genuine pointer
// is back, and then succeed again.
func TestConflictRefusesRollback(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	f.first(t, a)
	old := f.latest(t)
	res2 := set(t, a, f.ownerRequest(nil, "web", "10.0.0.2"))
	genuine := f.latest(t)

	f.store.SetLatestRaw(old)
	req3 := f.ownerRequest(&res2.Snapshot.Transition, "web", "10.0.0.3")
	for range 2 {
		_, err := a.SetManifest(ctx, req3)
		require.ErrorIs(t, err, state.ErrConflict)
		assert.Equal(t, res2.Snapshot, a.Current(), "the rolled-back pointer is not adopted")
	}
	f.store.SetLatestRaw(nil)
	_, err := a.SetManifest(ctx, req3)
	require.ErrorIs(t, err, state.ErrConflict, "a deleted pointer is not recreated")
	assert.Equal(t, res2.Snapshot, a.Current())

	// The genuine pointer is back (with a new store version): SetManifest
	// reads it first, verifies it is the active generation and writes on
	// top of its version.
	f.store.SetLatestRaw(genuine)
	res3 := set(t, a, req3)
	assert.EqualValues(t, 3, res3.Snapshot.Generation)
}

// Two empty Coordinators on one store: the one that comes second reads the
// pointer the first created (before it writes anything), has no seed to
// verify it with and goes into recovery mode.
func TestConflictOnFirstManifest(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a, b := f.authority(t), f.authority(t)
	req := f.request("web")
	set(t, a, req)
	_, err := b.SetManifest(ctx, req)
	require.ErrorIs(t, err, state.ErrRecoveryMode, "b reads the pointer a created before it writes")
	assert.Equal(t, state.ModeRecovery, b.Mode())
	_, err = b.SetManifest(ctx, req)
	require.ErrorIs(t, err, state.ErrRecoveryMode)
}

func TestRecoverDetectsTamperedHistory(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	res := f.first(t, a)
	rr := recovery(t, res)
	f.store.Corrupt(history.KindManifest, res.Snapshot.ManifestHash.String(), []byte(`{}`))
	b := f.authority(t)
	_, err := b.Recover(ctx, rr)
	require.ErrorIs(t, err, history.ErrCorrupt)
	assert.Equal(t, state.ModeRecovery, b.Mode())
}

// A blob squatted under the content address of the manifest (by anyone who
// can create ConfigMaps) must make SetManifest fail, not succeed with a
// history that GetManifests and Recover can never verify.
func TestSquattedBlobFailsSetManifest(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	req := f.request("web")
	f.store.Corrupt(history.KindManifest, history.HashOf(req.Manifest).String(), []byte(`{"squatted":true}`))
	_, err := a.SetManifest(ctx, req)
	require.ErrorIs(t, err, history.ErrCorrupt)
	assert.Equal(t, state.ModeEmpty, a.Mode())
	assert.Nil(t, a.Current())
}

// A history whose latest pointer was put back to an older signed one
// verifies with the seed; Recover detects the rollback only against the
// owner's expected latest transition, and then restores nothing.
func TestRecoverDetectsRollback(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	res1 := f.first(t, a)
	old := f.latest(t)
	res2 := set(t, a, f.ownerRequest(nil, "web", "10.0.0.7"))
	rr := recovery(t, res1)

	f.store.SetLatestRaw(old)
	b := f.authority(t)
	_, err := b.Recover(ctx, expecting(rr, &res2.Snapshot.Transition))
	require.ErrorIs(t, err, state.ErrUnexpectedLatest)
	assert.Contains(t, err.Error(), "generation 1 (transition "+res1.Snapshot.Transition.String())
	assert.Contains(t, err.Error(), "transition "+res2.Snapshot.Transition.String()+" is generation 2")
	assert.Equal(t, state.ModeRecovery, b.Mode())
	assert.Nil(t, b.Current(), "nothing restored")

	unknown := history.HashOf([]byte("never stored"))
	_, err = b.Recover(ctx, expecting(rr, &unknown))
	require.ErrorIs(t, err, state.ErrUnexpectedLatest)
	assert.Contains(t, err.Error(), "not in the stored history")

	snap, err := b.Recover(ctx, rr)
	require.NoError(t, err)
	assert.EqualValues(t, 1, snap.Generation, "without an expectation the caller must compare the generation")
	assert.Equal(t, res1.Snapshot.Transition, snap.Transition)
}

// The pointer signs its generation: a signature over the transition alone
// (the v1 format) or over another generation does not verify.
func TestRecoverChecksSignedGeneration(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	res1 := f.first(t, a)
	res2 := set(t, a, f.ownerRequest(nil, "web", "10.0.0.7"))
	rr := recovery(t, res1)
	secrets, err := seed.FromBytes(rr.Seed, rr.Salt)
	require.NoError(t, err)
	key := secrets.HistorySigningKey()
	th := res2.Snapshot.Transition

	v1 := ed25519.Sign(key, append([]byte("contrast-history-latest-v1\x00"), th[:]...))
	pointers := map[string]struct {
		latest history.Latest
		want   error
	}{
		"v1 pointer":                {latest: history.Latest{Transition: th, Signature: v1}, want: history.ErrCorrupt},
		"v1 signature, generation":  {latest: history.Latest{Transition: th, Generation: 2, Signature: v1}, want: state.ErrWrongSeed},
		"signed with another gen":   {latest: signed(key, th, 3), want: history.ErrCorrupt},
		"generation 1 signature, 2": {latest: withGeneration(signed(key, th, 1), 2), want: state.ErrWrongSeed},
	}
	for name, tc := range pointers {
		t.Run(name, func(t *testing.T) {
			f.store.SetLatestRaw(mustJSON(t, tc.latest))
			r := f.authority(t)
			_, err := r.Recover(ctx, rr)
			require.ErrorIs(t, err, tc.want)
			assert.Equal(t, state.ModeRecovery, r.Mode())
		})
	}
	// The genuine pointer recovers.
	f.store.SetLatestRaw(mustJSON(t, signed(key, th, 2)))
	snap, err := f.authority(t).Recover(ctx, rr)
	require.NoError(t, err)
	assert.EqualValues(t, 2, snap.Generation)
}

// Deleting the latest pointer must not turn a deployment into an empty
// Coordinator that accepts anyone's first manifest.
func TestLatestMissingRefuses(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	req1 := f.request("web")
	res := set(t, a, req1)
	rr := recovery(t, res)
	genuine := f.latest(t)

	f.store.SetLatestRaw(nil)
	b := f.authority(t)
	assert.Equal(t, state.ModeLatestMissing, b.Mode())
	assert.False(t, b.Mode().Serving())
	_, err := b.SetManifest(ctx, req1)
	require.ErrorIs(t, err, state.ErrLatestMissing)
	assert.Contains(t, err.Error(), "latest pointer is missing")
	_, err = b.History(ctx)
	require.ErrorIs(t, err, state.ErrLatestMissing)
	_, err = b.Recover(ctx, rr)
	require.ErrorIs(t, err, state.ErrLatestMissing)
	assert.Nil(t, b.Current())

	// Once the pointer is back, a restart is in ordinary recovery mode.
	f.store.SetLatestRaw(genuine)
	c := f.authority(t)
	require.Equal(t, state.ModeRecovery, c.Mode())
	_, err = c.Recover(ctx, expecting(rr, &res.Snapshot.Transition))
	require.NoError(t, err)
}

// Only manifests and transitions mark a history: the policies and
// certificates that a first SetManifest interrupted before them leaves
// behind do not.
func TestOrphanCertificateStartsEmpty(t *testing.T) {
	f := newFixture(t)
	cert := []byte("cert")
	require.NoError(t, f.store.PutBlob(t.Context(), history.KindCert, history.HashOf(cert).String(), cert))
	assert.Equal(t, state.ModeEmpty, f.authority(t).Mode())
}
