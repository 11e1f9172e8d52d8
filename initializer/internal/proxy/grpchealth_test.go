package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/contrast-cc/contrast/initializer/internal/proxy/proxytest"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

// grpcServer serves srv on a loopback port and returns the port.
func grpcServer(t *testing.T, srv *grpc.Server) uint16 {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return port(t, l.Addr().String())
}

// TestGRPCProbes runs rewritten gRPC probes through the proxy's probe port
// against grpc-go's own health server: SERVING, NOT_SERVING, an unknown
// service, a service name that needs escaping in the probe entry, a server
// without the health service, a closed port, TLS (mode TLS) and the wrong
// mode either way, and a status that changes.
func TestGRPCProbes(t *testing.T) {
	pki := proxytest.NewPKI(t)
	dir := t.TempDir()
	proxytest.WriteTLSDir(t, dir, pki.Mesh.PEM, pki.Leaf(t, "server"))

	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("shop.Cart", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus("a#b c,d", healthpb.HealthCheckResponse_SERVING)
	withHealth := grpc.NewServer()
	healthpb.RegisterHealthServer(withHealth, hs)
	healthPort := grpcServer(t, withHealth)
	noHealthPort := grpcServer(t, grpc.NewServer())
	// a server with TLS for mode TLS, with a certificate the probe does not
	// (and the kubelet's would not) verify
	leaf := pki.Leaf(t, "app.example")
	cert, err := tls.X509KeyPair(leaf.ChainPEM, leaf.KeyPEM)
	require.NoError(t, err)
	withTLS := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	healthpb.RegisterHealthServer(withTLS, hs)
	tlsPort := grpcServer(t, withTLS)
	closed, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedPort := port(t, closed.Addr().String())
	require.NoError(t, closed.Close())

	probes := []meshconfig.Probe{
		{Name: "api-readiness", Kind: meshconfig.ProbeGRPC, Port: healthPort},
		{Name: "cart-readiness", Kind: meshconfig.ProbeGRPC, Port: healthPort, Service: "shop.Cart"},
		{Name: "odd-readiness", Kind: meshconfig.ProbeGRPC, Port: healthPort, Service: "a#b c,d"},
		{Name: "unknown-readiness", Kind: meshconfig.ProbeGRPC, Port: healthPort, Service: "no.Such"},
		{Name: "nohealth-readiness", Kind: meshconfig.ProbeGRPC, Port: noHealthPort},
		{Name: "closed-readiness", Kind: meshconfig.ProbeGRPC, Port: closedPort},
		{Name: "tls-readiness", Kind: meshconfig.ProbeGRPCS, Port: tlsPort},
		{Name: "tls-liveness", Kind: meshconfig.ProbeGRPCS, Port: tlsPort, Service: "shop.Cart"},
		{Name: "plain-readiness", Kind: meshconfig.ProbeGRPCS, Port: healthPort},
		{Name: "tls-startup", Kind: meshconfig.ProbeGRPC, Port: tlsPort},
	}
	// the probes as the proxy reads them from its environment
	parsed, err := meshconfig.ParseProbes((&meshconfig.Config{Probes: probes}).ProbesString())
	require.NoError(t, err)
	require.Equal(t, probes, parsed)
	p := start(t, Config{Mesh: &meshconfig.Config{Probes: parsed}, TLSDir: dir, ProbeAddr: "127.0.0.1:0"})
	addr := p.ProbeAddr().String()

	get := func(t *testing.T, name string) (int, string) {
		t.Helper()
		c := &http.Client{Timeout: 10 * time.Second}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+meshconfig.ProbePathPrefix+name, nil)
		require.NoError(t, err)
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	for name, want := range map[string]struct {
		code int
		body string
	}{
		"api-readiness":      {http.StatusOK, "probe api-readiness: ok"},
		"cart-readiness":     {http.StatusServiceUnavailable, "service unhealthy (responded with NOT_SERVING)"},
		"odd-readiness":      {http.StatusOK, "ok"},
		"unknown-readiness":  {http.StatusServiceUnavailable, "NOT_FOUND: unknown service"},
		"nohealth-readiness": {http.StatusServiceUnavailable, "does not implement grpc.health.v1.Health"},
		"closed-readiness":   {http.StatusServiceUnavailable, "connection refused"},
		"tls-readiness":      {http.StatusOK, "ok"},
		"tls-liveness":       {http.StatusServiceUnavailable, "responded with NOT_SERVING"},
		"plain-readiness":    {http.StatusServiceUnavailable, "health rpc: "},
		"tls-startup":        {http.StatusServiceUnavailable, "health rpc: "},
	} {
		t.Run(name, func(t *testing.T) {
			code, body := get(t, name)
			assert.Equal(t, want.code, code, body)
			assert.Contains(t, body, want.body)
		})
	}
	t.Run("status changes", func(t *testing.T) {
		hs.SetServingStatus("shop.Cart", healthpb.HealthCheckResponse_SERVING)
		code, body := get(t, "cart-readiness")
		assert.Equal(t, http.StatusOK, code, body)
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		code, body = get(t, "api-readiness")
		assert.Equal(t, http.StatusServiceUnavailable, code, body)
		assert.Contains(t, body, "responded with NOT_SERVING")
	})
}

// frame is a gRPC length-prefixed message.
func frame(flag byte, msg []byte) []byte {
	out := make([]byte, 5, 5+len(msg))
	out[0] = flag
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg))) //nolint:gosec // test messages are small
	return append(out, msg...)
}

// TestGRPCHealthCheckWire runs the health check against a plain net/http
// h2c server that answers the way a gRPC server may (trailers-only, unknown
// fields, unknown status values) or must not (compression nobody asked for,
// HTTP errors, a missing grpc-status, silence).
func TestGRPCHealthCheckWire(t *testing.T) {
	cases := map[string]struct {
		handler func(w http.ResponseWriter, r *http.Request)
		wantErr string
	}{
		"serving with unknown fields": {handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc+proto")
			// field 2 varint, field 3 bytes, field 4 fixed32, field 5 fixed64, then status SERVING
			msg := []byte{2 << 3, 0x96, 0x01, 3<<3 | 2, 2, 'h', 'i', 4<<3 | 5, 1, 2, 3, 4, 5<<3 | 1, 1, 2, 3, 4, 5, 6, 7, 8, 1 << 3, 1}
			_, _ = w.Write(frame(0, msg))
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}},
		"status absent is UNKNOWN": {handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write(frame(0, nil))
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}, wantErr: "service unhealthy (responded with UNKNOWN)"},
		"status out of the enum": {handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write(frame(0, []byte{1 << 3, 9}))
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}, wantErr: "responded with 9"},
		"trailers-only error": {handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "14")
			w.Header().Set("Grpc-Message", "shutting%20down")
		}, wantErr: "health rpc failed: UNAVAILABLE: shutting down"},
		"compressed": {handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write(frame(1, []byte{1 << 3, 1}))
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}, wantErr: "compressed, which was not asked for"},
		"two messages": {handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write(append(frame(0, []byte{1 << 3, 1}), frame(0, []byte{1 << 3, 1})...))
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}, wantErr: "2 bytes long but 9 bytes follow"},
		"truncated field": {handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write(frame(0, []byte{3<<3 | 2, 5, 'x'}))
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}, wantErr: "truncated response message"},
		"group wire type": {handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write(frame(0, []byte{3<<3 | 3}))
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}, wantErr: "wire type 3"},
		"no grpc-status": {handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write(frame(0, []byte{1 << 3, 1}))
		}, wantErr: "the response has no grpc-status"},
		"HTTP error": {handler: func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no", http.StatusNotFound)
		}, wantErr: "HTTP 404 Not Found"},
		"not gRPC": {handler: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "<html>")
		}, wantErr: `content type "text/html; charset=utf-8", not gRPC`},
		"too long": {handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write(make([]byte, maxHealthResponse+1))
		}, wantErr: "response longer than 4096 bytes"},
		"silent until the deadline": {handler: func(_ http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, wantErr: "context deadline exceeded"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			// what the server saw, handed over before the handler answers
			type call struct {
				proto        int
				method, path string
				header       http.Header
				body         []byte
			}
			calls := make(chan call, 1)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				calls <- call{r.ProtoMajor, r.Method, r.URL.Path, r.Header.Clone(), body}
				tc.handler(w, r)
			}))
			srv.Config.Protocols = new(http.Protocols)
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
			srv.Start()
			defer srv.Close()
			transport := &http.Transport{Protocols: new(http.Protocols)}
			transport.Protocols.SetUnencryptedHTTP2(true)
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			err := grpcHealthCheck(ctx, &http.Client{Transport: transport}, srv.URL, "svc")
			var got call
			select {
			case got = <-calls:
			case <-time.After(5 * time.Second):
				t.Fatal("the server did not see the call")
			}
			assert.Equal(t, 2, got.proto, "HTTP/2")
			assert.Equal(t, http.MethodPost, got.method)
			assert.Equal(t, healthCheckPath, got.path)
			assert.Equal(t, "application/grpc", got.header.Get("Content-Type"))
			assert.Equal(t, "trailers", got.header.Get("Te"))
			assert.Equal(t, []byte{0, 0, 0, 0, 5, 1<<3 | 2, 3, 's', 'v', 'c'}, got.body, "HealthCheckRequest{service: \"svc\"}")
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestHealthCheckRequest(t *testing.T) {
	assert.Equal(t, []byte{0, 0, 0, 0, 0}, healthCheckRequest(""), "the empty message for the server's overall health")
	long := string(make([]byte, 200))
	req := healthCheckRequest(long)
	assert.Equal(t, []byte{0, 0, 0, 0, 203, 1<<3 | 2, 0xc8, 0x01}, req[:8], "a two-byte length varint")
	assert.Len(t, req, 5+3+200)
}
