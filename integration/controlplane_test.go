package integration_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/shareddata"
)

// emojivotoDir holds the unmodified emojivoto manifests (in ../shared).
func emojivotoDir(t testing.TB) string {
	t.Helper()
	return shareddata.Dir(t, shareddata.Emojivoto)
}

// TestControlPlaneRunsControllers applies the unmodified emojivoto manifests
// with the real kubectl and checks that the real controllers turn every
// Deployment into a ReplicaSet and Pods, admitted as on a real cluster.
func TestControlPlaneRunsControllers(t *testing.T) {
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	out := c.Kubectl(t, "apply", "-k", emojivotoDir(t))
	for _, want := range []string{"namespace/emojivoto created", "deployment.apps/web created", "service/web-svc created"} {
		assert.Contains(t, out, want)
	}

	deployments, err := c.Client.AppsV1().Deployments("emojivoto").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, deployments.Items, 4, "emojivoto has four Deployments")

	for _, d := range deployments.Items {
		t.Run(d.Name, func(t *testing.T) {
			pods := waitForPods(ctx, t, c, &d)
			for _, p := range pods {
				owner := metav1.GetControllerOf(&p)
				require.NotNil(t, owner, "pod %s has no controller", p.Name)
				assert.Equal(t, "ReplicaSet", owner.Kind)
				rs, err := c.Client.AppsV1().ReplicaSets("emojivoto").Get(ctx, owner.Name, metav1.GetOptions{})
				require.NoError(t, err)
				rsOwner := metav1.GetControllerOf(rs)
				require.NotNil(t, rsOwner)
				assert.Equal(t, d.Name, rsOwner.Name, "ReplicaSet belongs to the Deployment")
				assert.True(t, strings.HasPrefix(p.Name, rs.Name+"-"), "pod name %q is generated from the ReplicaSet %q", p.Name, rs.Name)
				assert.NotEmpty(t, p.Labels[appsv1.DefaultDeploymentUniqueLabelKey], "pod-template-hash label")
				wantSA := d.Spec.Template.Spec.ServiceAccountName
				if wantSA == "" {
					wantSA = "default" // set by ServiceAccount admission
				}
				assert.Equal(t, wantSA, p.Spec.ServiceAccountName)
				assert.True(t, hasProjectedTokenVolume(&p), "ServiceAccount admission adds the kube-api-access volume")
				assert.Equal(t, corev1.PodPending, p.Status.Phase, "no node runs pods in this mode")
			}
		})
	}

	// The controllers that prepare namespaces run too.
	require.NoError(t, c.WaitForNamespaceReady(ctx, "emojivoto"))
	require.NoError(t, wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().ConfigMaps("emojivoto").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil, nil
	}), "root CA publisher creates kube-root-ca.crt")
}

func waitForPods(ctx context.Context, t *testing.T, c *cluster.Cluster, d *appsv1.Deployment) []corev1.Pod {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	require.NoError(t, err)
	want := int(*d.Spec.Replicas)
	var pods []corev1.Pod
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err = c.Pods(ctx, d.Namespace, sel.String())
		return err == nil && len(pods) == want, err
	})
	require.NoError(t, err, "waiting for %d pod(s) of deployment %s", want, d.Name)
	return pods
}

func hasProjectedTokenVolume(p *corev1.Pod) bool {
	for _, v := range p.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kube-api-access-") && v.Projected != nil {
			return true
		}
	}
	return false
}
