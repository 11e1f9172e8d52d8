package settings_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/inject/settings"
)

var (
	initImage  = "registry.example/contrast/initializer@sha256:" + strings.Repeat("a", 64)
	proxyImage = "registry.example/contrast/mesh-proxy@sha256:" + strings.Repeat("b", 64)
)

// coordinatorSettings are valid Coordinator expectations as settings file
// lines, each prefixed by indent (the reference values inline as JSON).
func coordinatorSettings(t *testing.T, indent string) string {
	t.Helper()
	rv, err := json.Marshal(injecttest.CoordinatorReferenceValues())
	require.NoError(t, err)
	return indent + "platform: snp\n" +
		indent + "coordinator-policy-hash: [" + strings.Repeat("c0", 32) + "]\n" +
		indent + "coordinator-reference-values: '" + string(rv) + "'\n"
}

func newFlags(t *testing.T) (*settings.Settings, *pflag.FlagSet) {
	t.Helper()
	s := &settings.Settings{}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.String("other", "", "a flag that is not a setting")
	s.AddFlags(fs)
	return s, fs
}

func TestNames(t *testing.T) {
	s, _ := newFlags(t)
	names := s.Names()
	assert.Contains(t, names, settings.FlagInitializerImage)
	assert.Contains(t, names, settings.FlagRegistryMirror)
	assert.NotContains(t, names, "other")
	assert.IsNonDecreasing(t, names)
}

func TestApplyFile(t *testing.T) {
	testCases := map[string]struct {
		file    string
		args    []string
		wantErr string
		check   func(t *testing.T, r *settings.Resolved)
	}{
		"map of flags": {
			file: coordinatorSettings(t, "") + "initializer-image: " + initImage + "\nproxy-image: " + proxyImage + "\nmax-policy-bytes: 4096\n" +
				"registry-mirror:\n- a.example=http://10.0.0.1:5000\n- a.example=mirror.example\nregistry-skip-origin: [a.example]\n",
			check: func(t *testing.T, r *settings.Resolved) {
				assert.Equal(t, initImage, r.Inject.InitializerImage)
				assert.Equal(t, 4096, r.MaxPolicyBytes)
				assert.Equal(t, injecttest.CoordinatorReferenceValues(), r.Inject.CoordinatorReferenceValues)
				assert.Equal(t, attest.PlatformSNP, r.Inject.Platform)
				assert.Equal(t, []images.Mirror{{Host: "10.0.0.1:5000", Insecure: true}, {Host: "mirror.example"}}, r.Registry.Mirrors["a.example"])
				assert.Equal(t, []string{"a.example"}, r.Registry.SkipOrigin)
				assert.Equal(t, settings.DefaultRegistryTagTTL, r.Registry.TagTTL)
			},
		},
		"tag TTL off": {
			file: coordinatorSettings(t, "") + "initializer-image: " + initImage + "\nproxy-image: " + proxyImage + "\nregistry-tag-ttl: 0s\n",
			check: func(t *testing.T, r *settings.Resolved) {
				assert.Zero(t, r.Registry.TagTTL)
			},
		},
		"command line wins": {
			file: coordinatorSettings(t, "") + "initializer-image: " + initImage + "\nproxy-image: " + proxyImage + "\nruntime-class: from-file\nregistry-insecure: [a:1]\n",
			args: []string{"--runtime-class=from-flag", "--registry-insecure=b:2"},
			check: func(t *testing.T, r *settings.Resolved) {
				assert.Equal(t, "from-flag", r.Inject.RuntimeClassName)
				assert.Equal(t, []string{"b:2"}, r.Registry.Insecure)
			},
		},
		"ConfigMap": {
			file: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: contrast-settings}\ndata:\n  settings.yaml: |\n" + coordinatorSettings(t, "    ") + "    initializer-image: " + initImage + "\n    proxy-image: " + proxyImage + "\n    policy-mode: legacy\n",
			check: func(t *testing.T, r *settings.Resolved) {
				assert.True(t, r.Legacy)
				assert.Equal(t, proxyImage, r.Inject.ProxyImage)
			},
		},
		"helm template output": {
			file: "apiVersion: v1\nkind: Service\nmetadata: {name: coordinator}\n---\n# Source: settings.yaml\n" +
				"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: contrast-settings}\ndata:\n  settings.yaml: |\n    initializer-image: " + initImage + "\n    proxy-image: " + proxyImage + "\n    runtime-class: from-chart\n" + coordinatorSettings(t, "    ") +
				"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {x: y}\n",
			check: func(t *testing.T, r *settings.Resolved) {
				assert.Equal(t, "from-chart", r.Inject.RuntimeClassName)
			},
		},
		"helm template output without settings": {
			file:    "kind: Service\n---\nkind: ConfigMap\ndata: {x: y}\n",
			wantErr: `none of its 2 documents is a ConfigMap with data key "settings.yaml"`,
		},
		"two settings ConfigMaps": {
			file:    "kind: ConfigMap\ndata: {settings.yaml: 'a: b'}\n---\nkind: ConfigMap\ndata: {settings.yaml: 'a: b'}\n",
			wantErr: "2 of its documents are ConfigMaps",
		},
		"ConfigMap without the key": {
			file:    "kind: ConfigMap\ndata: {other: x}\n",
			wantErr: `a ConfigMap without data key "settings.yaml"`,
		},
		"unknown key": {
			file:    "other: x\n",
			wantErr: `unknown setting "other"`,
		},
		"dashes": {
			file:    "--runtime-class: x\n",
			wantErr: "write flag names without dashes",
		},
		"duplicate key": {
			file:    "runtime-class: a\nruntime-class: b\n",
			wantErr: "want a YAML map",
		},
		"list for a scalar flag": {
			file:    "runtime-class: [a, b]\n",
			wantErr: "runtime-class: takes one value",
		},
		"nested map": {
			file:    "runtime-class: {a: b}\n",
			wantErr: `key "runtime-class": want a string, number, boolean`,
		},
		"bad value": {
			file:    "max-policy-bytes: many\n",
			wantErr: "max-policy-bytes: invalid argument",
		},
		"not a map": {
			file:    "- a\n",
			wantErr: "want a YAML map",
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			s, fs := newFlags(t)
			require.NoError(t, fs.Parse(tc.args))
			path := filepath.Join(t.TempDir(), "settings.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tc.file), 0o600))
			err := s.ApplyFile(fs, path)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			r, err := s.Resolve()
			require.NoError(t, err)
			tc.check(t, r)
		})
	}
}

func TestResolveNamesFlag(t *testing.T) {
	testCases := map[string]struct {
		args    []string
		wantErr string
	}{
		"missing images":              {args: nil, wantErr: "--initializer-image is required\n--proxy-image is required"},
		"tag":                         {args: []string{"--initializer-image=registry.example/i:latest", "--proxy-image=" + proxyImage}, wantErr: `--initializer-image "registry.example/i:latest": must be pinned by digest`},
		"policy mode":                 {args: []string{"--policy-mode=rego"}, wantErr: `--policy-mode "rego"`},
		"budget":                      {args: []string{"--max-policy-bytes=0"}, wantErr: "--max-policy-bytes 0: want 1 to 258048"},
		"platform":                    {args: []string{"--registry-platform=linux"}, wantErr: `--registry-platform "linux": want os/arch`},
		"concurrency":                 {args: []string{"--registry-max-concurrent=0"}, wantErr: "--registry-max-concurrent 0: want at least 1"},
		"tag ttl":                     {args: []string{"--registry-tag-ttl=-1s"}, wantErr: "--registry-tag-ttl -1s: want 0 (off) or more"},
		"mirror with a path":          {args: []string{"--registry-mirror=a=http://m/v2"}, wantErr: `--registry-mirror "a=http://m/v2": mirror must be host[:port]`},
		"coordinator address":         {args: []string{"--coordinator-address=coordinator"}, wantErr: `--coordinator-address "coordinator": want host:port`},
		"tee platform":                {args: []string{"--platform=tdx-simulated"}, wantErr: `--platform "tdx-simulated": want snp, tdx or snp-simulated`},
		"no coordinator":              {args: nil, wantErr: "--platform is required"},
		"bad inline reference values": {args: []string{"--coordinator-reference-values={\"snp\":[{\"Bogus\":1}]}"}, wantErr: `--coordinator-reference-values JSON: decoding JSON: json: unknown field "Bogus"`},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			s, fs := newFlags(t)
			require.NoError(t, fs.Parse(tc.args))
			_, err := s.Resolve()
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestMutator(t *testing.T) {
	s, fs := newFlags(t)
	rv, err := json.Marshal(injecttest.CoordinatorReferenceValues())
	require.NoError(t, err)
	require.NoError(t, fs.Parse([]string{
		"--initializer-image=" + initImage, "--proxy-image=" + proxyImage, "--policy-mode=legacy", "--max-policy-bytes=1234",
		"--platform=tdx", "--coordinator-policy-hash=" + strings.Repeat("c0", 32), "--coordinator-reference-values=" + string(rv),
	}))
	r, err := s.Resolve()
	require.NoError(t, err)
	m := r.Mutator(nil, nil)
	assert.Equal(t, r.Inject, m.Config)
	assert.True(t, m.Legacy)
	assert.Equal(t, 1234, m.MaxPolicyBytes)
}

// TestResolveCoordinatorOnly: without the Initializer's expectations the
// settings resolve only to a mutator of Coordinator pods; any other pod is
// refused rather than given an Initializer without expectations.
func TestResolveCoordinatorOnly(t *testing.T) {
	s, fs := newFlags(t)
	require.NoError(t, fs.Parse([]string{"--initializer-image=" + initImage, "--proxy-image=" + proxyImage}))
	_, err := s.Resolve()
	require.ErrorContains(t, err, "--platform is required", "the webhook's resolution needs the expectations")

	r, err := s.ResolveCoordinatorOnly()
	require.NoError(t, err)
	assert.True(t, r.Inject.CoordinatorOnly)
	require.NoError(t, r.Inject.Validate())

	pod := func(ann map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: ann}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/app@sha256:" + strings.Repeat("d", 64)}}}}
	}
	out, err := inject.Inject(pod(map[string]string{inject.AnnotationPodRole: inject.RoleCoordinator}), r.Inject)
	require.NoError(t, err)
	assert.Equal(t, inject.DefaultRuntimeClassName, *out.Spec.RuntimeClassName)
	_, err = inject.Inject(pod(nil), r.Inject)
	require.ErrorContains(t, err, "not a Coordinator pod")

	// a Coordinator-only configuration with expectations is inconsistent
	bad := r.Inject
	bad.Platform = "snp"
	require.ErrorContains(t, bad.Validate(), "a Coordinator-only configuration has no Initializer expectations")
}
