package images

import (
	"archive/tar"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBuildAndPush(t *testing.T) {
	ctx := t.Context()
	img, err := Build(ctx, Spec{Binaries: map[string]string{"/bin/pause": PausePackage}, Env: []string{"A=b"}})
	require.NoError(t, err)

	cf, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "linux", cf.OS)
	assert.Equal(t, "amd64", cf.Architecture)
	assert.Equal(t, []string{"/bin/pause"}, cf.Config.Entrypoint)
	assert.Contains(t, cf.Config.Env, "A=b")

	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var entries []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		entries = append(entries, h.Name)
		if h.Name == "bin/pause" {
			head := make([]byte, 4)
			_, err := io.ReadFull(tr, head)
			require.NoError(t, err)
			assert.Equal(t, "\x7fELF", string(head), "a Linux executable")
		}
	}
	assert.Equal(t, []string{"bin/", "bin/pause"}, entries)

	// Equal inputs give the same image.
	again, err := Build(ctx, Spec{Binaries: map[string]string{"/bin/pause": PausePackage}, Env: []string{"A=b"}})
	require.NoError(t, err)
	d1, err := img.Digest()
	require.NoError(t, err)
	d2, err := again.Digest()
	require.NoError(t, err)
	assert.Equal(t, d1, d2, "builds are reproducible")

	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	ref, err := Push(ctx, host, "contrast/pause", "latest", img)
	require.NoError(t, err)
	assert.Equal(t, host+"/contrast/pause@"+d1.String(), ref)
	pulled, err := remote.Image(must(name.ParseReference(ref, name.Insecure)), remote.WithContext(ctx))
	require.NoError(t, err)
	assert.Equal(t, d1, must(pulled.Digest()))

	mirrored, err := PushAs(ctx, host, "docker.l5d.io/buoyantio/emojivoto-web:v11", img)
	require.NoError(t, err)
	assert.Equal(t, "docker.l5d.io/buoyantio/emojivoto-web@"+d1.String(), mirrored)
	byTag, err := remote.Image(must(name.ParseReference(host+"/buoyantio/emojivoto-web:v11", name.Insecure)), remote.WithContext(ctx))
	require.NoError(t, err)
	assert.Equal(t, d1, must(byTag.Digest()))

	_, err = PushAs(ctx, host, "docker.l5d.io/x@sha256:0000000000000000000000000000000000000000000000000000000000000000", img)
	require.Error(t, err, "a digest reference must name the image's digest")
}

func TestMirrorPath(t *testing.T) {
	testCases := map[string]struct{ ref, repo, tag string }{
		"registry with tag": {ref: "docker.l5d.io/buoyantio/emojivoto-web:v11", repo: "buoyantio/emojivoto-web", tag: "v11"},
		"docker hub":        {ref: "nginx", repo: "library/nginx", tag: "latest"},
		"ghcr":              {ref: "ghcr.io/edgelesssys/contrast/coordinator:v1.0.0", repo: "edgelesssys/contrast/coordinator", tag: "v1.0.0"},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			repo, tag, err := MirrorPath(tc.ref)
			require.NoError(t, err)
			assert.Equal(t, tc.repo, repo)
			assert.Equal(t, tc.tag, tag)
		})
	}
	_, _, err := MirrorPath("UPPER/case:bad")
	require.Error(t, err)
}

func TestBuildRejectsBadSpecs(t *testing.T) {
	testCases := map[string]Spec{
		"no binaries":             {},
		"relative path":           {Binaries: map[string]string{"bin/x": PausePackage}},
		"two binaries, no entry":  {Binaries: map[string]string{"/a": PausePackage, "/b": PausePackage}},
		"package that is missing": {Binaries: map[string]string{"/a": "github.com/contrast-cc/contrast/integration/images/nonexistent"}},
	}
	for name, spec := range testCases {
		t.Run(name, func(t *testing.T) {
			_, err := Build(t.Context(), spec)
			require.Error(t, err)
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
