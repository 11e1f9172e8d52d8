package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/initializer/internal/proxy/proxytest"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

// TestProbes runs the kubelet's rewritten probes through the proxy's probe
// port against applications on loopback: HTTP status, HTTPS without
// verification, a redirect, custom headers (Host as the request's host, a
// header twice, User-Agent and an empty Accept replacing the defaults) and
// the defaults without them, TCP connects, and failures with their reason.
func TestProbes(t *testing.T) {
	pki := proxytest.NewPKI(t)
	dir := t.TempDir()
	proxytest.WriteTLSDir(t, dir, pki.Mesh.PEM, pki.Leaf(t, "server"))

	app := http.NewServeMux()
	app.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "full=1" {
			http.Error(w, "query lost", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	app.HandleFunc("GET /vhost", func(w http.ResponseWriter, r *http.Request) {
		// answers 200 only to the request the kubelet would send for
		// the probe's headers
		switch {
		case r.Host != "app.example":
			http.Error(w, "host "+r.Host, http.StatusNotFound)
		case !slices.Equal(r.Header.Values("X-Token"), []string{"a b#c", "2"}):
			http.Error(w, fmt.Sprintf("X-Token %q", r.Header.Values("X-Token")), http.StatusForbidden)
		case r.Header.Get("User-Agent") != "probe/1":
			http.Error(w, "user agent "+r.UserAgent(), http.StatusForbidden)
		case r.Header.Values("Accept") != nil:
			http.Error(w, fmt.Sprintf("accept %q", r.Header.Values("Accept")), http.StatusForbidden)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	})
	app.HandleFunc("GET /defaults", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") != "*/*" || r.UserAgent() != probeUserAgent || r.Host != r.Context().Value(http.LocalAddrContextKey).(net.Addr).String() {
			http.Error(w, fmt.Sprintf("accept %q, user agent %q, host %q", r.Header.Get("Accept"), r.UserAgent(), r.Host), http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	app.HandleFunc("GET /broken", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusInternalServerError) })
	app.HandleFunc("GET /moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://elsewhere.example/", http.StatusFound)
	})
	plain := httptest.NewServer(app)
	defer plain.Close()
	tlsApp := httptest.NewTLSServer(app)
	defer tlsApp.Close()
	closed, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closedPort := port(t, closed.Addr().String())
	require.NoError(t, closed.Close())

	probes := []meshconfig.Probe{
		{Name: "web-readiness", Kind: meshconfig.ProbeHTTP, Port: port(t, plain.Listener.Addr().String()), Path: "/healthz?full=1"},
		{Name: "web-liveness", Kind: meshconfig.ProbeHTTP, Port: port(t, plain.Listener.Addr().String()), Path: "/broken"},
		{Name: "web-startup", Kind: meshconfig.ProbeHTTP, Port: port(t, plain.Listener.Addr().String()), Path: "/moved"},
		{Name: "tls-readiness", Kind: meshconfig.ProbeHTTPS, Port: port(t, tlsApp.Listener.Addr().String()), Path: "/healthz?full=1"},
		{Name: "vhost-readiness", Kind: meshconfig.ProbeHTTP, Port: port(t, plain.Listener.Addr().String()), Path: "/vhost", Headers: meshconfig.CanonicalHeaders([]meshconfig.ProbeHeader{
			{Name: "x-token", Value: "a b#c"}, {Name: "Host", Value: "app.example"}, {Name: "User-Agent", Value: "probe/1"}, {Name: "X-Token", Value: "2"}, {Name: "Accept"},
		})},
		{Name: "vhost-liveness", Kind: meshconfig.ProbeHTTP, Port: port(t, plain.Listener.Addr().String()), Path: "/vhost"},
		{Name: "vhost-startup", Kind: meshconfig.ProbeHTTP, Port: port(t, plain.Listener.Addr().String()), Path: "/defaults"},
		{Name: "db-readiness", Kind: meshconfig.ProbeTCP, Port: port(t, plain.Listener.Addr().String())},
		{Name: "db-liveness", Kind: meshconfig.ProbeTCP, Port: closedPort},
	}
	p := start(t, Config{
		Mesh:      &meshconfig.Config{Probes: probes},
		TLSDir:    dir,
		ProbeAddr: "127.0.0.1:0",
	})
	assert.Contains(t, p.Rules().SkippedPorts(), meshconfig.ProbePort, "the probe port is never redirected")
	addr := p.ProbeAddr()
	require.NotNil(t, addr)

	for name, want := range map[string]struct {
		code int
		body string
	}{
		"web-readiness":   {http.StatusOK, "probe web-readiness: ok"},
		"web-liveness":    {http.StatusServiceUnavailable, "the application answered 500 Internal Server Error"},
		"web-startup":     {http.StatusOK, "ok"},
		"tls-readiness":   {http.StatusOK, "ok"},
		"vhost-readiness": {http.StatusOK, "ok"},
		"vhost-liveness":  {http.StatusServiceUnavailable, "the application answered 404 Not Found"},
		"vhost-startup":   {http.StatusOK, "ok"},
		"db-readiness":    {http.StatusOK, "ok"},
		"db-liveness":     {http.StatusServiceUnavailable, "connection refused"},
		"unknown":         {http.StatusNotFound, "404"},
	} {
		t.Run(name, func(t *testing.T) {
			c := &http.Client{Timeout: 10 * time.Second}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr.String()+meshconfig.ProbePathPrefix+name, nil)
			require.NoError(t, err)
			resp, err := c.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, want.code, resp.StatusCode, string(body))
			assert.Contains(t, string(body), want.body)
		})
	}
}

func TestNoProbeListenerWithoutProbes(t *testing.T) {
	pki := proxytest.NewPKI(t)
	dir := t.TempDir()
	proxytest.WriteTLSDir(t, dir, pki.Mesh.PEM, pki.Leaf(t, "server"))
	p := start(t, Config{Mesh: &meshconfig.Config{}, TLSDir: dir, ProbeAddr: "127.0.0.1:0"})
	assert.Nil(t, p.ProbeAddr())
	assert.NotContains(t, p.Rules().SkippedPorts(), meshconfig.ProbePort)
}

func port(t *testing.T, addr string) uint16 {
	t.Helper()
	_, ps, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.ParseUint(ps, 10, 16)
	require.NoError(t, err)
	return uint16(n)
}
