// Package certcache fetches and caches the artifacts that SNP and TDX
// verification needs from AMD's Key Distribution Service and Intel's
// Provisioning Certification Service: VCEK certificates, certificate chains,
// CRLs, TCB info and QE identity.
//
// Documents are cached per namespace and URL. Namespace "" is the real vendor
// services; any other namespace (a simulated root) never touches the network,
// so that simulated and real artifacts served under the same URL can never mix.
//
// In offline mode nothing is fetched: evidence that carries its own chain and
// collateral still verifies, and a missing artifact yields a *MissingError
// naming the URL that was needed.
package certcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// maxBody bounds a fetched document.
const maxBody = 4 << 20

// Artifact is a fetched document with the response headers verification
// needs (Intel PCS returns issuer chains in headers).
type Artifact struct {
	URL       string
	Header    map[string]string
	Body      []byte
	FetchedAt time.Time
}

// MissingError reports an artifact that could not be obtained.
type MissingError struct {
	URL     string
	Offline bool
	Err     error
}

func (e *MissingError) Error() string {
	if e.Offline {
		return fmt.Sprintf("artifact %s is needed but not available offline", e.URL)
	}
	return fmt.Sprintf("fetching artifact %s: %v", e.URL, e.Err)
}

func (e *MissingError) Unwrap() error { return e.Err }

// ErrOffline is wrapped by MissingError in offline mode.
var ErrOffline = errors.New("offline mode")

// Config configures a Cache.
type Config struct {
	// Offline disables all network access.
	Offline bool
	// TTL is how long mutable documents (CRLs, TCB info, QE identity) are
	// served from the cache. Zero means one hour.
	TTL time.Duration
	// Client performs fetches; defaults to a client with a 30 s timeout.
	Client *http.Client
	// Now is the clock; defaults to time.Now.
	Now func() time.Time
	// Dir, if set, persists fetched artifacts of the real namespace so that
	// they survive restarts, and lets an operator pre-seed an offline
	// verifier. Files are named by the SHA-256 of the URL.
	Dir string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Cache is a concurrency-safe caching getter.
type Cache struct {
	cfg     Config
	mu      sync.Mutex
	entries map[key]*Artifact
}

type key struct{ ns, url string }

// New returns a Cache with defaults filled in.
func New(cfg Config) *Cache {
	if cfg.TTL == 0 {
		cfg.TTL = time.Hour
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Cache{cfg: cfg, entries: map[key]*Artifact{}}
}

// Offline reports whether the cache never fetches.
func (c *Cache) Offline() bool { return c.cfg.Offline }

// Put stores an artifact, e.g. one pre-seeded by an operator for offline use.
func (c *Cache) Put(ns string, a Artifact) {
	if a.FetchedAt.IsZero() {
		a.FetchedAt = c.cfg.Now()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[key{ns, a.URL}] = &a
}

// Get returns the artifact at url in namespace ns, from the cache when fresh,
// else from overlay (artifacts carried by the evidence), else from the network.
func (c *Cache) Get(ctx context.Context, ns, url string, overlay map[string]Artifact) (*Artifact, error) {
	now := c.cfg.Now()
	c.mu.Lock()
	cached, ok := c.entries[key{ns, url}]
	c.mu.Unlock()
	if !ok && ns == "" {
		if a := c.load(url); a != nil {
			cached, ok = a, true
			c.mu.Lock()
			c.entries[key{ns, url}] = a
			c.mu.Unlock()
		}
	}
	if ok && (immutable(url) || now.Sub(cached.FetchedAt) < c.cfg.TTL) {
		return cached, nil
	}
	if a, ok := overlay[url]; ok {
		return &a, nil
	}
	if ok && c.cfg.Offline {
		// A stale copy is the best we have; verification checks its validity period.
		return cached, nil
	}
	if c.cfg.Offline || ns != "" {
		return nil, &MissingError{URL: url, Offline: true, Err: ErrOffline}
	}
	a, err := c.fetch(ctx, url)
	if err != nil {
		if ok {
			c.cfg.Logger.Warn("refreshing artifact failed, serving stale copy", "url", url, "error", err)
			return cached, nil
		}
		return nil, &MissingError{URL: url, Err: err}
	}
	c.Put(ns, *a)
	if ns == "" {
		c.store(a)
	}
	return a, nil
}

type diskArtifact struct {
	URL       string
	Header    map[string]string
	Body      []byte
	FetchedAt time.Time
}

func (c *Cache) path(url string) string {
	sum := sha256.Sum256([]byte(url))
	return filepath.Join(c.cfg.Dir, hex.EncodeToString(sum[:])+".json")
}

// load reads a persisted artifact, or returns nil.
func (c *Cache) load(url string) *Artifact {
	if c.cfg.Dir == "" {
		return nil
	}
	data, err := os.ReadFile(c.path(url))
	if err != nil {
		return nil
	}
	var d diskArtifact
	if err := json.Unmarshal(data, &d); err != nil || d.URL != url {
		c.cfg.Logger.Warn("ignoring unreadable cached artifact", "url", url)
		return nil
	}
	return &Artifact{URL: d.URL, Header: d.Header, Body: d.Body, FetchedAt: d.FetchedAt}
}

// store persists an artifact, best effort.
func (c *Cache) store(a *Artifact) {
	if c.cfg.Dir == "" {
		return
	}
	data, err := json.Marshal(diskArtifact(*a))
	if err == nil {
		err = os.MkdirAll(c.cfg.Dir, 0o700)
	}
	if err == nil {
		tmp := c.path(a.URL) + ".tmp"
		if err = os.WriteFile(tmp, data, 0o600); err == nil {
			err = os.Rename(tmp, c.path(a.URL))
		}
	}
	if err != nil {
		c.cfg.Logger.Warn("persisting artifact failed", "url", a.URL, "error", err)
	}
}

// Seed stores an artifact in the real namespace, in memory and on disk, so
// an offline verifier can use it.
func (c *Cache) Seed(a Artifact) {
	c.Put("", a)
	c.store(&a)
}

func (c *Cache) fetch(ctx context.Context, url string) (*Artifact, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	resp, err := c.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("requesting: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("unexpected status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("body over %d bytes", maxBody)
	}
	hdr := map[string]string{}
	for k := range resp.Header {
		hdr[k] = resp.Header.Get(k)
	}
	c.cfg.Logger.Debug("fetched artifact", "url", url, "bytes", len(body))
	return &Artifact{URL: url, Header: hdr, Body: body, FetchedAt: c.cfg.Now()}, nil
}

// immutable reports whether the document at url never changes: VCEK/VLEK
// certificates (addressed by chip and TCB) and certificate chains.
func immutable(url string) bool {
	return !containsAny(url, "crl", "/tcb", "identity")
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// SEVGetter adapts the cache to go-sev-guest's trust.HTTPSGetter and
// trust.ContextHTTPSGetter for one validation.
type SEVGetter struct {
	Cache   *Cache
	NS      string
	Overlay map[string]Artifact
	Ctx     context.Context //nolint:containedctx // go-sev-guest's Get has no context parameter
}

// Get implements trust.HTTPSGetter.
func (g *SEVGetter) Get(url string) ([]byte, error) {
	return g.GetContext(g.Ctx, url)
}

// GetContext implements trust.ContextHTTPSGetter.
func (g *SEVGetter) GetContext(ctx context.Context, url string) ([]byte, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	a, err := g.Cache.Get(ctx, g.NS, url, g.Overlay)
	if err != nil {
		return nil, err
	}
	return a.Body, nil
}

// TDXGetter adapts the cache to go-tdx-guest's trust.HTTPSGetter.
type TDXGetter struct {
	Cache   *Cache
	NS      string
	Overlay map[string]Artifact
	Ctx     context.Context //nolint:containedctx // go-tdx-guest's Get has no context parameter
}

// Get implements go-tdx-guest's trust.HTTPSGetter.
func (g *TDXGetter) Get(url string) (map[string][]string, []byte, error) {
	ctx := g.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	a, err := g.Cache.Get(ctx, g.NS, url, g.Overlay)
	if err != nil {
		return nil, nil, err
	}
	hdr := make(map[string][]string, len(a.Header))
	for k, v := range a.Header {
		hdr[k] = []string{v}
	}
	return hdr, a.Body, nil
}
