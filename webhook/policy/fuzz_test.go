package policy_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/policy"
)

func addSeeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/kata/*/pod.yaml")
	more, _ := filepath.Glob("testdata/kata/*/*/pod.yaml")
	emo, _ := filepath.Glob(filepath.Join(emojivotoDir, "*.yml"))
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
