package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/shareddata"
)

// goldenWorkloads are the workloads of the injection golden test
// (webhook/inject TestGolden): the emojivoto manifests, the policy
// generator's test workloads and inject/testdata/*.yaml.
func goldenWorkloads(t *testing.T) []policy.Workload {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(shareddata.Dir(t, shareddata.Emojivoto), "*.yml"))
	require.NoError(t, err)
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yml" })
	require.NotEmpty(t, files)
	files = append(files, "../../policy/testdata/workloads.yaml", "../../policy/testdata/privileged.yaml")
	own, err := filepath.Glob("../../inject/testdata/*.yaml")
	require.NoError(t, err)
	files = append(files, own...)
	var out []policy.Workload
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		ws, err := policy.DecodeWorkloads(b)
		require.NoError(t, err, f)
		out = append(out, ws...)
	}
	return out
}

// admittedPod is the i-th pod of workload w as the API server sends it to
// admission: from the controller (generateName, owner reference) unless w
// is a bare pod, with the managedFields entry of the creating request,
// whose time differs from pod to pod, and the service-account token volume
// with a name that differs too.
func admittedPod(w *policy.Workload, i int) *corev1.Pod {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: *w.Template.ObjectMeta.DeepCopy(),
		Spec:       *w.Template.Spec.DeepCopy(),
	}
	pod.Namespace = "golden"
	manager := "kubectl-client-side-apply"
	if w.Kind != policy.KindPod {
		pod.Name = ""
		pod.GenerateName = w.Name + "-"
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: policy.KindDaemonSet, Name: w.Name, UID: "1", Controller: ptr.To(true)}}
		manager = "kube-controller-manager"
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		// the ServiceAccount admission plugin's token volume, named with a
		// random suffix, mounted into every container
		token := fmt.Sprintf("kube-api-access-%05d", i+1)
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: token, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}}},
		}}})
		for _, cs := range []([]corev1.Container){pod.Spec.InitContainers, pod.Spec.Containers} {
			for j := range cs {
				cs[j].VolumeMounts = append(cs[j].VolumeMounts, corev1.VolumeMount{Name: token, ReadOnly: true, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"})
			}
		}
	}
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{
		Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
		Time:       ptr.To(metav1.NewTime(time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second))),
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:labels":{".":{}}},"f:spec":{"f:containers":{}}}`),
	}}
	return pod
}

// TestPatchCacheGolden admits three pods of every golden workload through
// a webhook with the patch cache (the first a miss, the others hits, unless
// the patch holds a value of the pod's own) and
// through one without any cache, and requires the same patches: the same
// operations (the diff leaves their order to Go's map iteration, so they
// are compared as a multiset of their JSON encodings) and the same
// admitted pod once patched (in canonical JSON). A hit is exactly as safe
// as a miss.
func TestPatchCacheGolden(t *testing.T) {
	imgs := injecttest.Serve(t)
	cases := 0
	for _, w := range goldenWorkloads(t) {
		t.Run(strings.ToLower(w.Kind+"-"+w.Name), func(t *testing.T) {
			cases++
			// the webhook reads the ConfigMaps of envFrom through the API server
			sources := func(context.Context, string, []string) (*policy.EnvSources, error) { return w.EnvSources, nil }
			cached := fixtureOn(t, imgs)
			cached.mutator.EnvSources = sources
			direct := fixtureOn(t, imgs)
			direct.mutator.EnvSources = sources
			direct.mutator.Policies = nil
			uncached, err := NewAdmissionHandler(AdmissionConfig{Mutator: direct.mutator, Metrics: direct.metrics})
			require.NoError(t, err)

			for i := range 3 {
				pod := admittedPod(&w, i)
				body := review(t, admissionv1.Create, "golden", pod, false)
				code, got := post(t, cached.handler, body)
				require.Equal(t, 200, code)
				require.True(t, got.Allowed, "%v", got.Result)
				code, want := post(t, uncached, body)
				require.Equal(t, 200, code)
				require.True(t, want.Allowed, "%v", want.Result)

				assert.Equal(t, patchOps(t, want.Patch), patchOps(t, got.Patch), "pod %d", i)
				raw, err := json.Marshal(pod)
				require.NoError(t, err)
				assert.Equal(t, string(patched(t, raw, want.Patch)), string(patched(t, raw, got.Patch)), "pod %d", i)
			}
			hits, misses := 2.0, 1.0
			if len(w.Template.Spec.InitContainers) > 0 {
				// the injected init containers come first: the pod's own
				// move, and the patch adds them again with their mount of
				// the token volume, whose name is the pod's own
				hits, misses = 0, 3
			}
			assert.InDelta(t, misses, testutil.ToFloat64(cached.metrics.patchCache.requests.WithLabelValues("miss")), 0)
			assert.InDelta(t, hits, testutil.ToFloat64(cached.metrics.patchCache.requests.WithLabelValues("hit")), 0)
		})
	}
	require.Positive(t, cases)
}

// patchOps returns the operations of a JSON patch, each as its JSON
// encoding (keys sorted), sorted.
func patchOps(t testing.TB, patch []byte) []string {
	t.Helper()
	var ops []map[string]any
	require.NoError(t, json.Unmarshal(patch, &ops))
	out := make([]string, len(ops))
	for i, op := range ops {
		b, err := json.Marshal(op)
		require.NoError(t, err)
		out[i] = string(b)
	}
	slices.Sort(out)
	return out
}

// patched applies patch to doc and returns the result in canonical JSON
// (object keys sorted: the order in which the operations add keys is
// Go's map order).
func patched(t testing.TB, doc, patch []byte) []byte {
	t.Helper()
	p, err := jsonpatch.DecodePatch(patch)
	require.NoError(t, err)
	out, err := p.Apply(doc)
	require.NoError(t, err)
	var v any
	require.NoError(t, json.Unmarshal(out, &v))
	canonical, err := json.Marshal(v)
	require.NoError(t, err)
	return canonical
}

// TestPatchCacheKeysReplicas admits pods through the webhook and checks
// which share a patch: pods of one ReplicaSet that differ in the request's
// managedFields time, their name, uid or creation time share it (once a pod
// with such a member was seen: which members a pod has is part of the key);
// a pod of another template does not, nor a pod whose per-pod value does
// not survive the round trip through the typed pod (its patch holds that
// value).
func TestPatchCacheKeysReplicas(t *testing.T) {
	imgs := injecttest.Serve(t)
	f := fixtureOn(t, imgs)
	admit := func(pod *corev1.Pod) *admissionv1.AdmissionResponse {
		t.Helper()
		code, resp := post(t, f.handler, review(t, admissionv1.Create, "emojivoto", pod, false))
		require.Equal(t, 200, code)
		require.True(t, resp.Allowed, "%v", resp.Result)
		return resp
	}
	counts := func() (hits, misses float64) {
		return testutil.ToFloat64(f.metrics.patchCache.requests.WithLabelValues("hit")), testutil.ToFloat64(f.metrics.patchCache.requests.WithLabelValues("miss"))
	}
	admit(replica(webPod(), 0))
	tests := []struct {
		name string
		pod  *corev1.Pod
		hit  bool
	}{
		{"another managedFields time", replica(webPod(), 1), true},
		// a member the first pod did not have is part of the key
		{"a name set", named(replica(webPod(), 2), "web-7d9f8c6b5-x7k2q"), false},
		{"another name", named(replica(webPod(), 3), "web-7d9f8c6b5-b4c5d"), true},
		{"a uid and creationTimestamp set", stamped(replica(webPod(), 4), "2f1c7a9e-0000-4000-8000-00000000000a", 4), false},
		{"another uid and creationTimestamp", stamped(replica(webPod(), 5), "2f1c7a9e-0000-4000-8000-00000000000b", 5), true},
		{"another label", func() *corev1.Pod { p := replica(webPod(), 6); p.Labels["tier"] = "front"; return p }(), false},
		{"another env value", replica(webPodVariant(1), 7), false},
		{"no namespace in the object", func() *corev1.Pod { p := replica(webPod(), 8); p.Namespace = ""; return p }(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits, misses := counts()
			resp := admit(tt.pod)
			h, m := counts()
			if tt.hit {
				assert.Equal(t, [2]float64{hits + 1, misses}, [2]float64{h, m}, "a hit")
			} else {
				assert.Equal(t, [2]float64{hits, misses + 1}, [2]float64{h, m}, "a miss")
			}
			pod := tt.pod.DeepCopy()
			pod.Namespace = "emojivoto" // as the webhook does: the request's namespace
			want, _, err := f.mutator.MutatePod(t.Context(), pod, nil)
			require.NoError(t, err)
			wantJSON, err := json.Marshal(want)
			require.NoError(t, err)
			gotJSON, err := json.Marshal(applyPatch(t, tt.pod, resp))
			require.NoError(t, err)
			assert.JSONEq(t, string(wantJSON), string(gotJSON), "the patch turns the admitted pod into the mutated pod")
		})
	}

	t.Run("a time that does not survive the round trip", func(t *testing.T) {
		// the typed pod keeps seconds: the patch replaces the time, so the
		// time is part of the key
		body := func(frac string) []byte {
			b := review(t, admissionv1.Create, "emojivoto", replica(webPod(), 9), false)
			out := bytes.Replace(b, []byte(`"time":"2026-12-03T16:00:09Z"`), []byte(`"time":"2026-12-03T16:00:09.`+frac+`Z"`), 1)
			require.NotEqual(t, b, out)
			return out
		}
		for _, frac := range []string{"25", "5"} {
			hits, misses := counts()
			code, resp := post(t, f.handler, body(frac))
			require.Equal(t, 200, code)
			require.True(t, resp.Allowed)
			h, m := counts()
			assert.Equal(t, [2]float64{hits, misses + 1}, [2]float64{h, m}, "a miss")
			assert.Contains(t, patchOps(t, resp.Patch), `{"op":"replace","path":"/metadata/managedFields/0/time","value":"2026-12-03T16:00:09Z"}`)
		}
	})
}

func named(p *corev1.Pod, name string) *corev1.Pod {
	p.Name = name
	return p
}

func stamped(p *corev1.Pod, uid string, second int) *corev1.Pod {
	p.UID = types.UID(uid)
	p.CreationTimestamp = metav1.NewTime(time.Date(2026, 12, 3, 16, 0, second, 0, time.UTC))
	return p
}

// TestPatchKeyOf checks the masking of per-pod values on documents written
// by hand: masked only where both documents hold the same bytes at the
// same path and the scan is unambiguous.
func TestPatchKeyOf(t *testing.T) {
	const mutated = `{"metadata":{"name":"$N","generateName":"web-","managedFields":[{"time":"$T"}],"annotations":{"a":"b"}},` +
		`"spec":{"volumes":[{"name":"$V","projected":{}},{"name":"contrast"}],"containers":[{"name":"c","volumeMounts":[{"name":"$V"},{"name":"contrast"}]}]}}`
	const raw = `{"metadata":{"generateName":"web-","name":"$N","managedFields":[{"time":"$T"}]},` +
		`"spec":{"volumes":[{"name":"$V","projected":{}}],"containers":[{"name":"c","volumeMounts":[{"name":"$V"}]}]}}`
	doc := func(tmpl, name, time string) []byte {
		return []byte(strings.NewReplacer("$N", name, "$T", time, "$V", "kube-api-access-"+name).Replace(tmpl))
	}
	values := []policyValue{{key: policy.AnnotationInitData, value: "initdata"}}
	base := patchKeyOf(doc(raw, "a", "1"), doc(mutated, "a", "1"), values)
	tests := []struct {
		name         string
		raw, mutated []byte
		values       []policyValue
		same         bool
	}{
		{"another name, time and token volume", doc(raw, "b", "2"), doc(mutated, "b", "2"), values, true},
		{"white space around a masked value", []byte(strings.Replace(string(doc(raw, "b", "2")), `"name":"b"`, `"name" :  "b" `, 1)), doc(mutated, "b", "2"), values, false},
		{"the name changed by the mutator", doc(raw, "a", "1"), doc(mutated, "c", "1"), values, false},
		{"the volumes reordered by the mutator", doc(raw, "b", "2"), []byte(strings.Replace(string(doc(mutated, "b", "2")),
			`"volumes":[{"name":"kube-api-access-b","projected":{}},{"name":"contrast"}]`, `"volumes":[{"name":"contrast"},{"name":"kube-api-access-b","projected":{}}]`, 1)), values, false},
		{"another annotation value", doc(raw, "a", "1"), doc(mutated, "a", "1"), []policyValue{{key: policy.AnnotationInitData, value: "other"}}, false},
		{"the value under another annotation", doc(raw, "a", "1"), doc(mutated, "a", "1"), []policyValue{{key: policy.AnnotationLegacyPolicy, value: "initdata"}}, false},
		{"another template", []byte(strings.Replace(string(doc(raw, "a", "1")), `"web-"`, `"db-"`, 1)), doc(mutated, "a", "1"), values, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.same, patchKeyOf(tt.raw, tt.mutated, tt.values) == base)
		})
	}

	// ambiguous documents are hashed whole: two of them that differ in a
	// per-pod value have different keys
	ambiguous := []struct {
		name string
		raw  string
	}{
		{"duplicate metadata", `{"metadata":{"name":"$N"},"metadata":{"name":"$N","managedFields":[{"time":"$T"}]},"spec":{}}`},
		{"duplicate member", `{"metadata":{"name":"x","name":"$N","managedFields":[{"time":"$T"}]},"spec":{}}`},
		{"escaped key", `{"metadata":{"n\u0061me":"$N","name":"$N","managedFields":[{"time":"$T"}]},"spec":{}}`},
		{"escaped top-level key", `{"m\u0065tadata":{},"metadata":{"name":"$N","managedFields":[{"time":"$T"}]},"spec":{}}`},
		{"duplicate volume name", `{"metadata":{"name":"$N"},"spec":{"volumes":[{"name":"x","name":"$V"}]}}`},
		{"duplicate volumes", `{"metadata":{"name":"$N"},"spec":{"volumes":[{"name":"$V"}],"volumes":[{"name":"$V"}]}}`},
		{"not an object", `[{"metadata":{"name":"$N","managedFields":[{"time":"$T"}]}}]`},
		{"truncated", `{"metadata":{"name":"$N","managedFields":[{"time":"$T"}]},"spec":{`},
	}
	for _, tt := range ambiguous {
		t.Run(tt.name, func(t *testing.T) {
			a := patchKeyOf(doc(tt.raw, "a", "1"), doc(mutated, "a", "1"), values)
			b := patchKeyOf(doc(tt.raw, "b", "2"), doc(mutated, "b", "2"), values)
			assert.NotEqual(t, a, b)
		})
	}
}

// TestPatchCacheBounds checks the entry and byte bounds and the metrics.
func TestPatchCacheBounds(t *testing.T) {
	events := map[PatchCacheEvent]int{}
	c := NewPatchCache(PatchCacheConfig{MaxEntries: 2, MaxBytes: 3*patchEntryOverhead + 100, Observer: patchEvents(events)})
	key := func(i int) patchKey { return patchKeyOf(fmt.Appendf(nil, "%d", i), nil, nil) }
	c.put(key(1), []byte("a"))
	c.put(key(2), []byte("b"))
	_, ok := c.get(key(1)) // 1 is now the most recently used
	require.True(t, ok)
	c.put(key(3), []byte("c")) // evicts 2
	_, ok = c.get(key(2))
	assert.False(t, ok)
	_, ok = c.get(key(1))
	assert.True(t, ok)
	n, b := c.Len()
	assert.Equal(t, 2, n)
	assert.Equal(t, int64(2*(1+patchEntryOverhead)), b)

	c.put(key(4), bytes.Repeat([]byte("x"), 4*patchEntryOverhead)) // larger than the bound: not cached
	_, ok = c.get(key(4))
	assert.False(t, ok)
	c.put(key(5), bytes.Repeat([]byte("x"), patchEntryOverhead+100)) // fits alone: evicts both
	n, _ = c.Len()
	assert.Equal(t, 1, n)
	assert.Equal(t, map[PatchCacheEvent]int{PatchCacheHit: 2, PatchCacheMiss: 5, PatchCacheEvict: 3}, events)
}

type patchEvents map[PatchCacheEvent]int

func (p patchEvents) ObservePatchCache(e PatchCacheEvent, _ int, _ int64) { p[e]++ }

// FuzzPatchCacheKey checks that two admitted pods whose patch keys are
// equal take the same patch: the patch derived for the first, applied to
// the second, gives what the second's own patch gives. The pods are a
// document with the placeholder $V replaced by two values (the fuzzer
// mutates the document and the values); the mutated pod is the admitted
// pod decoded as the webhook decodes it, changed (an annotation with a
// stand-in, a label, the volume mounts of init containers removed, an init
// container prepended, a volume and its mounts added, and with three volumes
// or more the first two swapped) and encoded again, so values that do not
// survive the typed round trip, move or go show in the difference.
func FuzzPatchCacheKey(f *testing.F) {
	seed := func(doc string, a, b string) { f.Add([]byte(doc), []byte(a), []byte(b)) }
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-","namespace":"ns","labels":{"app":"web"},%s},"spec":{"containers":[{"name":"web","image":"web:1"}]}}`
	seed(fmt.Sprintf(pod, `"name":$V`), `"web-abcde"`, `"web-fghjk"`)
	seed(fmt.Sprintf(pod, `"managedFields":[{"manager":"m","operation":"Update","apiVersion":"v1","time":$V,"fieldsType":"FieldsV1","fieldsV1":{"f:spec":{}}}]`), `"2026-12-03T16:00:00Z"`, `"2026-12-03T16:00:01Z"`)
	seed(fmt.Sprintf(pod, `"managedFields":[{"manager":"m","operation":"Update","apiVersion":"v1","time":$V}]`), `"2026-12-03T16:00:00.5Z"`, `"2026-12-03T16:00:00Z"`)
	seed(fmt.Sprintf(pod, `"uid":$V,"creationTimestamp":null`), `"1"`, `"2"`)
	seed(fmt.Sprintf(pod, `"name":"a","name":$V`), `"b"`, `"c"`)
	seed(fmt.Sprintf(pod, `"name":$V},"metadata":{"name":"x"`), `"b"`, `"c"`)
	seed(fmt.Sprintf(pod, `"annotations":{"k":$V}`), `"b"`, `"c"`)
	seed(fmt.Sprintf(pod, `"resourceVersion":$V`), `"1"`, `1`)
	vols := `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-"},"spec":{"volumes":[{"name":$V,"projected":{"sources":[]}}],"containers":[{"name":"web","image":"web:1","volumeMounts":[{"name":$V,"mountPath":"/v"}]}]}}`
	seed(vols, `"kube-api-access-abcde"`, `"kube-api-access-fghjk"`)
	seed(strings.Replace(vols, `"volumes":[`, `"volumes":[{"name":"x"},`, 1), `"a"`, `"b"`)
	seed(strings.Replace(vols, `"containers":[`, `"initContainers":[{"name":"i","image":"i:1","volumeMounts":[{"name":$V,"mountPath":"/v"}]}],"containers":[`, 1), `"kube-api-access-abcde"`, `"kube-api-access-fghjk"`)
	decoder := serializer.NewCodecFactory(runtime.NewScheme()).UniversalDeserializer()
	admit := func(raw []byte) (mutated []byte, values []policyValue, ok bool) {
		pod := &corev1.Pod{}
		if _, _, err := decoder.Decode(raw, nil, pod); err != nil {
			return nil, nil, false
		}
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		if pod.Labels == nil {
			pod.Labels = map[string]string{}
		}
		pod.Annotations[policy.AnnotationInitData] = "policy of " + pod.Name
		pod.Labels["contrast"] = "yes"
		pod.Spec.InitContainers = append([]corev1.Container{{Name: "init", Image: "init@sha256:00"}}, pod.Spec.InitContainers...)
		for i := range pod.Spec.InitContainers {
			pod.Spec.InitContainers[i].VolumeMounts = nil // as the re-injection of a reinvocation does
		}
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "contrast"})
		if len(pod.Spec.Volumes) > 2 {
			// a mutation that moves values: their paths differ
			pod.Spec.Volumes[0], pod.Spec.Volumes[1] = pod.Spec.Volumes[1], pod.Spec.Volumes[0]
		}
		for i := range pod.Spec.Containers {
			pod.Spec.Containers[i].VolumeMounts = append(pod.Spec.Containers[i].VolumeMounts, corev1.VolumeMount{Name: "contrast", MountPath: "/contrast"})
		}
		values = standIn(pod)
		mutated, err := json.Marshal(pod)
		if err != nil {
			return nil, nil, false
		}
		return mutated, values, true
	}
	f.Fuzz(func(t *testing.T, doc, a, b []byte) {
		raw1 := bytes.ReplaceAll(doc, []byte("$V"), a)
		raw2 := bytes.ReplaceAll(doc, []byte("$V"), b)
		mut1, values1, ok1 := admit(raw1)
		mut2, values2, ok2 := admit(raw2)
		if !ok1 || !ok2 {
			return
		}
		if patchKeyOf(raw1, mut1, values1) != patchKeyOf(raw2, mut2, values2) {
			return
		}
		patch1, err1 := derivePatch(raw1, mut1, values1)
		patch2, err2 := derivePatch(raw2, mut2, values2)
		if err1 != nil || err2 != nil {
			// never cached: a miss that fails stores nothing
			return
		}
		got, errGot := applyJSONPatch(raw2, patch1)
		want, errWant := applyJSONPatch(raw2, patch2)
		if errWant != nil {
			return // the patch library cannot apply its own patch to this document
		}
		if errGot != nil || !jsonEqual(got, want) {
			t.Fatalf("equal keys, different patches:\nraw1 %s\nraw2 %s\npatch1 %s\npatch2 %s\ngot  %s\nwant %s (%v)", raw1, raw2, patch1, patch2, got, want, errGot)
		}
	})
}

func applyJSONPatch(doc, patch []byte) ([]byte, error) {
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, err
	}
	return p.Apply(doc)
}

// jsonEqual compares two JSON documents as values (duplicate keys: the
// last wins, as in the API server's decoder).
func jsonEqual(a, b []byte) bool {
	var av, bv any
	if json.Unmarshal(a, &av) != nil || json.Unmarshal(b, &bv) != nil {
		return false
	}
	ab, err1 := json.Marshal(av)
	bb, err2 := json.Marshal(bv)
	return err1 == nil && err2 == nil && bytes.Equal(ab, bb)
}

// FuzzStringEnd checks stringEnd (searching quotes with IndexByte and
// counting the backslashes before them) against a byte-by-byte scan.
func FuzzStringEnd(f *testing.F) {
	for _, s := range []string{`"abc"`, `"a\"b"`, `"a\\"b"`, `"a\\\"b"x"`, `"\\\\"`, `"`, `"abc`, `"\`, `x"y"`} {
		f.Add([]byte(s))
	}
	reference := func(b []byte, start int) int {
		for i := start + 1; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i
			}
		}
		return -1
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for start := range b {
			if b[start] != '"' {
				continue
			}
			if got, want := stringEnd(b, start), reference(b, start); got != want {
				t.Fatalf("stringEnd(%q, %d) = %d, want %d", b, start, got, want)
			}
		}
	})
}
