package server

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestConfigMapReader(t *testing.T) {
	cfg := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "demo"}, Data: map[string]string{"LEVEL": "debug"}}
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "other"}, Data: map[string]string{"LEVEL": "evil"}}
	client := fake.NewClientset(cfg, other)
	got, err := ConfigMapReader(client.CoreV1())(t.Context(), "demo", []string{"cfg", "missing"})
	require.NoError(t, err)
	require.Len(t, got.ConfigMaps, 1, "missing ConfigMaps are left out")
	assert.Equal(t, map[string]string{"LEVEL": "debug"}, got.ConfigMaps["cfg"].Data, "read in the pod's namespace")

	client.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	_, err = ConfigMapReader(client.CoreV1())(t.Context(), "demo", []string{"cfg"})
	require.ErrorContains(t, err, "reading configMap demo/cfg")
	assert.NotContains(t, err.Error(), "debug")
}
