package server_test

import (
	"testing"

	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
)

// TestHighAvailability runs three replicas on one in-memory store (the
// ConfigMap store on the real API server: integration TestCoordinatorHA).
func TestHighAvailability(t *testing.T) {
	rep := coordinatortest.RunHA(t, memoryHarness(t), coordinatortest.HAOptions{Initializers: 200, Restarts: 10})
	t.Logf("restart to Ready over %d restarts: p50 %s, p99 %s", len(rep.RestartToReady),
		coordinatortest.Percentile(rep.RestartToReady, 0.5), coordinatortest.Percentile(rep.RestartToReady, 0.99))
}
