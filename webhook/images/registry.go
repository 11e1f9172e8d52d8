package images

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/singleflight"
)

// Mirror is a registry host that serves a registry's content, like a
// `[host."..."]` entry of containerd's hosts.toml.
type Mirror struct {
	// Host is host[:port] of the mirror.
	Host string
	// Insecure selects plain HTTP (HTTPS is tried first).
	Insecure bool
}

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	// Mirrors maps a registry host (as written in image names, e.g.
	// docker.l5d.io or docker.io) to mirrors tried in order before it.
	Mirrors map[string][]Mirror
	// SkipOrigin lists registries that are only reached through their
	// mirrors (air-gapped clusters).
	SkipOrigin []string
	// Platform selects the image of a multi-platform index (default
	// linux/amd64).
	Platform *v1.Platform
	// MaxConcurrent bounds concurrent registry operations (default 8).
	MaxConcurrent int
	// Insecure lists registries (host[:port] as written in image names) that
	// are reached over plain HTTP. Every other registry, and every mirror
	// without Insecure, is reached over HTTPS only: go-containerregistry's
	// plain-HTTP fallback for local and private addresses does not apply.
	Insecure []string
	// Transport is the HTTP transport (default remote.DefaultTransport).
	Transport http.RoundTripper
	// Keychain is the webhook's own credentials (default
	// authn.DefaultKeychain): used for lookups without a keychain and after
	// the pull secrets of a NewPodKeychain.
	Keychain authn.Keychain
	// Logger receives failed registry requests at debug level, classified,
	// with status code and URL but never a response body (default none).
	Logger *slog.Logger
	// Observer receives every manifest, config and accounts lookup with
	// its result (cache hit, fetched, failed) and duration (default none).
	Observer Observer
	// TagTTL is how long a tag's resolution to a manifest digest is reused
	// (per credential scope, like every cache of the Registry); concurrent
	// resolutions of one tag share one fetch. 0 disables both: every
	// lookup of a tag asks the registry. A tag moved within the TTL is
	// resolved to its previous digest until the entry expires.
	TagTTL time.Duration
}

// maxCachedDigests bounds each cache of a Registry (configs, accounts); a
// full cache is emptied, as the webhook's own cache is.
const maxCachedDigests = 4096

// Registry is the production Source: it talks to OCI registries with
// go-containerregistry, caches by digest and credentials (see cacheKey) and honors mirrors.
type Registry struct {
	cfg RegistryConfig
	sem chan struct{}

	tagFlight singleflight.Group
	now       func() time.Time

	mu       sync.Mutex
	configs  map[string]Config    // by manifest digest
	accounts map[string]*Accounts // by manifest digest
	tags     map[string]tagEntry  // by tag reference and credential scope
}

// tagEntry is a tag's resolution, reused until expires.
type tagEntry struct {
	digest  string
	expires time.Time
}

// NewRegistry returns a Registry.
func NewRegistry(cfg RegistryConfig) *Registry {
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 8
	}
	if cfg.Platform == nil {
		cfg.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	if cfg.Transport == nil {
		cfg.Transport = remote.DefaultTransport
	}
	insecure := slices.Clone(cfg.Insecure)
	for _, ms := range cfg.Mirrors {
		for _, m := range ms {
			if m.Insecure {
				insecure = append(insecure, m.Host)
			}
		}
	}
	cfg.Transport = newHTTPSOnly(cfg.Transport, insecure)
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Keychain == nil {
		cfg.Keychain = authn.DefaultKeychain
	}
	return &Registry{
		cfg:      cfg,
		sem:      make(chan struct{}, cfg.MaxConcurrent),
		configs:  map[string]Config{},
		accounts: map[string]*Accounts{},
		tags:     map[string]tagEntry{},
		now:      time.Now,
	}
}

// storeBounded adds k to the cache m, emptying m first when it is full.
func storeBounded[V any](m map[string]V, k string, v V) {
	if _, ok := m[k]; !ok && len(m) >= maxCachedDigests {
		clear(m)
	}
	m[k] = v
}

func (r *Registry) acquire(ctx context.Context) error {
	select {
	case r.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Registry) release() { <-r.sem }

func (r *Registry) observe(kind LookupKind, result LookupResult, start time.Time) {
	r.cfg.Observer.ObserveLookup(kind, result, time.Since(start))
}

func (r *Registry) cachedConfig(key string) (Config, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg, ok := r.configs[key]
	return cfg, ok
}

// credScope returns the credential scope of what is fetched from repo with
// keychain kc, or false if it must not be cached. What was fetched for a
// digest is cached under the digest and the scope (see cacheKey). Contents
// are immutable per digest, but access is not: an entry fetched with pull
// secrets is visible only to lookups that present the same credentials for
// every endpoint of the repository (origin and mirrors), so a pod without
// them cannot learn a private image's configuration or accounts from the
// cache. Lookups without a keychain share one scope, the webhook's own
// (like the kubelet's node credentials); so do the lookups of a
// NewPodKeychain whose pull secrets have nothing for any endpoint, which
// use exactly the webhook's credentials.
func (r *Registry) credScope(repo name.Repository, kc authn.Keychain) (string, bool) {
	if kc == nil {
		return "", true
	}
	eps, rs := r.endpoints(repo)
	if rs != nil {
		return "", false
	}
	pod, fallback := kc.(*podKeychain)
	if fallback {
		kc = pod.pull
	}
	h := sha256.New()
	write := func(s string) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	own := true
	for _, ep := range eps {
		a, err := kc.Resolve(ep.repo)
		if err != nil {
			return "", false
		}
		write(ep.repo.RegistryStr())
		if fallback && a == authn.Anonymous {
			// the multi-keychain goes on to the webhook's credentials,
			// as authn.NewMultiKeychain does
			h.Write([]byte{'w'})
			continue
		}
		own = false
		cfg, err := a.Authorization()
		if err != nil {
			return "", false
		}
		h.Write([]byte{'c'})
		for _, f := range []string{cfg.Username, cfg.Password, cfg.Auth, cfg.IdentityToken, cfg.RegistryToken} {
			write(f)
		}
	}
	if fallback && own {
		return "", true
	}
	return "|" + hex.EncodeToString(h.Sum(nil)), true
}

// cacheKey returns the key under which what was fetched for digest in the
// credential scope (see credScope) is cached.
func cacheKey(digest, scope string) string { return digest + scope }

// keychain returns the keychain lookups with kc use.
func (r *Registry) keychain(kc authn.Keychain) authn.Keychain {
	switch k := kc.(type) {
	case nil:
		return r.cfg.Keychain
	case *podKeychain:
		return authn.NewMultiKeychain(k.pull, r.cfg.Keychain)
	default:
		return kc
	}
}

// endpoint is one place to fetch a repository from.
type endpoint struct {
	repo name.Repository
}

// endpoints returns the mirrors of repo's registry and, unless skipped, the
// registry itself.
func (r *Registry) endpoints(repo name.Repository) ([]endpoint, *reason) {
	reg := repo.RegistryStr()
	keys := []string{reg}
	if reg == name.DefaultRegistry {
		keys = append(keys, "docker.io")
	}
	var eps []endpoint
	skip, insecure := false, false
	for _, k := range keys {
		for _, m := range r.cfg.Mirrors[k] {
			var opts []name.Option
			if m.Insecure {
				opts = append(opts, name.Insecure)
			}
			mr, err := name.NewRepository(m.Host+"/"+repo.RepositoryStr(), opts...)
			if err != nil {
				r.cfg.Logger.Debug("invalid mirror", "mirror", m.Host, "registry", k, "error", err.Error())
				return nil, newReason(ErrNoEndpoint, 5, "a mirror of the registry is invalid")
			}
			eps = append(eps, endpoint{repo: mr})
		}
		skip = skip || slices.Contains(r.cfg.SkipOrigin, k)
		insecure = insecure || slices.Contains(r.cfg.Insecure, k)
	}
	if !skip {
		origin := repo
		if insecure {
			var err error
			if origin, err = name.NewRepository(repo.Name(), name.Insecure); err != nil {
				return nil, newReason(ErrInvalidReference, 5, "invalid image reference")
			}
		}
		eps = append(eps, endpoint{repo: origin})
	}
	if len(eps) == 0 {
		return nil, newReason(ErrNoEndpoint, 5, "no registry endpoint: the registry is reached only through mirrors and none is configured")
	}
	return eps, nil
}

func (r *Registry) options(ctx context.Context, kc authn.Keychain) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(r.keychain(kc)),
		remote.WithTransport(r.cfg.Transport),
		remote.WithPlatform(*r.cfg.Platform),
	}
}

// Resolve implements Source. It fetches only the manifest (and index) and
// the config blob; configs are cached by digest. Its errors are *Error with
// a classified reason (see errors.go).
func (r *Registry) Resolve(ctx context.Context, image string, kc authn.Keychain) (*Image, error) {
	img, err := r.resolve(ctx, image, kc)
	if err != nil {
		return nil, &Error{Image: image, Err: err}
	}
	return img, nil
}

// fail logs err, a failure at endpoint host (empty if no registry was
// contacted), at debug level and returns its reason.
func (r *Registry) fail(ctx context.Context, image, host, step string, err error) *reason {
	rs := classify(err)
	if !r.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		return rs
	}
	attrs := append([]any{"image", image, "step", step, "reason", rs.msg}, logAttrs(err)...)
	if host != "" {
		attrs = append(attrs, "endpoint", host)
	}
	r.cfg.Logger.DebugContext(ctx, "registry request failed", attrs...)
	return rs
}

func (r *Registry) resolve(ctx context.Context, image string, kc authn.Keychain) (*Image, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return nil, newReason(ErrInvalidReference, 5, "invalid image reference")
	}
	scope, cacheable := r.credScope(ref.Context(), kc)
	tag, isTag := ref.(name.Tag)
	if !isTag || !cacheable || r.cfg.TagTTL <= 0 {
		return r.resolveRef(ctx, image, ref, kc, scope, cacheable, "")
	}
	start := time.Now()
	key := tag.Name() + "|" + scope
	r.mu.Lock()
	e, ok := r.tags[key]
	r.mu.Unlock()
	if ok && r.now().Before(e.expires) {
		// resolved within the TTL: as if the reference pinned the digest
		// (the configuration comes from the cache, or by digest)
		return r.resolveRef(ctx, image, ref, kc, scope, cacheable, e.digest)
	}
	leader := false
	v, err, _ := r.tagFlight.Do(key, func() (any, error) {
		leader = true
		img, err := r.resolveRef(ctx, image, ref, kc, scope, cacheable, "")
		if err == nil {
			r.mu.Lock()
			storeBounded(r.tags, key, tagEntry{digest: img.Digest, expires: r.now().Add(r.cfg.TagTTL)})
			r.mu.Unlock()
		}
		return img, err
	})
	if leader {
		if err != nil {
			return nil, err
		}
		img, _ := v.(*Image)
		return img, nil
	}
	if err != nil {
		if ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			// the lookup this one waited for was canceled, not this one
			return r.resolveRef(ctx, image, ref, kc, scope, cacheable, "")
		}
		r.observe(KindManifest, ResultShared, start)
		return nil, err
	}
	r.observe(KindManifest, ResultShared, start)
	img, _ := v.(*Image)
	cp := *img
	return &cp, nil
}

// resolveRef resolves ref. A non-empty digest is the digest a tag was
// resolved to within the TagTTL: the manifest is then looked up by it.
func (r *Registry) resolveRef(ctx context.Context, image string, ref name.Reference, kc authn.Keychain, scope string, cacheable bool, digest string) (*Image, error) {
	out := &Image{Repository: ref.Context().Name()}
	start := time.Now()
	d, pinned := ref.(name.Digest)
	if digest != "" {
		d, pinned = ref.Context().Digest(digest), true
		ref = d
	}
	if pinned {
		out.Digest = d.DigestStr()
		if cacheable {
			if cfg, ok := r.cachedConfig(cacheKey(out.Digest, scope)); ok {
				r.observe(KindManifest, ResultHit, start)
				r.observe(KindConfig, ResultHit, start)
				out.Config = cfg
				return out, nil
			}
		}
	}
	if err := r.acquire(ctx); err != nil {
		r.observe(KindManifest, ResultError, start)
		return nil, r.fail(ctx, image, "", "waiting for a free slot", err)
	}
	defer r.release()
	img, digest, host, err := r.manifest(ctx, image, ref, out.Digest, kc)
	if err != nil {
		r.observe(KindManifest, ResultError, start)
		return nil, err
	}
	r.observe(KindManifest, ResultMiss, start)
	out.Digest = digest

	start = time.Now()
	key := cacheKey(digest, scope)
	if cacheable && !pinned { // a pinned digest was looked up above
		if cfg, ok := r.cachedConfig(key); ok {
			r.observe(KindConfig, ResultHit, start)
			out.Config = cfg
			return out, nil
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		r.observe(KindConfig, ResultError, start)
		return nil, r.fail(ctx, image, host, "reading the image configuration", err)
	}
	out.Config = configFrom(cf)
	if cacheable {
		r.mu.Lock()
		storeBounded(r.configs, key, out.Config)
		r.mu.Unlock()
	}
	r.observe(KindConfig, ResultMiss, start)
	return out, nil
}

// manifest fetches the manifest of ref from the first endpoint that has it
// and returns the image, its digest and the registry host that served it.
// A non-empty want is the digest the reference pins. The error is a
// *reason: that of the most telling endpoint failure.
func (r *Registry) manifest(ctx context.Context, image string, ref name.Reference, want string, kc authn.Keychain) (v1.Image, string, string, error) {
	eps, ers := r.endpoints(ref.Context())
	if ers != nil {
		return nil, "", "", ers
	}
	var rs []*reason
	for _, ep := range eps {
		host := ep.repo.RegistryStr()
		img, digest, err := r.fetch(ctx, image, ep, ref, kc)
		if err != nil {
			rs = append(rs, err)
			continue
		}
		if want != "" && digest != want {
			r.cfg.Logger.Debug("registry served another digest", "image", image, "endpoint", host, "digest", digest, "want", want)
			return nil, "", "", newReason(ErrInvalidImage, 5, "the registry served another digest than the reference pins")
		}
		return img, digest, host, nil
	}
	return nil, "", "", worst(rs)
}

func (r *Registry) fetch(ctx context.Context, image string, ep endpoint, ref name.Reference, kc authn.Keychain) (v1.Image, string, *reason) {
	host := ep.repo.RegistryStr()
	var target name.Reference
	switch t := ref.(type) {
	case name.Digest:
		target = ep.repo.Digest(t.DigestStr())
	case name.Tag:
		target = ep.repo.Tag(t.TagStr())
	default:
		return nil, "", newReason(ErrInvalidReference, 5, "invalid image reference")
	}
	desc, err := remote.Get(target, r.options(ctx, kc)...)
	if err != nil {
		return nil, "", r.fail(ctx, image, host, "fetching the manifest", err)
	}
	img, err := desc.Image() // selects the platform of an index
	if err != nil {
		rs := r.fail(ctx, image, host, "selecting the platform image", err)
		if errors.Is(rs, ErrInvalidImage) && desc.MediaType.IsIndex() {
			p := r.cfg.Platform
			rs = newReason(ErrInvalidImage, 5, "the image has no variant for platform %s/%s", p.OS, p.Architecture)
		}
		return nil, "", rs
	}
	return img, desc.Digest.String(), nil
}

func configFrom(cf *v1.ConfigFile) Config {
	c := cf.Config
	var vols []string
	for v := range c.Volumes {
		vols = append(vols, v)
	}
	slices.Sort(vols)
	return Config{
		Entrypoint: slices.Clone(c.Entrypoint),
		Cmd:        slices.Clone(c.Cmd),
		Env:        slices.Clone(c.Env),
		WorkingDir: c.WorkingDir,
		User:       c.User,
		Volumes:    vols,
	}
}

// Accounts implements Source. It downloads layers, top to bottom, until
// /etc/passwd and /etc/group are found; results are cached by digest.
func (r *Registry) Accounts(ctx context.Context, img *Image, kc authn.Keychain) (*Accounts, error) {
	start := time.Now()
	repo, err := name.NewRepository(img.Repository)
	if err != nil {
		r.observe(KindAccounts, ResultError, start)
		return nil, &Error{Image: img.Reference(), Err: newReason(ErrInvalidReference, 5, "invalid image reference")}
	}
	scope, cacheable := r.credScope(repo, kc)
	key := cacheKey(img.Digest, scope)
	if cacheable {
		r.mu.Lock()
		a, ok := r.accounts[key]
		r.mu.Unlock()
		if ok {
			r.observe(KindAccounts, ResultHit, start)
			return a, nil
		}
	}
	a, rs := r.readAccounts(ctx, repo, img, kc)
	if rs != nil {
		r.observe(KindAccounts, ResultError, start)
		return nil, &Error{Image: img.Reference(), Err: newReason(rs.class, rs.rank, "reading /etc/passwd and /etc/group: %s", rs.msg)}
	}
	if cacheable {
		r.mu.Lock()
		storeBounded(r.accounts, key, a)
		r.mu.Unlock()
	}
	r.observe(KindAccounts, ResultMiss, start)
	return a, nil
}

func (r *Registry) readAccounts(ctx context.Context, repo name.Repository, img *Image, kc authn.Keychain) (*Accounts, *reason) {
	image := img.Reference()
	eps, ers := r.endpoints(repo)
	if ers != nil {
		return nil, ers
	}
	if err := r.acquire(ctx); err != nil {
		return nil, r.fail(ctx, image, "", "waiting for a free slot", err)
	}
	defer r.release()
	var rs []*reason
	for _, ep := range eps {
		im, _, err := r.fetch(ctx, image, ep, repo.Digest(img.Digest), kc)
		if err != nil {
			rs = append(rs, err)
			continue
		}
		a, aerr := accountsFromImage(im)
		if aerr != nil {
			return nil, r.fail(ctx, image, ep.repo.RegistryStr(), "reading layers", aerr)
		}
		return a, nil
	}
	return nil, worst(rs)
}

func accountsFromImage(img v1.Image) (*Accounts, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	var passwd, group []byte
	havePasswd, haveGroup := false, false
	for i := len(layers) - 1; i >= 0 && (!havePasswd || !haveGroup); i-- {
		rc, err := layers[i].Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		p, g, err := scanLayer(rc, !havePasswd, !haveGroup)
		_ = rc.Close()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if p != nil {
			passwd, havePasswd = p, true
		}
		if g != nil {
			group, haveGroup = g, true
		}
	}
	return &Accounts{Users: parsePasswd(passwd), Groups: parseGroup(group)}, nil
}

const maxAccountFile = 1 << 20

func scanLayer(r io.Reader, wantPasswd, wantGroup bool) (passwd, group []byte, err error) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return passwd, group, nil
		}
		if err != nil {
			return nil, nil, err
		}
		p := path.Clean("/" + h.Name)
		if h.Typeflag != tar.TypeReg {
			continue
		}
		switch {
		case p == "/etc/passwd" && wantPasswd:
			passwd, err = io.ReadAll(io.LimitReader(tr, maxAccountFile))
		case p == "/etc/group" && wantGroup:
			group, err = io.ReadAll(io.LimitReader(tr, maxAccountFile))
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

func parsePasswd(b []byte) []User {
	var out []User
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, err1 := strconv.ParseInt(f[2], 10, 64)
		gid, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, User{Name: f[0], UID: uid, GID: gid})
	}
	return out
}

func parseGroup(b []byte) []Group {
	var out []Group
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		gid, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			continue
		}
		g := Group{Name: f[0], GID: gid}
		if len(f) > 3 && f[3] != "" {
			g.Members = strings.Split(f[3], ",")
		}
		out = append(out, g)
	}
	return out
}
