package images

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Mirror is a registry host that serves a registry's content, like a
// `[host."..."]` entry of containerd's hosts.toml.
type Mirror struct {
	// Host is host[:port] of the mirror.
	Host string
	// Insecure selects plain HTTP.
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
	// Transport is the HTTP transport (default remote.DefaultTransport).
	Transport http.RoundTripper
	// Observer receives every manifest, config and accounts lookup with
	// its result (cache hit, fetched, failed) and duration (default none).
	Observer Observer
}

// maxCachedDigests bounds each cache of a Registry (configs, accounts); a
// full cache is emptied, as the webhook's own cache is.
const maxCachedDigests = 4096

// Registry is the production Source: it talks to OCI registries with
// go-containerregistry, caches by digest and credentials (see cacheKey) and honors mirrors.
type Registry struct {
	cfg RegistryConfig
	sem chan struct{}

	mu       sync.Mutex
	configs  map[string]Config    // by manifest digest
	accounts map[string]*Accounts // by manifest digest
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
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return &Registry{
		cfg:      cfg,
		sem:      make(chan struct{}, cfg.MaxConcurrent),
		configs:  map[string]Config{},
		accounts: map[string]*Accounts{},
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

// cacheKey returns the key under which what was fetched for digest in repo
// with keychain kc is cached, or false if it must not be cached. Contents
// are immutable per digest, but access is not: an entry fetched with pull
// secrets is visible only to lookups that present the same credentials for
// every endpoint of the repository (origin and mirrors), so a pod without
// them cannot learn a private image's configuration or accounts from the
// cache. Lookups without a keychain share one scope, the webhook's own
// (like the kubelet's node credentials).
func (r *Registry) cacheKey(repo name.Repository, digest string, kc authn.Keychain) (string, bool) {
	if kc == nil {
		return digest, true
	}
	eps, err := r.endpoints(repo)
	if err != nil {
		return "", false
	}
	h := sha256.New()
	for _, ep := range eps {
		a, err := kc.Resolve(ep.repo)
		if err != nil {
			return "", false
		}
		cfg, err := a.Authorization()
		if err != nil {
			return "", false
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			return "", false
		}
		h.Write([]byte(ep.repo.RegistryStr()))
		h.Write([]byte{0})
		h.Write(b)
		h.Write([]byte{0})
	}
	return digest + "|" + hex.EncodeToString(h.Sum(nil)), true
}

// endpoint is one place to fetch a repository from.
type endpoint struct {
	repo name.Repository
}

func (r *Registry) endpoints(repo name.Repository) ([]endpoint, error) {
	reg := repo.RegistryStr()
	keys := []string{reg}
	if reg == name.DefaultRegistry {
		keys = append(keys, "docker.io")
	}
	var eps []endpoint
	skip := false
	for _, k := range keys {
		for _, m := range r.cfg.Mirrors[k] {
			var opts []name.Option
			if m.Insecure {
				opts = append(opts, name.Insecure)
			}
			mr, err := name.NewRepository(m.Host+"/"+repo.RepositoryStr(), opts...)
			if err != nil {
				return nil, fmt.Errorf("mirror %q: %w", m.Host, err)
			}
			eps = append(eps, endpoint{repo: mr})
		}
		skip = skip || slices.Contains(r.cfg.SkipOrigin, k)
	}
	if !skip {
		eps = append(eps, endpoint{repo: repo})
	}
	if len(eps) == 0 {
		return nil, errors.New("no endpoint: origin skipped and no mirror configured")
	}
	return eps, nil
}

func (r *Registry) options(ctx context.Context, kc authn.Keychain) []remote.Option {
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(r.cfg.Transport),
		remote.WithPlatform(*r.cfg.Platform),
	}
}

// Resolve implements Source. It fetches only the manifest (and index) and
// the config blob; configs are cached by digest.
func (r *Registry) Resolve(ctx context.Context, image string, kc authn.Keychain) (*Image, error) {
	img, err := r.resolve(ctx, image, kc)
	if err != nil {
		return nil, &Error{Image: image, Err: err}
	}
	return img, nil
}

func (r *Registry) resolve(ctx context.Context, image string, kc authn.Keychain) (*Image, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return nil, fmt.Errorf("parsing reference: %w", err)
	}
	out := &Image{Repository: ref.Context().Name()}
	start := time.Now()
	if d, ok := ref.(name.Digest); ok {
		out.Digest = d.DigestStr()
		key, cacheable := r.cacheKey(ref.Context(), out.Digest, kc)
		if cfg, ok := r.cachedConfig(key); cacheable && ok {
			r.observe(KindManifest, ResultHit, start)
			r.observe(KindConfig, ResultHit, start)
			out.Config = cfg
			return out, nil
		}
	}
	if err := r.acquire(ctx); err != nil {
		r.observe(KindManifest, ResultError, start)
		return nil, err
	}
	defer r.release()
	img, digest, host, err := r.manifest(ctx, ref, out.Digest, kc)
	if err != nil {
		r.observe(KindManifest, ResultError, start)
		return nil, err
	}
	r.observe(KindManifest, ResultMiss, start)
	out.Digest = digest

	start = time.Now()
	key, cacheable := r.cacheKey(ref.Context(), digest, kc)
	if cfg, ok := r.cachedConfig(key); cacheable && ok {
		r.observe(KindConfig, ResultHit, start)
		out.Config = cfg
		return out, nil
	}
	cf, err := img.ConfigFile()
	if err != nil {
		r.observe(KindConfig, ResultError, start)
		return nil, fmt.Errorf("reading config from %s: %w", host, err)
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
// A non-empty want is the digest the reference pins.
func (r *Registry) manifest(ctx context.Context, ref name.Reference, want string, kc authn.Keychain) (v1.Image, string, string, error) {
	eps, err := r.endpoints(ref.Context())
	if err != nil {
		return nil, "", "", err
	}
	var errs []error
	for _, ep := range eps {
		host := ep.repo.RegistryStr()
		img, digest, err := r.fetch(ctx, ep, ref, kc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", host, err))
			continue
		}
		if want != "" && digest != want {
			return nil, "", "", fmt.Errorf("%s served digest %s for %s", host, digest, want)
		}
		return img, digest, host, nil
	}
	return nil, "", "", errors.Join(errs...)
}

func (r *Registry) fetch(ctx context.Context, ep endpoint, ref name.Reference, kc authn.Keychain) (v1.Image, string, error) {
	var target name.Reference
	switch t := ref.(type) {
	case name.Digest:
		target = ep.repo.Digest(t.DigestStr())
	case name.Tag:
		target = ep.repo.Tag(t.TagStr())
	default:
		return nil, "", fmt.Errorf("unsupported reference %T", ref)
	}
	desc, err := remote.Get(target, r.options(ctx, kc)...)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			return nil, "", fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, "", err
	}
	img, err := desc.Image() // selects the platform of an index
	if err != nil {
		return nil, "", fmt.Errorf("selecting image: %w", err)
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
		return nil, &Error{Image: img.Reference(), Err: err}
	}
	key, cacheable := r.cacheKey(repo, img.Digest, kc)
	r.mu.Lock()
	a, ok := r.accounts[key]
	r.mu.Unlock()
	if cacheable && ok {
		r.observe(KindAccounts, ResultHit, start)
		return a, nil
	}
	a, err = r.readAccounts(ctx, img, kc)
	if err != nil {
		r.observe(KindAccounts, ResultError, start)
		return nil, &Error{Image: img.Reference(), Err: fmt.Errorf("reading /etc/passwd: %w", err)}
	}
	if cacheable {
		r.mu.Lock()
		storeBounded(r.accounts, key, a)
		r.mu.Unlock()
	}
	r.observe(KindAccounts, ResultMiss, start)
	return a, nil
}

func (r *Registry) readAccounts(ctx context.Context, img *Image, kc authn.Keychain) (*Accounts, error) {
	repo, err := name.NewRepository(img.Repository)
	if err != nil {
		return nil, err
	}
	eps, err := r.endpoints(repo)
	if err != nil {
		return nil, err
	}
	if err := r.acquire(ctx); err != nil {
		return nil, err
	}
	defer r.release()
	var errs []error
	for _, ep := range eps {
		im, _, err := r.fetch(ctx, ep, repo.Digest(img.Digest), kc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return accountsFromImage(im)
	}
	return nil, errors.Join(errs...)
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
