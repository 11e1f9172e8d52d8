package inject

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/webhook/policy"
)

// TestMutatePodEnvFrom checks that MutatePod reads the ConfigMaps of envFrom
// through the Mutator's EnvSources in the pod's namespace, pins them, and
// denies the pod naming the field when they cannot be read.
func TestMutatePodEnvFrom(t *testing.T) {
	pod := basePod()
	pod.Spec.Containers[1].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}
	cfg := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "ns"}, Data: map[string]string{"LEVEL": "debug"}}

	t.Run("no reader", func(t *testing.T) {
		_, _, err := testMutator(t).MutatePod(t.Context(), pod.DeepCopy(), nil)
		var de *DenyError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, DenyPolicy, de.Code)
		assert.Equal(t, "spec.containers[1].envFrom[0].configMapRef.name", de.Field)
	})
	t.Run("read", func(t *testing.T) {
		m := testMutator(t)
		var gotNS string
		var gotNames []string
		m.EnvSources = func(_ context.Context, namespace string, names []string) (*policy.EnvSources, error) {
			gotNS, gotNames = namespace, names
			return &policy.EnvSources{ConfigMaps: map[string]*corev1.ConfigMap{"cfg": cfg}}, nil
		}
		_, res, err := m.MutatePod(t.Context(), pod.DeepCopy(), nil)
		require.NoError(t, err)
		assert.Equal(t, "ns", gotNS)
		assert.Equal(t, []string{"cfg"}, gotNames)
		var found bool
		for _, c := range res.Data.Containers {
			for _, e := range c.Env {
				if e.Name == "LEVEL" {
					found = true
					assert.Equal(t, policy.EnvSpec{Name: "LEVEL", Kind: "exact", Value: "debug", Required: true}, e)
				}
			}
		}
		assert.True(t, found, "the ConfigMap's variable is pinned")
	})
	t.Run("read error", func(t *testing.T) {
		m := testMutator(t)
		boom := errors.New("forbidden")
		m.EnvSources = func(context.Context, string, []string) (*policy.EnvSources, error) { return nil, boom }
		_, _, err := m.MutatePod(t.Context(), pod.DeepCopy(), nil)
		require.ErrorIs(t, err, boom)
		require.NotErrorIs(t, err, ErrDenied)
	})
}
