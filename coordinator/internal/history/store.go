// Package history persists the Coordinator's manifest history (DESIGN.md
// §5): content-addressed manifests, policies, CA certificates and
// transitions, and a signed pointer to the latest transition. The store
// needs integrity only from the hash chain and the signature, not
// confidentiality: nothing secret is stored.
package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// ErrNotFound reports a missing blob or an absent latest pointer.
var ErrNotFound = errors.New("not found in history store")

// ErrConflict reports a failed compare-and-swap of the latest pointer.
var ErrConflict = errors.New("latest transition changed concurrently")

// Store is the persistence backend. Blobs are immutable and content
// addressed; the latest pointer is swapped with compare-and-swap on an
// opaque version.
type Store interface {
	// GetBlob returns the blob of kind with the hex SHA-256 hash.
	GetBlob(ctx context.Context, kind Kind, hash string) ([]byte, error)
	// PutBlob stores an immutable blob; storing the same blob again is a
	// no-op. If a blob with other content is stored under the address, it
	// fails with ErrCorrupt.
	PutBlob(ctx context.Context, kind Kind, hash string, data []byte) error
	// HasBlobs reports whether any blob of the given kinds is stored.
	HasBlobs(ctx context.Context, kinds ...Kind) (bool, error)
	// GetLatest returns the latest pointer and its version (ErrNotFound if unset).
	GetLatest(ctx context.Context) (data []byte, version string, err error)
	// SwapLatest replaces the latest pointer if its version is still
	// oldVersion ("" = it must not exist yet), returning the new version;
	// otherwise ErrConflict.
	SwapLatest(ctx context.Context, oldVersion string, data []byte) (string, error)
	// WatchLatest calls changed whenever the latest pointer may have
	// changed (created, replaced, deleted), and whenever the watch had to
	// be re-established (events may have been missed), until ctx is done.
	// changed must not block. It is a hint to re-read, never a value:
	// readers verify what they read.
	WatchLatest(ctx context.Context, changed func())
}

// Kind is the kind of a blob.
type Kind string

// Blob kinds.
const (
	KindManifest   Kind = "manifest"
	KindPolicy     Kind = "policy"
	KindTransition Kind = "transition"
	KindCert       Kind = "cert"
)

// MemStore is an in-memory Store for unit tests.
type MemStore struct {
	mu       sync.Mutex
	blobs    map[string][]byte
	latest   []byte
	version  int
	watchers map[*func()]struct{}
}

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore {
	return &MemStore{blobs: map[string][]byte{}, watchers: map[*func()]struct{}{}}
}

// WatchLatest implements Store.
func (s *MemStore) WatchLatest(ctx context.Context, changed func()) {
	s.mu.Lock()
	s.watchers[&changed] = struct{}{}
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	delete(s.watchers, &changed)
	s.mu.Unlock()
}

// notifyLocked tells every watcher that the latest pointer changed.
func (s *MemStore) notifyLocked() {
	for f := range s.watchers {
		(*f)()
	}
}

// GetBlob implements Store.
func (s *MemStore) GetBlob(_ context.Context, kind Kind, hash string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[string(kind)+"/"+hash]
	if !ok {
		return nil, ErrNotFound
	}
	return append([]byte(nil), b...), nil
}

// PutBlob implements Store.
func (s *MemStore) PutBlob(_ context.Context, kind Kind, hash string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := string(kind) + "/" + hash
	if old, ok := s.blobs[key]; ok {
		if !bytes.Equal(old, data) {
			return fmt.Errorf("%w: %s %s exists with other content", ErrCorrupt, kind, hash)
		}
		return nil
	}
	s.blobs[key] = append([]byte(nil), data...)
	return nil
}

// HasBlobs implements Store.
func (s *MemStore) HasBlobs(_ context.Context, kinds ...Kind) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key := range s.blobs {
		for _, k := range kinds {
			if strings.HasPrefix(key, string(k)+"/") {
				return true, nil
			}
		}
	}
	return false, nil
}

// GetLatest implements Store.
func (s *MemStore) GetLatest(context.Context) ([]byte, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest == nil {
		return nil, "", ErrNotFound
	}
	return append([]byte(nil), s.latest...), versionString(s.version), nil
}

// SwapLatest implements Store.
func (s *MemStore) SwapLatest(_ context.Context, oldVersion string, data []byte) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := ""
	if s.latest != nil {
		cur = versionString(s.version)
	}
	if cur != oldVersion {
		return "", ErrConflict
	}
	s.version++
	s.latest = append([]byte(nil), data...)
	s.notifyLocked()
	return versionString(s.version), nil
}

// Corrupt overwrites a stored blob (for tests of integrity checks).
func (s *MemStore) Corrupt(kind Kind, hash string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[string(kind)+"/"+hash] = data
}

// SetLatestRaw overwrites the latest pointer without compare-and-swap, as
// someone controlling the store could (for tests); nil deletes it.
func (s *MemStore) SetLatestRaw(data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version++
	s.latest = nil
	if data != nil {
		s.latest = append([]byte(nil), data...)
	}
	s.notifyLocked()
}

func versionString(v int) string { return strconv.Itoa(v) }
