package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/initializer/internal/netnstest"
	"github.com/contrast-cc/contrast/initializer/internal/proxy/proxytest"
	"github.com/contrast-cc/contrast/initializer/internal/rules"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

// TestBinaryNetns runs the mesh-proxy binary as the webhook injects it (only
// the environment, the TLS folder and CAP_NET_ADMIN as root) in two network
// namespaces joined by a veth pair, the way two pods of the mesh talk: the
// client pod's proxy opens mTLS for its egress entry, the server pod's proxy
// terminates it. It also checks the per-port modes, the admin port, SIGTERM,
// the rules staying in place after exit (fail closed) and a restart.
func TestBinaryNetns(t *testing.T) {
	netnstest.Require(t)
	bin := filepath.Join(t.TempDir(), "mesh-proxy")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building mesh-proxy: %s", out)

	client, server := netnstest.New(t), netnstest.New(t)
	_, serverIP := netnstest.Link(t, client, server, "10.78.0.1/24", "10.78.0.2/24")
	srv := serverIP.String()
	pki := proxytest.NewPKI(t)

	// The server pod's application: echo servers on all addresses.
	for _, port := range []int{8080, 8443, 8081} {
		var ln net.Listener
		require.NoError(t, server.Do(func() (err error) {
			var lc net.ListenConfig
			ln, err = lc.Listen(context.Background(), "tcp", ":"+strconv.Itoa(port))
			return err
		}))
		t.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
			}
		}()
	}

	serverEnv := []string{
		meshconfig.EnvIngress + "=web#8443#false##health#8081#true",
		meshconfig.EnvAdminPort + "=9901",
	}
	serverDir := pki.TLSDir(t, "server", "*", srv)
	serverProxy := runProxy(t, bin, server, serverEnv, serverDir)
	clientProxy := runProxy(t, bin, client, []string{
		meshconfig.EnvEgress + "=srv#127.0.0.2:9000#" + srv + ":8080##byname#127.0.0.3:9000#server:8080",
		meshconfig.EnvAdminPort + "=9901",
	}, pki.TLSDir(t, "client"))
	waitReady(t, client, srv+":9901", serverProxy)
	waitReady(t, client, "127.0.0.1:9901", clientProxy)

	pool := x509.NewCertPool()
	pool.AddCert(pki.Mesh.Cert)
	clientLeaf := pki.Leaf(t, "client")
	clientCert, err := tls.X509KeyPair(clientLeaf.ChainPEM, clientLeaf.KeyPEM)
	require.NoError(t, err)

	t.Run("egress to ingress", func(t *testing.T) {
		got, err := echo(client, "127.0.0.2:9000", nil, "through both proxies")
		require.NoError(t, err)
		assert.Equal(t, "through both proxies", got)
	})
	t.Run("egress to a name that does not resolve", func(t *testing.T) {
		// "server" does not resolve here: the dial fails, nothing is echoed.
		_, err := echo(client, "127.0.0.3:9000", nil, "x")
		require.Error(t, err)
	})
	t.Run("mTLS port with a mesh client certificate", func(t *testing.T) {
		got, err := echo(client, srv+":8080", &tls.Config{RootCAs: pool, ServerName: srv, Certificates: []tls.Certificate{clientCert}, MinVersion: tls.VersionTLS13}, "mtls")
		require.NoError(t, err)
		assert.Equal(t, "mtls", got)
	})
	t.Run("mTLS port without a client certificate", func(t *testing.T) {
		_, err := echo(client, srv+":8080", &tls.Config{RootCAs: pool, ServerName: srv, MinVersion: tls.VersionTLS13}, "x")
		require.Error(t, err)
	})
	t.Run("mTLS port in the clear", func(t *testing.T) {
		_, err := echo(client, srv+":8080", nil, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
		require.Error(t, err)
	})
	t.Run("TLS-only port without a client certificate", func(t *testing.T) {
		got, err := echo(client, srv+":8443", &tls.Config{RootCAs: pool, ServerName: srv, MinVersion: tls.VersionTLS13}, "public")
		require.NoError(t, err)
		assert.Equal(t, "public", got)
	})
	t.Run("plain port is not redirected", func(t *testing.T) {
		got, err := echo(client, srv+":8081", nil, "plain")
		require.NoError(t, err)
		assert.Equal(t, "plain", got)
	})
	t.Run("metrics", func(t *testing.T) {
		_, body, err := httpGet(client, srv+":9901", "/metrics")
		require.NoError(t, err)
		for _, want := range []string{
			`contrast_meshproxy_connections_total{direction="ingress",result="forwarded"} 3`,
			`contrast_meshproxy_connections_total{direction="ingress",result="handshake-failed"} 2`,
			`contrast_meshproxy_handshake_failures_total{direction="ingress",reason="no-client-certificate"} 1`,
			`contrast_meshproxy_handshake_failures_total{direction="ingress",reason="protocol"} 1`,
		} {
			assert.Contains(t, body, want)
		}
		_, body, err = httpGet(client, "127.0.0.1:9901", "/metrics")
		require.NoError(t, err)
		assert.Contains(t, body, `contrast_meshproxy_connections_total{direction="egress",result="forwarded"} 1`)
		assert.Contains(t, body, `contrast_meshproxy_connections_total{direction="egress",result="dial-failed"} 1`)
	})

	t.Run("SIGTERM, fail closed, restart", func(t *testing.T) {
		require.NoError(t, serverProxy.cmd.Process.Signal(syscall.SIGTERM))
		select {
		case <-serverProxy.exited:
			require.NoError(t, serverProxy.err, "exit status after SIGTERM\n%s", serverProxy.logs())
		case <-time.After(30 * time.Second):
			t.Fatalf("no exit after SIGTERM\n%s", serverProxy.logs())
		}
		// The rules stay: the application's port is not reachable in the
		// clear, it refuses connections.
		_, err := echo(client, srv+":8080", nil, "x")
		require.ErrorIs(t, err, syscall.ECONNREFUSED)

		restarted := runProxy(t, bin, server, serverEnv, serverDir)
		waitReady(t, client, srv+":9901", restarted)
		got, err := echo(client, "127.0.0.2:9000", nil, "after restart")
		require.NoError(t, err)
		assert.Equal(t, "after restart", got)

		// The restarted proxy replaced its table with the same rule set.
		mesh, err := meshconfig.ParseEnv(envMap(serverEnv))
		require.NoError(t, err)
		want, err := rules.Compute(mesh, 15006)
		require.NoError(t, err)
		conn, err := nftables.New(nftables.WithNetNSFd(server.FD()))
		require.NoError(t, err)
		installed, err := want.Read(conn)
		require.NoError(t, err)
		ok, err := want.Matches(installed)
		require.NoError(t, err)
		assert.True(t, ok, "installed rules differ from\n%s", want)
		tables, err := conn.ListTables()
		require.NoError(t, err)
		assert.Len(t, tables, 1)
	})
}

type proxyProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // set before exited is closed
	mu     sync.Mutex
	buf    bytes.Buffer
}

func (p *proxyProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Write(b)
}

func (p *proxyProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

func runProxy(t *testing.T, bin string, ns *netnstest.NS, env []string, tlsDir string) *proxyProc {
	t.Helper()
	p := &proxyProc{exited: make(chan struct{})}
	p.cmd = exec.CommandContext(context.Background(), "ip", "netns", "exec", ns.Name, bin, "--tls-dir", tlsDir, "--log-level=debug", "--drain-timeout=2s") //nolint:gosec // test binary.
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("mesh-proxy in %s:\n%s", ns.Name, p.logs())
		}
	})
	return p
}

func waitReady(t *testing.T, from *netnstest.NS, admin string, p *proxyProc) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		code, _, err := httpGet(from, admin, "/readyz")
		if err == nil && code == http.StatusOK {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("mesh-proxy exited: %v\n%s", p.err, p.logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("mesh-proxy not ready at %s\n%s", admin, p.logs())
}

func envMap(env []string) func(string) string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

// echo sends msg from ns to addr (over TLS when cfg is set) and returns what
// comes back.
func echo(ns *netnstest.NS, addr string, cfg *tls.Config, msg string) (string, error) {
	var got string
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if cfg != nil {
			tc := tls.Client(c, cfg)
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.HandshakeContext(context.Background()); err != nil {
				return err
			}
			c = tc
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		got = string(buf)
		return nil
	})
	return got, err
}

// httpGet makes a GET request from inside ns; net/http's transport would
// dial from another goroutine, outside the namespace.
func httpGet(ns *netnstest.NS, addr, path string) (int, string, error) {
	var code int
	var body string
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err := d.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		code, body = resp.StatusCode, string(b)
		return err
	})
	return code, strings.TrimSpace(body), err
}
