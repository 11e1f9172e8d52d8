package history_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/contrast-cc/contrast/coordinator/internal/history"
)

const ns = "contrast-system"

func TestConfigMapStorePutBlob(t *testing.T) {
	data := []byte(`{"Policies":{}}`)
	hash := history.HashOf(data).String()
	name := "contrast-history-manifest-" + hash

	t.Run("new and repeated", func(t *testing.T) {
		client := fake.NewClientset()
		s := history.NewConfigMapStore(client, ns)
		require.NoError(t, s.PutBlob(t.Context(), history.KindManifest, hash, data))
		require.NoError(t, s.PutBlob(t.Context(), history.KindManifest, hash, data), "storing the same blob again is a no-op")
		cm, err := client.CoreV1().ConfigMaps(ns).Get(t.Context(), name, metav1.GetOptions{})
		require.NoError(t, err)
		require.NotNil(t, cm.Immutable)
		assert.True(t, *cm.Immutable)
		assert.Equal(t, "manifest", cm.Labels[history.LabelKey])
		got, err := s.GetBlob(t.Context(), history.KindManifest, hash)
		require.NoError(t, err)
		assert.Equal(t, data, got)
	})

	squats := map[string]*corev1.ConfigMap{
		"other content": {BinaryData: map[string][]byte{"data": []byte(`{"evil":true}`)}},
		"no data":       {Data: map[string]string{"x": "y"}},
		"extra key":     {BinaryData: map[string][]byte{"data": data, "more": {1}}},
		"extra string":  {BinaryData: map[string][]byte{"data": data}, Data: map[string]string{"data": "x"}},
	}
	for desc, squat := range squats {
		t.Run("squatted with "+desc, func(t *testing.T) {
			squat.ObjectMeta = metav1.ObjectMeta{Name: name, Namespace: ns}
			client := fake.NewClientset(squat)
			s := history.NewConfigMapStore(client, ns)
			err := s.PutBlob(t.Context(), history.KindManifest, hash, data)
			require.ErrorIs(t, err, history.ErrCorrupt)
			assert.Contains(t, err.Error(), name)
		})
	}

	t.Run("squatted with the same content, mutable", func(t *testing.T) {
		client := fake.NewClientset(&corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			BinaryData: map[string][]byte{"data": data},
		})
		s := history.NewConfigMapStore(client, ns)
		require.NoError(t, s.PutBlob(t.Context(), history.KindManifest, hash, data))
		cm, err := client.CoreV1().ConfigMaps(ns).Get(t.Context(), name, metav1.GetOptions{})
		require.NoError(t, err)
		require.NotNil(t, cm.Immutable, "the existing blob is frozen")
		assert.True(t, *cm.Immutable)
	})
}

func TestMemStorePutBlobRefusesOtherContent(t *testing.T) {
	s := history.NewMemStore()
	data := []byte("blob")
	hash := history.HashOf(data).String()
	s.Corrupt(history.KindPolicy, hash, []byte("squatted"))
	require.ErrorIs(t, s.PutBlob(t.Context(), history.KindPolicy, hash, data), history.ErrCorrupt)

	other := []byte("other")
	oh := history.HashOf(other).String()
	require.NoError(t, s.PutBlob(t.Context(), history.KindPolicy, oh, other))
	require.NoError(t, s.PutBlob(t.Context(), history.KindPolicy, oh, other))
}

func TestHasBlobs(t *testing.T) {
	stores := map[string]func() history.Store{
		"configmap": func() history.Store { return history.NewConfigMapStore(fake.NewClientset(), ns) },
		"memory":    func() history.Store { return history.NewMemStore() },
	}
	for name, newStore := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			s := newStore()
			has, err := s.HasBlobs(ctx, history.KindTransition, history.KindManifest)
			require.NoError(t, err)
			assert.False(t, has)

			cert := []byte("cert")
			require.NoError(t, s.PutBlob(ctx, history.KindCert, history.HashOf(cert).String(), cert))
			_, err = s.SwapLatest(ctx, "", []byte(`{}`))
			require.NoError(t, err)
			has, err = s.HasBlobs(ctx, history.KindTransition, history.KindManifest)
			require.NoError(t, err)
			assert.False(t, has, "certificates and the latest pointer are not asked for")

			tr := []byte("transition")
			require.NoError(t, s.PutBlob(ctx, history.KindTransition, history.HashOf(tr).String(), tr))
			has, err = s.HasBlobs(ctx, history.KindTransition, history.KindManifest)
			require.NoError(t, err)
			assert.True(t, has)
			has, err = s.HasBlobs(ctx, history.KindManifest)
			require.NoError(t, err)
			assert.False(t, has)
		})
	}
}
