package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/initializer/initenv"
	"github.com/contrast-cc/contrast/initializer/meshcert"
	"github.com/contrast-cc/contrast/initializer/pv"
)

func TestExecuteConfigErrors(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	cases := map[string]struct {
		args []string
		env  func(string) (string, bool)
		want []string
	}{
		"empty environment names the variables": {env: none, want: []string{initenv.EnvCoordinatorHost, initenv.EnvPlatform, initenv.EnvCoordinatorPolicyHashes}},
		"unknown flag":                          {args: []string{"--nope"}, env: none, want: []string{"unknown flag"}},
		"bad log level":                         {args: []string{"--log-level", "loud"}, env: none, want: []string{"--log-level"}},
		"bad persistent volumes": {env: func(k string) (string, bool) {
			if k == pv.EnvVolumes {
				return "data", true
			}
			return "", false
		}, want: []string{pv.EnvVolumes, "want volume:claim"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			term := filepath.Join(t.TempDir(), "termination-log")
			var stderr bytes.Buffer
			code := Execute(t.Context(), append([]string{"--termination-log", term, "--out-dir", t.TempDir()}, tc.args...), tc.env, &stderr)
			assert.Equal(t, meshcert.ExitConfig, code)
			for _, w := range tc.want {
				assert.Contains(t, stderr.String(), w)
			}
			if name == "empty environment names the variables" {
				b, err := os.ReadFile(term)
				require.NoError(t, err)
				assert.Contains(t, string(b), "invalid environment")
				assert.Contains(t, stderr.String(), `"component":"initializer"`)
			}
		})
	}
}
