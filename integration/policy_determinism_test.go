package integration_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// policyWorkloads are the diverse workloads of the policy generator's tests.
var policyWorkloads = filepath.Join("..", "webhook", "policy", "testdata", "workloads.yaml")

// TestPolicyDeterminismOnAdmittedPods applies emojivoto and six more
// workloads to the real control plane and checks that the policy generated
// from each YAML equals, byte for byte, the policy generated from the pod the
// controllers created and the API server admitted.
func TestPolicyDeterminismOnAdmittedPods(t *testing.T) {
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	src, _ := imagestest.ServeCatalog(t, imagestest.Catalog)

	c.Kubectl(t, "apply", "-k", emojivotoDir(t))
	c.Kubectl(t, "create", "namespace", "demo")
	require.NoError(t, c.WaitForNamespaceReady(ctx, "demo"))
	// DaemonSets need a node to create pods; no kubelet runs it.
	_, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	c.Kubectl(t, "apply", "-f", policyWorkloads)

	var workloads []policy.Workload
	for _, f := range []string{"web.yml", "emoji.yml", "voting.yml", "vote-bot.yml"} {
		workloads = append(workloads, decode(t, filepath.Join(emojivotoDir(t), f))...)
	}
	workloads = append(workloads, decode(t, policyWorkloads)...)
	require.Len(t, workloads, 10)

	for _, w := range workloads {
		t.Run(w.Kind+"/"+w.Name, func(t *testing.T) {
			fromYAML, err := policy.Generate(ctx, policy.GenerateInput{Workload: &w, Images: src})
			require.NoError(t, err)
			pod := waitForPodOf(ctx, t, c, w)
			// envFrom: the webhook reads the ConfigMaps through the API server
			sources := &policy.EnvSources{ConfigMaps: map[string]*corev1.ConfigMap{}}
			for _, ct := range pod.Spec.Containers {
				for _, ef := range ct.EnvFrom {
					if ef.ConfigMapRef != nil {
						cm, err := c.Client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ef.ConfigMapRef.Name, metav1.GetOptions{})
						require.NoError(t, err)
						sources.ConfigMaps[cm.Name] = cm
					}
				}
			}
			fromPod, err := policy.Generate(ctx, policy.GenerateInput{Pod: pod, Images: src, EnvSources: sources})
			require.NoError(t, err)
			require.Equal(t, fromYAML.Rego, fromPod.Rego, "policy of admitted pod %s differs", pod.Name)
			require.Equal(t, fromYAML.Annotations, fromPod.Annotations)
			require.Equal(t, fromYAML.Kind, fromPod.Kind)
			t.Logf("%s: pod %s, policy hash %s", w.Name, pod.Name, fromPod.Annotations[policy.AnnotationPolicyHash])
		})
	}
}

func decode(t *testing.T, file string) []policy.Workload {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	ws, err := policy.DecodeWorkloads(b)
	require.NoError(t, err)
	return ws
}

// waitForPodOf waits for a pod whose chain of controllers ends at w.
func waitForPodOf(ctx context.Context, t *testing.T, c *cluster.Cluster, w policy.Workload) *corev1.Pod {
	t.Helper()
	var found *corev1.Pod
	err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Client.CoreV1().Pods(w.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for i := range pods.Items {
			kind, name := topOwner(ctx, c, &pods.Items[i])
			if kind == w.Kind && name == w.Name {
				found = &pods.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "waiting for a pod of %s %s", w.Kind, w.Name)
	return found
}

func topOwner(ctx context.Context, c *cluster.Cluster, pod *corev1.Pod) (string, string) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return policy.KindPod, pod.Name
	}
	switch ref.Kind {
	case "ReplicaSet":
		rs, err := c.Client.AppsV1().ReplicaSets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if up := metav1.GetControllerOf(rs); up != nil {
				return up.Kind, up.Name
			}
		}
	case "Job":
		job, err := c.Client.BatchV1().Jobs(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if up := metav1.GetControllerOf(job); up != nil {
				return up.Kind, up.Name
			}
		}
	}
	return ref.Kind, ref.Name
}
