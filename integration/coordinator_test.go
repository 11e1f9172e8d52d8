package integration_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/server"
	"github.com/contrast-cc/contrast/integration/cluster"
)

// TestCoordinatorConfigMapStore runs the Coordinator against the real API
// server of the harness, keeping its history in ConfigMaps: the user story
// (manifest, attested mesh certificates and rejections through simulated
// TEEs, unauthorized and authorized updates, a kill and restart into
// recovery mode, recovery with the seed share), attacks by whoever controls
// the API server (an older latest pointer put back, the pointer deleted, a
// squatted blob), two
// Coordinators sharing the namespace (the resourceVersion compare-and-swap
// decides, the loser reloads) and two owners racing.
func TestCoordinatorConfigMapStore(t *testing.T) {
	c := cluster.Start(t, cluster.Options{})

	t.Run("lifecycle", func(t *testing.T) {
		h, ns := configMapHarness(t, c, "coordinator-lifecycle")
		coordinatortest.RunLifecycle(t, h)

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		latest, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, "contrast-history-latest", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "latest", latest.Labels["contrast.cc/history"])
		blobs, err := c.Client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "contrast.cc/history=transition"})
		require.NoError(t, err)
		assert.Len(t, blobs.Items, 2, "one transition per manifest")
		for _, b := range blobs.Items {
			require.NotNil(t, b.Immutable)
			assert.True(t, *b.Immutable)
		}
	})

	t.Run("rollback", func(t *testing.T) {
		h, _ := configMapHarness(t, c, "coordinator-rollback")
		coordinatortest.RunRollback(t, h)
	})

	// Deleting the latest ConfigMap does not make a restarted Coordinator
	// accept anyone's first manifest.
	t.Run("latest deleted", func(t *testing.T) {
		h, _ := configMapHarness(t, c, "coordinator-takeover")
		coordinatortest.RunLatestDeleted(t, h)
	})

	// Two Coordinators in one namespace: the latest pointer moves behind
	// each one's back, so the API server's resourceVersion precondition
	// decides; the loser gets Aborted, reloads and then succeeds.
	t.Run("shared namespace", func(t *testing.T) {
		h, _ := configMapHarness(t, c, "coordinator-shared")
		coordinatortest.RunSharedStore(t, h)
	})

	// A ConfigMap squatted under the content address of the first manifest
	// fails SetManifest instead of leaving a history no read can verify.
	t.Run("squatted blob", func(t *testing.T) {
		h, ns := configMapHarness(t, c, "coordinator-squat")
		coordinatortest.RunSquattedBlob(t, h, func(ctx context.Context, kind, hash string) error {
			_, err := c.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: "contrast-history-" + kind + "-" + hash},
				BinaryData: map[string][]byte{"data": []byte(`{"squatted":true}`)},
			}, metav1.CreateOptions{})
			return err
		})
	})

	t.Run("concurrent owners", func(t *testing.T) {
		h, _ := configMapHarness(t, c, "coordinator-race")
		coordinatortest.RunConcurrentOwners(t, h)
	})
}

// configMapHarness returns a harness whose Coordinators keep their history
// in ConfigMaps of a new namespace, and tampers with it through the API.
func configMapHarness(t *testing.T, c *cluster.Cluster, name string) (*coordinatortest.Harness, string) {
	t.Helper()
	ns := namespace(t, c.Client, name)
	h := coordinatortest.NewHarness(t, func(cfg *server.Config) {
		cfg.Kubernetes, cfg.Namespace = c.Client, ns
	})
	h.Latest = coordinatortest.ConfigMapLatest(c.Client, ns)
	return h, ns
}

func namespace(t *testing.T, client kubernetes.Interface, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
	return name
}
