package main

import (
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/initializer/initenv"
	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/internal/server"
	"github.com/contrast-cc/contrast/webhook/policy"
)

var (
	initImage  = "registry.example/contrast/initializer@sha256:" + strings.Repeat("a", 64)
	proxyImage = "registry.example/contrast/mesh-proxy@sha256:" + strings.Repeat("b", 64)
)

// refValuesFile is a file with valid real-SNP reference values for the
// Coordinator (written once per test binary).
var refValuesFile = func() string {
	b, err := json.Marshal(injecttest.CoordinatorReferenceValues())
	if err != nil {
		panic(err)
	}
	f, err := os.CreateTemp("", "coordinator-reference-values-*.json")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		panic(err)
	}
	return f.Name()
}()

var coordinatorHash = strings.Repeat("c0", 32)

func validArgs() []string {
	return []string{
		"--tls-cert-file=/tls/tls.crt", "--tls-key-file=/tls/tls.key",
		"--initializer-image=" + initImage, "--proxy-image=" + proxyImage,
		"--platform=snp", "--coordinator-policy-hash=" + coordinatorHash,
		"--coordinator-reference-values=" + refValuesFile,
	}
}

// parse runs flag parsing, the environment and validation like RunE does,
// without starting the servers. Without POD_NAMESPACE in env, it is
// contrast-system.
func parse(t *testing.T, args []string, env map[string]string) (*config, error) {
	t.Helper()
	if _, ok := env["POD_NAMESPACE"]; !ok {
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env["POD_NAMESPACE"] = "contrast-system"
	}
	return parseIn(t, args, env, filepath.Join(t.TempDir(), "no-such-file"))
}

// parseIn is parse with the environment as given and the service account's
// namespace file at namespaceFile.
func parseIn(t *testing.T, args []string, env map[string]string, namespaceFile string) (*config, error) {
	t.Helper()
	o := &options{
		lookupEnv:     func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		namespaceFile: namespaceFile,
	}
	cmd := newCommand(o)
	require.NoError(t, cmd.ParseFlags(args))
	if err := o.applyEnvAndFile(cmd.Flags()); err != nil {
		return nil, err
	}
	return o.config()
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

var (
	simOnce sync.Once
	simFile string
)

// simRefValues returns a file with reference values of a simulated SNP
// platform (its root generated once per test binary).
func simRefValues(t *testing.T) string {
	t.Helper()
	simOnce.Do(func() {
		a, err := sim.NewSNPAuthority()
		require.NoError(t, err)
		d, err := a.NewDevice(sim.DefaultSNPDeviceConfig())
		require.NoError(t, err)
		b, err := json.Marshal(initenv.ReferenceValues{SNP: []snp.ReferenceValues{d.ReferenceValues()}})
		require.NoError(t, err)
		f, err := os.CreateTemp("", "sim-reference-values-*.json")
		require.NoError(t, err)
		defer f.Close()
		_, err = f.Write(b)
		require.NoError(t, err)
		simFile = f.Name()
	})
	return simFile
}

func TestCommandFlags(t *testing.T) {
	testCases := map[string]struct {
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c *config)
	}{
		"defaults": {
			args: validArgs(),
			check: func(t *testing.T, c *config) {
				assert.Equal(t, "contrast-cc", c.settings.Inject.RuntimeClassName)
				assert.Equal(t, "coordinator.contrast-system.svc:7777", c.settings.Inject.CoordinatorAddress)
				assert.False(t, c.settings.Legacy)
				assert.Equal(t, []string{"contrast-system", "kube-system"}, c.excluded)
				assert.Equal(t, "linux", c.settings.Registry.Platform.OS)
				assert.Empty(t, c.settings.Registry.Insecure)
				assert.Equal(t, 192<<10, c.settings.MaxPolicyBytes)
				assert.Equal(t, &policy.CacheConfig{MaxEntries: policy.DefaultCacheMaxEntries, MaxBytes: policy.DefaultCacheMaxBytes}, c.policyCache)
				assert.Equal(t, &server.PatchCacheConfig{MaxEntries: server.DefaultPatchCacheMaxEntries, MaxBytes: server.DefaultPatchCacheMaxBytes}, c.patchCache)
				assert.Equal(t, 5*time.Second, c.settings.Registry.TagTTL)
			},
		},
		"policy cache and tag TTL": {
			args: append(validArgs(), "--policy-cache-max-entries=10", "--policy-cache-max-bytes=1048576", "--registry-tag-ttl=30s"),
			check: func(t *testing.T, c *config) {
				assert.Equal(t, &policy.CacheConfig{MaxEntries: 10, MaxBytes: 1 << 20}, c.policyCache)
				assert.Equal(t, 30*time.Second, c.settings.Registry.TagTTL)
			},
		},
		"policy cache off": {
			args: append(validArgs(), "--policy-cache-max-entries=0", "--registry-tag-ttl=0"),
			check: func(t *testing.T, c *config) {
				assert.Nil(t, c.policyCache)
				assert.Zero(t, c.settings.Registry.TagTTL)
			},
		},
		"patch cache": {
			args: append(validArgs(), "--patch-cache-max-entries=10", "--patch-cache-max-bytes=1048576"),
			check: func(t *testing.T, c *config) {
				assert.Equal(t, &server.PatchCacheConfig{MaxEntries: 10, MaxBytes: 1 << 20}, c.patchCache)
			},
		},
		"patch cache off": {
			args: append(validArgs(), "--patch-cache-max-entries=0"),
			check: func(t *testing.T, c *config) {
				assert.Nil(t, c.patchCache)
				assert.NotNil(t, c.policyCache)
			},
		},
		"coordinator statefulset": {
			args: append(validArgs(), "--coordinator-statefulset=contrast-coordinator"),
			check: func(t *testing.T, c *config) {
				assert.Equal(t, "contrast-coordinator", c.coordinatorSet)
			},
		},
		"bad coordinator statefulset": {
			args:    append(validArgs(), "--coordinator-statefulset=Contrast_Coordinator"),
			wantErr: `--coordinator-statefulset "Contrast_Coordinator" is not a StatefulSet name`,
		},
		"negative patch cache": {
			args:    append(validArgs(), "--patch-cache-max-entries=-1"),
			wantErr: "--patch-cache-max-entries -1: want 0 (off) or more",
		},
		"empty patch cache bytes": {
			args:    append(validArgs(), "--patch-cache-max-bytes=0"),
			wantErr: "--patch-cache-max-bytes 0: want at least 1",
		},
		"negative policy cache": {
			args:    append(validArgs(), "--policy-cache-max-entries=-1"),
			wantErr: "--policy-cache-max-entries -1: want 0 (off) or more",
		},
		"empty policy cache bytes": {
			args:    append(validArgs(), "--policy-cache-max-bytes=0"),
			wantErr: "--policy-cache-max-bytes 0: want at least 1",
		},
		"legacy mode and runtime class": {
			args: append(validArgs(), "--policy-mode=legacy", "--runtime-class=contrast-cc-snp"),
			check: func(t *testing.T, c *config) {
				assert.True(t, c.settings.Legacy)
				assert.Equal(t, "contrast-cc-snp", c.settings.Inject.RuntimeClassName)
			},
		},
		"mirrors": {
			args: append(validArgs(), "--registry-mirror=docker.l5d.io=http://127.0.0.1:5000", "--registry-mirror=docker.l5d.io=mirror.example", "--registry-skip-origin=docker.l5d.io"),
			check: func(t *testing.T, c *config) {
				assert.Equal(t, []images.Mirror{{Host: "127.0.0.1:5000", Insecure: true}, {Host: "mirror.example"}}, c.settings.Registry.Mirrors["docker.l5d.io"])
				assert.Equal(t, []string{"docker.l5d.io"}, c.settings.Registry.SkipOrigin)
			},
		},
		"environment": {
			args: []string{"--tls-cert-file=/a", "--tls-key-file=/b", "--proxy-image=" + proxyImage, "--policy-mode=initdata"},
			env: map[string]string{
				"CONTRAST_WEBHOOK_PLATFORM":                     "tdx",
				"CONTRAST_WEBHOOK_COORDINATOR_POLICY_HASH":      coordinatorHash,
				"CONTRAST_WEBHOOK_COORDINATOR_REFERENCE_VALUES": refValuesFile,
				"CONTRAST_WEBHOOK_INITIALIZER_IMAGE":            initImage,
				"CONTRAST_WEBHOOK_POLICY_MODE":                  "legacy", // the flag wins
				"CONTRAST_WEBHOOK_REGISTRY_MIRROR":              "registry.example=http://10.0.0.1:5000",
			},
			check: func(t *testing.T, c *config) {
				assert.Equal(t, initImage, c.settings.Inject.InitializerImage)
				assert.False(t, c.settings.Legacy)
				assert.Equal(t, []images.Mirror{{Host: "10.0.0.1:5000", Insecure: true}}, c.settings.Registry.Mirrors["registry.example"])
			},
		},
		"image by tag": {
			args:    append(validArgs(), "--initializer-image=registry.example/contrast/initializer:latest"),
			wantErr: `--initializer-image "registry.example/contrast/initializer:latest": must be pinned by digest`,
		},
		"image with a short digest": {
			args:    append(validArgs(), "--proxy-image=registry.example/contrast/mesh-proxy@sha256:abc"),
			wantErr: `--proxy-image "registry.example/contrast/mesh-proxy@sha256:abc": must be pinned by digest`,
		},
		"image with a non-hex digest": {
			args:    append(validArgs(), "--proxy-image=registry.example/contrast/mesh-proxy@sha256:"+strings.Repeat("z", 64)),
			wantErr: `--proxy-image "registry.example/contrast/mesh-proxy@sha256:zzz`,
		},
		"image without registry": {
			args:    append(validArgs(), "--initializer-image=initializer@sha256:"+strings.Repeat("a", 64)),
			wantErr: `--initializer-image "initializer@sha256:`,
		},
		"image merely containing @sha256:": {
			args:    append(validArgs(), "--initializer-image=Not An Image@sha256:"+strings.Repeat("a", 64)),
			wantErr: `--initializer-image "Not An Image@sha256:`,
		},
		"image with a tag and a digest": {
			args: append(validArgs(), "--initializer-image=registry.example/contrast/initializer:v1@sha256:"+strings.Repeat("a", 64)),
			check: func(t *testing.T, c *config) {
				assert.Equal(t, "registry.example/contrast/initializer:v1@sha256:"+strings.Repeat("a", 64), c.settings.Inject.InitializerImage)
			},
		},
		"missing proxy image": {
			args:    []string{"--tls-cert-file=/a", "--tls-key-file=/b", "--initializer-image=" + initImage},
			wantErr: "--proxy-image is required",
		},
		"missing certificate": {
			args:    validArgs()[2:],
			wantErr: "--tls-cert-file and --tls-key-file are required",
		},
		"self-managed": {
			args: append(validArgs()[2:], "--self-managed-certs", "--tls-dns-names=contrast-webhook.contrast-system.svc"),
			check: func(t *testing.T, c *config) {
				assert.True(t, c.selfManaged)
				assert.Equal(t, "contrast-webhook", c.webhookConfig)
				assert.Equal(t, "contrast-webhook", c.validatingConfig)
				assert.Equal(t, []string{"contrast-webhook.contrast-system.svc"}, c.dnsNames)
				assert.Equal(t, 365*24*time.Hour, c.caValidity)
				assert.Equal(t, 30*24*time.Hour, c.certValidity)
			},
		},
		"self-managed short validities": {
			args: append(validArgs()[2:], "--self-managed-certs", "--tls-dns-names=localhost", "--self-managed-ca-validity=12s"),
			env:  map[string]string{"CONTRAST_WEBHOOK_SELF_MANAGED_CERT_VALIDITY": "6s"},
			check: func(t *testing.T, c *config) {
				assert.Equal(t, 12*time.Second, c.caValidity)
				assert.Equal(t, 6*time.Second, c.certValidity)
			},
		},
		"self-managed cert outlives CA": {
			args:    append(validArgs()[2:], "--self-managed-certs", "--tls-dns-names=x.svc", "--self-managed-ca-validity=1h", "--self-managed-cert-validity=2h"),
			wantErr: "--self-managed-cert-validity 2h0m0s exceeds --self-managed-ca-validity 1h0m0s",
		},
		"self-managed validity too short": {
			args:    append(validArgs()[2:], "--self-managed-certs", "--tls-dns-names=x.svc", "--self-managed-cert-validity=10ms"),
			wantErr: "must be at least 1s",
		},
		"self-managed without names": {
			args:    append(validArgs()[2:], "--self-managed-certs"),
			wantErr: "--self-managed-certs needs --tls-dns-names",
		},
		"self-managed and files": {
			args:    append(validArgs(), "--self-managed-certs", "--tls-dns-names=x.svc"),
			wantErr: "--self-managed-certs excludes --tls-cert-file",
		},
		"bad policy mode": {
			args:    append(validArgs(), "--policy-mode=rego"),
			wantErr: `--policy-mode "rego"`,
		},
		"policy budget over the annotation limit": {
			args:    append(validArgs(), "--max-policy-bytes=300000"),
			wantErr: "--max-policy-bytes 300000",
		},
		"policy budget at the annotation limit": {
			args:    append(validArgs(), "--max-policy-bytes=262144"),
			wantErr: "--max-policy-bytes 262144: want 1 to 258048",
		},
		"policy budget at its maximum": {
			args:  append(validArgs(), "--max-policy-bytes=258048"),
			check: func(t *testing.T, c *config) { assert.Equal(t, 258048, c.settings.MaxPolicyBytes) },
		},
		"insecure registries": {
			args: append(validArgs(), "--registry-insecure=10.0.0.5:5000", "--registry-insecure=registry.lan"),
			env:  map[string]string{"CONTRAST_WEBHOOK_REGISTRY_INSECURE": "ignored:1"},
			check: func(t *testing.T, c *config) {
				assert.Equal(t, []string{"10.0.0.5:5000", "registry.lan"}, c.settings.Registry.Insecure)
			},
		},
		"insecure registry as URL": {
			args:    append(validArgs(), "--registry-insecure=http://10.0.0.5:5000"),
			wantErr: `--registry-insecure "http://10.0.0.5:5000": want host[:port]`,
		},
		"bad mirror": {
			args:    append(validArgs(), "--registry-mirror=docker.io"),
			wantErr: `--registry-mirror "docker.io": want registry=URL`,
		},
		"skip origin without mirror": {
			args:    append(validArgs(), "--registry-skip-origin=docker.io"),
			wantErr: `--registry-skip-origin "docker.io": the registry has no mirror`,
		},
		"bad coordinator address": {
			args:    append(validArgs(), "--coordinator-address=coordinator"),
			wantErr: `--coordinator-address "coordinator": want host:port`,
		},
		"coordinator expectations": {
			args: append(validArgs(), "--coordinator-policy-hash="+strings.Repeat("d1", 32)),
			check: func(t *testing.T, c *config) {
				assert.Equal(t, attest.PlatformSNP, c.settings.Inject.Platform)
				require.Len(t, c.settings.Inject.CoordinatorPolicyHashes, 2)
				assert.Equal(t, strings.Repeat("c0", 32), hex.EncodeToString(c.settings.Inject.CoordinatorPolicyHashes[0]))
				assert.Equal(t, injecttest.CoordinatorReferenceValues(), c.settings.Inject.CoordinatorReferenceValues)
				assert.Empty(t, c.settings.Inject.SimDeviceSecret)
			},
		},
		"no platform": {
			args:    slices.DeleteFunc(validArgs(), func(a string) bool { return strings.HasPrefix(a, "--platform") }),
			wantErr: "--platform is required",
		},
		"unknown platform": {
			args:    append(validArgs(), "--platform=sev"),
			wantErr: `--platform "sev": want snp, tdx or snp-simulated`,
		},
		"no coordinator policy hash": {
			args:    slices.DeleteFunc(validArgs(), func(a string) bool { return strings.HasPrefix(a, "--coordinator-policy-hash") }),
			wantErr: "--coordinator-policy-hash is required",
		},
		"short coordinator policy hash": {
			args:    append(validArgs(), "--coordinator-policy-hash=abcd"),
			wantErr: `--coordinator-policy-hash "abcd": want 64 hex digits`,
		},
		"no coordinator reference values": {
			args:    slices.DeleteFunc(validArgs(), func(a string) bool { return strings.HasPrefix(a, "--coordinator-reference-values") }),
			wantErr: "--coordinator-reference-values is required",
		},
		"coordinator reference values with an unknown field": {
			args:    append(validArgs(), "--coordinator-reference-values="+writeFile(t, `{"snp":[{"TrustedMeasurment":"00"}]}`)),
			wantErr: `unknown field "TrustedMeasurment"`,
		},
		"invalid coordinator reference values name the field": {
			args:    append(validArgs(), "--coordinator-reference-values="+writeFile(t, `{"snp":[{"Platform":"snp","ProductName":"Milan"}]}`)),
			wantErr: "snp[0].TrustedMeasurement",
		},
		"real reference values with a simulated platform": {
			args:    append(validArgs(), "--platform=snp-simulated"),
			wantErr: "real reference values with the simulated platform",
		},
		"simulated reference values with a real platform": {
			args:    append(validArgs(), "--coordinator-reference-values="+simRefValues(t)),
			wantErr: `simulated reference values with the real platform "snp"`,
		},
		"simulated": {
			args: append(validArgs(), "--platform=snp-simulated", "--coordinator-reference-values="+simRefValues(t), "--sim-device-secret=sim-dev"),
			check: func(t *testing.T, c *config) {
				assert.Equal(t, attest.PlatformSimulatedSNP, c.settings.Inject.Platform)
				assert.Equal(t, "sim-dev", c.settings.Inject.SimDeviceSecret)
			},
		},
		"sim device secret with a real platform": {
			args:    append(validArgs(), "--sim-device-secret=sim-dev"),
			wantErr: "--sim-device-secret needs --platform snp-simulated",
		},
		"legacy policy with a simulated platform": {
			args:    append(validArgs(), "--platform=snp-simulated", "--coordinator-reference-values="+simRefValues(t), "--policy-mode=legacy"),
			wantErr: "--policy-mode legacy with --platform snp-simulated",
		},
		"bad env value": {
			args:    validArgs(),
			env:     map[string]string{"CONTRAST_WEBHOOK_PULL_SECRETS": "maybe"},
			wantErr: "CONTRAST_WEBHOOK_PULL_SECRETS",
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			c, err := parse(t, tc.args, tc.env)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			tc.check(t, c)
		})
	}
}

// TestExcludedNamespaces: kube-system and the webhook's own namespace are
// always excluded; --excluded-namespaces adds to them.
func TestExcludedNamespaces(t *testing.T) {
	dir := t.TempDir()
	saFile := filepath.Join(dir, "namespace")
	require.NoError(t, os.WriteFile(saFile, []byte("from-file\n"), 0o600))
	emptyFile := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(emptyFile, nil, 0o600))
	missing := filepath.Join(dir, "missing")

	testCases := map[string]struct {
		args    []string
		env     map[string]string
		file    string
		want    []string
		wantErr string
	}{
		"POD_NAMESPACE": {
			env: map[string]string{"POD_NAMESPACE": "contrast-system"}, file: missing,
			want: []string{"contrast-system", "kube-system"},
		},
		"POD_NAMESPACE wins over the service account file": {
			env: map[string]string{"POD_NAMESPACE": "contrast-system"}, file: saFile,
			want: []string{"contrast-system", "kube-system"},
		},
		"service account file": {
			file: saFile,
			want: []string{"from-file", "kube-system"},
		},
		"--namespace as the last resort": {
			args: []string{"--namespace=from-flag"}, file: emptyFile,
			want: []string{"from-flag", "kube-system"},
		},
		"--namespace from the environment": {
			env: map[string]string{"CONTRAST_WEBHOOK_NAMESPACE": "from-env"}, file: missing,
			want: []string{"from-env", "kube-system"},
		},
		"--namespace agreeing": {
			args: []string{"--namespace=from-file"}, file: saFile,
			want: []string{"from-file", "kube-system"},
		},
		"--namespace contradicting": {
			args: []string{"--namespace=elsewhere"}, env: map[string]string{"POD_NAMESPACE": "contrast-system"}, file: missing,
			wantErr: `--namespace "elsewhere" contradicts the namespace "contrast-system" from POD_NAMESPACE`,
		},
		"unknown": {
			file:    missing,
			wantErr: "the webhook's own namespace, which is never mutated, is unknown",
		},
		"empty POD_NAMESPACE": {
			env: map[string]string{"POD_NAMESPACE": " "}, file: missing,
			wantErr: "is unknown",
		},
		"unreadable service account file": {
			file:    dir, // a directory
			wantErr: "reading the webhook's own namespace",
		},
		"flag adds, kube-system cannot be dropped": {
			args: []string{"--excluded-namespaces=monitoring,contrast-system"}, env: map[string]string{"POD_NAMESPACE": "contrast-system"}, file: missing,
			want: []string{"contrast-system", "kube-system", "monitoring"},
		},
		"flag naming kube-system": {
			args: []string{"--excluded-namespaces=kube-system"}, env: map[string]string{"POD_NAMESPACE": "contrast-system"}, file: missing,
			want: []string{"contrast-system", "kube-system"},
		},
		"flag set empty": {
			args: []string{"--excluded-namespaces="}, env: map[string]string{"POD_NAMESPACE": "contrast-system"}, file: missing,
			want: []string{"contrast-system", "kube-system"},
		},
		"invalid excluded namespace": {
			args: []string{"--excluded-namespaces=Not_A_Namespace"}, env: map[string]string{"POD_NAMESPACE": "contrast-system"}, file: missing,
			wantErr: `--excluded-namespaces: "Not_A_Namespace" is not a namespace name`,
		},
		"invalid own namespace": {
			args: []string{"--namespace=a/b"}, file: missing,
			wantErr: `the webhook's own namespace "a/b" (from --namespace) is not a namespace name`,
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			c, err := parseIn(t, append(validArgs(), tc.args...), tc.env, tc.file)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.excluded)
		})
	}
}

func TestCommandRejectsArgs(t *testing.T) {
	cmd := NewWebhookCommand()
	cmd.SetArgs(append(validArgs(), "extra"))
	require.ErrorContains(t, cmd.Execute(), "unknown command")
}

// TestSettingsFile: the injection flags can come from --settings; the
// command line and CONTRAST_WEBHOOK_* win over the file.
func TestSettingsFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "settings.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
initializer-image: `+initImage+`
proxy-image: `+proxyImage+`
runtime-class: from-file
policy-mode: legacy
max-policy-bytes: 100000
registry-mirror: [docker.l5d.io=http://127.0.0.1:5000]
platform: snp
coordinator-policy-hash: [`+coordinatorHash+`]
coordinator-reference-values: `+refValuesFile+`
`), 0o600))
	webhookOnly := filepath.Join(dir, "webhook-only.yaml")
	require.NoError(t, os.WriteFile(webhookOnly, []byte("listen-address: :1\n"), 0o600))

	certs := []string{"--tls-cert-file=/a", "--tls-key-file=/b"}
	testCases := map[string]struct {
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c *config)
	}{
		"from the file": {
			args: append(certs, "--settings="+file),
			check: func(t *testing.T, c *config) {
				assert.Equal(t, initImage, c.settings.Inject.InitializerImage)
				assert.Equal(t, "from-file", c.settings.Inject.RuntimeClassName)
				assert.True(t, c.settings.Legacy)
				assert.Equal(t, 100000, c.settings.MaxPolicyBytes)
				assert.Equal(t, []images.Mirror{{Host: "127.0.0.1:5000", Insecure: true}}, c.settings.Registry.Mirrors["docker.l5d.io"])
			},
		},
		"flag and environment win": {
			args: append(certs, "--settings="+file, "--runtime-class=from-flag"),
			env:  map[string]string{"CONTRAST_WEBHOOK_POLICY_MODE": "initdata"},
			check: func(t *testing.T, c *config) {
				assert.Equal(t, "from-flag", c.settings.Inject.RuntimeClassName)
				assert.False(t, c.settings.Legacy)
				assert.Equal(t, 100000, c.settings.MaxPolicyBytes)
			},
		},
		"file from the environment": {
			args: certs,
			env:  map[string]string{"CONTRAST_WEBHOOK_SETTINGS": file},
			check: func(t *testing.T, c *config) {
				assert.Equal(t, "from-file", c.settings.Inject.RuntimeClassName)
			},
		},
		"webhook-only flag in the file": {
			args:    append(validArgs(), "--settings="+webhookOnly),
			wantErr: `unknown setting "listen-address"`,
		},
		"missing file": {
			args:    append(validArgs(), "--settings="+filepath.Join(dir, "missing.yaml")),
			wantErr: "reading settings file",
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			c, err := parse(t, tc.args, tc.env)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			tc.check(t, c)
		})
	}
}
