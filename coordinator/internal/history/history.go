package history

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// ErrCorrupt reports a blob whose content does not match its hash, or a
// latest pointer whose signature does not verify.
var ErrCorrupt = errors.New("history integrity check failed")

// Hash is a SHA-256 content address.
type Hash [sha256.Size]byte

// HashOf returns the content address of data.
func HashOf(data []byte) Hash { return sha256.Sum256(data) }

// String returns the hex encoding.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is unset.
func (h Hash) IsZero() bool { return h == Hash{} }

// MarshalText encodes h as hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes hex.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*len(h) {
		return fmt.Errorf("hash must be %d hex characters", 2*len(h))
	}
	_, err := hex.Decode(h[:], b)
	if err != nil {
		return fmt.Errorf("decoding hash: %w", err)
	}
	return nil
}

// ParseHash decodes a hex hash; empty input gives the zero hash.
func ParseHash(b []byte) (Hash, error) {
	var h Hash
	if len(b) == 0 {
		return h, nil
	}
	if len(b) != len(h) {
		return h, fmt.Errorf("hash must be %d bytes, got %d", len(h), len(b))
	}
	copy(h[:], b)
	return h, nil
}

// Transition is one manifest update: generation n installs a manifest on
// top of the previous transition (zero for the first).
type Transition struct {
	Generation     uint64
	Previous       Hash
	Manifest       Hash
	Policies       []Hash
	RootCA, MeshCA Hash
}

// Latest is the signed pointer to the latest transition.
//
// The signature covers the generation and the transition together, so the
// pointer states which generation it claims to be latest. It cannot prove
// that it is the newest pointer ever signed: the store is not trusted and
// keeps no monotonic counter, so an older signed pointer put back into the
// store still verifies. Detecting such a rollback needs someone who
// remembers a later generation: the workload owner, through Recover's
// expected latest transition (see package state).
type Latest struct {
	Transition Hash
	Generation uint64
	Signature  []byte
}

// signatureContext separates the pointer signature from every other use of
// the history-signing key; v2 signs the generation with the transition (v1
// signed the transition alone and is not accepted).
const signatureContext = "contrast-history-latest-v2\x00"

func signedBytes(generation uint64, h Hash) []byte {
	b := make([]byte, 0, len(signatureContext)+8+len(h))
	b = append(b, signatureContext...)
	b = binary.BigEndian.AppendUint64(b, generation)
	return append(b, h[:]...)
}

// ErrSignature reports a latest pointer whose signature does not verify
// with the given key (it wraps ErrCorrupt).
var ErrSignature = fmt.Errorf("%w: signature of the latest pointer does not verify", ErrCorrupt)

// History reads and writes the history through a Store, checking content
// hashes on every read.
type History struct {
	store Store
	cache sync.Map // kind/hash → verified immutable blob
}

// New returns a History over store.
func New(store Store) *History { return &History{store: store} }

// Put stores a blob and returns its hash.
func (h *History) Put(ctx context.Context, kind Kind, data []byte) (Hash, error) {
	hash := HashOf(data)
	if err := h.store.PutBlob(ctx, kind, hash.String(), data); err != nil {
		return hash, err
	}
	return hash, nil
}

// Get returns a blob, checking that it has the requested hash.
func (h *History) Get(ctx context.Context, kind Kind, hash Hash) ([]byte, error) {
	key := string(kind) + "/" + hash.String()
	if v, ok := h.cache.Load(key); ok {
		return v.([]byte), nil
	}
	data, err := h.store.GetBlob(ctx, kind, hash.String())
	if err != nil {
		return nil, fmt.Errorf("reading %s %s: %w", kind, hash, err)
	}
	if HashOf(data) != hash {
		return nil, fmt.Errorf("%w: %s %s has different content", ErrCorrupt, kind, hash)
	}
	h.cache.Store(key, data)
	return data, nil
}

// PutTransition stores t.
func (h *History) PutTransition(ctx context.Context, t *Transition) (Hash, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return Hash{}, fmt.Errorf("encoding transition: %w", err)
	}
	return h.Put(ctx, KindTransition, b)
}

// GetTransition reads and verifies a transition.
func (h *History) GetTransition(ctx context.Context, hash Hash) (*Transition, error) {
	b, err := h.Get(ctx, KindTransition, hash)
	if err != nil {
		return nil, err
	}
	var t Transition
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%w: decoding transition %s: %w", ErrCorrupt, hash, err)
	}
	return &t, nil
}

// HasBlobs reports whether any blob of the given kinds is stored.
func (h *History) HasBlobs(ctx context.Context, kinds ...Kind) (bool, error) {
	ok, err := h.store.HasBlobs(ctx, kinds...)
	if err != nil {
		return false, fmt.Errorf("looking for %v in the history: %w", kinds, err)
	}
	return ok, nil
}

// LatestState is the latest pointer as read from the store.
type LatestState struct {
	Latest  Latest
	Version string
}

// GetLatest reads the latest pointer without verifying its signature (the
// verifier needs the seed); ErrNotFound when the history is empty.
func (h *History) GetLatest(ctx context.Context) (*LatestState, error) {
	b, v, err := h.store.GetLatest(ctx)
	if err != nil {
		return nil, err
	}
	var l Latest
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%w: decoding latest: %w", ErrCorrupt, err)
	}
	return &LatestState{Latest: l, Version: v}, nil
}

// Verify checks the signature of the latest pointer over its generation and
// transition (ErrSignature if it does not verify with pub).
func (l *Latest) Verify(pub ed25519.PublicKey) error {
	if l.Generation == 0 || l.Transition.IsZero() {
		return fmt.Errorf("%w: the latest pointer has no generation or transition (written by an older Coordinator?)", ErrCorrupt)
	}
	if !ed25519.Verify(pub, signedBytes(l.Generation, l.Transition), l.Signature) {
		return ErrSignature
	}
	return nil
}

// SwapLatest signs and stores a pointer to transition, which has
// generation, if the stored pointer still has oldVersion ("" when the
// history is empty).
func (h *History) SwapLatest(ctx context.Context, oldVersion string, transition Hash, generation uint64, key ed25519.PrivateKey) (string, error) {
	l := Latest{Transition: transition, Generation: generation, Signature: ed25519.Sign(key, signedBytes(generation, transition))}
	b, err := json.Marshal(l)
	if err != nil {
		return "", fmt.Errorf("encoding latest: %w", err)
	}
	return h.store.SwapLatest(ctx, oldVersion, b)
}

// WatchLatest calls changed whenever the stored latest pointer may have
// changed, until ctx is done (see Store.WatchLatest).
func (h *History) WatchLatest(ctx context.Context, changed func()) { h.store.WatchLatest(ctx, changed) }

// Chain returns the transitions from the first to the one at head, oldest
// first, checking that the generations count up without gaps.
func (h *History) Chain(ctx context.Context, head Hash) ([]*Transition, error) {
	var rev []*Transition
	for cur := head; !cur.IsZero(); {
		t, err := h.GetTransition(ctx, cur)
		if err != nil {
			return nil, err
		}
		rev = append(rev, t)
		if t.Generation == 1 {
			if !t.Previous.IsZero() {
				return nil, fmt.Errorf("%w: generation 1 has a predecessor", ErrCorrupt)
			}
			break
		}
		if len(rev) > 1<<16 {
			return nil, fmt.Errorf("%w: history longer than %d transitions", ErrCorrupt, 1<<16)
		}
		cur = t.Previous
	}
	out := make([]*Transition, len(rev))
	for i, t := range rev {
		out[len(rev)-1-i] = t
	}
	for i, t := range out {
		if t.Generation != uint64(i+1) { //nolint:gosec // i ≥ 0
			return nil, fmt.Errorf("%w: transition %d has generation %d", ErrCorrupt, i+1, t.Generation)
		}
	}
	return out, nil
}
