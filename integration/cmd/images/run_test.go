package main

import (
	"bytes"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunPushesAndPrints builds the Coordinator image, pushes it to a
// registry and checks the printed reference, the values file and the
// pushed digest.
func TestRunPushesAndPrints(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	values := filepath.Join(t.TempDir(), "images.yaml")

	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"-registry", host + "/contrast", "-insecure", "-images", "coordinator", "-tag", "dev",
		"-values-out", values, "-revision", "abc", "-warn-dirty=false"}, &stdout, &stderr)
	require.NoError(t, err, stderr.String())

	lines := strings.Split(stdout.String(), "\n")
	fields := strings.Fields(lines[0])
	require.Len(t, fields, 2, stdout.String())
	assert.Equal(t, "coordinator", fields[0])
	ref := fields[1]
	require.True(t, strings.HasPrefix(ref, host+"/contrast/coordinator@sha256:"), ref)

	b, err := os.ReadFile(values)
	require.NoError(t, err)
	assert.Equal(t, "images:\n  coordinator: "+ref+"\n", string(b))
	assert.Contains(t, stdout.String(), string(b), "the values are printed too")

	pulled, err := remote.Image(must(name.ParseReference(host+"/contrast/coordinator:dev", name.Insecure)), remote.WithContext(t.Context()))
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(ref, must(pulled.Digest()).String()), "the tag names the printed digest")
}

func TestRunRejectsBadArguments(t *testing.T) {
	testCases := map[string]struct {
		args []string
		want string
	}{
		"no registry":     {args: nil, want: "-registry is required"},
		"scheme":          {args: []string{"-registry", "https://ghcr.io/x"}, want: `-registry "https://ghcr.io/x": want host[:port][/path]`},
		"trailing slash":  {args: []string{"-registry", "ghcr.io/x/"}, want: "without scheme or trailing slash"},
		"unknown image":   {args: []string{"-build-only", "-images", "nginx"}, want: `unknown image "nginx"`},
		"stray arguments": {args: []string{"-build-only", "coordinator"}, want: "unexpected arguments"},
		"unknown flag":    {args: []string{"-push"}, want: "flag provided but not defined: -push"},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tc.args, &stdout, &stderr)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
