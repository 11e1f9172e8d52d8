package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Component is one of the project's own images: the Coordinator, the
// webhook, the Initializer and the service-mesh proxy.
type Component struct {
	// Name is the image's repository name below the registry prefix
	// ("coordinator") and the key of its digest in `make images`' output.
	Name string
	// Folder is the main package's folder relative to the repository root.
	Folder string
	// Binary is the program's path in the image.
	Binary string
	// Title names the program for people (image label and messages).
	Title string
	// DebianPackages are the Debian packages the image holds besides the
	// program (Spec.Debian), with the libraries their programs load; none
	// for an image of the static binary alone.
	DebianPackages []string
}

// Components are the images `make images` builds, in this order.
var Components = []Component{
	{Name: "coordinator", Folder: "coordinator/cmd/coordinator", Binary: "/bin/coordinator", Title: "Contrast Coordinator"},
	{Name: "webhook", Folder: "webhook/cmd/webhook", Binary: "/bin/webhook", Title: "Contrast admission webhook"},
	// the Initializer opens encrypted persistent volumes with cryptsetup
	// and formats them with mkfs.ext4 (initializer/pv)
	{Name: "initializer", Folder: "initializer/cmd/initializer", Binary: "/bin/initializer", Title: "Contrast Initializer",
		DebianPackages: []string{"cryptsetup-bin", "e2fsprogs"}},
	{Name: "mesh-proxy", Folder: "initializer/cmd/mesh-proxy", Binary: "/bin/mesh-proxy", Title: "Contrast service-mesh proxy"},
}

// ComponentNames returns the names of Components.
func ComponentNames() []string {
	out := make([]string, len(Components))
	for i, c := range Components {
		out[i] = c.Name
	}
	return out
}

// MissingProgramError reports a component whose main package is not in the
// checkout (yet): its image cannot be built, and nothing stands in for it.
type MissingProgramError struct {
	Component Component
	Root      string
}

func (e *MissingProgramError) Error() string {
	return fmt.Sprintf("image %s: the %s program (%s) does not exist in %s, so its image cannot be built; build the others with IMAGES=<names>",
		e.Component.Name, e.Component.Title, e.Component.Folder, e.Root)
}

// ComponentSpec returns the image spec of the named component of the
// repository at root (the folder holding go.work): one static binary built
// from root's workspace, labeled with its title and, when given, revision,
// on the component's DebianPackages if it has any (their .deb files cached
// in root's bin/debs). A component whose main package is missing gives a
// *MissingProgramError.
func ComponentSpec(root, component, revision string) (Spec, error) {
	i := slices.IndexFunc(Components, func(c Component) bool { return c.Name == component })
	if i < 0 {
		return Spec{}, fmt.Errorf("unknown image %q: want one of %s", component, strings.Join(ComponentNames(), ", "))
	}
	c := Components[i]
	goFiles, err := filepath.Glob(filepath.Join(root, c.Folder, "*.go"))
	if err != nil || len(goFiles) == 0 {
		return Spec{}, &MissingProgramError{Component: c, Root: root}
	}
	labels := map[string]string{
		"org.opencontainers.image.title":  c.Title,
		"org.opencontainers.image.source": "https://github.com/contrast-cc/contrast",
	}
	if revision != "" {
		labels["org.opencontainers.image.revision"] = revision
	}
	spec := Spec{
		Binaries: map[string]string{c.Binary: "./" + c.Folder},
		Dir:      root,
		Labels:   labels,
	}
	if len(c.DebianPackages) > 0 {
		spec.Debian = &DebianSpec{Packages: slices.Clone(c.DebianPackages), CacheDir: filepath.Join(root, "bin", "debs")}
	}
	return spec, nil
}

// BuildComponents builds the named components of the repository at root
// (all of Components when names is empty). It checks every name first and
// builds nothing if one is unknown or its program is missing.
func BuildComponents(ctx context.Context, root, revision string, names []string) (map[string]v1.Image, error) {
	if len(names) == 0 {
		names = ComponentNames()
	}
	specs := make(map[string]Spec, len(names))
	var errs []error
	for _, n := range names {
		spec, err := ComponentSpec(root, n, revision)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		specs[n] = spec
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make(map[string]v1.Image, len(names))
	for _, n := range names {
		img, err := Build(ctx, specs[n])
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", n, err)
		}
		out[n] = img
	}
	return out, nil
}

// PushOptions configure PushRepository.
type PushOptions struct {
	// Insecure allows plain HTTP (a local registry); otherwise only HTTPS.
	Insecure bool
	// Keychain gives credentials; nil means the Docker config and credential
	// helpers of the user (authn.DefaultKeychain).
	Keychain authn.Keychain
}

// PushRepository uploads img to repository (host[:port]/path, e.g.
// "ghcr.io/contrast-cc/contrast/webhook"), tagged tag when tag is not
// empty, and returns the reference by digest "repository@sha256:…".
func PushRepository(ctx context.Context, repository, tag string, img v1.Image, opts PushOptions) (string, error) {
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("computing image digest: %w", err)
	}
	refStr := repository + "@" + digest.String()
	if tag != "" {
		refStr = repository + ":" + tag
	}
	nameOpts := []name.Option{name.StrictValidation}
	if opts.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ref, err := name.ParseReference(refStr, nameOpts...)
	if err != nil {
		return "", fmt.Errorf("parsing image reference %q: %w", refStr, err)
	}
	kc := opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)); err != nil {
		return "", fmt.Errorf("pushing %s: %w", refStr, err)
	}
	return ref.Context().Name() + "@" + digest.String(), nil
}

// RepoRoot walks up from dir to the folder holding go.work: the repository
// root the components are built from.
func RepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s", dir)
		}
	}
}

// onDebian returns the image of the Debian packages of deb with the layer
// goLayer (the binaries of images.Build) on top, configured by config with
// Debian's PATH and the label LabelDebianPackages. Both layers and the
// configuration are deterministic, so equal inputs give equal digests.
func onDebian(ctx context.Context, deb DebianSpec, goLayer []byte, history v1.History, config v1.Config) (v1.Image, error) {
	deb.Entrypoint, deb.Cmd, deb.Env, deb.Labels = config.Entrypoint, nil, nil, nil
	base, _, err := BuildDebian(ctx, deb)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(goLayer)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("creating layer: %w", err)
	}
	history.Created = created
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, MediaType: types.OCILayer, History: history})
	if err != nil {
		return nil, fmt.Errorf("appending layer: %w", err)
	}
	baseCF, err := base.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading image config: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading image config: %w", err)
	}
	cf = cf.DeepCopy()
	labels := map[string]string{LabelDebianPackages: baseCF.Config.Labels[LabelDebianPackages]}
	for k, v := range config.Labels {
		labels[k] = v
	}
	config.Labels = labels
	// Debian's PATH (its programs are in /usr/sbin and /sbin), then the
	// binaries' extra variables
	env := []string{baseCF.Config.Env[0]}
	for _, e := range config.Env {
		if !strings.HasPrefix(e, "PATH=") {
			env = append(env, e)
		}
	}
	config.Env = env
	cf.Config = config
	cf.Created = created
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("writing image config: %w", err)
	}
	return img, nil
}
