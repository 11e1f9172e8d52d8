package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kwhhttp "github.com/slok/kubewebhook/v2/pkg/http"
	kwhmodel "github.com/slok/kubewebhook/v2/pkg/model"
	kwhmutating "github.com/slok/kubewebhook/v2/pkg/webhook/mutating"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/inject/settings"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// benchWebhook is the admission handler as the webhook command builds it
// by default (policy cache, tag TTL, the caching image source, metrics),
// on the in-process test registry. cache false is the configuration before
// the policy cache and the tag TTL: every admission generates and asks the
// registry for every tag.
func benchWebhook(b *testing.B, imgs *injecttest.Images, cache bool) (http.Handler, *Metrics) {
	b.Helper()
	metrics := NewMetrics(prometheus.NewRegistry())
	mirror := []images.Mirror{{Host: imgs.Registry.Host, Insecure: true}}
	rcfg := images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"docker.l5d.io": mirror, "registry.example": mirror},
		SkipOrigin: []string{"docker.l5d.io", "registry.example"},
		Observer:   metrics,
	}
	if cache {
		rcfg.TagTTL = settings.DefaultRegistryTagTTL
	}
	cfg := inject.Config{
		InitializerImage: imgs.InitializerImage, ProxyImage: imgs.ProxyImage, CoordinatorAddress: "coordinator:7777",
		Platform: attest.PlatformSNP, CoordinatorPolicyHashes: [][]byte{injecttest.CoordinatorPolicyHash},
		CoordinatorReferenceValues: injecttest.CoordinatorReferenceValues(),
	}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	m := &inject.Mutator{Config: cfg, Images: NewCachingSource(images.NewRegistry(rcfg), metrics)}
	var patches *PatchCache
	if cache {
		m.Policies = policy.NewCache(policy.CacheConfig{Observer: metrics})
		patches = NewPatchCache(PatchCacheConfig{Observer: metrics})
	}
	h, err := NewAdmissionHandler(AdmissionConfig{Mutator: m, Metrics: metrics, Logger: slog.New(slog.DiscardHandler), Patches: patches})
	if err != nil {
		b.Fatal(err)
	}
	return h, metrics
}

// serveTimed serves one request and returns the handler time.
func serveTimed(b *testing.B, h http.Handler, path string, body []byte) time.Duration {
	req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, path, bytes.NewReader(body))
	rec := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(rec, req)
	d := time.Since(start)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"allowed":true`) {
		b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	return d
}

// sideBySide measures h on the request body(i) of iteration i against a
// no-op kubewebhook mutator on the same body, alternating the two so both
// see the same machine load, and reports p50, p99 and admissions per second
// of both and the ratios (p99 and p50 contrast/no-op, throughput
// contrast/no-op).
func sideBySide(b *testing.B, h http.Handler, path string, body func(i int) []byte) {
	noop := noopHandler(b)
	var contrast, base []time.Duration
	i := 0
	for b.Loop() {
		req := body(i)
		base = append(base, serveTimed(b, noop, MutatePath, req))
		contrast = append(contrast, serveTimed(b, h, path, req))
		i++
	}
	pc50, pc99, rc := stats(contrast)
	pn50, pn99, rn := stats(base)
	b.ReportMetric(float64(pc50.Microseconds()), "contrast-p50-µs")
	b.ReportMetric(float64(pc99.Microseconds()), "contrast-p99-µs")
	b.ReportMetric(rc, "contrast-admissions/s")
	b.ReportMetric(float64(pn50.Microseconds()), "noop-p50-µs")
	b.ReportMetric(float64(pn99.Microseconds()), "noop-p99-µs")
	b.ReportMetric(rn, "noop-admissions/s")
	b.ReportMetric(float64(pc50)/float64(pn50), "p50-ratio")
	b.ReportMetric(float64(pc99)/float64(pn99), "p99-ratio")
	b.ReportMetric(rc/rn, "throughput-ratio")
}

// replica is pod as the API server sends the i-th pod of its ReplicaSet to
// admission: with the managedFields entry of the ReplicaSet controller's
// request, whose time differs from pod to pod, and the service-account
// token volume of the ServiceAccount admission plugin, whose name has a
// random suffix (the pod's name is not set yet: the API server generates
// it after admission).
func replica(pod *corev1.Pod, i int) *corev1.Pod {
	p := pod.DeepCopy()
	token := fmt.Sprintf("kube-api-access-%05d", i+1)
	p.Spec.Volumes = append([]corev1.Volume{{Name: token, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
		},
		DefaultMode: ptr.To[int32](0o644),
	}}}}, p.Spec.Volumes...)
	for j := range p.Spec.Containers {
		p.Spec.Containers[j].VolumeMounts = append(p.Spec.Containers[j].VolumeMounts, corev1.VolumeMount{
			Name: token, ReadOnly: true, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount",
		})
	}
	p.ManagedFields = []metav1.ManagedFieldsEntry{{
		Manager:    "kube-controller-manager",
		Operation:  metav1.ManagedFieldsOperationUpdate,
		APIVersion: "v1",
		Time:       ptr.To(metav1.NewTime(time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second))),
		FieldsType: "FieldsV1",
		FieldsV1:   metav1.NewFieldsV1(webPodFields),
	}}
	return p
}

// webPodFields are the fields the ReplicaSet controller manages in the web
// pod (as the API server records them in managedFields).
const webPodFields = `{"f:metadata":{"f:generateName":{},"f:labels":{".":{},"f:app":{},"f:pod-template-hash":{},"f:version":{}},` +
	`"f:ownerReferences":{".":{},"k:{\"uid\":\"1b7a3c2e-0000-4000-8000-000000000001\"}":{}}},` +
	`"f:spec":{"f:containers":{"k:{\"name\":\"web-svc\"}":{".":{},"f:env":{".":{},"k:{\"name\":\"EMOJISVC_HOST\"}":{".":{},"f:name":{},"f:value":{}},` +
	`"k:{\"name\":\"INDEX_BUNDLE\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"VOTINGSVC_HOST\"}":{".":{},"f:name":{},"f:value":{}},` +
	`"k:{\"name\":\"WEB_PORT\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},` +
	`"f:ports":{".":{},"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:name":{},"f:protocol":{}}},` +
	`"f:resources":{},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},` +
	`"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:serviceAccount":{},"f:serviceAccountName":{},"f:terminationGracePeriodSeconds":{}}}`

// webPodVariant is the emojivoto web pod of another template: an env
// value differs, so its policy differs (a cold template: its images are
// cached, its policy is not).
func webPodVariant(i int) *corev1.Pod {
	p := webPod()
	p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "TEMPLATE", Value: strconv.Itoa(i)})
	return p
}

// tenContainerPod is the pod of the policy size test (10 containers, each
// with 10 variables, 2 volumes and an exec probe) as a ReplicaSet's pod.
func tenContainerPod(variant int) *corev1.Pod {
	p := webPod()
	p.Spec.Containers = nil
	for i := range 10 {
		c := corev1.Container{
			Name:    fmt.Sprintf("c%d", i),
			Image:   "registry.example/acme/db:1.0",
			Command: []string{"/bin/db", "serve", fmt.Sprintf("--shard=%d", i), fmt.Sprintf("--template=%d", variant)},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "cfg", MountPath: "/etc/cfg", ReadOnly: true},
				{Name: "scratch", MountPath: "/scratch"},
			},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/db", "ping"}}}},
		}
		for j := range 10 {
			c.Env = append(c.Env, corev1.EnvVar{Name: fmt.Sprintf("VAR_%d", j), Value: strings.Repeat("v", 40)})
		}
		p.Spec.Containers = append(p.Spec.Containers, c)
	}
	p.Spec.Volumes = []corev1.Volume{
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	return p
}

// BenchmarkAdmission measures admissions side by side with a no-op
// kubewebhook mutator in the same run (see sideBySide), with the webhook's
// default configuration:
//
//   - warm: the emojivoto web pod of a template seen before (every pod of a
//     Deployment after the first, each with its own managedFields time): a
//     policy cache and a patch cache hit;
//   - cold-web, cold-10-containers: every admission a new template (images
//     cached, policy not): a policy cache miss;
//   - validate: /validate of the pod /mutate produced, after the API server
//     named it: a policy cache hit, no second generation;
//   - uncached-web: the web pod without the policy cache and the tag TTL,
//     as before they existed: a generation and a tag lookup per admission.
func BenchmarkAdmission(b *testing.B) {
	imgs := injecttest.Serve(b)
	b.Run("warm", func(b *testing.B) {
		h, m := benchWebhook(b, imgs, true)
		serveTimed(b, h, MutatePath, review(b, admissionv1.Create, "emojivoto", replica(webPod(), -1), false)) // the first pod of the Deployment
		sideBySide(b, h, MutatePath, func(i int) []byte {
			return review(b, admissionv1.Create, "emojivoto", replica(webPod(), i), false)
		})
		reportPolicyCache(b, m)
	})
	b.Run("cold-web", func(b *testing.B) {
		h, m := benchWebhook(b, imgs, true)
		serveTimed(b, h, MutatePath, review(b, admissionv1.Create, "emojivoto", webPod(), false)) // images cached
		sideBySide(b, h, MutatePath, func(i int) []byte {
			return review(b, admissionv1.Create, "emojivoto", replica(webPodVariant(i), i), false)
		})
		reportPolicyCache(b, m)
	})
	b.Run("cold-10-containers", func(b *testing.B) {
		h, m := benchWebhook(b, imgs, true)
		serveTimed(b, h, MutatePath, review(b, admissionv1.Create, "emojivoto", tenContainerPod(-1), false))
		sideBySide(b, h, MutatePath, func(i int) []byte {
			return review(b, admissionv1.Create, "emojivoto", replica(tenContainerPod(i), i), false)
		})
		reportPolicyCache(b, m)
	})
	b.Run("validate", func(b *testing.B) {
		h, m := benchWebhook(b, imgs, true)
		pod := webPod()
		code, resp := postTo(b, h, MutatePath, review(b, admissionv1.Create, "emojivoto", pod, false))
		if code != http.StatusOK || !resp.Allowed {
			b.Fatalf("mutating: %d %v", code, resp)
		}
		final := applyPatch(b, pod, resp)
		final.Name = final.GenerateName + "x7k2q"
		final.UID = "2f1c7a9e-0000-4000-8000-00000000000a"
		body := review(b, admissionv1.Create, "emojivoto", final, false)
		sideBySide(b, h, ValidatePath, func(int) []byte { return body })
		if v := testutil.ToFloat64(m.validations.WithLabelValues(ResultAllowed, "ok")); v < 1 {
			b.Fatalf("validations allowed: %v", v)
		}
		reportPolicyCache(b, m)
	})
	b.Run("uncached-web", func(b *testing.B) {
		h, _ := benchWebhook(b, imgs, false)
		body := review(b, admissionv1.Create, "emojivoto", webPod(), false)
		serveTimed(b, h, MutatePath, body)
		sideBySide(b, h, MutatePath, func(int) []byte { return body })
	})
}

// reportPolicyCache reports the policy and patch caches' hit and miss
// counts of the run, so hit and miss paths are told apart in the results.
func reportPolicyCache(b *testing.B, m *Metrics) {
	plural := map[string]string{"hit": "hits", "miss": "misses"}
	for _, r := range []string{"hit", "miss"} {
		b.ReportMetric(testutil.ToFloat64(m.policyCache.requests.WithLabelValues(r)), "policy-cache-"+plural[r])
		b.ReportMetric(testutil.ToFloat64(m.patchCache.requests.WithLabelValues(r)), "patch-cache-"+plural[r])
	}
}

// BenchmarkPolicyCacheMemory admits 100,000 pods of distinct templates (the
// emojivoto web pod with a distinct variable each) through the webhook's
// default configuration and reports the process's resident memory before
// and after, its peak, the live heap after a garbage collection, and the
// policy and patch caches' sizes: the caches stay within their bounds,
// evicting. -short admits 2,000.
func BenchmarkPolicyCacheMemory(b *testing.B) {
	templates := 100_000
	if testing.Short() {
		templates = 2_000
	}
	imgs := injecttest.Serve(b)
	for b.Loop() {
		h, m := benchWebhook(b, imgs, true)
		runtime.GC()
		before := procStatusKiB(b, "VmRSS")
		for i := range templates {
			serveTimed(b, h, MutatePath, review(b, admissionv1.Create, "emojivoto", webPodVariant(i), false))
		}
		after := procStatusKiB(b, "VmRSS")
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(templates), "templates")
		b.ReportMetric(before/1024, "rss-before-MiB")
		b.ReportMetric(after/1024, "rss-after-MiB")
		b.ReportMetric(procStatusKiB(b, "VmHWM")/1024, "rss-peak-MiB")
		b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live-heap-MiB")
		b.ReportMetric(testutil.ToFloat64(m.policyCache.entries), "cache-entries")
		b.ReportMetric(testutil.ToFloat64(m.policyCache.bytes)/(1<<20), "cache-MiB")
		b.ReportMetric(testutil.ToFloat64(m.policyCache.evictions), "evictions")
		b.ReportMetric(testutil.ToFloat64(m.patchCache.entries), "patch-cache-entries")
		b.ReportMetric(testutil.ToFloat64(m.patchCache.bytes)/(1<<20), "patch-cache-MiB")
		runtime.KeepAlive(h) // the cache is live until here: the heap above holds it
	}
}

// procStatusKiB reads a kB field of /proc/self/status (Linux).
func procStatusKiB(b *testing.B, field string) float64 {
	b.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatalf("reading /proc/self/status (Linux only): %v", err)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

func stats(ds []time.Duration) (p50, p99 time.Duration, perSecond float64) {
	s := slices.Clone(ds)
	slices.Sort(s)
	var total time.Duration
	for _, d := range s {
		total += d
	}
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)], float64(len(s)) / total.Seconds()
}

func noopHandler(b *testing.B) http.Handler {
	b.Helper()
	wh, err := kwhmutating.NewWebhook(kwhmutating.WebhookConfig{
		ID:  "noop",
		Obj: &corev1.Pod{},
		Mutator: kwhmutating.MutatorFunc(func(context.Context, *kwhmodel.AdmissionReview, metav1.Object) (*kwhmutating.MutatorResult, error) {
			return &kwhmutating.MutatorResult{}, nil
		}),
	})
	if err != nil {
		b.Fatal(err)
	}
	h, err := kwhhttp.HandlerFor(kwhhttp.HandlerConfig{Webhook: wh})
	if err != nil {
		b.Fatal(err)
	}
	return h
}
