package cluster

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"
)

// Start starts a control plane for a test and stops it when the test ends.
// It fails the test (never skips it) when the binaries are missing, with a
// message that names `make k8s-bins`. On failure the component logs are kept
// in the test's artifact folder and their tails are printed.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = filepath.Join(t.TempDir(), "cluster")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := New(ctx, opts)
	if err != nil {
		var missing *MissingBinariesError
		if errors.As(err, &missing) {
			t.Fatalf("integration tests need a real control plane: %v", err)
		}
		t.Fatalf("starting control plane: %v\n--- kube-apiserver log tail:\n%s", err, tail(filepath.Join(opts.Dir, "kube-apiserver.log"), 30))
	}
	t.Cleanup(func() {
		if t.Failed() {
			comps := []string{"kube-apiserver", "kube-controller-manager"}
			if opts.Node {
				comps = append(comps, "containerd", "kubelet", "kube-proxy", "kube-scheduler")
			}
			for _, comp := range comps {
				t.Logf("--- %s log tail:\n%s", comp, c.ComponentLog(comp, 25))
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})
	return c
}

// Kubectl runs the real kubectl against the cluster and fails the test on error.
func (c *Cluster) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := c.RunKubectl(ctx, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-min(1, len(p))]))
	return len(p), nil
}
