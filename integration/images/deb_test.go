package images

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseDebianIndex(t *testing.T) {
	raw := `Package: nginx
Version: 1.22.1-9+deb12u11
Architecture: amd64
Depends: libc6 (>= 2.34), libssl3 (>= 3.0.0), iproute2, nginx-common (<< 1.22.1-9+deb12u11.1~)
Pre-Depends: dpkg:any (>= 1.17)
Description: small, powerful, scalable web/proxy server
 Nginx ("engine X") is a high-performance web and reverse proxy server
 created by Igor Sysoev.
Filename: pool/updates/main/n/nginx/nginx_1.22.1-9+deb12u11_amd64.deb
SHA256: 4e2778e675c07d0f2d8d3b6f5ff84f6483ade1d82c21c910eb9a2787e1cf1b1a

Package: nginx-common
Version: 1.22.1-9+deb12u11
Architecture: all
Depends: debconf (>= 0.5) | debconf-2.0, lsb-base
Filename: pool/updates/main/n/nginx/nginx-common_1.22.1-9+deb12u11_all.deb
SHA256: 00
`
	pkgs, err := parseDebianIndex([]byte(raw))
	require.NoError(t, err)
	require.Len(t, pkgs, 2)
	assert.Equal(t, "nginx", pkgs[0].Name)
	assert.Equal(t, "1.22.1-9+deb12u11", pkgs[0].Version)
	assert.Equal(t, [][]string{{"dpkg"}, {"libc6"}, {"libssl3"}, {"iproute2"}, {"nginx-common"}}, pkgs[0].Depends,
		"Pre-Depends first, constraints and architecture qualifiers removed")
	assert.Equal(t, [][]string{{"debconf", "debconf-2.0"}, {"lsb-base"}}, pkgs[1].Depends)

	_, err = parseDebianIndex([]byte("Package: x\nVersion: 1\n"))
	require.ErrorContains(t, err, `"x" lacks`, "an entry without file and digest cannot be fetched and checked")
	_, err = parseDebianIndex([]byte("Package: x\nnot a field\n"))
	require.ErrorContains(t, err, "not a field")
}

func TestDropped(t *testing.T) {
	for p, want := range map[string]bool{
		"usr/share/man/man8/nginx.8.gz":              true,
		"usr/share/doc/nginx/changelog.gz":           true,
		"usr/share/doc/nginx/copyright":              false,
		"usr/share/doc/nginx":                        false,
		"usr/share/doc/openssl/HOWTO/keys.txt":       true,
		"usr/sbin/nginx":                             false,
		"usr/share/nginx/html/index.html":            false,
		"usr/share/man":                              true,
		"usr/lib/x86_64-linux-gnu/libssl.so.3":       false,
		"usr/share/vim/addons/syntax/nginx.vim":      true,
		"usr/share/lintian/overrides/openssl":        true,
		"usr/share/doc-base/something-not-a-doc-dir": false,
	} {
		assert.Equal(t, want, dropped(p), p)
	}
}

func TestLayerBuilderConflicts(t *testing.T) {
	l := newLayerBuilder()
	file := func(data string) debEntry {
		return debEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/x", Mode: 0o644}, data: []byte(data)}
	}
	require.NoError(t, l.add(file("a"), "p1"))
	require.NoError(t, l.add(file("a"), "p2"), "equal files of two packages are one file")
	require.ErrorContains(t, l.add(file("b"), "p3"), "/etc/x is in both p1 and p3")
	raw, err := l.tar()
	require.NoError(t, err)
	names := tarNames(t, raw)
	assert.Equal(t, []string{"etc/", "etc/x"}, names, "parent folders added, sorted")
}

// TestBuildDebianRuns assembles an image of Debian's openssl with the host's
// apt and runs the program inside the image's file tree: the libraries the
// builder chose are the ones it loads.
func TestBuildDebianRuns(t *testing.T) {
	requireDebianTools(t)
	root, err := RepoRoot(".")
	require.NoError(t, err)
	spec := DebianSpec{
		Packages:   []string{"openssl"},
		CacheDir:   filepath.Join(root, "bin", "debs"),
		Entrypoint: []string{"/usr/bin/openssl"},
		Progress:   t.Logf,
	}
	img, pkgs, err := BuildDebian(t.Context(), spec)
	require.NoError(t, err)

	var names []string
	for _, p := range pkgs {
		names = append(names, p.Name)
	}
	assert.Contains(t, names, "openssl")
	assert.Contains(t, names, "libssl3", "the library openssl loads")
	assert.Contains(t, names, "libc6")
	assert.NotContains(t, names, "debconf", "only library providers are added")
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Contains(t, cf.Config.Labels[LabelDebianPackages], "openssl=")

	again, _, err := BuildDebian(t.Context(), spec)
	require.NoError(t, err)
	d1, err := img.Digest()
	require.NoError(t, err)
	d2, err := again.Digest()
	require.NoError(t, err)
	assert.Equal(t, d1, d2, "equal packages give the same image")

	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("running the image's program needs chroot, so root (CI runs as root)")
		}
		t.Skip("running the image's program needs chroot, so root: not exercised as this user")
	}
	dir := t.TempDir()
	extractImage(t, img, dir)
	out, err := exec.CommandContext(t.Context(), "chroot", dir, "/usr/bin/openssl", "version").CombinedOutput() //nolint:gosec // the test's own tree
	require.NoError(t, err, string(out))
	assert.True(t, strings.HasPrefix(string(out), "OpenSSL 3."), "openssl ran from the image: %s", out)
}

func TestBuildDebianUnknownPackage(t *testing.T) {
	requireDebianTools(t)
	_, _, err := BuildDebian(t.Context(), DebianSpec{Packages: []string{"no-such-package-contrast"}, Entrypoint: []string{"/x"}})
	require.ErrorContains(t, err, `"no-such-package-contrast": not in the host's package index`)
}

func requireDebianTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing: Debian images are assembled with the host's apt", tool)
			}
			t.Skipf("%s is missing: Debian images are assembled with the host's apt; not exercised here", tool)
		}
	}
}

func tarNames(t *testing.T, raw []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(strings.NewReader(string(raw)))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		require.NoError(t, err)
		names = append(names, h.Name)
	}
}

// extractImage writes the files of img's layers under dir.
func extractImage(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	for _, l := range layers {
		rc, err := l.Uncompressed()
		require.NoError(t, err)
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			dst := filepath.Join(dir, filepath.Clean("/"+h.Name))
			switch h.Typeflag {
			case tar.TypeDir:
				require.NoError(t, os.MkdirAll(dst, 0o755))
			case tar.TypeSymlink:
				require.NoError(t, os.Symlink(h.Linkname, dst))
			case tar.TypeReg:
				f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode&0o777)) //nolint:gosec // the test's own tree
				require.NoError(t, err)
				_, err = io.Copy(f, tr) //nolint:gosec // a layer the test built
				require.NoError(t, err)
				require.NoError(t, f.Close())
			default:
				t.Fatalf("%s: unexpected tar type %q", h.Name, h.Typeflag)
			}
		}
		require.NoError(t, rc.Close())
	}
}
