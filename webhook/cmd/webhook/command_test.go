package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/images"
)

var (
	initImage  = "registry.example/contrast/initializer@sha256:" + strings.Repeat("a", 64)
	proxyImage = "registry.example/contrast/mesh-proxy@sha256:" + strings.Repeat("b", 64)
)

func validArgs() []string {
	return []string{
		"--tls-cert-file=/tls/tls.crt", "--tls-key-file=/tls/tls.key",
		"--initializer-image=" + initImage, "--proxy-image=" + proxyImage,
	}
}

// parse runs flag parsing, the environment and validation like RunE does,
// without starting the servers.
func parse(t *testing.T, args []string, env map[string]string) (*config, error) {
	t.Helper()
	o := &options{}
	cmd := newCommand(o)
	require.NoError(t, cmd.ParseFlags(args))
	if err := applyEnv(cmd.Flags(), func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		return nil, err
	}
	return o.config()
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
				assert.Equal(t, "contrast-cc", c.inject.RuntimeClassName)
				assert.Equal(t, "coordinator.contrast-system.svc:7777", c.inject.CoordinatorAddress)
				assert.False(t, c.legacy)
				assert.Equal(t, []string{"kube-system"}, c.excluded)
				assert.Equal(t, "linux", c.registry.Platform.OS)
			},
		},
		"legacy mode and runtime class": {
			args: append(validArgs(), "--policy-mode=legacy", "--runtime-class=contrast-cc-snp"),
			check: func(t *testing.T, c *config) {
				assert.True(t, c.legacy)
				assert.Equal(t, "contrast-cc-snp", c.inject.RuntimeClassName)
			},
		},
		"mirrors": {
			args: append(validArgs(), "--registry-mirror=docker.l5d.io=http://127.0.0.1:5000", "--registry-mirror=docker.l5d.io=mirror.example", "--registry-skip-origin=docker.l5d.io"),
			check: func(t *testing.T, c *config) {
				assert.Equal(t, []images.Mirror{{Host: "127.0.0.1:5000", Insecure: true}, {Host: "mirror.example"}}, c.registry.Mirrors["docker.l5d.io"])
				assert.Equal(t, []string{"docker.l5d.io"}, c.registry.SkipOrigin)
			},
		},
		"environment": {
			args: []string{"--tls-cert-file=/a", "--tls-key-file=/b", "--proxy-image=" + proxyImage, "--policy-mode=initdata"},
			env: map[string]string{
				"CONTRAST_WEBHOOK_INITIALIZER_IMAGE": initImage,
				"CONTRAST_WEBHOOK_POLICY_MODE":       "legacy", // the flag wins
				"CONTRAST_WEBHOOK_REGISTRY_MIRROR":   "registry.example=http://10.0.0.1:5000",
			},
			check: func(t *testing.T, c *config) {
				assert.Equal(t, initImage, c.inject.InitializerImage)
				assert.False(t, c.legacy)
				assert.Equal(t, []images.Mirror{{Host: "10.0.0.1:5000", Insecure: true}}, c.registry.Mirrors["registry.example"])
			},
		},
		"image by tag": {
			args:    append(validArgs(), "--initializer-image=registry.example/contrast/initializer:latest"),
			wantErr: "initializer image \"registry.example/contrast/initializer:latest\" must be pinned by digest",
		},
		"missing proxy image": {
			args:    []string{"--tls-cert-file=/a", "--tls-key-file=/b", "--initializer-image=" + initImage},
			wantErr: "proxy image is required",
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

func TestCommandRejectsArgs(t *testing.T) {
	cmd := NewWebhookCommand()
	cmd.SetArgs(append(validArgs(), "extra"))
	require.ErrorContains(t, cmd.Execute(), "unknown command")
}
