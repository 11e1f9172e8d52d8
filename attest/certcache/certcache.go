// Package certcache fetches and caches the artifacts that SNP and TDX
// verification needs from AMD's Key Distribution Service and Intel's
// Provisioning Certification Service: VCEK certificates, certificate chains,
// CRLs, TCB info and QE identity.
//
// Documents are cached per namespace and URL, and the caller names each
// document's Kind: certificates never change and are cached until evicted;
// CRLs, TCB info and QE identity are refreshed after the TTL. Namespace "" is
// the real vendor services; any other namespace (a simulated root) never
// touches the network, so that simulated and real artifacts served under the
// same URL can never mix.
//
// The cache is a getter, not a judge: it never decides that a document is
// valid or fresh enough. The validators verify every document's signature and
// validity period and choose between the cache's copy and a copy the evidence
// carries (see Artifact.FetchedAt).
//
// Requests to the vendors are bounded, because evidence names what is
// fetched and an unauthenticated peer chooses the evidence: concurrent
// requests for one URL share one fetch, a failed fetch is not repeated for
// NegativeTTL, and each source (AMD KDS, Intel PCS) has its own token bucket
// (FetchRate, FetchBurst). An Observer counts the outcomes.
//
// In offline mode nothing is fetched: only documents already cached (seeded
// by an operator through Dir or Seed) are served, and a missing artifact
// yields a *MissingError naming the URL that was needed.
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
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// maxBody bounds a fetched document.
const maxBody = 4 << 20

// maxNegative bounds the negative cache; it is cleared when full.
const maxNegative = 4096

// Kind classifies a document by what it is, which decides how long it is
// cached.
type Kind int

// The kinds of documents.
const (
	// KindCertificate is a VCEK/VLEK certificate (addressed by chip and
	// TCB) or a certificate chain: it never changes.
	KindCertificate Kind = iota
	// KindCRL is a certificate revocation list (AMD ARK/ASK CRLs, Intel PCK
	// and root CA CRLs).
	KindCRL
	// KindTCBInfo is Intel's TCB info.
	KindTCBInfo
	// KindQEIdentity is Intel's QE identity.
	KindQEIdentity
)

// Mutable reports whether documents of kind k are reissued, so that a
// cached copy must be refreshed.
func (k Kind) Mutable() bool { return k != KindCertificate }

func (k Kind) String() string {
	switch k {
	case KindCertificate:
		return "certificate"
	case KindCRL:
		return "crl"
	case KindTCBInfo:
		return "tcb-info"
	case KindQEIdentity:
		return "qe-identity"
	default:
		return fmt.Sprintf("kind(%d)", int(k))
	}
}

// Source is the vendor service a URL belongs to; rate limits and metrics
// are per source.
type Source string

// The sources.
const (
	SourceKDS   Source = "kds"
	SourcePCS   Source = "pcs"
	SourceOther Source = "other"
)

// SourceOf returns the source of a URL by its host.
func SourceOf(rawURL string) Source {
	u, err := url.Parse(rawURL)
	if err != nil {
		return SourceOther
	}
	switch u.Hostname() {
	case "kdsintf.amd.com":
		return SourceKDS
	case "api.trustedservices.intel.com", "certificates.trustedservices.intel.com":
		return SourcePCS
	default:
		return SourceOther
	}
}

// FetchResult is the outcome of a request that needed the network.
type FetchResult string

// The fetch results.
const (
	// FetchOK: fetched.
	FetchOK FetchResult = "ok"
	// FetchError: the fetch failed (network, status, size).
	FetchError FetchResult = "error"
	// FetchShared: waited for a concurrent fetch of the same URL.
	FetchShared FetchResult = "shared"
	// FetchNegativeCached: refused because the URL failed recently.
	FetchNegativeCached FetchResult = "negative-cached"
	// FetchRateLimited: refused because the source's budget was spent.
	FetchRateLimited FetchResult = "rate-limited"
)

// Observer receives the outcome of every request that needed the network.
// It must be safe for concurrent use and must not block.
type Observer interface {
	ObserveFetch(source Source, result FetchResult)
}

// Artifact is a fetched document with the response headers verification
// needs (Intel PCS returns issuer chains in headers).
type Artifact struct {
	URL    string
	Header map[string]string
	Body   []byte
	// FetchedAt is when this verifier obtained the document from its
	// vendor (or an operator seeded it): the document was current then.
	// Zero for a copy carried by evidence, which proves nothing about when
	// it was current beyond its own signed issue date.
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

var (
	// ErrOffline is wrapped by MissingError in offline mode.
	ErrOffline = errors.New("offline mode")
	// ErrRecentlyFailed is wrapped by MissingError when the URL failed
	// within NegativeTTL and is not requested again yet.
	ErrRecentlyFailed = errors.New("fetch failed recently, not retried yet")
	// ErrRateLimited is wrapped by MissingError when the source's request
	// budget is spent.
	ErrRateLimited = errors.New("request budget of the vendor service spent")
)

// Config configures a Cache.
type Config struct {
	// Offline disables all network access.
	Offline bool
	// TTL is how long mutable documents (CRLs, TCB info, QE identity) are
	// served from the cache before they are refetched. Zero means one hour.
	TTL time.Duration
	// NegativeTTL is how long a failed fetch is not repeated. Zero means
	// one minute.
	NegativeTTL time.Duration
	// FetchRate is the sustained number of fetches per second allowed per
	// source (AMD KDS, Intel PCS). Zero means 1.
	FetchRate float64
	// FetchBurst is the number of fetches per source allowed at once.
	// Zero means 10.
	FetchBurst int
	// Client performs fetches; defaults to a client with a 30 s timeout.
	Client *http.Client
	// Now is the clock; defaults to time.Now.
	Now func() time.Time
	// Dir, if set, persists fetched artifacts of the real namespace so that
	// they survive restarts, and lets an operator pre-seed an offline
	// verifier. Files are named by the SHA-256 of the URL.
	Dir string
	// Observer, if set, counts fetch outcomes.
	Observer Observer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Cache is a concurrency-safe caching getter.
type Cache struct {
	cfg      Config
	observer atomic.Pointer[observerBox]
	mu       sync.Mutex
	entries  map[key]*Artifact
	negative map[string]time.Time
	inflight map[string]*call
	buckets  map[Source]*bucket
}

type key struct{ ns, url string }

type observerBox struct{ o Observer }

// call is a fetch in progress that concurrent requests wait for.
type call struct {
	done chan struct{}
	a    *Artifact
	err  error
}

// bucket is a token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a Cache with defaults filled in.
func New(cfg Config) *Cache {
	if cfg.TTL == 0 {
		cfg.TTL = time.Hour
	}
	if cfg.NegativeTTL == 0 {
		cfg.NegativeTTL = time.Minute
	}
	if cfg.FetchRate == 0 {
		cfg.FetchRate = 1
	}
	if cfg.FetchBurst == 0 {
		cfg.FetchBurst = 10
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
	c := &Cache{
		cfg: cfg, entries: map[key]*Artifact{}, negative: map[string]time.Time{},
		inflight: map[string]*call{}, buckets: map[Source]*bucket{},
	}
	c.SetObserver(cfg.Observer)
	return c
}

// SetObserver replaces the observer of fetch outcomes (nil: none), e.g.
// once the metrics of the component that owns the cache exist.
func (c *Cache) SetObserver(o Observer) {
	c.observer.Store(&observerBox{o: o})
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

// Get returns this verifier's own copy of the document at url in namespace
// ns: from the cache while fresh (a certificate always; a mutable document
// for TTL), else fetched from the vendor, else a stale cached copy when
// the fetch fails or the cache is offline. Documents carried by evidence are
// not consulted here; the validators weigh them against this copy.
func (c *Cache) Get(ctx context.Context, ns, url string, kind Kind) (*Artifact, error) {
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
	if ok && (!kind.Mutable() || now.Sub(cached.FetchedAt) < c.cfg.TTL) {
		return cached, nil
	}
	if ok && c.cfg.Offline {
		// A stale copy is the best we have; the validator checks its
		// validity period and age.
		return cached, nil
	}
	if c.cfg.Offline || ns != "" {
		return nil, &MissingError{URL: url, Offline: true, Err: ErrOffline}
	}
	a, err := c.fetchBounded(ctx, url)
	if err != nil {
		if ok {
			c.cfg.Logger.Warn("refreshing artifact failed, serving stale copy", "url", url, "kind", kind, "error", err)
			return cached, nil
		}
		return nil, err
	}
	return a, nil
}

func (c *Cache) observe(src Source, r FetchResult) {
	if b := c.observer.Load(); b != nil && b.o != nil {
		b.o.ObserveFetch(src, r)
	}
}

// allow takes a token from src's bucket. Requires c.mu.
func (c *Cache) allow(src Source, now time.Time) bool {
	b, ok := c.buckets[src]
	if !ok {
		b = &bucket{tokens: float64(c.cfg.FetchBurst), last: now}
		c.buckets[src] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(c.cfg.FetchBurst), b.tokens+d.Seconds()*c.cfg.FetchRate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// fetchBounded fetches url into the real namespace: one fetch per URL at a
// time, none while a recent failure is negatively cached, none beyond the
// source's budget.
func (c *Cache) fetchBounded(ctx context.Context, url string) (*Artifact, error) {
	src := SourceOf(url)
	now := c.cfg.Now()
	c.mu.Lock()
	if cl, ok := c.inflight[url]; ok {
		c.mu.Unlock()
		c.observe(src, FetchShared)
		select {
		case <-cl.done:
			return cl.a, cl.err
		case <-ctx.Done():
			return nil, &MissingError{URL: url, Err: ctx.Err()}
		}
	}
	if until, ok := c.negative[url]; ok && now.Before(until) {
		c.mu.Unlock()
		c.observe(src, FetchNegativeCached)
		return nil, &MissingError{URL: url, Err: ErrRecentlyFailed}
	}
	if !c.allow(src, now) {
		c.mu.Unlock()
		c.observe(src, FetchRateLimited)
		return nil, &MissingError{URL: url, Err: ErrRateLimited}
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[url] = cl
	c.mu.Unlock()

	// The fetch serves every waiter, so one caller's cancellation must not
	// fail the others; the client's timeout bounds it.
	a, err := c.fetch(context.WithoutCancel(ctx), url)
	c.mu.Lock()
	delete(c.inflight, url)
	if err != nil {
		if len(c.negative) >= maxNegative {
			clear(c.negative)
		}
		c.negative[url] = c.cfg.Now().Add(c.cfg.NegativeTTL)
		cl.err = &MissingError{URL: url, Err: err}
	} else {
		delete(c.negative, url)
		c.entries[key{"", url}] = a
		cl.a = a
	}
	c.mu.Unlock()
	close(cl.done)
	if err != nil {
		c.observe(src, FetchError)
		return nil, cl.err
	}
	c.observe(src, FetchOK)
	c.store(a)
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

// SEVGetter adapts the cache to go-sev-guest's trust.HTTPSGetter and
// trust.ContextHTTPSGetter for one validation. go-sev-guest fetches only
// certificates through it (VCEK/VLEK, ASK/ARK chain): a certificate the
// evidence carries (Overlay) is used as is, since go-sev-guest verifies it
// against the trusted root. Revocation is checked by the validator, not
// through this getter.
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
	if a, ok := g.Overlay[url]; ok {
		return a.Body, nil
	}
	a, err := g.Cache.Get(ctx, g.NS, url, KindCertificate)
	if err != nil {
		return nil, err
	}
	return a.Body, nil
}
