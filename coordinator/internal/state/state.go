// Package state is the Coordinator's authority: the active manifest and its
// CAs, the seed, manifest updates with authorization and compare-and-swap,
// recovery, and mesh-certificate issuance. The gRPC packages are thin
// adapters over it.
package state

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/coordinator/internal/ca"
	"github.com/contrast-cc/contrast/coordinator/internal/history"
	"github.com/contrast-cc/contrast/coordinator/internal/metrics"
	"github.com/contrast-cc/contrast/coordinator/internal/seed"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// Sentinel errors the API layers map to gRPC codes.
var (
	// ErrRecoveryMode: history exists but the seed is missing (FailedPrecondition).
	ErrRecoveryMode = errors.New("coordinator is in recovery mode: the seed must be restored with Recover")
	// ErrLatestMissing: history exists but its latest pointer does not
	// (FailedPrecondition). Starting a new history would let anyone set the
	// first manifest, so the Coordinator refuses until an operator acts.
	ErrLatestMissing = errors.New("the history's latest pointer is missing although manifests or transitions are stored: " +
		"refusing to start a new history (restore the latest pointer, or delete the whole history to start a new deployment)")
	// ErrNoManifest: no manifest has been set yet (FailedPrecondition).
	ErrNoManifest = errors.New("no manifest has been set")
	// ErrNotOwner: the client's key is not a workload-owner key (PermissionDenied).
	ErrNotOwner = errors.New("client key is not a workload-owner key of the current manifest")
	// ErrConflict: the expected latest transition does not match (Aborted).
	ErrConflict = errors.New("latest transition differs from the expected one")
	// ErrInvalidPolicies: policy documents do not match the manifest (InvalidArgument).
	ErrInvalidPolicies = errors.New("policy documents do not match the manifest")
	// ErrNotInRecovery: Recover called while not in recovery mode (FailedPrecondition).
	ErrNotInRecovery = errors.New("coordinator is not in recovery mode")
	// ErrInvalidSeed: the seed or salt has the wrong length (InvalidArgument).
	ErrInvalidSeed = errors.New("invalid recovery request")
	// ErrWrongSeed: the recovered seed does not match the signed history (PermissionDenied).
	ErrWrongSeed = errors.New("seed does not match the signed history")
	// ErrUnexpectedLatest: Recover's expected latest transition is not the
	// stored one, a possible rollback of the history (FailedPrecondition).
	ErrUnexpectedLatest = errors.New("the stored latest transition is not the expected one")
	// ErrUnknownPolicy: the attested policy hash is not in the manifest (PermissionDenied).
	ErrUnknownPolicy = errors.New("unknown policy hash")
	// ErrNotCoordinator: a peer asked for the seed but its policy hash does
	// not have Role coordinator in the manifest (PermissionDenied).
	ErrNotCoordinator = errors.New("the peer's policy hash does not have Role coordinator in the manifest")
	// ErrStaleGeneration: the stored history has moved to a newer
	// generation than the one the caller attested under (FailedPrecondition:
	// reconnect and attest against the new generation).
	ErrStaleGeneration = errors.New("a newer manifest generation is stored")
	// ErrHeadUnconfirmed: the stored latest pointer could not be read, or
	// names a generation this Coordinator cannot verify as its own or a
	// continuation of it; nothing is issued (Unavailable).
	ErrHeadUnconfirmed = errors.New("cannot confirm that the active manifest generation is the stored latest one")
)

// Mode is the Coordinator's lifecycle state.
type Mode int

// Modes.
const (
	// ModeEmpty: no history; waiting for the first manifest.
	ModeEmpty Mode = iota
	// ModeReady: a manifest is active and the seed is known.
	ModeReady
	// ModeRecovery: history exists, the seed is missing.
	ModeRecovery
	// ModeLatestMissing: history blobs exist but the latest pointer does
	// not; nothing is served until an operator restores the pointer (or
	// deletes the whole history) and restarts the Coordinator.
	ModeLatestMissing
)

func (m Mode) String() string {
	return [...]string{"empty", "ready", "recovery", "latest-missing"}[m]
}

// Serving reports whether the Coordinator can serve in mode m (it is ready,
// or empty and waiting for the first manifest), as opposed to waiting for
// Recover or an operator.
func (m Mode) Serving() bool { return m == ModeEmpty || m == ModeReady }

// Snapshot is an immutable view of one manifest generation.
type Snapshot struct {
	Manifest     *manifest.Manifest
	ManifestHash history.Hash
	Transition   history.Hash
	Generation   uint64
	Root, Mesh   *ca.CA

	secrets    *seed.Secrets
	validators []attest.Validator
}

// Validate checks evidence against this generation's reference values.
func (s *Snapshot) Validate(ctx context.Context, evidence []byte, reportData [64]byte) (*attest.Result, error) {
	return attest.ValidateAny(ctx, s.validators, evidence, reportData)
}

// Config configures an Authority.
type Config struct {
	// History is the persistent history (required).
	History *history.History
	// ValidatorOptions are used to build each generation's validators.
	ValidatorOptions manifest.ValidatorOptions
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Now defaults to time.Now.
	Now func() time.Time
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
	// HeadTimeout bounds one read of the stored latest pointer before an
	// issuance; zero means 5 s.
	HeadTimeout time.Duration
}

// Authority holds the Coordinator's state. It is safe for concurrent use;
// updates and recovery are serialized, reads are lock-free.
type Authority struct {
	cfg Config

	mu            sync.Mutex // serializes SetManifest and Recover
	latestVersion string     // store version of the latest pointer we wrote or verified
	cur           atomic.Pointer[Snapshot]
	mode          atomic.Int32
	head          headReader
}

// New loads the history: without one the Authority waits for the first
// manifest; with one it starts in recovery mode. If manifests or
// transitions are stored but the latest pointer is not (deleted, perhaps to
// make this Coordinator accept anyone's first manifest), it starts in
// ModeLatestMissing.
func New(ctx context.Context, cfg Config) (*Authority, error) {
	if cfg.History == nil {
		return nil, errors.New("state: History is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HeadTimeout == 0 {
		cfg.HeadTimeout = 5 * time.Second
	}
	a := &Authority{cfg: cfg, head: headReader{history: cfg.History, timeout: cfg.HeadTimeout}}
	latest, err := cfg.History.GetLatest(ctx)
	switch {
	case errors.Is(err, history.ErrNotFound):
		orphans, err := cfg.History.HasBlobs(ctx, history.KindTransition, history.KindManifest)
		if err != nil {
			return nil, fmt.Errorf("reading history: %w", err)
		}
		if orphans {
			a.setMode(ModeLatestMissing)
			cfg.Logger.Error("manifest history found without its latest pointer; refusing to start a new history until an operator restores the pointer or deletes the whole history")
			break
		}
		a.setMode(ModeEmpty)
		cfg.Logger.Info("no manifest history; waiting for the first manifest")
	case err != nil:
		return nil, fmt.Errorf("reading history: %w", err)
	default:
		a.setMode(ModeRecovery)
		cfg.Logger.Warn("manifest history found but no seed; in recovery mode until Recover", "latestTransition", latest.Latest.Transition.String())
	}
	return a, nil
}

func (a *Authority) setMode(m Mode) {
	a.mode.Store(int32(m)) //nolint:gosec // small enum
	if a.cfg.Metrics != nil {
		v := 0.0
		if !m.Serving() {
			v = 1
		}
		a.cfg.Metrics.RecoveryMode.Set(v)
	}
}

// Mode returns the current mode.
func (a *Authority) Mode() Mode { return Mode(a.mode.Load()) }

// Current returns the active snapshot, or nil in ModeEmpty and ModeRecovery.
func (a *Authority) Current() *Snapshot { return a.cur.Load() }

// SetRequest is a manifest update.
type SetRequest struct {
	Manifest []byte
	Policies [][]byte
	// Expected, if non-nil, must equal the latest transition hash (zero
	// when no manifest is set) for the update to apply.
	Expected *history.Hash
	// Client is the authenticated public key of the caller (may be nil).
	Client crypto.PublicKey
}

// SeedShare is the seed encrypted to one seed-share owner.
type SeedShare struct {
	PublicKeyHash  []byte
	EncryptedSeed  []byte
	OwnerKeyString manifest.HexString
}

// SetResult is the outcome of a manifest update.
type SetResult struct {
	Snapshot   *Snapshot
	SeedShares []SeedShare // only for the first manifest
	Salt       []byte      // only for the first manifest
}

// SetManifest authorizes, validates and installs a manifest.
func (a *Authority) SetManifest(ctx context.Context, req SetRequest) (*SetResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	res, err := a.setManifest(ctx, req)
	if m := a.cfg.Metrics; m != nil {
		m.ManifestUpdates.WithLabelValues(updateResult(err)).Inc()
	}
	return res, err
}

func updateResult(err error) string {
	var ve *manifest.ValidationError
	switch {
	case err == nil:
		return "accepted"
	case errors.As(err, &ve), errors.Is(err, ErrInvalidPolicies):
		return "invalid"
	case errors.Is(err, ErrNotOwner):
		return "unauthorized"
	case errors.Is(err, ErrConflict):
		return "conflict"
	default:
		return "failed"
	}
}

func (a *Authority) setManifest(ctx context.Context, req SetRequest) (*SetResult, error) {
	// Another replica may have installed a newer generation that the watch
	// has not delivered yet: read the stored pointer first, so that the
	// owner's expected transition is checked against the newest verified
	// generation. Failures are logged by refreshLocked; the
	// compare-and-swap below still decides.
	_ = a.refreshLocked(ctx)
	switch a.Mode() {
	case ModeRecovery:
		return nil, ErrRecoveryMode
	case ModeLatestMissing:
		return nil, ErrLatestMissing
	}
	cur := a.cur.Load()
	if cur != nil && !cur.Manifest.IsOwner(req.Client) {
		return nil, ErrNotOwner
	}
	if req.Expected != nil {
		var have history.Hash
		if cur != nil {
			have = cur.Transition
		}
		if *req.Expected != have {
			var gen uint64
			if cur != nil {
				gen = cur.Generation
			}
			return nil, fmt.Errorf("%w: the latest is generation %d (transition %s)", ErrConflict, gen, have)
		}
	}
	m, err := manifest.Parse(req.Manifest)
	if err != nil {
		return nil, err
	}
	if err := m.CheckEnforceable(); err != nil {
		return nil, err
	}
	policyHashes, err := checkPolicies(m, req.Policies)
	if err != nil {
		return nil, err
	}
	validators, err := m.Validators(a.cfg.ValidatorOptions)
	if err != nil {
		return nil, &manifest.ValidationError{Errors: []manifest.FieldError{{Path: "ReferenceValues", Msg: err.Error()}}}
	}

	h := a.cfg.History
	now := a.cfg.Now()
	result := &SetResult{}
	var secrets *seed.Secrets
	var root *ca.CA
	var prev history.Hash
	var gen uint64 = 1
	if cur == nil {
		if secrets, err = seed.New(); err != nil {
			return nil, err
		}
		if root, err = ca.NewRoot(secrets.RootCAKey(), now); err != nil {
			return nil, err
		}
		for _, k := range m.SeedshareOwnerPubKeys {
			pub, err := manifest.ParseSeedShareOwnerKey(k)
			if err != nil {
				return nil, err // validated by Parse
			}
			enc, err := secrets.EncryptTo(pub)
			if err != nil {
				return nil, err
			}
			d, err := manifest.KeyDigest(pub)
			if err != nil {
				return nil, err
			}
			result.SeedShares = append(result.SeedShares, SeedShare{PublicKeyHash: d, EncryptedSeed: enc, OwnerKeyString: k})
		}
		result.Salt = secrets.Salt()
		if len(result.SeedShares) == 0 {
			a.cfg.Logger.Warn("first manifest has no SeedshareOwnerPubKeys: this deployment cannot be recovered after a Coordinator restart")
		}
	} else {
		secrets, root, prev, gen = cur.secrets, cur.Root, cur.Transition, cur.Generation+1
	}

	manifestHash := history.HashOf(req.Manifest)
	meshKey := secrets.MeshCAKey(meshLabel(gen, prev, manifestHash))
	mesh, err := ca.NewMesh(root, meshKey, gen, now)
	if err != nil {
		return nil, err
	}
	// Manifest and transition last: they mark a history (see New), so an
	// update interrupted before them leaves nothing that does.
	for _, p := range req.Policies {
		if _, err := h.Put(ctx, history.KindPolicy, p); err != nil {
			return nil, err
		}
	}
	rootHash, err := h.Put(ctx, history.KindCert, root.Cert.Raw)
	if err != nil {
		return nil, err
	}
	meshHash, err := h.Put(ctx, history.KindCert, mesh.Cert.Raw)
	if err != nil {
		return nil, err
	}
	if _, err := h.Put(ctx, history.KindManifest, req.Manifest); err != nil {
		return nil, err
	}
	t := &history.Transition{Generation: gen, Previous: prev, Manifest: manifestHash, Policies: policyHashes, RootCA: rootHash, MeshCA: meshHash}
	th, err := h.PutTransition(ctx, t)
	if err != nil {
		return nil, err
	}
	version, err := h.SwapLatest(ctx, a.latestVersion, th, gen, secrets.HistorySigningKey())
	if errors.Is(err, history.ErrConflict) {
		return nil, a.reloadAfterConflict(ctx, cur, err)
	}
	if err != nil {
		return nil, err
	}
	a.latestVersion = version
	snap := &Snapshot{
		Manifest: m, ManifestHash: manifestHash, Transition: th, Generation: gen,
		Root: root, Mesh: mesh, secrets: secrets, validators: validators,
	}
	a.publish(snap)
	result.Snapshot = snap
	a.cfg.Logger.Info("manifest installed", "generation", gen, "transition", th.String(), "manifest", manifestHash.String(), "policies", len(m.Policies))
	for _, fe := range m.Accepted() {
		a.cfg.Logger.Warn("manifest accepts a reference-value field the Coordinator cannot enforce", "generation", gen, "field", fe.Path, "meaning", fe.Msg)
	}
	return result, nil
}

// reloadAfterConflict handles a failed compare-and-swap of the stored
// pointer: another writer moved it. Without a reload the Authority would
// keep its stale version and abort every later update until a restart.
//
// The stored pointer is adopted only if it verifies with this Coordinator's
// history-signing key and continues this Coordinator's chain (a later or
// the same generation whose hash chain passes through the current
// transition), and its CA certificates match the seed. Anything else (a
// foreign or broken pointer, an older one put back, a deleted one) is
// refused: the Authority stays at its generation, every update keeps
// failing with ErrConflict, and the reason is logged. Either way the
// update that hit the conflict is not applied: the caller re-reads and
// retries.
//
// Before the first manifest (cur == nil) there is nothing to verify with:
// another Coordinator created the history, so this one goes into recovery
// mode, as a restart would.
func (a *Authority) reloadAfterConflict(ctx context.Context, cur *Snapshot, swapErr error) error {
	conflict := fmt.Errorf("%w: the stored history was changed by another writer: %w", ErrConflict, swapErr)
	log := a.cfg.Logger
	latest, err := a.cfg.History.GetLatest(ctx)
	if cur == nil {
		if err != nil {
			log.Error("the latest pointer was created concurrently but cannot be read", "error", err)
			return conflict
		}
		a.setMode(ModeRecovery)
		log.Warn("another writer set the first manifest; in recovery mode until Recover", "latestTransition", latest.Latest.Transition.String())
		return fmt.Errorf("%w; this Coordinator is now in recovery mode", conflict)
	}
	if err != nil {
		log.Error("refusing manifest updates: the stored latest pointer changed and cannot be read; updates fail until it is restored", "error", err, "generation", cur.Generation)
		return conflict
	}
	snap, err := a.continuation(ctx, cur, latest.Latest)
	if err != nil {
		log.Error("refusing manifest updates: the stored latest pointer changed and does not continue this Coordinator's history; updates fail until it is restored",
			"error", err, "generation", cur.Generation, "transition", cur.Transition.String(),
			"storedGeneration", latest.Latest.Generation, "storedTransition", latest.Latest.Transition.String())
		return conflict
	}
	a.latestVersion = latest.Version
	if snap == cur {
		log.Info("the stored latest pointer was rewritten with the same transition; reloaded its version", "generation", cur.Generation)
		return fmt.Errorf("%w; the stored pointer was rewritten unchanged, retry", conflict)
	}
	a.publish(snap)
	log.Info("reloaded the manifest another writer installed", "generation", snap.Generation, "transition", snap.Transition.String())
	return fmt.Errorf("%w; it installed generation %d (transition %s), retry with that expected transition", conflict, snap.Generation, snap.Transition)
}

// Refresh reads the stored latest pointer and adopts what another replica
// wrote: in ModeReady a verified continuation of the active generation
// (the same checks as after a failed compare-and-swap); in ModeEmpty or
// ModeLatestMissing, a pointer that appeared means another replica set the
// first manifest or an operator restored the pointer, so the Authority
// goes into recovery mode (and recovers from a peer or with Recover). A
// missing pointer changes nothing: issuance then fails closed (see
// IssueMeshCert). The server calls Refresh on every watch event of the
// pointer and periodically.
func (a *Authority) Refresh(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.refreshLocked(ctx)
}

func (a *Authority) refreshLocked(ctx context.Context) error {
	result, err := a.refresh(ctx)
	if m := a.cfg.Metrics; m != nil {
		m.HeadRefreshes.WithLabelValues(result).Inc()
	}
	return err
}

// Results of a refresh (label of contrast_coordinator_history_refreshes_total).
const (
	refreshUnchanged = "unchanged"
	refreshAdopted   = "adopted"
	refreshRecovery  = "recovery-mode"
	refreshRefused   = "refused"
	refreshError     = "error"
)

func (a *Authority) refresh(ctx context.Context) (string, error) {
	log := a.cfg.Logger
	latest, err := a.cfg.History.GetLatest(ctx)
	if errors.Is(err, history.ErrNotFound) {
		return refreshUnchanged, nil
	}
	if err != nil {
		log.Warn("reading the stored latest pointer", "error", err)
		return refreshError, fmt.Errorf("reading the latest pointer: %w", err)
	}
	switch a.Mode() {
	case ModeRecovery:
		return refreshUnchanged, nil
	case ModeEmpty, ModeLatestMissing:
		a.setMode(ModeRecovery)
		log.Warn("a latest pointer appeared in the store (another replica set the first manifest, or an operator restored it); in recovery mode until a peer or Recover restores the seed",
			"latestTransition", latest.Latest.Transition.String(), "generation", latest.Latest.Generation)
		return refreshRecovery, nil
	}
	cur := a.cur.Load()
	snap, err := a.continuation(ctx, cur, latest.Latest)
	if err != nil {
		log.Error("the stored latest pointer does not continue this Coordinator's history; keeping the active generation",
			"error", err, "generation", cur.Generation, "transition", cur.Transition.String(),
			"storedGeneration", latest.Latest.Generation, "storedTransition", latest.Latest.Transition.String())
		return refreshRefused, err
	}
	a.latestVersion = latest.Version
	if snap == cur {
		return refreshUnchanged, nil
	}
	a.publish(snap)
	log.Info("adopted the manifest generation another replica installed", "generation", snap.Generation, "transition", snap.Transition.String())
	return refreshAdopted, nil
}

// continuation verifies a stored latest pointer against cur: signed with
// cur's history-signing key, not older than cur, a hash chain from the first
// transition through cur.Transition to it, and CA certificates matching the
// seed. It returns cur if the pointer names cur.Transition.
func (a *Authority) continuation(ctx context.Context, cur *Snapshot, l history.Latest) (*Snapshot, error) {
	if err := l.Verify(historyKey(cur.secrets)); err != nil {
		return nil, err
	}
	if l.Generation < cur.Generation {
		return nil, fmt.Errorf("%w: the stored pointer is generation %d, older than the active generation %d: the history was rolled back",
			history.ErrCorrupt, l.Generation, cur.Generation)
	}
	if l.Generation == cur.Generation {
		if l.Transition != cur.Transition {
			return nil, fmt.Errorf("%w: the stored pointer names another transition %s of the active generation %d", history.ErrCorrupt, l.Transition, l.Generation)
		}
		return cur, nil
	}
	chain, err := a.cfg.History.Chain(ctx, l.Transition)
	if err != nil {
		return nil, err
	}
	// Chain checked that generations count 1, 2, …; the transition after
	// cur must point back to it.
	if uint64(len(chain)) != l.Generation || chain[cur.Generation].Previous != cur.Transition { //nolint:gosec // len ≥ 0
		return nil, fmt.Errorf("%w: the stored pointer (generation %d) does not descend from the active transition %s", history.ErrCorrupt, l.Generation, cur.Transition)
	}
	return a.loadLatest(ctx, cur.secrets, l)
}

func (a *Authority) publish(s *Snapshot) {
	a.cur.Store(s)
	a.setMode(ModeReady)
	if a.cfg.Metrics != nil {
		a.cfg.Metrics.ManifestGeneration.Set(float64(s.Generation))
	}
}

// meshLabel names a generation for the mesh CA key derivation: unique per
// update, computable again from the stored transition during recovery.
func meshLabel(gen uint64, prev, manifestHash history.Hash) string {
	return fmt.Sprintf("%d:%s:%s", gen, prev, manifestHash)
}

// checkPolicies requires exactly one document per policy hash of m.
func checkPolicies(m *manifest.Manifest, docs [][]byte) ([]history.Hash, error) {
	seen := map[manifest.HexString]bool{}
	var hashes []history.Hash
	for i, d := range docs {
		sum := sha256.Sum256(d)
		h := manifest.NewHexString(sum[:])
		if _, ok := m.Policies[h]; !ok {
			return nil, fmt.Errorf("%w: policies[%d] has hash %s, which the manifest does not list", ErrInvalidPolicies, i, h)
		}
		if seen[h] {
			continue
		}
		seen[h] = true
		hashes = append(hashes, history.Hash(sum))
	}
	for h := range m.Policies {
		if !seen[h] {
			return nil, fmt.Errorf("%w: no policy document for %s", ErrInvalidPolicies, h)
		}
	}
	return hashes, nil
}

// RecoverRequest restores the seed.
type RecoverRequest struct {
	Seed, Salt []byte
	// Expected, if non-nil, is the latest transition the client knows of;
	// recovery fails with ErrUnexpectedLatest if the stored pointer names
	// another one.
	Expected *history.Hash
}

// Recover restores the seed of a Coordinator in recovery mode. The seed is
// accepted only if the key derived from it verifies the signed latest
// pointer and the derived CA keys match the stored CA certificates.
//
// A verified pointer is not necessarily the newest: the store keeps every
// signed pointer valid, so someone controlling it can put back an older one
// and recovery would restore an older manifest. Only the client can tell,
// by setting Expected (or comparing the returned snapshot's transition and
// generation with what it knows).
func (a *Authority) Recover(ctx context.Context, req RecoverRequest) (*Snapshot, error) {
	secrets, err := seed.FromBytes(req.Seed, req.Salt)
	if err != nil {
		// A malformed request, not a wrong credential: the message names
		// only the expected sizes.
		return nil, fmt.Errorf("%w: %w", ErrInvalidSeed, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch a.Mode() {
	case ModeRecovery:
	case ModeLatestMissing:
		if req.Expected == nil {
			return nil, fmt.Errorf("%w; to re-sign it, recover with the seed and the expected latest transition", ErrLatestMissing)
		}
		return a.resignHead(ctx, secrets, *req.Expected)
	default:
		return nil, ErrNotInRecovery
	}
	h := a.cfg.History
	latest, err := h.GetLatest(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading latest transition: %w", err)
	}
	if err := latest.Latest.Verify(historyKey(secrets)); err != nil {
		if errors.Is(err, history.ErrSignature) {
			return nil, fmt.Errorf("%w: %w", ErrWrongSeed, err)
		}
		return nil, err
	}
	// Only after the seed has authenticated the pointer: its generation is
	// the one a seed holder signed.
	if req.Expected != nil && *req.Expected != latest.Latest.Transition {
		err := a.unexpectedLatest(ctx, latest.Latest, *req.Expected)
		a.cfg.Logger.Error("recovery refused: the stored latest transition is not the one the client expected", "error", err)
		return nil, err
	}
	snap, err := a.loadLatest(ctx, secrets, latest.Latest)
	if err != nil {
		return nil, err
	}
	a.latestVersion = latest.Version
	a.publish(snap)
	a.cfg.Logger.Info("recovered from seed", "generation", snap.Generation, "transition", snap.Transition.String())
	return snap, nil
}

// resignHead is the way out of ModeLatestMissing: the seed holder names
// the transition that was the latest (expected), and the Coordinator
// signs a new latest pointer to it. The transition is read by its hash, so
// its content is what the owner vouches for; its hash chain must be intact
// and its root and mesh CA certificates must match keys derived from the
// seed (so a wrong seed is refused before anything is written). The
// pointer is created with compare-and-swap: if one appeared meanwhile, the
// Authority goes into recovery mode and nothing is signed.
//
// Naming an older transition than the real latest one rolls the history
// back (like Rollback): the owner passes the latest transition it knows.
func (a *Authority) resignHead(ctx context.Context, secrets *seed.Secrets, expected history.Hash) (*Snapshot, error) {
	log := a.cfg.Logger
	t, err := a.cfg.History.GetTransition(ctx, expected)
	if errors.Is(err, history.ErrNotFound) {
		return nil, fmt.Errorf("%w: the expected transition %s is not in the stored history; nothing was signed", ErrUnexpectedLatest, expected)
	}
	if err != nil {
		return nil, err
	}
	snap, err := a.load(ctx, secrets, expected)
	if err != nil {
		return nil, err
	}
	if _, err := a.cfg.History.Chain(ctx, expected); err != nil {
		return nil, err
	}
	version, err := a.cfg.History.SwapLatest(ctx, "", expected, t.Generation, secrets.HistorySigningKey())
	if errors.Is(err, history.ErrConflict) {
		a.setMode(ModeRecovery)
		log.Warn("a latest pointer appeared while re-signing the head; in recovery mode", "error", err)
		return nil, fmt.Errorf("%w: a latest pointer appeared meanwhile; nothing was signed, recover again without re-signing: %w", ErrConflict, err)
	}
	if err != nil {
		return nil, err
	}
	a.latestVersion = version
	a.publish(snap)
	log.Warn("re-signed the missing latest pointer with the recovered seed", "generation", snap.Generation, "transition", snap.Transition.String())
	return snap, nil
}

func historyKey(s *seed.Secrets) ed25519.PublicKey {
	return s.HistorySigningKey().Public().(ed25519.PublicKey)
}

// unexpectedLatest describes a stored latest pointer that is not the
// expected one, naming both generations (the expected one if its
// transition is in the store). Hashes and generations are not secret.
func (a *Authority) unexpectedLatest(ctx context.Context, stored history.Latest, expected history.Hash) error {
	exp, hint := "not in the stored history", "the history may have been rolled back"
	if t, err := a.cfg.History.GetTransition(ctx, expected); err == nil {
		exp = fmt.Sprintf("generation %d", t.Generation)
		if t.Generation < stored.Generation {
			hint = "the expected transition is older than the stored one"
		}
	}
	return fmt.Errorf("%w: the stored latest pointer is generation %d (transition %s), the expected transition %s is %s; %s; nothing was restored",
		ErrUnexpectedLatest, stored.Generation, stored.Transition, expected, exp, hint)
}

// loadLatest rebuilds the snapshot of a verified latest pointer, checking
// that the transition has the generation the pointer signs.
func (a *Authority) loadLatest(ctx context.Context, secrets *seed.Secrets, l history.Latest) (*Snapshot, error) {
	snap, err := a.load(ctx, secrets, l.Transition)
	if err != nil {
		return nil, err
	}
	if snap.Generation != l.Generation {
		return nil, fmt.Errorf("%w: the latest pointer signs generation %d but transition %s has generation %d",
			history.ErrCorrupt, l.Generation, l.Transition, snap.Generation)
	}
	return snap, nil
}

// load rebuilds the snapshot of transition th from the history.
func (a *Authority) load(ctx context.Context, secrets *seed.Secrets, th history.Hash) (*Snapshot, error) {
	h := a.cfg.History
	t, err := h.GetTransition(ctx, th)
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
	rootDER, err := h.Get(ctx, history.KindCert, t.RootCA)
	if err != nil {
		return nil, err
	}
	root, err := ca.Restore(rootDER, secrets.RootCAKey(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: root CA: %w", ErrWrongSeed, err)
	}
	meshDER, err := h.Get(ctx, history.KindCert, t.MeshCA)
	if err != nil {
		return nil, err
	}
	mesh, err := ca.Restore(meshDER, secrets.MeshCAKey(meshLabel(t.Generation, t.Previous, t.Manifest)), root)
	if err != nil {
		return nil, fmt.Errorf("%w: mesh CA: %w", ErrWrongSeed, err)
	}
	return &Snapshot{
		Manifest: m, ManifestHash: t.Manifest, Transition: th, Generation: t.Generation,
		Root: root, Mesh: mesh, secrets: secrets, validators: validators,
	}, nil
}

// HistoryView is the audit view of GetManifests.
type HistoryView struct {
	Manifests [][]byte // oldest first
	Policies  [][]byte
	Snapshot  *Snapshot
}

// History returns the manifests of the active chain, oldest first, and the
// policies they reference.
func (a *Authority) History(ctx context.Context) (*HistoryView, error) {
	snap, err := a.ready()
	if err != nil {
		return nil, err
	}
	h := a.cfg.History
	chain, err := h.Chain(ctx, snap.Transition)
	if err != nil {
		return nil, err
	}
	v := &HistoryView{Snapshot: snap}
	seen := map[history.Hash]bool{}
	for _, t := range chain {
		mb, err := h.Get(ctx, history.KindManifest, t.Manifest)
		if err != nil {
			return nil, err
		}
		v.Manifests = append(v.Manifests, mb)
		for _, ph := range t.Policies {
			if seen[ph] {
				continue
			}
			seen[ph] = true
			pb, err := h.Get(ctx, history.KindPolicy, ph)
			if err != nil {
				return nil, err
			}
			v.Policies = append(v.Policies, pb)
		}
	}
	return v, nil
}

func (a *Authority) ready() (*Snapshot, error) {
	switch a.Mode() {
	case ModeRecovery:
		return nil, ErrRecoveryMode
	case ModeLatestMissing:
		return nil, ErrLatestMissing
	case ModeEmpty:
		return nil, ErrNoManifest
	}
	return a.cur.Load(), nil
}

// MeshCert is what an attested workload receives.
type MeshCert struct {
	Leaf           []byte // PEM
	MeshCA, RootCA []byte // PEM
	WorkloadSecret []byte // nil without a WorkloadSecretID
	PolicyHash     manifest.HexString
}

// IssueMeshCert issues a mesh certificate under snap (the generation the
// peer's evidence was validated against) for the attested result and key.
//
// Freshness guarantee (several replicas share the store): after signing,
// and before returning the certificate, the Authority reads the stored
// latest pointer (a read that starts after the signature; concurrent
// issuances share one read) and returns the certificate only if the
// pointer still names snap's generation. An update is acknowledged to the
// owner only after its compare-and-swap on the pointer succeeded, so a
// certificate whose read began after that acknowledgement sees the new
// pointer and is withheld (ErrStaleGeneration: the Authority adopts the
// new generation and the client reconnects and attests against it). Hence
// no certificate of an older mesh CA is handed out whose issuance
// completed after an update was acknowledged. A pointer that cannot be
// read, or that is not snap's generation nor a verified continuation of
// it, withholds the certificate too (ErrHeadUnconfirmed).
func (a *Authority) IssueMeshCert(ctx context.Context, snap *Snapshot, res *attest.Result, pub crypto.PublicKey) (*MeshCert, error) {
	ph, entry, ok := snap.Manifest.Policy(res.PolicyDigest)
	if !ok {
		return nil, fmt.Errorf("%w %x", ErrUnknownPolicy, res.PolicyDigest)
	}
	leaf, err := snap.Mesh.IssueLeafPEM(ca.LeafRequest{
		PublicKey: pub,
		SANs:      entry.SANs,
		Claims: ca.Claims{
			PolicyHash: string(ph), Platform: string(res.Platform),
			Measurement: fmt.Sprintf("%x", res.Measurement), ReferenceName: res.ReferenceName,
			TransitionHash: snap.Transition.String(),
		},
	}, a.cfg.Now())
	if err != nil {
		return nil, err
	}
	if err := a.confirmHead(ctx, snap); err != nil {
		return nil, err
	}
	mc := &MeshCert{Leaf: leaf, MeshCA: snap.Mesh.PEM, RootCA: snap.Root.PEM, PolicyHash: ph}
	if entry.WorkloadSecretID != "" {
		mc.WorkloadSecret = snap.secrets.WorkloadSecret(entry.WorkloadSecretID)
	}
	return mc, nil
}

// confirmHead checks that the stored latest pointer still names snap (see
// IssueMeshCert). The comparison is against snap's own, verified,
// transition and generation, so an equal pointer needs no signature check.
func (a *Authority) confirmHead(ctx context.Context, snap *Snapshot) error {
	l, err := a.head.read(ctx)
	if err != nil {
		return fmt.Errorf("%w: reading the latest pointer: %w", ErrHeadUnconfirmed, err)
	}
	if l.Latest.Transition == snap.Transition && l.Latest.Generation == snap.Generation {
		return nil
	}
	// Something else is stored: adopt it if it is a verified continuation.
	if err := a.Refresh(ctx); err == nil {
		if cur := a.cur.Load(); cur != nil && cur.Generation > snap.Generation {
			return fmt.Errorf("%w: generation %d replaced generation %d", ErrStaleGeneration, cur.Generation, snap.Generation)
		}
	}
	return fmt.Errorf("%w: the stored pointer names generation %d (transition %s), the active generation is %d",
		ErrHeadUnconfirmed, l.Latest.Generation, l.Latest.Transition, snap.Generation)
}
