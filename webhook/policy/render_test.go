package policy_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/policy/agentsim"
)

func simplePod() *policy.Workload {
	return &policy.Workload{Kind: policy.KindPod, Name: "p", Template: corev1.PodTemplateSpec{
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/acme/agent:2"}}},
	}}
}

func TestDigests(t *testing.T) {
	src, _ := testRegistry(t)
	w := simplePod()
	w.Template.Name = "p"

	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
	require.NoError(t, err)
	sum := sha256.Sum256(res.InitData)
	assert.Equal(t, sum[:], res.Digest, "initdata digest is SHA-256 over the raw TOML")
	assert.Equal(t, sum[:], res.HostData)
	assert.Len(t, res.MRConfigID, 48)
	assert.Equal(t, sum[:], res.MRConfigID[:32])
	assert.Equal(t, make([]byte, 16), res.MRConfigID[32:])
	assert.Equal(t, hex.EncodeToString(sum[:]), res.Annotations[policy.AnnotationPolicyHash])

	z, err := base64.StdEncoding.DecodeString(res.Annotations[policy.AnnotationInitData])
	require.NoError(t, err)
	zr, err := gzip.NewReader(bytes.NewReader(z))
	require.NoError(t, err)
	assert.Empty(t, zr.Name)
	assert.True(t, zr.ModTime.IsZero() || zr.ModTime.Unix() == 0)
	doc, err := io.ReadAll(zr)
	require.NoError(t, err)
	assert.Equal(t, res.InitData, doc)
	assert.True(t, bytes.HasPrefix(doc, []byte("algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"policy.rego\" = '''\n")))

	legacy, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src, Legacy: true})
	require.NoError(t, err)
	lsum := sha256.Sum256([]byte(legacy.Rego))
	assert.Equal(t, lsum[:], legacy.Digest, "legacy digest is SHA-256 over the Rego text")
	assert.Equal(t, base64.StdEncoding.EncodeToString([]byte(legacy.Rego)), legacy.Annotations[policy.AnnotationLegacyPolicy])
	assert.NotContains(t, legacy.Annotations, policy.AnnotationInitData)
	assert.Equal(t, res.Rego, legacy.Rego)
}

func TestInitDataFallbackQuoting(t *testing.T) {
	rego := "package agent_policy\n# '''\n"
	doc, err := policy.InitData(rego)
	require.NoError(t, err)
	data, err := policy.ParseInitData(doc)
	require.NoError(t, err)
	assert.Equal(t, rego, data["policy.rego"])
}

func TestDenyLogs(t *testing.T) {
	src, _ := testRegistry(t)
	for _, deny := range []bool{false, true} {
		w := simplePod()
		w.Template.Name = "p"
		if deny {
			w.Template.Annotations = map[string]string{policy.AnnotationDenyLogs: "true"}
		}
		res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
		require.NoError(t, err)
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		read := map[string]any{"container_id": "x"}
		if deny {
			requireDeniedBy(t, res.Rego, nil, "ReadStreamRequest", read, "ReadStreamRequest")
		} else {
			d, err := a.Allow(t.Context(), "ReadStreamRequest", read)
			require.NoError(t, err)
			assert.True(t, d.Allowed)
		}
		// requests without a rule (PullImage of older agents) are undefined:
		// the agent denies them
		for _, undefined := range []string{"PullImageRequest", "NoSuchRequest"} {
			_, err := a.Allow(t.Context(), undefined, map[string]any{})
			require.ErrorIs(t, err, agentsim.ErrEvaluation, undefined)
			require.ErrorContains(t, err, "0 results", undefined)
		}
	}
}

func TestRefusedFeatures(t *testing.T) {
	src, _ := testRegistry(t)
	yes := true
	cases := map[string]func(s *corev1.PodSpec){
		"hostNetwork": func(s *corev1.PodSpec) { s.HostNetwork = true },
		"hostPath": func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		},
		"nfs": func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example", Path: "/export"}}}}
		},
		"pvc mounted from the host without the annotation": func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "x"}}}}
			s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}
		},
		"privileged without privilege escalation": func(s *corev1.PodSpec) {
			no := false
			s.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes, AllowPrivilegeEscalation: &no}
		},
		"subPath leaving the volume": func(s *corev1.PodSpec) {
			s.Volumes = []corev1.Volume{{Name: "e", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "e", MountPath: "/x", SubPath: "../a"}}
		},
		"unknown image": func(s *corev1.PodSpec) { s.Containers[0].Image = "registry.example/acme/missing:1" },
	}
	wantField := map[string]string{
		"hostNetwork": "spec.hostNetwork",
		"hostPath":    "spec.volumes[0].hostPath",
		"nfs":         "spec.volumes[0].nfs",
		"pvc mounted from the host without the annotation": "spec.containers[0].volumeMounts[0].name",
		"privileged without privilege escalation":          "spec.containers[0].securityContext.allowPrivilegeEscalation",
		"subPath leaving the volume":                       "spec.containers[0].volumeMounts[0].subPath",
		"unknown image":                                    "spec.containers[0].image",
	}
	require.Len(t, wantField, len(cases))
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			w := simplePod()
			mod(&w.Template.Spec)
			_, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
			var fe *policy.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, wantField[name], fe.Field, "the refusal names the field")
			if name == "unknown image" {
				assert.Contains(t, err.Error(), "registry.example/acme/missing:1")
			}
		})
	}
}

func TestRenderDataFromAnnotations(t *testing.T) {
	src, _ := testRegistry(t)
	w := simplePod()
	w.Template.Name = "p"

	for _, legacy := range []bool{false, true} {
		res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src, Legacy: legacy})
		require.NoError(t, err)
		data, err := policy.DataFromAnnotations(res.Annotations)
		require.NoError(t, err, "legacy=%v", legacy)
		rego, err := policy.RenderRego(data)
		require.NoError(t, err)
		assert.Equal(t, res.Rego, rego, "legacy=%v: the data of the annotation renders the same policy", legacy)

		fromRego, err := policy.DataFromRego(res.Rego)
		require.NoError(t, err)
		assert.Equal(t, data, fromRego)
	}

	for name, ann := range map[string]map[string]string{
		"none":            {},
		"bad base64":      {policy.AnnotationInitData: "!"},
		"not gzip":        {policy.AnnotationInitData: base64.StdEncoding.EncodeToString([]byte("x"))},
		"bad legacy":      {policy.AnnotationLegacyPolicy: "!"},
		"no policy data":  {policy.AnnotationLegacyPolicy: base64.StdEncoding.EncodeToString([]byte("package agent_policy\n"))},
		"bad policy data": {policy.AnnotationLegacyPolicy: base64.StdEncoding.EncodeToString([]byte("x\npolicy_data := {"))},
	} {
		_, err := policy.DataFromAnnotations(ann)
		assert.ErrorIs(t, err, policy.ErrInvalidInput, name)
	}
}

func TestDecodeInitDataAnnotation(t *testing.T) {
	doc, err := policy.InitData("package agent_policy\n")
	require.NoError(t, err)
	z, err := policy.Gzip(doc)
	require.NoError(t, err)
	got, err := policy.DecodeInitDataAnnotation(base64.StdEncoding.EncodeToString(z))
	require.NoError(t, err)
	assert.Equal(t, doc, got)

	big, err := policy.Gzip(make([]byte, 8<<20+1))
	require.NoError(t, err)
	_, err = policy.DecodeInitDataAnnotation(base64.StdEncoding.EncodeToString(big))
	assert.ErrorIs(t, err, policy.ErrInvalidInput, "larger than the bound")
}
