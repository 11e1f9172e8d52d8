package cluster

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResolveBinDir(t *testing.T) {
	full := t.TempDir()
	for _, b := range requiredBinaries {
		require.NoError(t, os.WriteFile(filepath.Join(full, b), []byte("#!/bin/sh\n"), 0o755))
	}
	partial := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(partial, "etcd"), []byte("#!/bin/sh\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(partial, "kubectl"), []byte("not executable"), 0o644))

	testCases := map[string]struct {
		dir         string
		wantMissing []string
	}{
		"all present":          {dir: full},
		"empty folder":         {dir: t.TempDir(), wantMissing: requiredBinaries},
		"missing and not exec": {dir: partial, wantMissing: []string{"kube-apiserver", "kube-controller-manager", "kubectl"}},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			got, err := ResolveBinDir(tc.dir)
			assert.Equal(t, tc.dir, got)
			if tc.wantMissing == nil {
				require.NoError(t, err)
				return
			}
			var missing *MissingBinariesError
			require.ErrorAs(t, err, &missing)
			assert.Equal(t, tc.wantMissing, missing.Missing)
			assert.Contains(t, err.Error(), "make k8s-bins")
			assert.Contains(t, err.Error(), tc.dir)
		})
	}
}

func TestResolveBinDirFromEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(BinDirEnv, dir)
	got, err := ResolveBinDir("")
	assert.Equal(t, dir, got)
	var missing *MissingBinariesError
	require.ErrorAs(t, err, &missing)
}
