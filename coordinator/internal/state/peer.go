package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/coordinator/internal/history"
	"github.com/contrast-cc/contrast/coordinator/internal/seed"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// Peer recovery (coordinator/README.md, "High availability"): a replica in
// recovery mode asks a ready replica for the seed over mutual aTLS on the
// mesh API. Both sides attest and each checks the other:
//
//   - The responder (Handover) validates the requester's evidence against
//     its current, verified manifest (the mesh API does this for every
//     call) and requires that the requester's policy hash has Role
//     coordinator in it.
//   - The requester cannot verify the stored history before it has the
//     seed. It reads the latest pointer, its transition and manifest from
//     the store (hash-checked, not yet authenticated: PeerTrust), requires
//     the responder's evidence to be valid against that manifest's
//     reference values with a policy hash of Role coordinator, receives the
//     seed, and then (RecoverFromPeer) verifies the signed pointer with the
//     key derived from it, refusing everything if it does not verify, if
//     the manifest it validated the peer with is not part of the verified
//     history, or if the stored history is older than the responder's.

// PeerTrust is what a replica in recovery mode validates a peer with: the
// latest pointer, transition and manifest as read from the store. None of
// it is authenticated yet (that needs the seed); RecoverFromPeer checks it
// afterwards.
type PeerTrust struct {
	Latest     history.Latest
	Manifest   *manifest.Manifest
	validators []attest.Validator
}

// PeerTrust reads the stored latest pointer and the manifest it names.
func (a *Authority) PeerTrust(ctx context.Context) (*PeerTrust, error) {
	h := a.cfg.History
	l, err := h.GetLatest(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the latest pointer: %w", err)
	}
	t, err := h.GetTransition(ctx, l.Latest.Transition)
	if err != nil {
		return nil, err
	}
	raw, err := h.Get(ctx, history.KindManifest, t.Manifest)
	if err != nil {
		return nil, err
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("stored manifest: %w", err)
	}
	validators, err := m.Validators(a.cfg.ValidatorOptions)
	if err != nil {
		return nil, fmt.Errorf("stored manifest: %w", err)
	}
	return &PeerTrust{Latest: l.Latest, Manifest: m, validators: validators}, nil
}

// ValidatePeer checks a responder's evidence against the stored manifest's
// reference values and requires its policy hash to have Role coordinator.
// A policy mismatch is a *attest.CheckError of CheckPolicyDigest.
func (p *PeerTrust) ValidatePeer(ctx context.Context, evidence []byte, reportData [64]byte) (*attest.Result, error) {
	res, err := attest.ValidateAny(ctx, p.validators, evidence, reportData)
	if err != nil {
		return nil, err //nolint:wrapcheck // a *attest.CheckError naming the check
	}
	if err := requireCoordinator(p.Manifest, res); err != nil {
		return nil, attest.NewCheckError(attest.CheckPolicyDigest, err)
	}
	return res, nil
}

func requireCoordinator(m *manifest.Manifest, res *attest.Result) error {
	ph, entry, ok := m.Policy(res.PolicyDigest)
	if !ok {
		return fmt.Errorf("%w: policy hash %x is not in the manifest", ErrNotCoordinator, res.PolicyDigest)
	}
	if entry.Role != manifest.RoleCoordinator {
		return fmt.Errorf("%w: policy hash %s has role %q", ErrNotCoordinator, ph, entry.Role)
	}
	return nil
}

// Handover is the seed a ready replica hands to an attested peer
// Coordinator, with the generation it serves.
type Handover struct {
	Seed, Salt []byte
	Transition history.Hash
	Generation uint64
}

// Handover returns the seed for a peer whose evidence was validated
// against snap (the current generation) if its policy hash has Role
// coordinator in snap's manifest (ErrNotCoordinator otherwise).
func (a *Authority) Handover(snap *Snapshot, res *attest.Result) (*Handover, error) {
	if err := requireCoordinator(snap.Manifest, res); err != nil {
		return nil, err
	}
	return &Handover{
		Seed: snap.secrets.Seed(), Salt: snap.secrets.Salt(),
		Transition: snap.Transition, Generation: snap.Generation,
	}, nil
}

// RecoverFromPeer restores the seed a peer handed over (see the comment at
// the top of this file). trusted is the PeerTrust the peer was validated
// with. The stored latest pointer must verify with the key derived from the
// seed (ErrWrongSeed), its history must contain trusted's transition and
// the peer's (ErrUnexpectedLatest otherwise: the store was rolled back
// behind the peer, or the peer was validated with a manifest outside the
// signed history), and the CA certificates must match the seed.
func (a *Authority) RecoverFromPeer(ctx context.Context, trusted *PeerTrust, h *Handover) (*Snapshot, error) {
	secrets, err := seed.FromBytes(h.Seed, h.Salt)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSeed, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Mode() != ModeRecovery {
		return nil, ErrNotInRecovery
	}
	latest, err := a.cfg.History.GetLatest(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading latest transition: %w", err)
	}
	if err := latest.Latest.Verify(historyKey(secrets)); err != nil {
		if errors.Is(err, history.ErrSignature) {
			return nil, fmt.Errorf("%w: %w", ErrWrongSeed, err)
		}
		return nil, err
	}
	for _, anc := range []struct {
		what string
		l    history.Latest
	}{
		{"the manifest the peer was validated with", trusted.Latest},
		{"the peer's generation", history.Latest{Transition: h.Transition, Generation: h.Generation}},
	} {
		if err := a.descends(ctx, latest.Latest, anc.l); err != nil {
			err = fmt.Errorf("%w: %s (generation %d, transition %s) is not in the signed history whose latest is generation %d: %w",
				ErrUnexpectedLatest, anc.what, anc.l.Generation, anc.l.Transition, latest.Latest.Generation, err)
			a.cfg.Logger.Error("peer recovery refused", "error", err)
			return nil, err
		}
	}
	snap, err := a.loadLatest(ctx, secrets, latest.Latest)
	if err != nil {
		return nil, err
	}
	a.latestVersion = latest.Version
	a.publish(snap)
	a.cfg.Logger.Info("recovered the seed from a peer Coordinator", "generation", snap.Generation, "transition", snap.Transition.String())
	return snap, nil
}

// descends checks that the history ending at head (verified) contains the
// transition anc with anc's generation.
func (a *Authority) descends(ctx context.Context, head, anc history.Latest) error {
	switch {
	case anc.Generation == 0 || anc.Generation > head.Generation:
		return fmt.Errorf("generation %d is not at most %d", anc.Generation, head.Generation)
	case anc.Generation == head.Generation:
		if anc.Transition != head.Transition {
			return errors.New("another transition of the same generation")
		}
		return nil
	}
	chain, err := a.cfg.History.Chain(ctx, head.Transition)
	if err != nil {
		return err
	}
	if uint64(len(chain)) != head.Generation || chain[anc.Generation].Previous != anc.Transition { //nolint:gosec // len ≥ 0
		return errors.New("the hash chain does not pass through it")
	}
	return nil
}
