// Package images builds container images from the project's own Go binaries
// and pushes them to a registry, so the local cluster runs real containers
// without Docker and without pulling anything from the internet.
//
// An image is one layer of static binaries (CGO_ENABLED=0, linux/amd64) on an
// empty base: no shell, no libc, no package manager. The pause image of the
// local node, the test server, the Coordinator, the webhook, the Initializer
// and the mesh proxy are built this way (Build). Images of real software
// from Debian packages (nginx, openssl) are assembled from the .deb files of
// the host's apt with only the libraries their programs load (BuildDebian).
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Main packages of this module that the local cluster and its tests use.
const (
	// PausePackage is the sandbox ("pause") program of the local node.
	PausePackage = "github.com/contrast-cc/contrast/integration/images/pause"
	// TestServerPackage is a small HTTP server and client for node tests.
	TestServerPackage = "github.com/contrast-cc/contrast/integration/images/testserver"
)

// Spec describes an image of static Go binaries.
type Spec struct {
	// Binaries maps an absolute path in the image (e.g. "/bin/coordinator") to
	// the Go main package built there: an import path, or a folder relative to
	// Dir ("./cmd/coordinator").
	Binaries map[string]string
	// Dir is the folder `go build` runs in; it decides which module or
	// workspace the packages resolve in. Empty means the working directory.
	Dir string
	// Entrypoint of the image. Empty means the only binary, when there is one.
	Entrypoint []string
	// Cmd holds default arguments.
	Cmd []string
	// Env holds extra `KEY=value` variables; PATH is always set.
	Env []string
	// Labels are image labels.
	Labels map[string]string
	// BuildFlags are extra `go build` flags (e.g. "-tags=sim").
	BuildFlags []string
	// Debian, when set, is the image's base: the files of its Debian
	// packages (BuildDebian; its Entrypoint, Cmd, Env and Labels are
	// ignored) in a first layer, the binaries in a second. PATH is then
	// Debian's, and the label LabelDebianPackages lists the packages.
	Debian *DebianSpec
}

// created is the fixed creation time of every image, so that equal inputs
// give equal digests.
var created = v1.Time{Time: time.Unix(0, 0).UTC()}

// Build compiles the binaries of spec as static linux/amd64 programs and
// returns an image holding them in a single layer.
func Build(ctx context.Context, spec Spec) (v1.Image, error) {
	if len(spec.Binaries) == 0 {
		return nil, errors.New("image spec has no binaries")
	}
	tmp, err := os.MkdirTemp("", "contrast-image-")
	if err != nil {
		return nil, fmt.Errorf("creating build folder: %w", err)
	}
	defer os.RemoveAll(tmp)

	dests := make([]string, 0, len(spec.Binaries))
	for dest := range spec.Binaries {
		if !path.IsAbs(dest) || path.Clean(dest) != dest || dest == "/" {
			return nil, fmt.Errorf("binary path %q in the image must be absolute and clean", dest)
		}
		dests = append(dests, dest)
	}
	sort.Strings(dests)
	entrypoint := spec.Entrypoint
	if len(entrypoint) == 0 {
		if len(dests) != 1 {
			return nil, errors.New("image spec with several binaries needs an Entrypoint")
		}
		entrypoint = []string{dests[0]}
	}

	files := make(map[string]string, len(dests))
	for i, dest := range dests {
		out := filepath.Join(tmp, fmt.Sprintf("bin%d", i))
		if err := goBuild(ctx, spec, spec.Binaries[dest], out); err != nil {
			return nil, err
		}
		files[dest] = out
	}
	layerBytes, err := tarLayer(dests, files)
	if err != nil {
		return nil, err
	}
	history := v1.History{CreatedBy: "contrast images.Build", Comment: strings.Join(dests, " ")}
	config := v1.Config{
		Entrypoint: entrypoint,
		Cmd:        spec.Cmd,
		Env:        append([]string{"PATH=/bin:/usr/local/bin:/usr/bin"}, spec.Env...),
		Labels:     spec.Labels,
		WorkingDir: "/",
	}
	if spec.Debian != nil {
		return onDebian(ctx, *spec.Debian, layerBytes, history, config)
	}
	return newImage(layerBytes, history, config)
}

// newImage returns the linux/amd64 OCI image of one uncompressed layer with
// the given configuration and the fixed creation time.
func newImage(layerBytes []byte, history v1.History, config v1.Config) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("creating layer: %w", err)
	}

	history.Created = created
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   history,
	})
	if err != nil {
		return nil, fmt.Errorf("appending layer: %w", err)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = created
	cf.Config = config
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("writing image config: %w", err)
	}
	return img, nil
}

func goBuild(ctx context.Context, spec Spec, pkg, out string) error {
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out}, spec.BuildFlags...)
	args = append(args, pkg)
	cmd := exec.CommandContext(ctx, "go", args...) //nolint:gosec // go build of the caller's packages.
	cmd.Dir = spec.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// tarLayer writes the files (image path -> host file) with their parent
// folders into an uncompressed tar with fixed metadata.
func tarLayer(dests []string, files map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, dest := range dests {
		var parents []string
		for d := path.Dir(dest); d != "/"; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: created.Time,
			}); err != nil {
				return nil, fmt.Errorf("writing layer: %w", err)
			}
		}
		data, err := os.ReadFile(files[dest])
		if err != nil {
			return nil, fmt.Errorf("reading built binary: %w", err)
		}
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dest, "/"), Mode: 0o755, Size: int64(len(data)), ModTime: created.Time,
		}); err != nil {
			return nil, fmt.Errorf("writing layer: %w", err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("writing layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing layer: %w", err)
	}
	return buf.Bytes(), nil
}

// Push uploads img to registry (host:port, plain HTTP, as the local cluster's
// registry serves) under repo, tagged tag when tag is not empty, and returns
// the reference by digest: "host:port/repo@sha256:…".
func Push(ctx context.Context, registry, repo, tag string, img v1.Image) (string, error) {
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("computing image digest: %w", err)
	}
	refStr := registry + "/" + repo + "@" + digest.String()
	if tag != "" {
		refStr = registry + "/" + repo + ":" + tag
	}
	ref, err := name.ParseReference(refStr, name.Insecure, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("parsing image reference %q: %w", refStr, err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("pushing %s: %w", refStr, err)
	}
	return registry + "/" + repo + "@" + digest.String(), nil
}

// PushAs pushes img to the mirror registry (host:port) under the repository
// and tag of the upstream reference ref (see MirrorPath), and returns ref's
// repository pinned to the image digest: pods that name
// "docker.l5d.io/buoyantio/emojivoto-web:v11" (or the returned digest
// reference) then pull it from the mirror.
func PushAs(ctx context.Context, registry, ref string, img v1.Image) (string, error) {
	repo, tag, err := MirrorPath(ref)
	if err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("computing image digest: %w", err)
	}
	if strings.HasPrefix(tag, "sha256:") {
		if tag != digest.String() {
			return "", fmt.Errorf("reference %s names digest %s, the image has %s", ref, tag, digest)
		}
		tag = ""
	}
	if _, err := Push(ctx, registry, repo, tag, img); err != nil {
		return "", err
	}
	r, _ := name.ParseReference(ref)
	return r.Context().Name() + "@" + digest.String(), nil
}

// MirrorPath returns the repository (and tag or digest) under which an image
// with the upstream reference ref must be pushed to a mirror registry, so that
// a containerd host configured to mirror ref's registry resolves it:
// "docker.l5d.io/buoyantio/emojivoto-web:v11" gives
// "buoyantio/emojivoto-web" and "v11". Images on Docker Hub keep Docker's
// "library/" prefix for official images.
func MirrorPath(ref string) (repo, tag string, err error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", "", fmt.Errorf("parsing image reference %q: %w", ref, err)
	}
	return r.Context().RepositoryStr(), r.Identifier(), nil
}
