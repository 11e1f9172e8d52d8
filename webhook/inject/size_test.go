package inject

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/contrast-cc/contrast/webhook/policy"
)

func TestCheckPinnedImage(t *testing.T) {
	hex := strings.Repeat("a", 64)
	for image, wantErr := range map[string]string{
		"registry.example/contrast/initializer@sha256:" + hex:                      "",
		"registry.example:5000/contrast/initializer:v1@sha256:" + hex:              "",
		"registry.example/contrast/initializer:latest":                             "must be pinned by digest",
		"registry.example/contrast/initializer@sha256:abc":                         "must be pinned by digest",
		"registry.example/contrast/initializer@sha256:" + strings.ToUpper(hex):     "must be pinned by digest",
		"registry.example/contrast/initializer@sha512:" + strings.Repeat("a", 128): "not sha512",
		"initializer@sha256:" + hex:                                                "must be pinned by digest", // implied registry and library/
		"registry.example/Contrast/initializer@sha256:" + hex:                      "must be pinned by digest",
		"registry.example/contrast/initializer@sha256:" + hex + "@sha256:" + hex:   "must be pinned by digest",
		"not an image @sha256:" + hex:                                              "must be pinned by digest",
		"x@sha256:" + hex:                                                          "must be pinned by digest",
	} {
		err := CheckPinnedImage(image)
		if wantErr == "" {
			require.NoError(t, err, image)
			continue
		}
		require.ErrorContains(t, err, wantErr, image)
	}
	cfg := testConfig
	cfg.ProxyImage = "mesh-proxy@sha256:" + hex
	require.ErrorContains(t, cfg.Validate(), `proxy image "mesh-proxy@sha256:`)
}

// TestMutatePodAnnotationsLimit: the pod's own annotations count against
// the API server's limit for all annotations together, to the byte.
func TestMutatePodAnnotationsLimit(t *testing.T) {
	m := testMutator(t)
	const key = "example.com/blob"
	withBlob := func(n int) *corev1.Pod {
		pod := basePod()
		pod.Annotations = map[string]string{key: strings.Repeat("v", n), "example.com/small": "s"}
		return pod
	}
	out, _, err := m.MutatePod(t.Context(), withBlob(1), nil)
	require.NoError(t, err)
	total := 0
	for k, v := range out.Annotations {
		total += len(k) + len(v)
	}
	fits := 1 + MaxAnnotationBytes - total

	out, _, err = m.MutatePod(t.Context(), withBlob(fits), nil)
	require.NoError(t, err)
	total = 0
	for k, v := range out.Annotations {
		total += len(k) + len(v)
	}
	assert.Equal(t, MaxAnnotationBytes, total)

	_, _, err = m.MutatePod(t.Context(), withBlob(fits+1), nil)
	require.ErrorIs(t, err, ErrDenied)
	var de *DenyError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, DenyPolicySize, de.Code)
	assert.Equal(t, "metadata.annotations", de.Field)
	msg := err.Error()
	assert.Contains(t, msg, "would total 262145 bytes")
	assert.Contains(t, msg, "limit of 262144 bytes")
	assert.Contains(t, msg, `"example.com/blob" (`)
	assert.NotContains(t, msg, "vvvv", "values are not quoted")

	// the same on the YAML side
	pod := withBlob(fits + 1)
	w := &policy.Workload{Kind: policy.KindPod, Name: pod.Name, Namespace: pod.Namespace,
		Template: corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}}
	_, err = m.MutateWorkload(t.Context(), w, nil)
	require.ErrorIs(t, err, ErrDenied)
}
