package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/initializer/internal/proxy/proxytest"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

// waitReloads waits until m counted n successful certificate loads.
func waitReloads(t *testing.T, m *Metrics, n float64) {
	t.Helper()
	require.Eventually(t, func() bool { return testutil.ToFloat64(m.reloads.WithLabelValues("ok")) == n },
		10*time.Second, 10*time.Millisecond, "certificates not reloaded")
}

// connect makes one connection to addr with cfg and one round trip, and
// returns whether the handshake resumed a session and the round trip's
// error.
func connect(t *testing.T, addr string, cfg *tls.Config) (bool, error) {
	t.Helper()
	c, err := tlsDial(addr, cfg)
	require.NoError(t, err, "the client's side of the handshake")
	defer c.Close()
	got, err := roundTrip(c, "ping")
	if err == nil {
		assert.Equal(t, "ping", got)
	}
	return c.ConnectionState().DidResume, err
}

// TestIngressResumption: a client that connects again resumes its session;
// a reload of the ingress's certificates ends every earlier session, so a
// client of the previous mesh CA is refused even with a ticket, and a
// ticket of a #false port is no client certificate on an mTLS port.
func TestIngressResumption(t *testing.T) {
	pki := proxytest.NewPKI(t)
	mtlsPort, tlsPort := echoServer(t), echoServer(t)
	var dst atomic.Uint32
	dst.Store(uint32(mtlsPort))
	dir := pki.TLSDir(t, "server")
	m := NewMetrics("test")
	p := start(t, Config{
		Mesh:   &meshconfig.Config{Ingress: []meshconfig.Ingress{{Name: "public", Port: tlsPort, Mode: meshconfig.IngressTLS}}},
		TLSDir: dir,
		OriginalDst: func(*net.TCPConn) (netip.AddrPort, error) {
			return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(dst.Load())), nil
		},
		ReloadInterval: 20 * time.Millisecond,
		Metrics:        m,
	})
	waitReloads(t, m, 1)
	addr := p.IngressAddr().String()
	rotated := proxytest.NewPKI(t)
	bothCAs := x509.NewCertPool()
	bothCAs.AddCert(pki.Mesh.Cert)
	bothCAs.AddCert(rotated.Mesh.Cert)
	clientLeaf := pki.Leaf(t, "client")
	clientCert, err := tls.X509KeyPair(clientLeaf.ChainPEM, clientLeaf.KeyPEM)
	require.NoError(t, err)
	client := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{clientCert},
		RootCAs:            bothCAs, // so that the client accepts the server after the CA rotation
		ServerName:         "server",
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}

	resumed, err := connect(t, addr, client)
	require.NoError(t, err)
	assert.False(t, resumed, "first connection")
	resumed, err = connect(t, addr, client)
	require.NoError(t, err)
	assert.True(t, resumed, "second connection resumes")

	// A new leaf under the same mesh CA: the earlier ticket is useless, a
	// full handshake verifies the client again.
	proxytest.WriteTLSDir(t, dir, pki.Mesh.PEM, pki.Leaf(t, "server"))
	waitReloads(t, m, 2)
	resumed, err = connect(t, addr, client)
	require.NoError(t, err)
	assert.False(t, resumed, "no resumption across a reload")
	resumed, err = connect(t, addr, client)
	require.NoError(t, err)
	assert.True(t, resumed)

	// A new mesh CA (a manifest update): the client still holds a ticket
	// and a certificate of the old CA; it is refused for the certificate.
	proxytest.WriteTLSDir(t, dir, rotated.Mesh.PEM, rotated.Leaf(t, "server"))
	waitReloads(t, m, 3)
	unknown := failures(m, DirectionIngress, ReasonUnknownAuthority)
	resumed, err = connect(t, addr, client)
	require.Error(t, err, "a client of the old mesh CA must not get through")
	assert.False(t, resumed)
	require.Eventually(t, func() bool { return failures(m, DirectionIngress, ReasonUnknownAuthority) == unknown+1 },
		5*time.Second, 10*time.Millisecond)

	// A ticket from a #false port, offered on an mTLS port.
	anonymous := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		RootCAs:            bothCAs,
		ServerName:         "server",
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}
	dst.Store(uint32(tlsPort))
	_, err = connect(t, addr, anonymous)
	require.NoError(t, err)
	resumed, err = connect(t, addr, anonymous)
	require.NoError(t, err)
	require.True(t, resumed, "the #false port resumes too")
	dst.Store(uint32(mtlsPort))
	noCert := failures(m, DirectionIngress, ReasonNoClientCertificate)
	resumed, err = connect(t, addr, anonymous)
	require.Error(t, err, "a ticket is no client certificate")
	assert.False(t, resumed)
	require.Eventually(t, func() bool { return failures(m, DirectionIngress, ReasonNoClientCertificate) == noCert+1 },
		5*time.Second, 10*time.Millisecond)
}

// TestEgressResumption: the egress resumes its sessions with a remote, and
// starts over with full handshakes after its certificates are reloaded.
func TestEgressResumption(t *testing.T) {
	pki := proxytest.NewPKI(t)
	server, err := LoadBundle(pki.TLSDir(t, "server", "127.0.0.1"))
	require.NoError(t, err)
	var mu sync.Mutex
	var resumed []bool
	cfg := server.mtls.Clone()
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err
		}
		mu.Lock()
		resumed = append(resumed, cs.DidResume)
		mu.Unlock()
		return nil
	}
	ln, err := listen()
	require.NoError(t, err)
	port := benchListen(t, tls.NewListener(ln, cfg))

	dir := pki.TLSDir(t, "client")
	m := NewMetrics("test")
	p := start(t, Config{
		Mesh: &meshconfig.Config{Egress: []meshconfig.Egress{
			{Name: "svc", Listen: netip.MustParseAddrPort("127.0.0.1:0"), Remote: port},
		}},
		TLSDir:         dir,
		ReloadInterval: 20 * time.Millisecond,
		Metrics:        m,
	})
	waitReloads(t, m, 1)
	roundTrips := func(n int) {
		for i := range n {
			c, err := dial(p.EgressAddr("svc").String())
			require.NoError(t, err)
			_, err = c.Write([]byte{'E'}) // benchServe's echo mode
			require.NoError(t, err)
			msg := strings.Repeat(strconv.Itoa(i), benchMsgSize)
			got, err := roundTrip(c, msg)
			require.NoError(t, err)
			require.Equal(t, msg, got)
			_ = c.Close()
		}
	}
	roundTrips(3)
	proxytest.WriteTLSDir(t, dir, pki.Mesh.PEM, pki.Leaf(t, "client"))
	waitReloads(t, m, 2)
	roundTrips(2)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []bool{false, true, true, false, true}, resumed)
}
