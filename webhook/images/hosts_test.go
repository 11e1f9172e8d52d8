package images_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/images"
)

func TestConfigFromHostsDir(t *testing.T) {
	dir := t.TempDir()
	write := func(reg, doc string) {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, reg), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, reg, "hosts.toml"), []byte(doc), 0o600))
	}
	write("docker.l5d.io", `server = "http://127.0.0.1:5001"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]

[host."https://push-only.example"]
  capabilities = ["push"]

[host."https://mirror.example"]
  capabilities = ["pull", "resolve"]
`)
	write("docker.io", `server = "https://registry-1.docker.io"
[host."https://zmirror.example"]
[host."https://amirror.example"]
`)
	mirrors, skip, err := images.ConfigFromHostsDir(dir)
	require.NoError(t, err)
	assert.Equal(t, []images.Mirror{{Host: "127.0.0.1:5000", Insecure: true}, {Host: "mirror.example"}, {Host: "127.0.0.1:5001", Insecure: true}}, mirrors["docker.l5d.io"])
	// file order, not alphabetical order
	assert.Equal(t, []images.Mirror{{Host: "zmirror.example"}, {Host: "amirror.example"}, {Host: "registry-1.docker.io"}}, mirrors["docker.io"])
	assert.Equal(t, []string{"docker.io", "docker.l5d.io"}, skip)

	_, _, err = images.ConfigFromHostsDir(filepath.Join(dir, "missing"))
	require.NoError(t, err)
}
