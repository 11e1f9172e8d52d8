// Package proxy is the Contrast service-mesh proxy: it terminates mutual TLS
// for a pod's inbound TCP connections (redirected to it by the rules of
// package rules) and opens mutual TLS for the pod's configured egress
// entries, with the mesh certificate the Initializer wrote. It is part of
// the trusted computing base and kept small: crypto/tls, a byte copy, and
// SO_ORIGINAL_DST.
//
// Ingress: a connection redirected to the ingress listener is looked up in
// conntrack for its original destination port. A port listed as
// name#port#false gets TLS with the mesh certificate and no client
// certificate; every other port requires a client certificate that chains to
// the mesh CA. The proxy then forwards the plaintext to 127.0.0.1 on the
// original port. Ports listed as name#port#true are not redirected and never
// reach it.
//
// Egress: each entry name#127.x.y.z:port#host:port listens on the loopback
// address and dials host:port with TLS 1.3, presenting the mesh certificate
// and verifying the server against the mesh CA and host (a DNS name or an IP
// SAN).
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/contrast-cc/contrast/initializer/internal/rules"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

// DefaultIngressPort is the port of the ingress listener that inbound
// connections are redirected to (Istio's inbound capture port). The pod's
// containers must not use it.
const DefaultIngressPort = 15006

// Defaults of Config.
const (
	DefaultReloadInterval   = 5 * time.Second
	DefaultDrainTimeout     = 20 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDialTimeout      = 10 * time.Second
)

// Config configures a Proxy.
type Config struct {
	// Mesh is the pod's service-mesh configuration.
	Mesh *meshconfig.Config
	// TLSDir holds mesh-ca.pem, certChain.pem and key.pem.
	TLSDir string
	// IngressPort is the port of the ingress listener.
	IngressPort uint16
	// IngressAddr overrides the ingress listen address (default
	// ":IngressPort", all addresses, IPv4 and IPv6).
	IngressAddr string
	// AdminAddr overrides the admin listen address (default
	// ":Mesh.AdminPort"); there is no admin server when both are empty.
	AdminAddr string
	// ProbeAddr overrides the probe listen address (default
	// ":meshconfig.ProbePort"); it is open only when Mesh has probes.
	ProbeAddr string
	// UpstreamHost is where ingress connections are forwarded, on their
	// original port (default 127.0.0.1).
	UpstreamHost string
	// ApplyRules installs the redirect rules before any listener opens;
	// nil installs none (tests).
	ApplyRules func(*rules.Set) error
	// OriginalDst returns a redirected connection's original destination
	// (default OriginalDst, SO_ORIGINAL_DST).
	OriginalDst func(*net.TCPConn) (netip.AddrPort, error)

	ReloadInterval   time.Duration
	DrainTimeout     time.Duration
	HandshakeTimeout time.Duration
	DialTimeout      time.Duration

	Logger  *slog.Logger
	Metrics *Metrics
}

// Proxy is the mesh proxy of one pod.
type Proxy struct {
	cfg   Config
	certs *Store
	modes map[uint16]meshconfig.IngressMode
	rules *rules.Set

	rulesApplied atomic.Bool
	listening    atomic.Bool
	draining     atomic.Bool
	ready        chan struct{}

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	connWG sync.WaitGroup

	ingressAddr net.Addr
	egressAddrs map[string]net.Addr
	adminAddr   atomic.Pointer[net.Addr]
	probeAddr   atomic.Pointer[net.Addr]
}

// New checks cfg, fills its defaults and computes the rule set.
func New(cfg Config) (*Proxy, error) {
	if cfg.Mesh == nil {
		return nil, errors.New("no service-mesh configuration")
	}
	if cfg.Mesh.Disabled {
		return nil, errors.New("the service mesh is disabled for this pod")
	}
	if cfg.TLSDir == "" {
		cfg.TLSDir = DefaultTLSDir
	}
	if cfg.IngressPort == 0 {
		cfg.IngressPort = DefaultIngressPort
	}
	if cfg.IngressAddr == "" {
		cfg.IngressAddr = net.JoinHostPort("", strconv.Itoa(int(cfg.IngressPort)))
	}
	if cfg.AdminAddr == "" && cfg.Mesh.AdminPort != 0 {
		cfg.AdminAddr = net.JoinHostPort("", strconv.Itoa(int(cfg.Mesh.AdminPort)))
	}
	if cfg.ProbeAddr == "" {
		cfg.ProbeAddr = net.JoinHostPort("", strconv.Itoa(int(meshconfig.ProbePort)))
	}
	if cfg.UpstreamHost == "" {
		cfg.UpstreamHost = "127.0.0.1"
	}
	if cfg.OriginalDst == nil {
		cfg.OriginalDst = OriginalDst
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.ReloadInterval, DefaultReloadInterval}, {&cfg.DrainTimeout, DefaultDrainTimeout},
		{&cfg.HandshakeTimeout, DefaultHandshakeTimeout}, {&cfg.DialTimeout, DefaultDialTimeout}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rs, err := rules.Compute(cfg.Mesh, cfg.IngressPort)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:         cfg,
		certs:       NewStore(cfg.TLSDir, cfg.Logger, cfg.Metrics),
		modes:       map[uint16]meshconfig.IngressMode{},
		rules:       rs,
		ready:       make(chan struct{}),
		conns:       map[net.Conn]struct{}{},
		egressAddrs: map[string]net.Addr{},
	}
	for _, in := range cfg.Mesh.Ingress {
		p.modes[in.Port] = in.Mode
	}
	return p, nil
}

// Rules returns the rule set the proxy installs.
func (p *Proxy) Rules() *rules.Set { return p.rules }

// Ready is closed once the rules are applied, the certificates loaded and
// every listener open.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// IngressAddr returns the ingress listener's address once Ready.
func (p *Proxy) IngressAddr() net.Addr { return p.ingressAddr }

// EgressAddr returns the listener address of the egress entry name once
// Ready.
func (p *Proxy) EgressAddr(name string) net.Addr { return p.egressAddrs[name] }

// Run installs the rules, waits for the certificates, opens the listeners
// and serves until ctx ends; then it stops accepting, waits up to
// DrainTimeout for open connections to finish, closes the rest and returns.
//
// The order is the security argument: the rules come first, so from then
// on a redirected port refuses connections until the proxy serves it, and
// is never reachable in the clear; the ingress listener opens last, so a
// TCP connect to it (a startup probe) succeeds only when everything is up.
func (p *Proxy) Run(ctx context.Context) error {
	log := p.cfg.Logger
	if p.cfg.ApplyRules != nil {
		if err := p.cfg.ApplyRules(p.rules); err != nil {
			return fmt.Errorf("installing redirect rules: %w", err)
		}
		p.rulesApplied.Store(true)
		log.Info("installed redirect rules", "rules", p.rules.String())
	}

	var lc net.ListenConfig
	g, gctx := errgroup.WithContext(ctx)
	// the admin server and the probe server run from the start to the
	// end of the drain
	var servers []*http.Server
	shutdownHTTP := func() {
		for _, srv := range servers {
			shutdownAdmin(srv)
		}
	}
	startHTTP := func(addr string, h http.Handler, store *atomic.Pointer[net.Addr]) (net.Addr, error) {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		a := ln.Addr()
		store.Store(&a)
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http server on %s: %w", a, err)
			}
			return nil
		})
		return a, nil
	}
	if p.cfg.AdminAddr != "" {
		addr, err := startHTTP(p.cfg.AdminAddr, p.adminHandler(), &p.adminAddr)
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		log.Info("serving /livez, /readyz and /metrics", "addr", addr.String())
	}
	if len(p.cfg.Mesh.Probes) > 0 {
		addr, err := startHTTP(p.cfg.ProbeAddr, p.probeHandler(), &p.probeAddr)
		if err != nil {
			shutdownHTTP()
			_ = g.Wait()
			return fmt.Errorf("probe listener: %w", err)
		}
		// names, kinds and ports only: a probe's header values (an
		// Authorization token, say) stay out of the log
		probes := make([]string, len(p.cfg.Mesh.Probes))
		for i, pr := range p.cfg.Mesh.Probes {
			probes[i] = fmt.Sprintf("%s#%s#%d", pr.Name, pr.Kind, pr.Port)
		}
		log.Info("serving the kubelet's probes", "addr", addr.String(), "probes", probes)
	}

	certCtx, stopCerts := context.WithCancel(context.Background())
	defer stopCerts()
	certsDone := make(chan struct{})
	go func() { defer close(certsDone); p.certs.Run(certCtx, p.cfg.ReloadInterval) }()
	defer func() { stopCerts(); <-certsDone }()
	select {
	case <-p.certs.Loaded():
	case <-gctx.Done():
		shutdownHTTP()
		if err := g.Wait(); err != nil && ctx.Err() == nil {
			return err
		}
		log.Info("stopped before the certificates were loaded")
		return nil
	}

	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}
	for _, e := range p.cfg.Mesh.Egress {
		ln, err := lc.Listen(ctx, "tcp", e.Listen.String())
		if err != nil {
			closeAll()
			shutdownHTTP()
			_ = g.Wait()
			return fmt.Errorf("egress %q: %w", e.Name, err)
		}
		listeners = append(listeners, ln)
		p.egressAddrs[e.Name] = ln.Addr()
		g.Go(func() error { return p.serve(ln, func(c net.Conn) { p.egress(e, c) }) })
		log.Info("egress listening", "name", e.Name, "addr", ln.Addr().String(), "remote", e.Remote)
	}
	ln, err := lc.Listen(ctx, "tcp", p.cfg.IngressAddr)
	if err != nil {
		closeAll()
		shutdownHTTP()
		_ = g.Wait()
		return fmt.Errorf("ingress listener: %w", err)
	}
	listeners = append(listeners, ln)
	p.ingressAddr = ln.Addr()
	g.Go(func() error { return p.serve(ln, p.ingress) })
	log.Info("ingress listening", "addr", ln.Addr().String(), "ingress", p.cfg.Mesh.IngressString())
	p.listening.Store(true)
	close(p.ready)

	<-gctx.Done()
	p.draining.Store(true)
	p.listening.Store(false)
	closeAll()
	log.Info("draining", "timeout", p.cfg.DrainTimeout.String())
	done := make(chan struct{})
	go func() { p.connWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(p.cfg.DrainTimeout):
		p.mu.Lock()
		n := len(p.conns)
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		log.Warn("drain timeout, closed the remaining connections", "connections", n)
		<-done
	}
	shutdownHTTP()
	err = g.Wait()
	if err != nil && ctx.Err() == nil {
		return err
	}
	log.Info("stopped")
	return nil
}

func shutdownAdmin(s *http.Server) {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
}

// serve accepts on ln until it is closed.
func (p *Proxy) serve(ln net.Listener, handle func(net.Conn)) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.draining.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accepting on %s: %w", ln.Addr(), err)
		}
		p.track(c)
		go func() {
			defer p.untrack(c)
			handle(c)
		}()
	}
}

func (p *Proxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.connWG.Add(1)
	p.conns[c] = struct{}{}
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
	p.connWG.Done()
}

// trackUpstream registers an upstream connection so a drain timeout closes
// it too.
func (p *Proxy) trackUpstream(c net.Conn) func() {
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}
}

func (p *Proxy) ingress(c net.Conn) {
	log := p.cfg.Logger
	m := p.cfg.Metrics
	if g := m.activeGauge(DirectionIngress); g != nil {
		g.Inc()
		defer g.Dec()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		m.connection(DirectionIngress, ResultRefused)
		return
	}
	dst, err := p.cfg.OriginalDst(tc)
	if err != nil {
		m.connection(DirectionIngress, ResultRefused)
		log.Debug("ingress refused: no original destination", "remote", c.RemoteAddr().String(), "error", err)
		return
	}
	port := dst.Port()
	mode := p.modes[port]
	switch {
	case port == p.cfg.IngressPort || (p.cfg.Mesh.AdminPort != 0 && port == p.cfg.Mesh.AdminPort):
		// A direct connection to the proxy's own port (or a loop): there
		// is nothing to forward to. A startup probe's TCP connect ends here.
		m.connection(DirectionIngress, ResultRefused)
		log.Debug("ingress refused: connection to the proxy's own port", "remote", c.RemoteAddr().String(), "port", port)
		return
	case mode == meshconfig.IngressPlain:
		// Plain ports are not redirected; one arriving here means the
		// rules are not the proxy's.
		m.connection(DirectionIngress, ResultRefused)
		log.Warn("ingress refused: plain port was redirected", "remote", c.RemoteAddr().String(), "port", port)
		return
	}
	b := p.certs.Current()
	cfg := b.mtls
	if mode == meshconfig.IngressTLS {
		cfg = b.tlsOnly
	}
	tlsConn := tls.Server(newTransport(c), cfg)
	hctx, cancel := context.WithTimeout(context.Background(), p.cfg.HandshakeTimeout)
	err = tlsConn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		reason := handshakeReason(err)
		m.handshakeFailure(DirectionIngress, reason)
		m.connection(DirectionIngress, ResultHandshakeFailed)
		log.Debug("ingress handshake failed", "remote", c.RemoteAddr().String(), "port", port, "reason", reason, "error", err)
		return
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	up, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort(p.cfg.UpstreamHost, strconv.Itoa(int(port))))
	if err != nil {
		m.connection(DirectionIngress, ResultDialFailed)
		log.Debug("ingress upstream unreachable", "port", port, "error", err)
		return
	}
	defer p.trackUpstream(up)()
	m.connection(DirectionIngress, ResultForwarded)
	_ = pipe(tlsConn, up, m.byteCounter(DirectionIngress, FlowRequest), m.byteCounter(DirectionIngress, FlowResponse))
}

func (p *Proxy) egress(e meshconfig.Egress, c net.Conn) {
	log := p.cfg.Logger
	m := p.cfg.Metrics
	if g := m.activeGauge(DirectionEgress); g != nil {
		g.Inc()
		defer g.Dec()
	}
	host, _, err := net.SplitHostPort(e.Remote)
	if err != nil { // meshconfig validated it
		m.connection(DirectionEgress, ResultRefused)
		return
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	raw, err := d.DialContext(context.Background(), "tcp", e.Remote)
	if err != nil {
		m.connection(DirectionEgress, ResultDialFailed)
		log.Debug("egress remote unreachable", "name", e.Name, "remote", e.Remote, "error", err)
		return
	}
	defer p.trackUpstream(raw)()
	tlsConn := tls.Client(newTransport(raw), p.certs.Current().clientConfig(host))
	hctx, cancel := context.WithTimeout(context.Background(), p.cfg.HandshakeTimeout)
	err = tlsConn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		_ = raw.Close()
		reason := handshakeReason(err)
		m.handshakeFailure(DirectionEgress, reason)
		m.connection(DirectionEgress, ResultHandshakeFailed)
		log.Debug("egress handshake failed", "name", e.Name, "remote", e.Remote, "reason", reason, "error", err)
		return
	}
	m.connection(DirectionEgress, ResultForwarded)
	var got atomic.Int64
	respCount := m.byteCounter(DirectionEgress, FlowResponse)
	resp := func(n int) {
		got.Add(int64(n))
		if respCount != nil {
			respCount(n)
		}
	}
	if err := pipe(c, tlsConn, m.byteCounter(DirectionEgress, FlowRequest), resp); err != nil && got.Load() == 0 && isRemoteAlert(err) {
		// With TLS 1.3 the server checks the client certificate after the
		// client's handshake is done: its rejection is the first read.
		m.handshakeFailure(DirectionEgress, ReasonRejectedByPeer)
		log.Debug("egress rejected by the remote", "name", e.Name, "remote", e.Remote, "error", err)
	}
}

func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /livez", checks(nil))
	mux.Handle("GET /readyz", checks([]check{
		{"rules", func() error {
			if p.cfg.ApplyRules != nil && !p.rulesApplied.Load() {
				return errors.New("redirect rules not installed")
			}
			return nil
		}},
		{"certificates", func() error {
			if p.certs.Current() == nil {
				return fmt.Errorf("no valid mesh certificate in %s", p.cfg.TLSDir)
			}
			return nil
		}},
		{"listeners", func() error {
			switch {
			case p.draining.Load():
				return errors.New("draining")
			case !p.listening.Load():
				return errors.New("not listening yet")
			}
			return nil
		}},
	}))
	if p.cfg.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(p.cfg.Metrics.Registry, promhttp.HandlerOpts{Registry: p.cfg.Metrics.Registry}))
	}
	return mux
}

// ProbeAddr returns the probe listener's address once it is open (nil
// before or without probes).
func (p *Proxy) ProbeAddr() net.Addr {
	if a := p.probeAddr.Load(); a != nil {
		return *a
	}
	return nil
}

// AdminAddr returns the admin listener's address once it is open (nil
// before or without one).
func (p *Proxy) AdminAddr() net.Addr {
	if a := p.adminAddr.Load(); a != nil {
		return *a
	}
	return nil
}
