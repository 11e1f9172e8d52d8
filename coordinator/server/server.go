// Package server assembles the Coordinator: the user API on 1313 (aTLS, the
// Coordinator attests), the mesh API on 7777 (mutual aTLS, the client
// attests), and /livez, /readyz, /metrics on 9102. The command in
// cmd/coordinator and the integration tests run it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/kubernetes"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/atls"
	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/internal/history"
	"github.com/contrast-cc/contrast/coordinator/internal/meshapi"
	"github.com/contrast-cc/contrast/coordinator/internal/metrics"
	"github.com/contrast-cc/contrast/coordinator/internal/peer"
	"github.com/contrast-cc/contrast/coordinator/internal/probes"
	"github.com/contrast-cc/contrast/coordinator/internal/state"
	"github.com/contrast-cc/contrast/coordinator/internal/userapi"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// Version is set at build time (-ldflags -X).
var Version = "dev"

// Default listen addresses (DESIGN.md §4).
const (
	DefaultUserAddr  = ":1313"
	DefaultMeshAddr  = ":7777"
	DefaultProbeAddr = ":9102"
)

// Config configures a Coordinator.
type Config struct {
	// Issuer produces the Coordinator's own evidence (required).
	Issuer attest.Issuer
	// Kubernetes and Namespace select the ConfigMap history store. Without
	// a client, MemoryStore (or a fresh one) keeps the history in memory:
	// for tests only.
	Kubernetes kubernetes.Interface
	Namespace  string
	// MemoryStore is an in-memory history store; share one between
	// Coordinators to simulate a restart in tests.
	MemoryStore *MemoryStore
	// UserAddr, MeshAddr and ProbeAddr default to :1313, :7777 and :9102.
	UserAddr, MeshAddr, ProbeAddr string
	// ValidatorOptions are used for the validators built from each manifest.
	ValidatorOptions manifest.ValidatorOptions
	// ShutdownTimeout bounds graceful shutdown; zero means 10 s.
	ShutdownTimeout time.Duration
	// Logger defaults to a discarding logger.
	Logger *slog.Logger

	// Peers are the mesh API addresses (host:port) of the other replicas
	// of a highly available Coordinator, for peer recovery: a replica in
	// recovery mode gets the seed from a ready one. Each host is resolved to
	// all its addresses on every round (a headless Service of the ready
	// replicas). Empty: no peer recovery, only Recover.
	Peers []string
	// PeerInterval is the pause between peer recovery rounds; zero means 2 s.
	PeerInterval time.Duration
	// ResyncInterval is how often the latest pointer is re-read besides the
	// watch on it; zero means 30 s.
	ResyncInterval time.Duration
}

// MemoryStore is an in-memory history store for tests.
type MemoryStore struct{ s *history.MemStore }

// NewMemoryStore returns an empty in-memory history store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{s: history.NewMemStore()} }

// Latest returns the stored latest pointer (nil if there is none), for
// tests that tamper with the history.
func (m *MemoryStore) Latest(ctx context.Context) ([]byte, error) {
	b, _, err := m.s.GetLatest(ctx)
	if errors.Is(err, history.ErrNotFound) {
		return nil, nil
	}
	return b, err
}

// SetLatest overwrites the latest pointer behind the Coordinators' backs,
// as someone controlling the store could; nil deletes it.
func (m *MemoryStore) SetLatest(_ context.Context, data []byte) error {
	m.s.SetLatestRaw(data)
	return nil
}

// Coordinator is a configured Coordinator with bound listeners.
type Coordinator struct {
	cfg     Config
	auth    *state.Authority
	history *history.History
	peers   *peer.Recoverer
	metrics *metrics.Metrics
	user    *grpc.Server
	mesh    *grpc.Server
	probe   *http.Server

	userLis, meshLis, probeLis net.Listener
	aborted                    atomic.Bool
}

// New loads the history, builds the servers and binds the listeners. The
// Coordinator starts in recovery mode if the store has history.
func New(ctx context.Context, cfg Config) (*Coordinator, error) {
	if cfg.Issuer == nil {
		return nil, errors.New("server: Issuer is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	for _, a := range []*string{&cfg.UserAddr, &cfg.MeshAddr, &cfg.ProbeAddr} {
		if *a == "" {
			*a = map[*string]string{&cfg.UserAddr: DefaultUserAddr, &cfg.MeshAddr: DefaultMeshAddr, &cfg.ProbeAddr: DefaultProbeAddr}[a]
		}
	}
	var store history.Store
	switch {
	case cfg.Kubernetes != nil:
		if cfg.Namespace == "" {
			return nil, errors.New("server: Namespace is required with a Kubernetes client")
		}
		store = history.NewConfigMapStore(cfg.Kubernetes, cfg.Namespace)
	case cfg.MemoryStore != nil:
		store = cfg.MemoryStore.s
	default:
		cfg.Logger.Warn("no Kubernetes client: using an in-memory history store that does not survive a restart")
		store = history.NewMemStore()
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = 30 * time.Second
	}
	c := &Coordinator{cfg: cfg, metrics: metrics.New(Version), history: history.New(store)}
	if cache := cfg.ValidatorOptions.Cache; cache != nil {
		cache.SetObserver(c.metrics)
	}
	var err error
	c.auth, err = state.New(ctx, state.Config{
		History: c.history, ValidatorOptions: cfg.ValidatorOptions,
		Metrics: c.metrics, Logger: cfg.Logger.With("component", "state"),
	})
	if err != nil {
		return nil, err
	}
	if len(cfg.Peers) > 0 {
		c.peers, err = peer.New(peer.Config{
			Authority: c.auth, Issuer: cfg.Issuer, Peers: cfg.Peers, Interval: cfg.PeerInterval,
			Metrics: c.metrics, Logger: cfg.Logger.With("component", "peer-recovery"),
		})
		if err != nil {
			return nil, err
		}
	}

	userCreds, err := atls.NewCredentials(atls.Config{Issuer: cfg.Issuer, Logger: cfg.Logger.With("component", "userapi-atls")})
	if err != nil {
		return nil, fmt.Errorf("user API credentials: %w", err)
	}
	meshSrv := meshapi.New(c.auth, c.metrics, cfg.Logger.With("component", "meshapi"))
	meshCreds, err := atls.NewCredentials(atls.Config{
		Issuer: cfg.Issuer, Validators: []attest.Validator{meshSrv.Validator()},
		Logger: cfg.Logger.With("component", "meshapi-atls"),
	})
	if err != nil {
		return nil, fmt.Errorf("mesh API credentials: %w", err)
	}
	ka := grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true})
	c.user = grpc.NewServer(grpc.Creds(userCreds), ka, grpc.MaxRecvMsgSize(16<<20),
		grpc.ChainUnaryInterceptor(c.metrics.UnaryServerInterceptor()))
	userpb.RegisterUserAPIServiceServer(c.user, userapi.New(c.auth, cfg.Logger.With("component", "userapi")))
	// The mesh API serves one small unary call per connection: fixed 64 KiB
	// flow-control windows switch off gRPC's bandwidth-delay probing, which
	// would add a PING round to every short-lived Initializer connection.
	window := []grpc.ServerOption{grpc.InitialWindowSize(64 << 10), grpc.InitialConnWindowSize(64 << 10)}
	c.mesh = grpc.NewServer(append(window, grpc.Creds(limitHandshakes(meshSrv.Credentials(meshCreds), 4*runtime.GOMAXPROCS(0))), ka, grpc.MaxRecvMsgSize(64<<10),
		grpc.ChainUnaryInterceptor(c.metrics.UnaryServerInterceptor(), meshSrv.UnaryInterceptor()),
		grpc.StreamInterceptor(meshSrv.StreamInterceptor()))...)
	meshpb.RegisterMeshAPIServiceServer(c.mesh, meshSrv)

	ready := []probes.Check{{Name: "secrets", Check: func() error {
		switch c.auth.Mode() {
		case state.ModeRecovery:
			if c.peers != nil {
				return errors.New("recovery mode: waiting for a peer Coordinator or Recover")
			}
			return errors.New("recovery mode: waiting for Recover")
		case state.ModeLatestMissing:
			return errors.New("the history's latest pointer is missing: waiting for an operator")
		}
		return nil
	}}}
	live := []probes.Check{{Name: "ping", Check: func() error { return nil }}}
	c.probe = &http.Server{Handler: probes.Handler(live, ready, c.metrics.Registry), ReadHeaderTimeout: 10 * time.Second}

	var lc net.ListenConfig
	listen := func(addr string) (net.Listener, error) {
		l, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		return l, nil
	}
	if c.userLis, err = listen(cfg.UserAddr); err != nil {
		return nil, err
	}
	if c.meshLis, err = listen(cfg.MeshAddr); err != nil {
		_ = c.userLis.Close()
		return nil, err
	}
	if c.probeLis, err = listen(cfg.ProbeAddr); err != nil {
		_ = c.userLis.Close()
		_ = c.meshLis.Close()
		return nil, err
	}
	return c, nil
}

// UserAddr returns the bound user API address.
func (c *Coordinator) UserAddr() string { return c.userLis.Addr().String() }

// MeshAddr returns the bound mesh API address.
func (c *Coordinator) MeshAddr() string { return c.meshLis.Addr().String() }

// ProbeAddr returns the bound probe address.
func (c *Coordinator) ProbeAddr() string { return c.probeLis.Addr().String() }

// Abort stops serving at once, closing every connection without waiting
// for calls in flight (what a killed process does to its peers); Serve
// returns once its context is canceled.
func (c *Coordinator) Abort() {
	c.aborted.Store(true)
	c.user.Stop()
	c.mesh.Stop()
	_ = c.probe.Close()
}

// Mode returns the Coordinator's lifecycle state (tests, diagnostics).
func (c *Coordinator) Mode() state.Mode { return c.auth.Mode() }

// follow re-reads the stored latest pointer on every watch event and every
// ResyncInterval, so that a replica serves a manifest set through another
// replica (within the watch latency, at most ResyncInterval if the watch
// is broken), notices a first manifest set elsewhere (and goes into
// recovery mode) and a restored pointer. Issuance does not depend on it:
// see state.Authority.IssueMeshCert.
func (c *Coordinator) follow(ctx context.Context) error {
	changed := make(chan struct{}, 1)
	go c.history.WatchLatest(ctx, func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	t := time.NewTicker(c.cfg.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
		_ = c.auth.Refresh(ctx) // logged and counted by the Authority
	}
}

// Serve serves until ctx is done, then shuts down gracefully within
// ShutdownTimeout.
func (c *Coordinator) Serve(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	log := c.cfg.Logger
	serveGRPC := func(name string, s *grpc.Server, l net.Listener) func() error {
		return func() error {
			log.Info("serving", "api", name, "addr", l.Addr().String())
			if err := s.Serve(l); !errors.Is(err, grpc.ErrServerStopped) {
				return err
			}
			return nil
		}
	}
	g.Go(serveGRPC("user API", c.user, c.userLis))
	g.Go(serveGRPC("mesh API", c.mesh, c.meshLis))
	g.Go(func() error {
		log.Info("serving probes and metrics", "addr", c.ProbeAddr())
		if err := c.probe.Serve(c.probeLis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return c.follow(ctx) })
	if c.peers != nil {
		g.Go(func() error { return c.peers.Run(ctx) })
	}
	g.Go(func() error {
		<-ctx.Done()
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ShutdownTimeout)
		defer cancel()
		stopped := make(chan struct{})
		go func() {
			c.user.GracefulStop()
			c.mesh.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-sctx.Done():
			c.user.Stop()
			c.mesh.Stop()
		}
		if err := c.probe.Shutdown(sctx); err != nil && !c.aborted.Load() {
			return err
		}
		return nil
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
