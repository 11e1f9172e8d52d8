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
// recovery mode, recovery with the seed share) and two owners racing.
func TestCoordinatorConfigMapStore(t *testing.T) {
	c := cluster.Start(t, cluster.Options{})

	t.Run("lifecycle", func(t *testing.T) {
		ns := namespace(t, c.Client, "coordinator-lifecycle")
		h := coordinatortest.NewHarness(t, func(cfg *server.Config) {
			cfg.Kubernetes, cfg.Namespace = c.Client, ns
		})
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
		h := configMapHarness(t, c, "coordinator-rollback")
		coordinatortest.RunRollback(t, h)
	})

	t.Run("concurrent owners", func(t *testing.T) {
		ns := namespace(t, c.Client, "coordinator-race")
		h := coordinatortest.NewHarness(t, func(cfg *server.Config) {
			cfg.Kubernetes, cfg.Namespace = c.Client, ns
		})
		coordinatortest.RunConcurrentOwners(t, h)
	})
}

// configMapHarness returns a harness whose Coordinators keep their history
// in ConfigMaps of a new namespace, and tampers with it through the API.
func configMapHarness(t *testing.T, c *cluster.Cluster, name string) *coordinatortest.Harness {
	t.Helper()
	ns := namespace(t, c.Client, name)
	h := coordinatortest.NewHarness(t, func(cfg *server.Config) {
		cfg.Kubernetes, cfg.Namespace = c.Client, ns
	})
	h.Latest = coordinatortest.ConfigMapLatest(c.Client, ns)
	return h
}

func namespace(t *testing.T, client kubernetes.Interface, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
	return name
}
