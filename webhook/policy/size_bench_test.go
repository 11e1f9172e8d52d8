package policy_test

import (
	"encoding/base64"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// tenContainerPod is a pod with 10 containers, each with env, probes and
// volumes, to bound the policy size.
func tenContainerPod() *policy.Workload {
	var cs []corev1.Container
	for i := range 10 {
		c := corev1.Container{
			Name:    fmt.Sprintf("c%d", i),
			Image:   "registry.example/acme/db:1.0",
			Command: []string{"/bin/db", "serve", fmt.Sprintf("--shard=%d", i)},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "cfg", MountPath: "/etc/cfg", ReadOnly: true},
				{Name: "scratch", MountPath: "/scratch"},
			},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/db", "ping"}}}},
		}
		for j := range 10 {
			c.Env = append(c.Env, corev1.EnvVar{Name: fmt.Sprintf("VAR_%d", j), Value: strings.Repeat("v", 40)})
		}
		cs = append(cs, c)
	}
	return &policy.Workload{Kind: policy.KindPod, Name: "big", Template: corev1.PodTemplateSpec{
		Spec: corev1.PodSpec{Containers: cs, Volumes: []corev1.Volume{
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		}},
	}}
}

func TestPolicySize(t *testing.T) {
	src, _ := testRegistry(t)
	w := tenContainerPod()
	w.Template.Name = "big"
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
	require.NoError(t, err)
	ann := res.Annotations[policy.AnnotationInitData]
	legacy, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src, Legacy: true})
	require.NoError(t, err)
	t.Logf("10-container pod: Rego %d B, initdata %d B, initdata annotation %d B, legacy annotation %d B",
		len(res.Rego), len(res.InitData), len(ann), len(legacy.Annotations[policy.AnnotationLegacyPolicy]))
	require.Less(t, len(ann), 256<<10/4, "initdata annotation uses more than a quarter of the annotation budget")
	for i, l := range strings.Split(res.Rego, "\n") {
		require.Less(t, len(l), 1024, "line %d", i+1)
	}
	z, err := base64.StdEncoding.DecodeString(ann)
	require.NoError(t, err)
	require.NotEmpty(t, z)
}

// BenchmarkGenerateEmojivoto measures policy generations per second for the
// emojivoto web pod with a warm image cache.
func BenchmarkGenerateEmojivoto(b *testing.B) {
	src, _ := testRegistry(b)
	var web policy.Workload
	for _, w := range emojivotoWorkloads(b) {
		if w.Name == "web" {
			web = w
		}
	}
	// pin the image so that the warm cache needs no registry round trip
	img, err := src.Resolve(b.Context(), web.Template.Spec.Containers[0].Image, nil)
	require.NoError(b, err)
	web.Template.Spec.Containers[0].Image += "@" + img.Digest
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := policy.Generate(b.Context(), policy.GenerateInput{Workload: &web, Images: src}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "generations/s")
}

// BenchmarkColdGenerationBytes reports the bytes fetched from a registry per
// cold generation of all emojivoto pods, relative to the total size of their
// images (numeric or empty USER: only manifests and configs are fetched). It
// uses a real docker-registry when installed, else the in-process registry.
func BenchmarkColdGenerationBytes(b *testing.B) {
	var host string
	if _, err := exec.LookPath(imagestest.DockerRegistryBinary); err == nil {
		host = imagestest.StartDockerRegistry(b)
		b.Log("registry: docker-registry")
	} else {
		host = imagestest.Serve(b).Host
		b.Log("registry: in-process (docker-registry not installed)")
	}
	total := int64(0)
	for _, repoTag := range []string{"buoyantio/emojivoto-web:v11", "buoyantio/emojivoto-emoji-svc:v11", "buoyantio/emojivoto-voting-svc:v11"} {
		imagestest.Push(b, host, repoTag, imagestest.Build(b, imagestest.Catalog[repoTag]))
		total += imageSize(b, host, repoTag)
	}
	ws := emojivotoWorkloads(b)
	counter := &imagestest.CountingTransport{}
	mirror := []images.Mirror{{Host: host, Insecure: true}}
	var fetched int64
	for b.Loop() {
		src := images.NewRegistry(images.RegistryConfig{Mirrors: map[string][]images.Mirror{"docker.l5d.io": mirror}, SkipOrigin: []string{"docker.l5d.io"}, Transport: counter})
		counter.Reset()
		for i := range ws {
			if _, err := policy.Generate(b.Context(), policy.GenerateInput{Workload: &ws[i], Images: src}); err != nil {
				b.Fatal(err)
			}
		}
		fetched = counter.Bytes()
	}
	b.ReportMetric(float64(fetched), "bytes/cold-run")
	b.ReportMetric(float64(total), "image-bytes")
	b.ReportMetric(100*float64(fetched)/float64(total), "%-of-image-bytes")
}

// TestColdFetchRatioDockerRegistry generates the emojivoto policies against a
// real docker-registry with a cold cache and checks that only a tiny part of
// the images is downloaded (numeric or empty USER: manifests and configs only).
func TestColdFetchRatioDockerRegistry(t *testing.T) {
	host := imagestest.StartDockerRegistry(t)
	total := int64(0)
	for _, repoTag := range []string{"buoyantio/emojivoto-web:v11", "buoyantio/emojivoto-emoji-svc:v11", "buoyantio/emojivoto-voting-svc:v11"} {
		imagestest.Push(t, host, repoTag, imagestest.Build(t, imagestest.Catalog[repoTag]))
		total += imageSize(t, host, repoTag)
	}
	counter := &imagestest.CountingTransport{}
	src := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"docker.l5d.io": {{Host: host, Insecure: true}}},
		SkipOrigin: []string{"docker.l5d.io"},
		Transport:  counter,
	})
	for _, w := range emojivotoWorkloads(t) {
		_, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
		require.NoError(t, err)
	}
	ratio := float64(counter.Bytes()) / float64(total)
	t.Logf("cold generation of 4 emojivoto pods fetched %d B of %d B image data (%.4f%%)", counter.Bytes(), total, 100*ratio)
	require.Less(t, ratio, 0.01)
}
