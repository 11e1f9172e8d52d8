package imagestest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// DockerRegistryBinary is the registry from Debian's docker-registry package.
const DockerRegistryBinary = "docker-registry"

// CIEnv is the environment variable CI sets (.ci/run exports CI=1): with
// it set, a missing binary fails the test instead of skipping it, so a
// broken set-up cannot pass as a green run.
const CIEnv = "CI"

// StartDockerRegistry runs a real docker-registry (distribution) on a free
// local port for the duration of the test and returns host:port. When the
// binary is not installed it fails the test in CI (CIEnv set) and skips it
// otherwise, saying why on stderr as well (go test shows skips only with
// -v).
func StartDockerRegistry(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath(DockerRegistryBinary)
	if err != nil {
		msg := fmt.Sprintf("%s not found in PATH (install it with `apt-get install docker-registry`): %v", DockerRegistryBinary, err)
		if os.Getenv(CIEnv) != "" {
			t.Fatalf("%s; %s is set, so this fails instead of skipping", msg, CIEnv)
		}
		fmt.Fprintf(os.Stderr, "SKIPPING %s: %s (with %s set it fails)\n", t.Name(), msg, CIEnv)
		t.Skipf("SKIPPED, the test did not run: %s", msg)
	}
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", cfgPath)    // #nosec G204 -- fixed binary, test-owned config
	log, err := os.Create(filepath.Join(dir, "registry.log")) // #nosec G304 -- test temp dir
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		_ = log.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "registry.log")) // #nosec G304 -- test temp dir
			t.Fatalf("docker-registry did not start on %s: %v\n%s", addr, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CountingTransport counts the response body bytes a client receives.
type CountingTransport struct {
	Base http.RoundTripper
	n    atomic.Int64
}

// Bytes returns the number of body bytes received so far.
func (c *CountingTransport) Bytes() int64 { return c.n.Load() }

// Reset sets the counter to zero.
func (c *CountingTransport) Reset() { c.n.Store(0) }

// RoundTrip implements http.RoundTripper.
func (c *CountingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	base := c.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.n}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
