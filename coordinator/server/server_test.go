package server_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/server"
)

func memoryHarness(t testing.TB) *coordinatortest.Harness {
	store := server.NewMemoryStore()
	h := coordinatortest.NewHarness(t, func(c *server.Config) { c.MemoryStore = store })
	h.Latest = store
	return h
}

func TestLifecycle(t *testing.T) {
	coordinatortest.RunLifecycle(t, memoryHarness(t))
}

func TestNegativeMatrix(t *testing.T) {
	coordinatortest.RunNegativeMatrix(t, memoryHarness(t))
}

func TestUnenforced(t *testing.T) {
	coordinatortest.RunUnenforced(t, memoryHarness(t))
}

func TestRollback(t *testing.T) {
	coordinatortest.RunRollback(t, memoryHarness(t))
}

func TestLatestDeleted(t *testing.T) {
	coordinatortest.RunLatestDeleted(t, memoryHarness(t))
}

func TestSharedStore(t *testing.T) {
	coordinatortest.RunSharedStore(t, memoryHarness(t))
}

func TestConcurrentOwners(t *testing.T) {
	coordinatortest.RunConcurrentOwners(t, memoryHarness(t))
}

// TestConcurrentInitializers serves 100 simultaneous initializers with no
// error (the 5,000-initializer storm is BenchmarkInitializerStorm).
func TestConcurrentInitializers(t *testing.T) {
	h := memoryHarness(t)
	c := h.Start(t)
	d := coordinatortest.NewDeployment(1)
	_, err := h.User(t, c, nil).SetManifest(t.Context(), h.Request(d, nil))
	require.NoError(t, err)
	errs := storm(context.Background(), t, h, c, d, 100, nil)
	require.Empty(t, errs)
}

func storm(ctx context.Context, t testing.TB, h *coordinatortest.Harness, c *coordinatortest.Running, d *coordinatortest.Deployment, n int, record func(int, float64)) []error {
	t.Helper()
	// Simulated devices are costly to certify; pods share a few of them
	// (each pod still has its own aTLS key and session-bound evidence).
	const devices = 8
	pods := make([]*coordinatortest.Pod, devices)
	for i := range pods {
		pods[i] = h.Pod(t, d.Web, nil)
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			p := pods[i%devices]
			key := coordinatortest.OwnerKey()
			<-start
			t0 := now()
			_, err := coordinatortest.NewMeshCert(ctx, c.MeshAddr(), coordinatortest.Issuer(p.Device), key)
			if record != nil {
				record(i, since(t0))
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func now() time.Time { return time.Now() }

func since(t0 time.Time) float64 { return time.Since(t0).Seconds() }
