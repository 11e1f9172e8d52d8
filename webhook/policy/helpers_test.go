package policy_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

const emojivotoDir = "../../examples/emojivoto"

// testImages are stand-ins for the images the test workloads name; they are
// deterministic, so golden files are stable.
var testImages = map[string]imagestest.Spec{
	"buoyantio/emojivoto-web:v11": {
		Config: v1.Config{Entrypoint: []string{"/usr/local/bin/emojivoto-web"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, WorkingDir: "/usr/local/bin"},
		Files:  map[string]string{"usr/local/bin/emojivoto-web": "web"}, Padding: 2 << 20,
	},
	"buoyantio/emojivoto-emoji-svc:v11": {
		Config: v1.Config{Entrypoint: []string{"/usr/local/bin/emojivoto-emoji-svc"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, WorkingDir: "/usr/local/bin"},
		Files:  map[string]string{"usr/local/bin/emojivoto-emoji-svc": "emoji"}, Padding: 2 << 20,
	},
	"buoyantio/emojivoto-voting-svc:v11": {
		Config: v1.Config{Entrypoint: []string{"/usr/local/bin/emojivoto-voting-svc"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, WorkingDir: "/usr/local/bin"},
		Files:  map[string]string{"usr/local/bin/emojivoto-voting-svc": "voting"}, Padding: 2 << 20,
	},
	"acme/db:1.0": {
		Config: v1.Config{Entrypoint: []string{"/bin/db"}, Cmd: []string{"serve"}, Env: []string{"PATH=/bin", "DB_HOME=/var/lib/db"}, User: "999:999", Volumes: map[string]struct{}{"/var/lib/db": {}}},
		Files:  map[string]string{"bin/db": "db"},
	},
	"acme/agent:2": {
		Config: v1.Config{Entrypoint: []string{"/agent"}, Env: []string{"PATH=/"}},
		Files:  map[string]string{"agent": "agent"},
	},
	"acme/named-user:3": {
		Config: v1.Config{Entrypoint: []string{"/app"}, Env: []string{"PATH=/"}, User: "app"},
		Files: map[string]string{
			"app":        "app",
			"etc/passwd": "root:x:0:0::/root:/bin/sh\napp:x:1001:1001::/srv:/bin/sh\n",
			"etc/group":  "root:x:0:\napp:x:1001:\n",
		},
	},
}

// testRegistry serves testImages, reachable as docker.l5d.io/... and
// registry.example/... through mirrors.
func testRegistry(t testing.TB) (*images.Registry, *imagestest.Registry) {
	t.Helper()
	reg := imagestest.Serve(t)
	for repoTag, spec := range testImages {
		imagestest.Push(t, reg.Host, repoTag, imagestest.Build(t, spec))
	}
	mirror := []images.Mirror{{Host: reg.Host, Insecure: true}}
	src := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"docker.l5d.io": mirror, "registry.example": mirror},
		SkipOrigin: []string{"docker.l5d.io", "registry.example"},
	})
	return src, reg
}

func readWorkloads(t testing.TB, files ...string) []policy.Workload {
	t.Helper()
	var out []policy.Workload
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		ws, err := policy.DecodeWorkloads(b)
		require.NoError(t, err)
		out = append(out, ws...)
	}
	return out
}

func emojivotoWorkloads(t testing.TB) []policy.Workload {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(emojivotoDir, "*.yml"))
	require.NoError(t, err)
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yml" })
	ws := readWorkloads(t, files...)
	require.Len(t, ws, 4)
	return ws
}

// imageSize is the size of an image's manifest, config and layers.
func imageSize(t testing.TB, host, repoTag string) int64 {
	t.Helper()
	ref, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
	require.NoError(t, err)
	img, err := remote.Image(ref)
	require.NoError(t, err)
	m, err := img.Manifest()
	require.NoError(t, err)
	raw, err := img.RawManifest()
	require.NoError(t, err)
	size := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size
}
