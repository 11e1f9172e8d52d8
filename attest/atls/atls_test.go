package atls_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/atls"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type env struct {
	dev *sim.SNPDevice
	iss attest.Issuer
	val attest.Validator
}

var (
	envOnce sync.Once
	shared  *env
)

func newEnv(t testing.TB) *env {
	t.Helper()
	envOnce.Do(func() {
		auth, err := sim.NewSNPAuthority()
		require.NoError(t, err)
		dev, err := auth.NewDevice(sim.DefaultSNPDeviceConfig())
		require.NoError(t, err)
		v, err := snp.NewValidator(snp.Config{
			ReferenceValues: []snp.ReferenceValues{dev.ReferenceValues()},
			Cache:           certcache.New(certcache.Config{Offline: true}),
		})
		require.NoError(t, err)
		shared = &env{dev: dev, iss: snp.NewIssuer(dev.IssuerConfig()), val: v}
	})
	return shared
}

type result struct {
	conn *atls.Conn
	err  error
}

func handshake(t testing.TB, server, client atls.Config) (result, result) {
	t.Helper()
	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := make(chan result, 1)
	go func() {
		c, err := atls.Server(ctx, a, server)
		ch <- result{c, err}
	}()
	c, err := atls.Client(ctx, b, client)
	cr := result{c, err}
	if err != nil {
		_ = b.Close()
	}
	sr := <-ch
	_ = a.Close()
	_ = b.Close()
	return sr, cr
}

func TestServerAttests(t *testing.T) {
	e := newEnv(t)
	sr, cr := handshake(t, atls.Config{Issuer: e.iss}, atls.Config{Validators: []attest.Validator{e.val}})
	require.NoError(t, sr.err)
	require.NoError(t, cr.err)
	require.NotNil(t, cr.conn.Peer.Result)
	assert.Equal(t, attest.PlatformSimulatedSNP, cr.conn.Peer.Result.Platform)
	assert.Nil(t, sr.conn.Peer.Result)
}

// countingIssuer counts the evidence it issues.
type countingIssuer struct {
	attest.Issuer
	n atomic.Int32
}

func (c *countingIssuer) Issue(ctx context.Context, rd [64]byte) ([]byte, error) {
	c.n.Add(1)
	return c.Issuer.Issue(ctx, rd)
}

// TestServerAttestsOnlyWhenAsked: a server with an Issuer issues evidence
// only for a client that validates it; a validating client still gets it,
// and one that wants it but meets a server without an Issuer fails.
func TestServerAttestsOnlyWhenAsked(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name       string
		validators []attest.Validator
		wantIssued int32
	}{
		{name: "client does not validate", wantIssued: 0},
		{name: "client validates", validators: []attest.Validator{e.val}, wantIssued: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss := &countingIssuer{Issuer: e.iss}
			sr, cr := handshake(t, atls.Config{Issuer: iss}, atls.Config{Issuer: e.iss, Validators: tc.validators})
			require.NoError(t, sr.err)
			require.NoError(t, cr.err)
			assert.Equal(t, tc.wantIssued, iss.n.Load())
			assert.Equal(t, tc.wantIssued == 1, cr.conn.Peer.Result != nil)
		})
	}
	t.Run("client validates, server has no issuer", func(t *testing.T) {
		_, cr := handshake(t, atls.Config{}, atls.Config{Validators: []attest.Validator{e.val}})
		require.Error(t, cr.err)
		check, ok := attest.FailedCheck(cr.err)
		require.True(t, ok)
		assert.Equal(t, attest.CheckSession, check)
	})
}

func TestMutual(t *testing.T) {
	e := newEnv(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	sr, cr := handshake(t,
		atls.Config{Issuer: e.iss, Validators: []attest.Validator{e.val}},
		atls.Config{Issuer: e.iss, Validators: []attest.Validator{e.val}, Key: key})
	require.NoError(t, sr.err)
	require.NoError(t, cr.err)
	require.NotNil(t, sr.conn.Peer.Result)
	assert.True(t, key.PublicKey.Equal(sr.conn.Peer.PublicKey), "server sees the client's TLS key")
}

// relayIssuer replays evidence issued for another session.
type relayIssuer struct{ ev []byte }

func (r relayIssuer) Issue(context.Context, [64]byte) ([]byte, error) { return r.ev, nil }

func TestRejections(t *testing.T) {
	e := newEnv(t)
	var other [64]byte
	other[0] = 1
	relayed, err := e.iss.Issue(context.Background(), other)
	require.NoError(t, err)

	// Reference values of the same device under another simulated root:
	// the chain check rejects before any reference value is compared.
	otherAuth, err := sim.NewSNPAuthority()
	require.NoError(t, err)
	dev2, err := otherAuth.NewDevice(e.dev.Config())
	require.NoError(t, err)
	otherRoot, err := snp.NewValidator(snp.Config{
		ReferenceValues: []snp.ReferenceValues{dev2.ReferenceValues()}, Cache: certcache.New(certcache.Config{Offline: true}),
	})
	require.NoError(t, err)
	// The genuine root and reference values but another launch
	// measurement: chain, signature and REPORT_DATA pass, the measurement
	// check rejects.
	rv := e.dev.ReferenceValues()
	rv.TrustedMeasurement = append(attest.HexBytes(nil), rv.TrustedMeasurement...)
	rv.TrustedMeasurement[0] ^= 1
	wrongMeasurement, err := snp.NewValidator(snp.Config{
		ReferenceValues: []snp.ReferenceValues{rv}, Cache: certcache.New(certcache.Config{Offline: true}),
	})
	require.NoError(t, err)

	tests := map[string]struct {
		server, client atls.Config
		want           attest.Check
		clientRejects  bool
	}{
		"relayed server evidence": {
			server: atls.Config{Issuer: relayIssuer{relayed}}, client: atls.Config{Validators: []attest.Validator{e.val}},
			want: attest.CheckReportData, clientRejects: true,
		},
		"relayed client evidence": {
			server: atls.Config{Validators: []attest.Validator{e.val}}, client: atls.Config{Issuer: relayIssuer{relayed}},
			want: attest.CheckReportData,
		},
		"client sends none": {
			server: atls.Config{Validators: []attest.Validator{e.val}}, client: atls.Config{},
			want: attest.CheckSession,
		},
		"server sends none": {
			server: atls.Config{}, client: atls.Config{Validators: []attest.Validator{e.val}},
			want: attest.CheckSession, clientRejects: true,
		},
		"simulated root mismatch": {
			server: atls.Config{Issuer: e.iss}, client: atls.Config{Validators: []attest.Validator{otherRoot}},
			want: attest.CheckChain, clientRejects: true,
		},
		"wrong server measurement": {
			server: atls.Config{Issuer: e.iss}, client: atls.Config{Validators: []attest.Validator{wrongMeasurement}},
			want: attest.CheckMeasurement, clientRejects: true,
		},
		"wrong client measurement": {
			server: atls.Config{Validators: []attest.Validator{wrongMeasurement}}, client: atls.Config{Issuer: e.iss},
			want: attest.CheckMeasurement,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			sr, cr := handshake(t, tc.server, tc.client)
			require.Error(t, sr.err)
			require.Error(t, cr.err)
			verifier, attester := sr.err, cr.err
			if tc.clientRejects {
				verifier, attester = cr.err, sr.err
			}
			c, ok := attest.FailedCheck(verifier)
			require.True(t, ok, "%v", verifier)
			assert.Equal(t, tc.want, c, "%v", verifier)
			c, ok = attest.FailedCheck(attester)
			require.True(t, ok, "%v", attester)
			assert.Equal(t, tc.want, c, "attester learns the failed check: %v", attester)
			require.ErrorIs(t, attester, atls.ErrRejectedByPeer)
		})
	}
}

func TestReportDataDiffersPerRoleAndSession(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var seen [][64]byte
	rec := recIssuer{inner: e.iss, mu: &mu, seen: &seen}
	for range 2 {
		sr, cr := handshake(t, atls.Config{Issuer: rec}, atls.Config{Issuer: rec, Validators: []attest.Validator{e.val}})
		require.NoError(t, sr.err)
		require.NoError(t, cr.err)
	}
	require.Len(t, seen, 4)
	uniq := map[[64]byte]bool{}
	for _, rd := range seen {
		uniq[rd] = true
	}
	assert.Len(t, uniq, 4, "REPORT_DATA must differ per session and per role")
}

type recIssuer struct {
	inner attest.Issuer
	mu    *sync.Mutex
	seen  *[][64]byte
}

func (r recIssuer) Issue(ctx context.Context, rd [64]byte) ([]byte, error) {
	r.mu.Lock()
	*r.seen = append(*r.seen, rd)
	r.mu.Unlock()
	return r.inner.Issue(ctx, rd)
}

func TestGRPCMesh(t *testing.T) {
	e := newEnv(t)
	serverCreds, err := atls.NewCredentials(atls.Config{Validators: []attest.Validator{e.val}})
	require.NoError(t, err)
	var got *atls.Peer
	srv := grpc.NewServer(grpc.Creds(serverCreds), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			p, err := atls.PeerFromContext(ctx)
			if err != nil {
				return nil, err
			}
			got = p
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	clientCreds, err := atls.NewCredentials(atls.Config{Issuer: e.iss})
	require.NoError(t, err)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(clientCreds))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.NotNil(t, got)
	require.NotNil(t, got.Result)
	hd := e.dev.Config().HostData
	assert.Equal(t, hd[:], got.Result.PolicyDigest)
}

func BenchmarkATLSMutualHandshake(b *testing.B) {
	e := newEnv(b)
	sk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	server := atls.Config{Issuer: e.iss, Validators: []attest.Validator{e.val}, Key: sk}
	client := atls.Config{Issuer: e.iss, Validators: []attest.Validator{e.val}, Key: ck}
	for b.Loop() {
		sr, cr := handshake(b, server, client)
		if sr.err != nil || cr.err != nil {
			b.Fatal(sr.err, cr.err)
		}
	}
}

// BenchmarkTLS13Handshake is the baseline: a plain mutual TLS 1.3 handshake
// with the same key type.
func BenchmarkTLS13Handshake(b *testing.B) {
	sk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	scert, ccert := atls.SelfSignedForTest(b, sk), atls.SelfSignedForTest(b, ck)
	for b.Loop() {
		a, c := net.Pipe()
		done := make(chan error, 1)
		go func() {
			s := tls.Server(a, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{scert}, ClientAuth: tls.RequireAnyClientCert})
			done <- s.HandshakeContext(context.Background())
		}()
		cl := tls.Client(c, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{ccert}, InsecureSkipVerify: true}) //nolint:gosec // benchmark baseline
		if err := cl.HandshakeContext(context.Background()); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		_ = a.Close()
		_ = c.Close()
	}
}

// BenchmarkATLSVsTLS13 interleaves one aTLS mutual handshake (both sides
// issue simulated SNP evidence and validate the peer's, warm caches) and one
// plain mutual TLS 1.3 handshake with the same keys per iteration.
func BenchmarkATLSVsTLS13(b *testing.B) {
	e := newEnv(b)
	sk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	server := atls.Config{Issuer: e.iss, Validators: []attest.Validator{e.val}, Key: sk}
	client := atls.Config{Issuer: e.iss, Validators: []attest.Validator{e.val}, Key: ck}
	scert, ccert := atls.SelfSignedForTest(b, sk), atls.SelfSignedForTest(b, ck)
	var ta, tp time.Duration
	for b.Loop() {
		t0 := time.Now()
		sr, cr := handshake(b, server, client)
		if sr.err != nil || cr.err != nil {
			b.Fatal(sr.err, cr.err)
		}
		t1 := time.Now()
		plainHandshake(b, scert, ccert)
		ta, tp = ta+t1.Sub(t0), tp+time.Since(t1)
	}
	b.ReportMetric(float64(b.N)/ta.Seconds(), "atls-handshakes/s")
	b.ReportMetric(float64(b.N)/tp.Seconds(), "tls13-handshakes/s")
	b.ReportMetric(tp.Seconds()/ta.Seconds(), "ratio-to-tls13")
}

func plainHandshake(b *testing.B, scert, ccert tls.Certificate) {
	a, c := net.Pipe()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{scert}, ClientAuth: tls.RequireAnyClientCert})
		done <- s.HandshakeContext(context.Background())
	}()
	cl := tls.Client(c, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{ccert}, InsecureSkipVerify: true}) //nolint:gosec // benchmark baseline
	if err := cl.HandshakeContext(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	_ = a.Close()
	_ = c.Close()
}
