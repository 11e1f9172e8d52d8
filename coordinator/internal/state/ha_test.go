package state_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/internal/history"
	"github.com/contrast-cc/contrast/coordinator/internal/seed"
	"github.com/contrast-cc/contrast/coordinator/internal/state"
)

// replica returns a second Authority on f's store, recovered with res's seed.
func (f *fixture) replica(t *testing.T, res *state.SetResult) *state.Authority {
	t.Helper()
	b := f.authority(t)
	_, err := b.Recover(t.Context(), recovery(t, res))
	require.NoError(t, err)
	return b
}

// A replica learns a generation another replica installed through Refresh
// (the server calls it on every watch event of the pointer).
func TestRefreshAdoptsAnotherReplicasGeneration(t *testing.T) {
	f := newFixture(t)
	a := f.authority(t)
	res1 := f.first(t, a)
	b := f.replica(t, res1)
	res2 := set(t, a, f.ownerRequest(&res1.Snapshot.Transition, "web", "10.0.0.2"))
	assert.EqualValues(t, 1, b.Current().Generation, "no refresh yet")
	require.NoError(t, b.Refresh(t.Context()))
	assert.Equal(t, res2.Snapshot.Transition, b.Current().Transition)
	assert.Equal(t, res2.Snapshot.Mesh.Cert.Raw, b.Current().Mesh.Cert.Raw)
	require.NoError(t, b.Refresh(t.Context()), "an unchanged pointer")
	assert.Equal(t, res2.Snapshot.Transition, b.Current().Transition)
}

// An empty replica notices a first manifest set through another replica
// and goes into recovery mode (it has no seed).
func TestRefreshEmptyReplicaSeesFirstManifest(t *testing.T) {
	f := newFixture(t)
	a, b := f.authority(t), f.authority(t)
	require.NoError(t, b.Refresh(t.Context()))
	assert.Equal(t, state.ModeEmpty, b.Mode())
	f.first(t, a)
	require.NoError(t, b.Refresh(t.Context()))
	assert.Equal(t, state.ModeRecovery, b.Mode())
}

// The issuance guarantee: once the owner has the acknowledgement of
// generation 2 (through replica a), replica b, which has not seen it yet,
// never hands out a certificate of generation 1; it adopts generation 2
// instead and the client reconnects.
func TestIssuanceWithheldAfterAcknowledgedUpdate(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	res1 := f.first(t, a)
	b := f.replica(t, res1)
	gen1 := b.Current()
	res1Attested := f.attest(t, gen1, f.web)
	key := coordinatortest.OwnerKey()

	mc, err := b.IssueMeshCert(ctx, gen1, res1Attested, &key.PublicKey)
	require.NoError(t, err, "generation 1 is the stored head")
	assert.Equal(t, res1.Snapshot.Mesh.PEM, mc.MeshCA)

	res2 := set(t, a, f.ownerRequest(&res1.Snapshot.Transition, "web", "10.0.0.2")) // acknowledged
	_, err = b.IssueMeshCert(ctx, gen1, res1Attested, &key.PublicKey)
	require.ErrorIs(t, err, state.ErrStaleGeneration)
	assert.Contains(t, err.Error(), "generation 2 replaced generation 1")
	gen2 := b.Current()
	require.Equal(t, res2.Snapshot.Transition, gen2.Transition, "b adopted generation 2 on the way")

	mc2, err := b.IssueMeshCert(ctx, gen2, f.attest(t, gen2, f.web), &key.PublicKey)
	require.NoError(t, err)
	assert.Equal(t, res2.Snapshot.Mesh.PEM, mc2.MeshCA)
	verify(t, parsePEM(t, mc2.Leaf), parsePEM(t, res2.Snapshot.Mesh.PEM), parsePEM(t, res1.Snapshot.Root.PEM))
}

// A stored pointer that is neither the active generation nor a verified
// continuation withholds every certificate (fails closed).
func TestIssuanceFailsClosedOnUnverifiablePointer(t *testing.T) {
	f := newFixture(t)
	a := f.authority(t)
	res1 := f.first(t, a)
	old := f.latest(t)
	set(t, a, f.ownerRequest(nil, "web", "10.0.0.2"))
	genuine := f.latest(t)
	gen2 := a.Current()
	other, err := seed.New()
	require.NoError(t, err)
	key := coordinatortest.OwnerKey()
	res := f.attest(t, gen2, f.web)
	for name, p := range map[string][]byte{
		"deleted":     nil,
		"garbage":     []byte(`{}`),
		"rolled back": old,
		"foreign":     mustJSON(t, signed(other.HistorySigningKey(), res1.Snapshot.Transition, 3)),
	} {
		t.Run(name, func(t *testing.T) {
			f.store.SetLatestRaw(p)
			_, err := a.IssueMeshCert(t.Context(), gen2, res, &key.PublicKey)
			require.ErrorIs(t, err, state.ErrHeadUnconfirmed)
			assert.Equal(t, gen2, a.Current())
		})
	}
	f.store.SetLatestRaw(genuine)
	_, err = a.IssueMeshCert(t.Context(), gen2, res, &key.PublicKey)
	require.NoError(t, err)
}

// attestAs validates the evidence of a device launched with policy p
// through validate (a peer-recovery validator).
func (f *fixture) attestAs(t *testing.T, p coordinatortest.Policy, validate func(context.Context, []byte, [64]byte) (*attest.Result, error)) (*attest.Result, error) {
	t.Helper()
	dev, err := f.platform.Device(p.Hash, nil)
	require.NoError(t, err)
	var rd [64]byte
	rd[1] = 9
	ev, err := coordinatortest.Issuer(dev).Issue(t.Context(), rd)
	require.NoError(t, err)
	return validate(t.Context(), ev, rd)
}

// Peer recovery, both sides: the responder hands the seed only to a
// Role-coordinator policy, the requester validates the responder with the
// stored manifest and accepts the seed only if the signed history verifies.
func TestPeerRecovery(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	res1 := f.first(t, a)
	res2 := set(t, a, f.ownerRequest(nil, "web", "10.0.0.2"))
	b := f.authority(t)
	require.Equal(t, state.ModeRecovery, b.Mode())

	trust, err := b.PeerTrust(ctx)
	require.NoError(t, err)
	assert.Equal(t, res2.Snapshot.Transition, trust.Latest.Transition)
	// The requester's check of the responder.
	_, err = f.attestAs(t, f.coordinator, trust.ValidatePeer)
	require.NoError(t, err)
	_, err = f.attestAs(t, f.web, trust.ValidatePeer)
	check, ok := attest.FailedCheck(err)
	require.True(t, ok, "%v", err)
	assert.Equal(t, attest.CheckPolicyDigest, check)
	require.ErrorIs(t, err, state.ErrNotCoordinator)
	assert.Contains(t, err.Error(), `has role ""`)
	_, err = f.attestAs(t, coordinatortest.NewPolicy("stranger"), trust.ValidatePeer)
	require.ErrorIs(t, err, state.ErrNotCoordinator)
	assert.Contains(t, err.Error(), "is not in the manifest")

	// The responder's check of the requester (evidence validated against
	// its current generation by the mesh API).
	cur := a.Current()
	_, err = a.Handover(cur, f.attest(t, cur, f.web))
	require.ErrorIs(t, err, state.ErrNotCoordinator)
	h, err := a.Handover(cur, f.attest(t, cur, f.coordinator))
	require.NoError(t, err)
	assert.Equal(t, res2.Snapshot.Transition, h.Transition)
	assert.EqualValues(t, 2, h.Generation)

	snap, err := b.RecoverFromPeer(ctx, trust, h)
	require.NoError(t, err)
	assert.Equal(t, state.ModeReady, b.Mode())
	assert.Equal(t, res2.Snapshot.Transition, snap.Transition)
	assert.Equal(t, res1.Snapshot.Root.Cert.Raw, snap.Root.Cert.Raw)
	assert.Equal(t, res2.Snapshot.Mesh.Cert.Raw, snap.Mesh.Cert.Raw)
	_, err = b.RecoverFromPeer(ctx, trust, h)
	require.ErrorIs(t, err, state.ErrNotInRecovery)
}

// The requester refuses what it cannot verify after receiving the seed.
func TestPeerRecoveryRefusals(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	res1 := f.first(t, a)
	gen1Pointer := f.latest(t)
	set(t, a, f.ownerRequest(nil, "web", "10.0.0.2"))
	genuine := f.latest(t)
	cur := a.Current()
	h, err := a.Handover(cur, f.attest(t, cur, f.coordinator))
	require.NoError(t, err)
	other, err := seed.New()
	require.NoError(t, err)

	testCases := map[string]struct {
		stored  []byte
		mutate  func(*state.Handover, *state.PeerTrust)
		wantErr error
		want    string
	}{
		"a seed that does not sign the history": {
			mutate:  func(h *state.Handover, _ *state.PeerTrust) { h.Seed, h.Salt = other.Seed(), other.Salt() },
			wantErr: state.ErrWrongSeed,
		},
		"malformed seed": {
			mutate:  func(h *state.Handover, _ *state.PeerTrust) { h.Seed = h.Seed[:16] },
			wantErr: state.ErrInvalidSeed,
		},
		"the store rolled back behind the peer": {
			stored:  gen1Pointer,
			wantErr: state.ErrUnexpectedLatest,
			want:    "the peer's generation (generation 2",
		},
		"peer validated with a manifest outside the signed history": {
			mutate: func(_ *state.Handover, p *state.PeerTrust) {
				p.Latest.Transition = history.HashOf([]byte("forged"))
			},
			wantErr: state.ErrUnexpectedLatest,
			want:    "the manifest the peer was validated with",
		},
		"a peer that claims another transition of the generation": {
			mutate:  func(h *state.Handover, _ *state.PeerTrust) { h.Transition = res1.Snapshot.Transition },
			wantErr: state.ErrUnexpectedLatest,
			want:    "another transition of the same generation",
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			f.store.SetLatestRaw(genuine)
			if tc.stored != nil {
				f.store.SetLatestRaw(tc.stored)
			}
			b := f.authority(t)
			trust, err := b.PeerTrust(ctx)
			require.NoError(t, err)
			hc := *h
			if tc.mutate != nil {
				tc.mutate(&hc, trust)
			}
			_, err = b.RecoverFromPeer(ctx, trust, &hc)
			require.ErrorIs(t, err, tc.wantErr)
			if tc.want != "" {
				assert.Contains(t, err.Error(), tc.want)
			}
			assert.Equal(t, state.ModeRecovery, b.Mode())
			assert.Nil(t, b.Current())
		})
	}
}

// The way out of "history without head": Recover with the seed and the
// expected latest transition re-signs the pointer.
func TestLatestMissingResign(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t)
	a := f.authority(t)
	res1 := f.first(t, a)
	res2 := set(t, a, f.ownerRequest(nil, "web", "10.0.0.2"))
	rr := recovery(t, res1)
	f.store.SetLatestRaw(nil)

	b := f.authority(t)
	require.Equal(t, state.ModeLatestMissing, b.Mode())
	d := f.authority(t)
	require.Equal(t, state.ModeLatestMissing, d.Mode())
	_, err := b.Recover(ctx, rr)
	require.ErrorIs(t, err, state.ErrLatestMissing)
	assert.Contains(t, err.Error(), "expected latest transition")
	other, err := seed.New()
	require.NoError(t, err)
	_, err = b.Recover(ctx, state.RecoverRequest{Seed: other.Seed(), Salt: other.Salt(), Expected: &res2.Snapshot.Transition})
	require.ErrorIs(t, err, state.ErrWrongSeed)
	unknown := history.HashOf([]byte("unknown"))
	_, err = b.Recover(ctx, expecting(rr, &unknown))
	require.ErrorIs(t, err, state.ErrUnexpectedLatest)
	assert.Contains(t, err.Error(), "not in the stored history")
	_, _, err = f.store.GetLatest(ctx)
	require.ErrorIs(t, err, history.ErrNotFound, "nothing was signed")
	assert.Equal(t, state.ModeLatestMissing, b.Mode())

	snap, err := b.Recover(ctx, expecting(rr, &res2.Snapshot.Transition))
	require.NoError(t, err)
	assert.Equal(t, state.ModeReady, b.Mode())
	assert.EqualValues(t, 2, snap.Generation)
	assert.Equal(t, res2.Snapshot.Mesh.Cert.Raw, snap.Mesh.Cert.Raw)

	// The re-signed pointer is an ordinary one: a restart recovers with it.
	c := f.authority(t)
	require.Equal(t, state.ModeRecovery, c.Mode())
	snap3, err := c.Recover(ctx, expecting(rr, &res2.Snapshot.Transition))
	require.NoError(t, err)
	assert.Equal(t, res2.Snapshot.Transition, snap3.Transition)
	// A replica that was in ModeLatestMissing meanwhile notices the pointer
	// (through Refresh) and waits for its seed in recovery mode.
	require.NoError(t, d.Refresh(ctx))
	assert.Equal(t, state.ModeRecovery, d.Mode())
}
