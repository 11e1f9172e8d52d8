package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/initializer/internal/proxy/proxytest"
	"github.com/contrast-cc/contrast/initializer/internal/rules"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

// echoServer answers every connection with what it reads, then closes
// its side when the client half-closes.
func echoServer(t testing.TB) uint16 {
	t.Helper()
	ln, err := listen()
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// listen opens a listener on a free loopback port.
func listen() (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
}

func dial(addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(context.Background(), "tcp", addr)
}

func tlsDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

// fixedDst is an OriginalDst for tests on loopback without NAT.
func fixedDst(port uint16) func(*net.TCPConn) (netip.AddrPort, error) {
	return func(*net.TCPConn) (netip.AddrPort, error) {
		return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), nil
	}
}

// start runs a proxy until the test ends and waits until it is ready.
func start(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	if cfg.IngressAddr == "" {
		cfg.IngressAddr = "127.0.0.1:0"
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics("test")
	}
	p, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("proxy stopped before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("proxy not ready")
	}
	return p
}

func roundTrip(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

func count(m *Metrics, direction, result string) float64 {
	return testutil.ToFloat64(m.connections.WithLabelValues(direction, result))
}

func failures(m *Metrics, direction, reason string) float64 {
	return testutil.ToFloat64(m.handshakeFailures.WithLabelValues(direction, reason))
}

// TestEgressToIngress runs an egress proxy and an ingress proxy back to
// back, as two pods of the mesh do, and checks the bytes and metrics.
func TestEgressToIngress(t *testing.T) {
	pki := proxytest.NewPKI(t)
	backend := echoServer(t)
	server := start(t, Config{
		Mesh:        &meshconfig.Config{},
		TLSDir:      pki.TLSDir(t, "server", "127.0.0.1"),
		OriginalDst: fixedDst(backend),
	})
	serverPort := server.IngressAddr().(*net.TCPAddr).Port
	client := start(t, Config{
		Mesh: &meshconfig.Config{Egress: []meshconfig.Egress{
			{Name: "by-ip", Listen: netip.MustParseAddrPort("127.0.0.1:0"), Remote: "127.0.0.1:" + strconv.Itoa(serverPort)},
		}},
		TLSDir: pki.TLSDir(t, "client"),
	})

	c, err := dial(client.EgressAddr("by-ip").String())
	require.NoError(t, err)
	got, err := roundTrip(c, "hello through the mesh")
	require.NoError(t, err)
	assert.Equal(t, "hello through the mesh", got)
	// Half-close travels end to end: the echo server sees EOF and closes.
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	rest, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Empty(t, rest)
	_ = c.Close()

	sm, cm := server.cfg.Metrics, client.cfg.Metrics
	assert.Eventually(t, func() bool {
		return testutil.ToFloat64(sm.bytes.WithLabelValues(DirectionIngress, FlowResponse)) == 22
	}, 5*time.Second, 10*time.Millisecond)
	assert.InDelta(t, 1, count(sm, DirectionIngress, ResultForwarded), 0)
	assert.InDelta(t, 1, count(cm, DirectionEgress, ResultForwarded), 0)
	assert.InDelta(t, 22, testutil.ToFloat64(sm.bytes.WithLabelValues(DirectionIngress, FlowRequest)), 0)
	assert.InDelta(t, 22, testutil.ToFloat64(cm.bytes.WithLabelValues(DirectionEgress, FlowRequest)), 0)
	assert.InDelta(t, 22, testutil.ToFloat64(cm.bytes.WithLabelValues(DirectionEgress, FlowResponse)), 0)
}

// TestIngressHandshakeFailures connects clients with bad or missing
// credentials to an mTLS port and asserts which check rejected each one.
func TestIngressHandshakeFailures(t *testing.T) {
	pki := proxytest.NewPKI(t)
	other := proxytest.NewPKI(t)
	backend := echoServer(t)
	m := NewMetrics("test")
	server := start(t, Config{
		Mesh:             &meshconfig.Config{},
		TLSDir:           pki.TLSDir(t, "server", "127.0.0.1"),
		OriginalDst:      fixedDst(backend),
		HandshakeTimeout: 500 * time.Millisecond,
		Metrics:          m,
	})
	addr := server.IngressAddr().String()
	pool := x509.NewCertPool()
	pool.AddCert(pki.Mesh.Cert)
	keyPair := func(l proxytest.Leaf) []tls.Certificate {
		c, err := tls.X509KeyPair(l.ChainPEM, l.KeyPEM)
		require.NoError(t, err)
		return []tls.Certificate{c}
	}
	testCases := map[string]struct {
		certs  []tls.Certificate
		raw    string // sent instead of a TLS handshake
		silent bool   // send nothing
		reason string
	}{
		"no client certificate":       {reason: ReasonNoClientCertificate},
		"certificate of another mesh": {certs: keyPair(other.Leaf(t, "client")), reason: ReasonUnknownAuthority},
		"expired certificate": {
			certs:  keyPair(pki.Mesh.Leaf(t, proxytest.LeafOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}, "client")),
			reason: ReasonExpired,
		},
		"server-only certificate": {
			certs:  keyPair(pki.Mesh.Leaf(t, proxytest.LeafOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, "client")),
			reason: ReasonBadCertificate,
		},
		"root CA instead of mesh CA": {certs: keyPair(pki.Root.Leaf(t, proxytest.LeafOptions{}, "client")), reason: ReasonUnknownAuthority},
		"plaintext HTTP":             {raw: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", reason: ReasonProtocol},
		"silent client":              {silent: true, reason: ReasonTimeout},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			before := failures(m, DirectionIngress, tc.reason)
			beforeFailed := count(m, DirectionIngress, ResultHandshakeFailed)
			c, err := dial(addr)
			require.NoError(t, err)
			defer c.Close()
			switch {
			case tc.silent:
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Read(make([]byte, 1))
				require.Error(t, err, "the proxy closes a silent connection")
			case tc.raw != "":
				_, _ = io.WriteString(c, tc.raw)
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.ReadAll(c)
			default:
				certs := tc.certs
				tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "server", MinVersion: tls.VersionTLS13,
					// Send the certificate even where crypto/tls would
					// not (its issuer is not among the server's CAs).
					GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
						if len(certs) == 0 {
							return &tls.Certificate{}, nil
						}
						return &certs[0], nil
					}})
				_, err := roundTrip(tc, "x")
				require.Error(t, err, "the proxy must not forward")
			}
			require.Eventually(t, func() bool { return failures(m, DirectionIngress, tc.reason) == before+1 }, 5*time.Second, 10*time.Millisecond,
				"reason %s not counted", tc.reason)
			assert.InDelta(t, beforeFailed+1, count(m, DirectionIngress, ResultHandshakeFailed), 0)
		})
	}
	assert.Zero(t, count(m, DirectionIngress, ResultForwarded))
}

// TestIngressModes checks the per-port decisions: TLS without a client
// certificate on #false ports, refusal of ports the proxy must never see.
func TestIngressModes(t *testing.T) {
	pki := proxytest.NewPKI(t)
	backend := echoServer(t)
	pool := x509.NewCertPool()
	pool.AddCert(pki.Mesh.Cert)
	dir := pki.TLSDir(t, "server")

	t.Run("TLS-only port accepts a client without certificate", func(t *testing.T) {
		p := start(t, Config{
			Mesh:        &meshconfig.Config{Ingress: []meshconfig.Ingress{{Name: "web", Port: backend, Mode: meshconfig.IngressTLS}}},
			TLSDir:      dir,
			OriginalDst: fixedDst(backend),
		})
		c, err := tlsDial(p.IngressAddr().String(), &tls.Config{RootCAs: pool, ServerName: "server", MinVersion: tls.VersionTLS13})
		require.NoError(t, err)
		defer c.Close()
		got, err := roundTrip(c, "public")
		require.NoError(t, err)
		assert.Equal(t, "public", got)
	})

	for name, tc := range map[string]struct {
		mesh *meshconfig.Config
		dst  func(*net.TCPConn) (netip.AddrPort, error)
	}{
		"no original destination": {
			mesh: &meshconfig.Config{},
			dst:  func(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, errors.New("no conntrack entry") },
		},
		"plain port reached the proxy": {
			mesh: &meshconfig.Config{Ingress: []meshconfig.Ingress{{Name: "plain", Port: backend, Mode: meshconfig.IngressPlain}}},
			dst:  fixedDst(backend),
		},
		"the proxy's own port (loop)": {mesh: &meshconfig.Config{}, dst: fixedDst(DefaultIngressPort)},
		"the admin port":              {mesh: &meshconfig.Config{AdminPort: 9901}, dst: fixedDst(9901)},
	} {
		t.Run(name, func(t *testing.T) {
			m := NewMetrics("test")
			p := start(t, Config{Mesh: tc.mesh, TLSDir: dir, OriginalDst: tc.dst, Metrics: m, AdminAddr: "127.0.0.1:0"})
			c, err := dial(p.IngressAddr().String())
			require.NoError(t, err)
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(make([]byte, 1))
			assert.Zero(t, n)
			require.Error(t, err)
			require.Eventually(t, func() bool { return count(m, DirectionIngress, ResultRefused) == 1 }, 5*time.Second, 10*time.Millisecond)
			assert.Zero(t, failures(m, DirectionIngress, ReasonOther))
		})
	}

	t.Run("upstream not listening", func(t *testing.T) {
		m := NewMetrics("test")
		ln, err := listen()
		require.NoError(t, err)
		closed := uint16(ln.Addr().(*net.TCPAddr).Port)
		require.NoError(t, ln.Close())
		p := start(t, Config{Mesh: &meshconfig.Config{Ingress: []meshconfig.Ingress{{Name: "web", Port: closed, Mode: meshconfig.IngressTLS}}},
			TLSDir: dir, OriginalDst: fixedDst(closed), Metrics: m})
		c, err := tlsDial(p.IngressAddr().String(), &tls.Config{RootCAs: pool, ServerName: "server", MinVersion: tls.VersionTLS13})
		require.NoError(t, err)
		defer c.Close()
		_, err = roundTrip(c, "x")
		require.Error(t, err)
		require.Eventually(t, func() bool { return count(m, DirectionIngress, ResultDialFailed) == 1 }, 5*time.Second, 10*time.Millisecond)
	})
}

// TestEgressFailures checks that the egress verifies the remote against the
// mesh CA and its name, and counts a rejection of its own certificate.
func TestEgressFailures(t *testing.T) {
	pki := proxytest.NewPKI(t)
	other := proxytest.NewPKI(t)
	backend := echoServer(t)
	good := start(t, Config{Mesh: &meshconfig.Config{}, TLSDir: pki.TLSDir(t, "server", "127.0.0.1"), OriginalDst: fixedDst(backend)})
	foreign := start(t, Config{Mesh: &meshconfig.Config{}, TLSDir: other.TLSDir(t, "server", "127.0.0.1"), OriginalDst: fixedDst(backend)})
	// A client that trusts both meshes and holds a certificate of pki:
	// it accepts foreign's server certificate, foreign rejects its own.
	bothCAs := t.TempDir()
	proxytest.WriteTLSDir(t, bothCAs, append(append([]byte{}, pki.Mesh.PEM...), other.Mesh.PEM...), pki.Leaf(t, "client"))
	ln, err := listen()
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close())
	goodPort := strconv.Itoa(good.IngressAddr().(*net.TCPAddr).Port)

	for name, tc := range map[string]struct {
		remote   string
		tlsDir   string
		reason   string
		result   string
		ingressM *Metrics
		ingressR string
	}{
		"server of another mesh":                 {remote: foreign.IngressAddr().String(), reason: ReasonUnknownAuthority, result: ResultHandshakeFailed},
		"server name not in the SANs":            {remote: "localhost:" + goodPort, reason: ReasonNameMismatch, result: ResultHandshakeFailed},
		"own certificate rejected by the remote": {remote: foreign.IngressAddr().String(), tlsDir: bothCAs, reason: ReasonRejectedByPeer, result: ResultForwarded, ingressM: foreign.cfg.Metrics, ingressR: ReasonUnknownAuthority},
		"remote unreachable":                     {remote: closed, result: ResultDialFailed},
	} {
		t.Run(name, func(t *testing.T) {
			m := NewMetrics("test")
			dir := tc.tlsDir
			if dir == "" {
				dir = pki.TLSDir(t, "client")
			}
			var ingressBefore float64
			if tc.ingressM != nil {
				ingressBefore = failures(tc.ingressM, DirectionIngress, tc.ingressR)
			}
			p := start(t, Config{
				Mesh:    &meshconfig.Config{Egress: []meshconfig.Egress{{Name: "e", Listen: netip.MustParseAddrPort("127.0.0.1:0"), Remote: tc.remote}}},
				TLSDir:  dir,
				Metrics: m,
			})
			c, err := dial(p.EgressAddr("e").String())
			require.NoError(t, err)
			defer c.Close()
			_, err = roundTrip(c, "x")
			require.Error(t, err, "nothing may come back")
			require.Eventually(t, func() bool { return count(m, DirectionEgress, tc.result) == 1 }, 5*time.Second, 10*time.Millisecond)
			if tc.reason != "" {
				require.Eventually(t, func() bool { return failures(m, DirectionEgress, tc.reason) == 1 }, 5*time.Second, 10*time.Millisecond)
			}
			if tc.ingressM != nil {
				require.Eventually(t, func() bool { return failures(tc.ingressM, DirectionIngress, tc.ingressR) == ingressBefore+1 }, 5*time.Second, 10*time.Millisecond)
			}
		})
	}
}

// TestStartupOrder checks that the proxy installs its rules first, opens no
// listener and reports not ready until the certificates exist, and that
// /readyz says why.
func TestStartupOrder(t *testing.T) {
	pki := proxytest.NewPKI(t)
	dir := t.TempDir()
	applied := make(chan *rules.Set, 1)
	p, err := New(Config{
		Mesh:           &meshconfig.Config{AdminPort: 9901},
		TLSDir:         dir,
		IngressAddr:    "127.0.0.1:0",
		AdminAddr:      "127.0.0.1:0",
		ReloadInterval: 20 * time.Millisecond,
		Metrics:        NewMetrics("test"),
		ApplyRules:     func(s *rules.Set) error { applied <- s; return nil },
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	s := <-applied
	assert.Equal(t, p.Rules(), s)

	var admin net.Addr
	require.Eventually(t, func() bool { admin = p.AdminAddr(); return admin != nil }, 5*time.Second, 10*time.Millisecond)
	code, body := readyz(t, admin)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "[+]rules ok")
	assert.Contains(t, body, "[-]certificates failed")
	assert.Contains(t, body, "[-]listeners failed")
	select {
	case <-p.Ready():
		t.Fatal("ready without certificates")
	case <-time.After(100 * time.Millisecond):
	}

	proxytest.WriteTLSDir(t, dir, pki.Mesh.PEM, pki.Leaf(t, "server"))
	select {
	case <-p.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready after the certificates appeared")
	}
	code, body = readyz(t, admin)
	assert.Equal(t, http.StatusOK, code, body)

	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+admin.String()+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, name := range []string{"contrast_meshproxy_connections_total", "contrast_meshproxy_bytes_total",
		"contrast_meshproxy_handshake_failures_total", "contrast_meshproxy_active_connections",
		"contrast_meshproxy_certificate_loads_total", "contrast_meshproxy_certificate_expiry_timestamp_seconds",
		`contrast_build_info{component="mesh-proxy"`} {
		assert.Contains(t, string(b), name)
	}
}

// TestDrain checks the SIGTERM path: listeners close at once, open
// connections keep working until they end or the drain timeout closes them.
func TestDrain(t *testing.T) {
	pki := proxytest.NewPKI(t)
	backend := echoServer(t)
	pool := x509.NewCertPool()
	pool.AddCert(pki.Mesh.Cert)
	for name, tc := range map[string]struct {
		closeClient bool
	}{
		"connection ends by itself": {closeClient: true},
		"drain timeout":             {},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := New(Config{
				Mesh:         &meshconfig.Config{Ingress: []meshconfig.Ingress{{Name: "web", Port: backend, Mode: meshconfig.IngressTLS}}},
				TLSDir:       pki.TLSDir(t, "server"),
				IngressAddr:  "127.0.0.1:0",
				OriginalDst:  fixedDst(backend),
				DrainTimeout: 500 * time.Millisecond,
			})
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			<-p.Ready()
			addr := p.IngressAddr().String()
			c, err := tlsDial(addr, &tls.Config{RootCAs: pool, ServerName: "server", MinVersion: tls.VersionTLS13})
			require.NoError(t, err)
			defer c.Close()
			_, err = roundTrip(c, "before")
			require.NoError(t, err)

			cancel()
			require.Eventually(t, func() bool {
				c2, err := dial(addr)
				if err == nil {
					_ = c2.Close()
				}
				return err != nil
			}, 5*time.Second, 10*time.Millisecond, "listener still open while draining")
			got, err := roundTrip(c, "during drain")
			require.NoError(t, err)
			assert.Equal(t, "during drain", got)

			start := time.Now()
			if tc.closeClient {
				require.NoError(t, c.Close())
				select {
				case err := <-done:
					require.NoError(t, err)
				case <-time.After(400 * time.Millisecond):
					t.Fatal("Run did not return after the last connection ended")
				}
				return
			}
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after the drain timeout")
			}
			assert.Less(t, time.Since(start), 2*time.Second)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			require.Error(t, err, "the drain timeout closes the connection")
		})
	}
}

func readyz(t *testing.T, addr net.Addr) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+addr.String()+"/readyz?verbose", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}
