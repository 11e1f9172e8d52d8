package images

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBuildComponentsReproducible builds the Coordinator image twice: equal
// commits give equal digests (the digest `make images` prints is the one
// the chart pins). The webhook, Initializer and mesh proxy are built the
// same way; TestChartOnRealNode runs all four.
func TestBuildComponentsReproducible(t *testing.T) {
	root, err := RepoRoot(".")
	require.NoError(t, err)
	first, err := BuildComponents(t.Context(), root, "0123abcd", []string{"coordinator"})
	require.NoError(t, err)
	second, err := BuildComponents(t.Context(), root, "0123abcd", []string{"coordinator"})
	require.NoError(t, err)
	assert.Equal(t, must(first["coordinator"].Digest()), must(second["coordinator"].Digest()), "the image is reproducible")
	cf := must(first["coordinator"].ConfigFile())
	assert.Equal(t, []string{"/bin/coordinator"}, cf.Config.Entrypoint)
	assert.Equal(t, "0123abcd", cf.Config.Labels["org.opencontainers.image.revision"], "the image names its commit")
	assert.Equal(t, "Contrast Coordinator", cf.Config.Labels["org.opencontainers.image.title"])
}

// TestComponentSpecs: every component is one static binary built from the
// workspace at the root, named after the component.
func TestComponentSpecs(t *testing.T) {
	root, err := RepoRoot(".")
	require.NoError(t, err)
	for _, c := range Components {
		spec, err := ComponentSpec(root, c.Name, "rev")
		var missing *MissingProgramError
		if errors.As(err, &missing) {
			t.Logf("%s: %v", c.Name, err)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, map[string]string{"/bin/" + c.Name: "./" + c.Folder}, spec.Binaries)
		if c.Name == "initializer" {
			require.NotNil(t, spec.Debian, "the Initializer runs cryptsetup and mkfs.ext4")
			assert.Equal(t, []string{"cryptsetup-bin", "e2fsprogs"}, spec.Debian.Packages)
			assert.Equal(t, filepath.Join(root, "bin", "debs"), spec.Debian.CacheDir)
		} else {
			assert.Nil(t, spec.Debian, "%s is its static binary alone", c.Name)
		}
		assert.Equal(t, root, spec.Dir)
		assert.Equal(t, "rev", spec.Labels["org.opencontainers.image.revision"])
	}
}

// TestBuildComponentsMissingProgram: a component whose program is not in
// the checkout fails by name before anything is built.
func TestBuildComponentsMissingProgram(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "go.work"), []byte("go 1.26.0\n"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "initializer", "cmd", "mesh-proxy"), 0o750))

	_, err := BuildComponents(t.Context(), root, "", []string{"initializer", "mesh-proxy"})
	var missing *MissingProgramError
	require.ErrorAs(t, err, &missing)
	assert.Equal(t, "initializer", missing.Component.Name)
	require.ErrorContains(t, err, "image initializer: the Contrast Initializer program (initializer/cmd/initializer) does not exist")
	require.ErrorContains(t, err, "image mesh-proxy: the Contrast service-mesh proxy program (initializer/cmd/mesh-proxy) does not exist", "a folder without Go files has no program either")

	_, err = BuildComponents(t.Context(), root, "", []string{"nginx"})
	require.ErrorContains(t, err, `unknown image "nginx": want one of coordinator, webhook, initializer, mesh-proxy`)
	assert.NotErrorAs(t, err, &missing)
}

// TestInitializerImage builds the Initializer's image twice (equal digests:
// the chart pins it) and checks it holds the program, cryptsetup,
// mkfs.ext4 and the libraries they load, with Debian's PATH and the
// packages in LabelDebianPackages; as root it runs both programs from the
// image's file tree under chroot, so every library resolves.
func TestInitializerImage(t *testing.T) {
	requireDebianTools(t)
	root, err := RepoRoot(".")
	require.NoError(t, err)
	first, err := BuildComponents(t.Context(), root, "0123abcd", []string{"initializer"})
	require.NoError(t, err)
	second, err := BuildComponents(t.Context(), root, "0123abcd", []string{"initializer"})
	require.NoError(t, err)
	img := first["initializer"]
	assert.Equal(t, must(img.Digest()), must(second["initializer"].Digest()), "the image is reproducible")

	cf := must(img.ConfigFile())
	assert.Equal(t, []string{"/bin/initializer"}, cf.Config.Entrypoint)
	assert.Equal(t, "Contrast Initializer", cf.Config.Labels["org.opencontainers.image.title"])
	assert.Equal(t, "0123abcd", cf.Config.Labels["org.opencontainers.image.revision"])
	pkgs := cf.Config.Labels[LabelDebianPackages]
	for _, p := range []string{"cryptsetup-bin=", "e2fsprogs=", "libcryptsetup12=", "libc6="} {
		assert.Contains(t, pkgs, p)
	}
	assert.Equal(t, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, cf.Config.Env)
	layers := must(img.Layers())
	require.Len(t, layers, 2, "the Debian packages, then the program")
	t.Logf("Debian layer %d bytes, program layer %d bytes; packages: %s", must(layers[0].Size()), must(layers[1].Size()), pkgs)

	dir := t.TempDir()
	extractImage(t, img, dir)
	for _, f := range []string{"bin/initializer"} {
		assert.FileExists(t, filepath.Join(dir, f))
	}
	find := func(name string) string {
		for _, d := range []string{"usr/sbin", "sbin", "usr/bin", "bin"} {
			p := filepath.Join("/", d, name)
			if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
				return p
			}
		}
		t.Fatalf("%s is not in the image", name)
		return ""
	}
	cryptsetup, mkfs := find("cryptsetup"), find("mkfs.ext4")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("running the image's programs needs chroot, so root (CI runs as root)")
		}
		t.Skip("running the image's programs needs chroot, so root: not exercised as this user")
	}
	out, err := exec.CommandContext(t.Context(), "chroot", dir, cryptsetup, "--version").CombinedOutput() //nolint:gosec // the test's own tree
	require.NoError(t, err, string(out))
	assert.True(t, strings.HasPrefix(string(out), "cryptsetup 2."), "cryptsetup ran from the image: %s", out)
	out, err = exec.CommandContext(t.Context(), "chroot", dir, mkfs, "-V").CombinedOutput() //nolint:gosec // the test's own tree
	require.NoError(t, err, string(out))
	assert.Contains(t, string(out), "mke2fs 1.", "mkfs.ext4 ran from the image")
}
