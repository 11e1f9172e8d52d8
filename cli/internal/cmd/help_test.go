package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHelpGolden keeps the --help of every command in testdata/help
// (refresh with UPDATE_GOLDEN=1). Every command documents examples and the
// exit codes.
func TestHelpGolden(t *testing.T) {
	for _, name := range []string{"", "generate", "set", "verify", "recover"} {
		file := name
		if file == "" {
			file = "contrast"
		}
		t.Run(file, func(t *testing.T) {
			args := []string{"--help"}
			if name != "" {
				args = []string{name, "--help"}
			}
			stdout, stderr, code := run(t, args...)
			require.Equal(t, ExitOK, code, stderr)
			assert.Contains(t, stdout, "Exit codes:")
			if name != "" {
				assert.Contains(t, stdout, "Examples:")
			}
			path := filepath.Join("testdata", "help", file+".golden")
			if os.Getenv("UPDATE_GOLDEN") != "" {
				require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
				require.NoError(t, os.WriteFile(path, []byte(stdout), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run with UPDATE_GOLDEN=1 to create it")
			assert.Equal(t, string(want), stdout, "stale golden file %s: run with UPDATE_GOLDEN=1", path)
		})
	}
}

func TestCompletion(t *testing.T) {
	stdout, stderr, code := run(t, "__complete", "generate", "--reference-values", "")
	require.Equal(t, ExitOK, code, stderr)
	for _, p := range refPresets {
		assert.Contains(t, stdout, p)
	}
	stdout, _, code = run(t, "completion", "bash")
	require.Equal(t, ExitOK, code)
	assert.True(t, strings.HasPrefix(stdout, "# bash completion"), stdout[:min(len(stdout), 80)])
}
