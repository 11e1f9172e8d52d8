// Package chart drives the Helm chart charts/contrast with the real helm
// binary (built by `make k8s-bins`): rendering for golden tests, and
// installing the control plane with the project's own images into a
// cluster of the integration harness, so that end-to-end tests share one
// way to install it.
package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/integration/images"
)

// Helm runs the helm binary of the harness.
type Helm struct {
	// Bin is the helm binary.
	Bin string
	// Kubeconfig is passed as --kubeconfig when set.
	Kubeconfig string
	// Home isolates helm's cache, config and data folders (required: helm
	// must not read or write the user's).
	Home string
}

// NewHelm finds helm in binDir (empty: $CONTRAST_K8S_BIN_DIR, then
// <repository>/bin/k8s) and uses home for its state.
func NewHelm(binDir, home string) (*Helm, error) {
	if binDir == "" {
		binDir = os.Getenv(cluster.BinDirEnv)
	}
	if binDir == "" {
		root, err := images.RepoRoot(".")
		if err != nil {
			return nil, fmt.Errorf("locating bin/k8s: %w (set %s)", err, cluster.BinDirEnv)
		}
		binDir = filepath.Join(root, "bin", "k8s")
	}
	bin := filepath.Join(binDir, "helm")
	st, err := os.Stat(bin) //nolint:gosec // the binary folder is chosen by the operator (CONTRAST_K8S_BIN_DIR)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, &cluster.MissingBinariesError{Dir: binDir, Missing: []string{"helm"}}
	}
	return &Helm{Bin: bin, Home: home}, nil
}

// Run runs helm with args and returns its standard output; the error
// carries standard error.
func (h *Helm) Run(ctx context.Context, args ...string) (string, error) {
	if h.Kubeconfig != "" {
		args = append([]string{"--kubeconfig=" + h.Kubeconfig}, args...)
	}
	cmd := exec.CommandContext(ctx, h.Bin, args...) //nolint:gosec // the harness's helm with the caller's arguments.
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(h.Home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.Home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.Home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &Error{Args: args, Err: err, Stderr: strings.TrimSpace(stderr.String())}
	}
	return stdout.String(), nil
}

// Error is a failed helm command.
type Error struct {
	Args   []string
	Err    error
	Stderr string
}

func (e *Error) Error() string {
	return fmt.Sprintf("helm %s: %v: %s", strings.Join(e.Args, " "), e.Err, e.Stderr)
}

func (e *Error) Unwrap() error { return e.Err }

// Dir returns charts/contrast of the repository that holds the working
// directory.
func Dir() (string, error) {
	root, err := images.RepoRoot(".")
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "charts", "contrast"), nil
}

// WriteValues writes values as a YAML file in dir and returns its path.
func WriteValues(dir, name string, values map[string]any) (string, error) {
	b, err := yaml.Marshal(values)
	if err != nil {
		return "", fmt.Errorf("encoding values: %w", err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("writing values: %w", err)
	}
	return path, nil
}

// Template renders the chart as `helm template` does, for release in
// namespace with the given values files and extra arguments (e.g. --set).
func (h *Helm) Template(ctx context.Context, chartDir, release, namespace string, valuesFiles []string, extra ...string) (string, error) {
	args := []string{"template", release, chartDir, "--namespace", namespace}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	return h.Run(ctx, append(args, extra...)...)
}

// ErrNoObject is returned by Object when the rendered manifests have no such object.
var ErrNoObject = errors.New("no such object in the rendered manifests")

// Object returns the document of kind and name from rendered manifests.
func Object(rendered, kind, name string) ([]byte, error) {
	for _, doc := range strings.Split(rendered, "\n---\n") {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, fmt.Errorf("decoding rendered manifests: %w", err)
		}
		if head.Kind == kind && head.Metadata.Name == name {
			return []byte(doc), nil
		}
	}
	return nil, fmt.Errorf("%s %s: %w", kind, name, ErrNoObject)
}
