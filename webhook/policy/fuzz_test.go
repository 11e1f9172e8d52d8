package policy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/policy"
)

func addSeeds(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(kataDir(f), "*", "pod.yaml"))
	more, _ := filepath.Glob(filepath.Join(kataDir(f), "*", "*", "pod.yaml"))
	emo, _ := filepath.Glob(filepath.Join(emojivotoDir(f), "*.yml"))
	files = append(append(append(files, more...), emo...), "testdata/workloads.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("kind: List\napiVersion: v1\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: [{name: c, image: x}]}}\n"))
}

// FuzzDecodeWorkloads checks that the decoder never panics on untrusted
// YAML and that every workload it returns has a kind and a name.
func FuzzDecodeWorkloads(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ws, err := policy.DecodeWorkloads(b)
		if err != nil {
			return
		}
		for _, w := range ws {
			if w.Kind == "" || w.Name == "" {
				t.Fatalf("workload without kind or name: %+v", w)
			}
		}
	})
}

// FuzzGenerate runs decoded workloads through the generator with a source
// that knows every image, checking for panics and for the line limit.
func FuzzGenerate(f *testing.F) {
	addSeeds(f)
	src := &anyImage{}
	f.Fuzz(func(t *testing.T, b []byte) {
		ws, err := policy.DecodeWorkloads(b)
		if err != nil || len(ws) > 4 {
			return
		}
		for i := range ws {
			res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &ws[i], Images: src})
			if err != nil {
				continue
			}
			if len(res.HostData) != 32 || len(res.MRConfigID) != 48 {
				t.Fatal("bad digest sizes")
			}
			if _, err := policy.ParseInitData(res.InitData); err != nil {
				t.Fatalf("initdata does not parse: %v", err)
			}
		}
	})
}

// FuzzParseInitData checks the initdata parser on untrusted input.
func FuzzParseInitData(f *testing.F) {
	doc, _ := policy.InitData("package agent_policy\n")
	f.Add(doc)
	f.Add([]byte("algorithm = \"sha384\"\nversion = \"0.1.0\"\n[data]\n\"policy.rego\" = \"x\"\n"))
	f.Fuzz(func(_ *testing.T, b []byte) {
		_, _ = policy.ParseInitData(b)
	})
}

type anyImage struct{ images.Static }

func (anyImage) Resolve(_ context.Context, image string, _ authn.Keychain) (*images.Image, error) {
	return &images.Image{Repository: "registry.example/fuzz", Digest: "sha256:" + strings.Repeat("a", 64),
		Config: images.Config{Entrypoint: []string{"/bin/app"}, Env: []string{"PATH=/bin"}}}, nil
}

// derivedImages resolves every image to a digest and configuration derived
// from the image string, so that a changed image changes both.
type derivedImages struct{ images.Static }

func (derivedImages) Resolve(_ context.Context, image string, _ authn.Keychain) (*images.Image, error) {
	sum := sha256.Sum256([]byte(image))
	repo, _, _ := strings.Cut(image, "@")
	return &images.Image{Repository: repo, Digest: "sha256:" + hex.EncodeToString(sum[:]),
		Config: images.Config{Entrypoint: []string{"/bin/" + hex.EncodeToString(sum[:2])}, Env: []string{"PATH=/bin"}, User: "1000"}}, nil
}

func (derivedImages) Accounts(context.Context, *images.Image, authn.Keychain) (*images.Accounts, error) {
	return &images.Accounts{Users: []images.User{{Name: "app", UID: 1000, GID: 1000}}, Groups: []images.Group{{Name: "app", GID: 1000}}}, nil
}

// jsonSites lists the paths of every value below the root of a decoded JSON
// document, in a deterministic order.
func jsonSites(v any, path []any, out *[][]any) {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			p := append(slices.Clone(path), k)
			*out = append(*out, p)
			jsonSites(x[k], p, out)
		}
	case []any:
		for i, e := range x {
			p := append(slices.Clone(path), i)
			*out = append(*out, p)
			jsonSites(e, p, out)
		}
	}
}

// mutateJSON applies one change to the value at path of doc: op 0 sets a
// string, 1 a number, 2 a boolean, 3 removes it, 4 adds a key to an object
// or repeats an element of an array.
func mutateJSON(doc any, path []any, op uint8, value string) {
	parent := doc
	for _, p := range path[:len(path)-1] {
		switch x := parent.(type) {
		case map[string]any:
			parent = x[p.(string)]
		case []any:
			parent = x[p.(int)]
		}
	}
	last := path[len(path)-1]
	set := func(v any) {
		switch x := parent.(type) {
		case map[string]any:
			x[last.(string)] = v
		case []any:
			x[last.(int)] = v
		}
	}
	get := func() any {
		switch x := parent.(type) {
		case map[string]any:
			return x[last.(string)]
		case []any:
			return x[last.(int)]
		}
		return nil
	}
	switch op % 5 {
	case 0:
		set(value)
	case 1:
		set(float64(len(value)))
	case 2:
		set(len(value)%2 == 0)
	case 3:
		switch x := parent.(type) {
		case map[string]any:
			delete(x, last.(string))
		case []any:
			set(nil)
		}
	case 4:
		switch x := get().(type) {
		case map[string]any:
			x[value] = "x"
		case []any:
			if len(x) > 0 {
				set(append(x, x[len(x)-1]))
			}
		}
	}
}

// FuzzCacheKey mutates one value of an admitted pod (metadata or spec) and
// checks the security property of the policy cache: two pods with the same
// cache key get the same policy (or both none), so a hit is exactly what a
// miss would generate.
func FuzzCacheKey(f *testing.F) {
	f.Add(uint8(0), uint16(0), uint8(0), "x")
	f.Add(uint8(1), uint16(7), uint8(3), "")
	f.Add(uint8(2), uint16(40), uint8(0), "/other")
	f.Add(uint8(3), uint16(3), uint8(4), "io.katacontainers.config.agent.x")
	f.Add(uint8(0), uint16(12), uint8(0), "web-x")
	src := derivedImages{}
	type base struct {
		pod   *corev1.Pod
		doc   any
		sites [][]any
		key   policy.CacheKey
		text  string
		err   error
	}
	var (
		once  sync.Once
		bases []base
	)
	f.Fuzz(func(t *testing.T, which uint8, site uint16, op uint8, value string) {
		once.Do(func() {
			ws := append(emojivotoWorkloads(t), readWorkloads(t, "testdata/workloads.yaml")...)
			for _, w := range ws {
				if w.EnvSources != nil && len(w.EnvSources.ConfigMaps) > 0 {
					continue
				}
				pod := admit(t, w, src)
				in := policy.GenerateInput{Pod: pod, Images: src}
				k, err := policy.CacheKeyOf(t.Context(), in)
				if err != nil {
					t.Fatal(err)
				}
				b := base{pod: pod, key: k}
				res, err := policy.Generate(t.Context(), in)
				if b.err = err; err == nil {
					b.text = resultText(t, res)
				}
				js, _ := json.Marshal(pod)
				_ = json.Unmarshal(js, &b.doc)
				jsonSites(b.doc, nil, &b.sites)
				bases = append(bases, b)
			}
		})
		b := bases[int(which)%len(bases)]
		js, _ := json.Marshal(b.doc)
		var doc any
		_ = json.Unmarshal(js, &doc)
		mutateJSON(doc, b.sites[int(site)%len(b.sites)], op, value)
		js, err := json.Marshal(doc)
		if err != nil {
			return
		}
		var pod corev1.Pod
		if json.Unmarshal(js, &pod) != nil {
			return
		}
		in := policy.GenerateInput{Pod: &pod, Images: src}
		k, err := policy.CacheKeyOf(t.Context(), in)
		if err != nil || k != b.key {
			return // not cached, or another key
		}
		res, err := policy.Generate(t.Context(), in)
		switch {
		case (err == nil) != (b.err == nil):
			t.Fatalf("same cache key, but one generation failed: base %v, mutated %v", b.err, err)
		case err == nil && resultText(t, res) != b.text:
			t.Fatalf("same cache key %s, different policies; mutated pod: %s", k, js)
		}
	})
}
