package policy_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// resultText is every output of a generation, for byte comparisons.
func resultText(t testing.TB, res *policy.Result) string {
	t.Helper()
	data, err := json.Marshal(res.Data)
	require.NoError(t, err)
	ann, err := json.Marshal(res.Annotations) // keys sorted
	require.NoError(t, err)
	return strings.Join([]string{
		"rego:" + res.Rego, "initdata:" + string(res.InitData), "annotations:" + string(ann), "data:" + string(data),
		"digest:" + hex.EncodeToString(res.Digest), "hostdata:" + hex.EncodeToString(res.HostData),
		"mrconfigid:" + hex.EncodeToString(res.MRConfigID), "kind:" + res.Kind,
	}, "\n")
}

// countingObserver counts the events of a policy.Cache.
type countingObserver struct {
	mu     sync.Mutex
	events map[policy.CacheEvent]int
}

func (o *countingObserver) ObservePolicyCache(e policy.CacheEvent, _ int, _ int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.events == nil {
		o.events = map[policy.CacheEvent]int{}
	}
	o.events[e]++
}

func (o *countingObserver) count(e policy.CacheEvent) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.events[e]
}

// anotherReplica is pod as the API server admits the next pod of the same
// controller: another generated name, UID and service-account token volume.
func anotherReplica(pod *corev1.Pod) *corev1.Pod {
	p := pod.DeepCopy()
	switch {
	case len(p.OwnerReferences) > 0 && p.OwnerReferences[0].Kind == policy.KindStatefulSet:
		p.Name = p.OwnerReferences[0].Name + "-1"
		p.Spec.Hostname = p.Name
		p.Labels["statefulset.kubernetes.io/pod-name"] = p.Name
		p.Labels["apps.kubernetes.io/pod-index"] = "1"
	case p.GenerateName != "":
		p.Name = p.GenerateName + "b7n4m"
	}
	p.UID = types.UID("0a0a0a0a-1111-4222-8333-444444444444")
	p.ResourceVersion = "4711"
	p.CreationTimestamp = metav1.Unix(1700000000, 0)
	rename := map[string]string{}
	for i := range p.Spec.Volumes {
		if v := &p.Spec.Volumes[i]; strings.HasPrefix(v.Name, "kube-api-access-") {
			rename[v.Name] = "kube-api-access-q9z2w"
			v.Name = rename[v.Name]
		}
	}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			for j := range cs[i].VolumeMounts {
				if n, ok := rename[cs[i].VolumeMounts[j].Name]; ok {
					cs[i].VolumeMounts[j].Name = n
				}
			}
		}
	}
	return p
}

// TestCacheMatchesDirect generates every golden case (the workloads of
// TestGoldenAndDeterminism) directly and through the cache, from the YAML
// and as admitted pods, in both output modes, and compares every output
// byte for byte: on the miss that fills the cache, on the hit for the same
// input, and on the hit for the next replica of the same controller.
func TestCacheMatchesDirect(t *testing.T) {
	src, _ := testRegistry(t)
	ws := append(emojivotoWorkloads(t), readWorkloads(t, "testdata/workloads.yaml", "testdata/privileged.yaml")...)
	require.Len(t, ws, 11)
	obs := &countingObserver{}
	cache := policy.NewCache(policy.CacheConfig{Observer: obs})
	wantHits := 0
	for _, legacy := range []bool{false, true} {
		for _, w := range ws {
			t.Run(fmt.Sprintf("%s/%s/legacy=%t", w.Kind, w.Name, legacy), func(t *testing.T) {
				in := policy.GenerateInput{Workload: &w, Images: src, Legacy: legacy}
				direct, err := policy.Generate(t.Context(), in)
				require.NoError(t, err)
				for _, pass := range []string{"miss", "hit"} {
					got, err := cache.Generate(t.Context(), in)
					require.NoError(t, err, pass)
					require.Equal(t, resultText(t, direct), resultText(t, got), "workload, %s", pass)
				}
				wantHits++

				pod := admit(t, w, src)
				replica := anotherReplica(pod)
				for name, p := range map[string]*corev1.Pod{"first pod": pod, "next replica": replica} {
					in := policy.GenerateInput{Pod: p, Images: src, EnvSources: w.EnvSources, Legacy: legacy}
					direct, err := policy.Generate(t.Context(), in)
					require.NoError(t, err)
					got, err := cache.Generate(t.Context(), in)
					require.NoError(t, err)
					require.Equal(t, resultText(t, direct), resultText(t, got), name)
				}
				wantHits++ // the second of the two pods
			})
		}
	}
	assert.Equal(t, wantHits, obs.count(policy.CacheHit), "hits")
	assert.Equal(t, 2*2*len(ws), obs.count(policy.CacheMiss), "misses: one per workload and one per pod, per mode")
}

// TestCacheKeyIgnoresOwnOutput: the annotations the generator writes, which
// the key leaves out, do not change what it generates.
func TestCacheKeyIgnoresOwnOutput(t *testing.T) {
	src, _ := testRegistry(t)
	for _, w := range emojivotoWorkloads(t) {
		pod := admit(t, w, src)
		want, err := policy.Generate(t.Context(), policy.GenerateInput{Pod: pod, Images: src})
		require.NoError(t, err)
		marked := pod.DeepCopy()
		if marked.Annotations == nil {
			marked.Annotations = map[string]string{}
		}
		for _, k := range []string{policy.AnnotationInitData, policy.AnnotationLegacyPolicy, policy.AnnotationPolicyHash} {
			marked.Annotations[k] = "stale " + k
		}
		got, err := policy.Generate(t.Context(), policy.GenerateInput{Pod: marked, Images: src})
		require.NoError(t, err)
		require.Equal(t, resultText(t, want), resultText(t, got), w.Name)
		k1, err := policy.CacheKeyOf(t.Context(), policy.GenerateInput{Pod: pod, Images: src})
		require.NoError(t, err)
		k2, err := policy.CacheKeyOf(t.Context(), policy.GenerateInput{Pod: marked, Images: src})
		require.NoError(t, err)
		require.Equal(t, k1, k2)
	}
}

// otherConfig answers every image with another configuration than src.
type otherConfig struct{ images.Source }

func (s otherConfig) Resolve(ctx context.Context, image string, kc authn.Keychain) (*images.Image, error) {
	img, err := s.Source.Resolve(ctx, image, kc)
	if err != nil {
		return nil, err
	}
	img.Config.Env = append(slices.Clone(img.Config.Env), "EXTRA=1")
	return img, nil
}

// TestCacheKeyInputs changes one input of the emojivoto web pod at a time:
// each change that the policy reflects changes the key, and what differs
// between replicas of one controller does not.
func TestCacheKeyInputs(t *testing.T) {
	src, _ := testRegistry(t)
	var web policy.Workload
	for _, w := range emojivotoWorkloads(t) {
		if w.Name == "web" {
			web = w
		}
	}
	base := admit(t, web, src)
	key := func(in policy.GenerateInput) (policy.CacheKey, string) {
		t.Helper()
		k, err := policy.CacheKeyOf(t.Context(), in)
		require.NoError(t, err)
		res, err := policy.Generate(t.Context(), in)
		require.NoError(t, err)
		return k, resultText(t, res)
	}
	baseKey, basePolicy := key(policy.GenerateInput{Pod: base, Images: src})
	sources := &policy.EnvSources{ConfigMaps: map[string]*corev1.ConfigMap{"cfg": {Data: map[string]string{"A": "1"}}}}
	withEnvFrom := func(p *corev1.Pod) {
		p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}
	}
	envFromKey, _ := key(policy.GenerateInput{Pod: withPod(base, withEnvFrom), Images: src, EnvSources: sources})

	for name, tc := range map[string]struct {
		in      func() policy.GenerateInput
		same    bool
		baseKey policy.CacheKey
	}{
		"namespace": {in: func() policy.GenerateInput {
			return policy.GenerateInput{Pod: withPod(base, func(p *corev1.Pod) { p.Namespace = "other" }), Images: src}
		}},
		"legacy": {in: func() policy.GenerateInput { return policy.GenerateInput{Pod: base, Images: src, Legacy: true} }},
		"image configuration": {in: func() policy.GenerateInput {
			return policy.GenerateInput{Pod: base, Images: otherConfig{src}}
		}},
		"env value": {in: func() policy.GenerateInput {
			return policy.GenerateInput{Pod: withPod(base, func(p *corev1.Pod) { p.Spec.Containers[0].Env[0].Value += "1" }), Images: src}
		}},
		"deny-logs annotation": {in: func() policy.GenerateInput {
			return policy.GenerateInput{Pod: withPod(base, func(p *corev1.Pod) { p.Annotations = map[string]string{policy.AnnotationDenyLogs: "true"} }), Images: src}
		}},
		"Kata annotation": {in: func() policy.GenerateInput {
			return policy.GenerateInput{Pod: withPod(base, func(p *corev1.Pod) {
				p.Annotations = map[string]string{"io.katacontainers.config.hypervisor.default_vcpus": "2"}
			}), Images: src}
		}},
		"controller": {in: func() policy.GenerateInput {
			return policy.GenerateInput{Pod: withPod(base, func(p *corev1.Pod) { p.OwnerReferences[0].Name = "other-5f8d7c9b4d" }), Images: src}
		}},
		"bare pod name": {in: func() policy.GenerateInput {
			return policy.GenerateInput{Pod: withPod(base, func(p *corev1.Pod) {
				p.OwnerReferences, p.GenerateName, p.Name = nil, "", "web-one"
			}), Images: src}
		}},
		"ConfigMap value of envFrom": {baseKey: envFromKey, in: func() policy.GenerateInput {
			changed := &policy.EnvSources{ConfigMaps: map[string]*corev1.ConfigMap{"cfg": {Data: map[string]string{"A": "2"}}}}
			return policy.GenerateInput{Pod: withPod(base, withEnvFrom), Images: src, EnvSources: changed}
		}},
		"next replica": {same: true, in: func() policy.GenerateInput {
			return policy.GenerateInput{Pod: anotherReplica(base), Images: src}
		}},
		"controller labels": {same: true, in: func() policy.GenerateInput {
			return policy.GenerateInput{Pod: withPod(base, func(p *corev1.Pod) { p.Labels["controller-revision-hash"] = "x" }), Images: src}
		}},
		"policy annotations of an earlier admission": {same: true, in: func() policy.GenerateInput {
			return policy.GenerateInput{Pod: withPod(base, func(p *corev1.Pod) {
				p.Annotations = map[string]string{policy.AnnotationPolicyHash: "00", policy.AnnotationInitData: "x"}
			}), Images: src}
		}},
	} {
		t.Run(name, func(t *testing.T) {
			k, text := key(tc.in())
			want := baseKey
			if tc.baseKey != (policy.CacheKey{}) {
				want = tc.baseKey
			}
			if tc.same {
				assert.Equal(t, want, k)
				assert.Equal(t, basePolicy, text)
				return
			}
			assert.NotEqual(t, want, k)
		})
	}
}

func withPod(p *corev1.Pod, f func(*corev1.Pod)) *corev1.Pod {
	cp := p.DeepCopy()
	f(cp)
	return cp
}

// TestCacheBounds fills a cache beyond its bounds: the least recently used
// policies are evicted, counted, and regenerated on the next lookup.
func TestCacheBounds(t *testing.T) {
	src, _ := testRegistry(t)
	ws := emojivotoWorkloads(t)
	gen := func(c *policy.Cache, w policy.Workload) {
		t.Helper()
		_, err := c.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
		require.NoError(t, err)
	}
	t.Run("entries", func(t *testing.T) {
		obs := &countingObserver{}
		c := policy.NewCache(policy.CacheConfig{MaxEntries: 2, Observer: obs})
		gen(c, ws[0])
		gen(c, ws[1])
		gen(c, ws[0]) // ws[1] is now the least recently used
		gen(c, ws[2])
		n, _ := c.Len()
		assert.Equal(t, 2, n)
		assert.Equal(t, 1, obs.count(policy.CacheEvict))
		gen(c, ws[0])
		assert.Equal(t, 2, obs.count(policy.CacheHit), "ws[0] stayed")
		gen(c, ws[1])
		assert.Equal(t, 4, obs.count(policy.CacheMiss), "ws[1] was evicted")
	})
	t.Run("bytes", func(t *testing.T) {
		probe := policy.NewCache(policy.CacheConfig{})
		gen(probe, ws[0])
		_, one := probe.Len()
		obs := &countingObserver{}
		c := policy.NewCache(policy.CacheConfig{MaxBytes: one * 5 / 2, Observer: obs})
		for _, w := range ws {
			gen(c, w)
		}
		n, b := c.Len()
		assert.LessOrEqual(t, b, one*5/2)
		assert.Equal(t, len(ws)-n, obs.count(policy.CacheEvict))
		assert.Less(t, n, len(ws))
	})
	t.Run("larger than the bound", func(t *testing.T) {
		c := policy.NewCache(policy.CacheConfig{MaxBytes: 1024})
		gen(c, ws[0])
		n, b := c.Len()
		assert.Zero(t, n)
		assert.Zero(t, b)
	})
}

// TestCacheErrorsNotCached: a pod that cannot get a policy is refused every
// time, with the generator's error, and leaves nothing in the cache.
func TestCacheErrorsNotCached(t *testing.T) {
	src, _ := testRegistry(t)
	w := simplePod()
	w.Template.Spec.Volumes = []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
	obs := &countingObserver{}
	c := policy.NewCache(policy.CacheConfig{Observer: obs})
	_, want := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
	require.ErrorIs(t, want, policy.ErrUnsupported)
	for range 2 {
		_, err := c.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
		require.EqualError(t, err, want.Error())
	}
	n, _ := c.Len()
	assert.Zero(t, n)
	assert.Equal(t, 2, obs.count(policy.CacheMiss))

	// an image that does not resolve is reported by the generation
	bad := simplePod()
	bad.Template.Spec.Containers[0].Image = "registry.example/acme/missing:1"
	_, want = policy.Generate(t.Context(), policy.GenerateInput{Workload: bad, Images: src})
	require.Error(t, want)
	_, err := c.Generate(t.Context(), policy.GenerateInput{Workload: bad, Images: src})
	require.EqualError(t, err, want.Error())
}

// blockingSource holds every Resolve until release is closed.
type blockingSource struct {
	images.Source
	release chan struct{}
	calls   atomic.Int32
}

func (s *blockingSource) Resolve(ctx context.Context, image string, kc authn.Keychain) (*images.Image, error) {
	s.calls.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.Source.Resolve(ctx, image, kc)
}

// TestCacheConcurrent admits eight replicas at once: one generation, the
// others wait for it or hit, and all get the same policy.
func TestCacheConcurrent(t *testing.T) {
	src, _ := testRegistry(t)
	w := emojivotoWorkloads(t)[0]
	pod := admit(t, w, src)
	want, err := policy.Generate(t.Context(), policy.GenerateInput{Pod: pod, Images: src})
	require.NoError(t, err)
	obs := &countingObserver{}
	c := policy.NewCache(policy.CacheConfig{Observer: obs})
	bs := &blockingSource{Source: src, release: make(chan struct{})}
	var wg sync.WaitGroup
	got := make([]*policy.Result, 8)
	errs := make([]error, 8)
	for i := range got {
		wg.Go(func() {
			got[i], errs[i] = c.Generate(t.Context(), policy.GenerateInput{Pod: anotherReplica(pod), Images: bs})
		})
	}
	close(bs.release)
	wg.Wait()
	for i := range got {
		require.NoError(t, errs[i])
		require.Equal(t, resultText(t, want), resultText(t, got[i]))
	}
	assert.Equal(t, 1, obs.count(policy.CacheMiss))
	assert.Equal(t, 7, obs.count(policy.CacheHit)+obs.count(policy.CacheShared))
}
