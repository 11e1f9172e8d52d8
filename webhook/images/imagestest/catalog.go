package imagestest

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/contrast-cc/contrast/webhook/images"
)

// Catalog holds stand-ins for the images the test workloads of the webhook
// module name (the emojivoto images and registry.example/acme/...). They are
// deterministic, so golden files are stable.
var Catalog = map[string]Spec{
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
		Files: map[string]string{ //nolint:gosec // G101: an /etc/passwd fixture, not credentials
			"app":        "app",
			"etc/passwd": "root:x:0:0::/root:/bin/sh\napp:x:1001:1001::/srv:/bin/sh\n",
			"etc/group":  "root:x:0:\napp:x:1001:\n",
		},
	},
}

// ServeCatalog pushes catalog (repository:tag → image) to a new in-process
// registry and returns a Source that reaches it as docker.l5d.io/... and
// registry.example/... through mirrors, as air-gapped clusters do.
func ServeCatalog(t testing.TB, catalog map[string]Spec) (*images.Registry, *Registry) {
	t.Helper()
	reg := Serve(t)
	for repoTag, spec := range catalog {
		Push(t, reg.Host, repoTag, Build(t, spec))
	}
	mirror := []images.Mirror{{Host: reg.Host, Insecure: true}}
	src := images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"docker.l5d.io": mirror, "registry.example": mirror},
		SkipOrigin: []string{"docker.l5d.io", "registry.example"},
	})
	return src, reg
}
