package proxy

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/initializer/internal/proxy/proxytest"
)

func TestLoadBundleRejects(t *testing.T) {
	pki := proxytest.NewPKI(t)
	other := proxytest.NewPKI(t)
	leaf := pki.Leaf(t, "web")
	otherLeaf := other.Leaf(t, "web")
	testCases := map[string]struct {
		ca, chain, key []byte
		missing        string
		wantFile       string
	}{
		"no mesh CA file":         {missing: FileMeshCA, wantFile: FileMeshCA},
		"no key file":             {missing: FileKey, wantFile: FileKey},
		"empty mesh CA":           {ca: []byte{}, wantFile: FileMeshCA},
		"mesh CA is not PEM":      {ca: []byte("garbage"), wantFile: FileMeshCA},
		"mesh CA is a leaf":       {ca: leaf.ChainPEM[:len(leaf.ChainPEM)-len(pki.Mesh.PEM)], wantFile: FileMeshCA},
		"leaf of another mesh CA": {chain: otherLeaf.ChainPEM, key: otherLeaf.KeyPEM, wantFile: "does not chain to"},
		"key of another leaf":     {key: otherLeaf.KeyPEM, wantFile: FileKey},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string][]byte{FileMeshCA: pki.Mesh.PEM, FileCertChain: leaf.ChainPEM, FileKey: leaf.KeyPEM}
			if tc.ca != nil {
				files[FileMeshCA] = tc.ca
			}
			if tc.chain != nil {
				files[FileCertChain] = tc.chain
			}
			if tc.key != nil {
				files[FileKey] = tc.key
			}
			for n, b := range files {
				if n != tc.missing {
					require.NoError(t, os.WriteFile(filepath.Join(dir, n), b, 0o400))
				}
			}
			_, err := LoadBundle(dir)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantFile)
			if tc.missing != "" {
				require.ErrorIs(t, err, fs.ErrNotExist)
			}
			assert.NotContains(t, err.Error(), "PRIVATE KEY", "an error must not quote key material")
		})
	}
}

// TestStoreReload replaces the files as the Initializer (or a rotation)
// would: valid new content is swapped in, invalid content leaves the
// current bundle in place.
func TestStoreReload(t *testing.T) {
	pki := proxytest.NewPKI(t)
	dir := t.TempDir()
	m := NewMetrics("test")
	s := NewStore(dir, slog.New(slog.DiscardHandler), m)
	require.Error(t, s.Reload(), "no files yet")
	assert.Nil(t, s.Current())

	proxytest.WriteTLSDir(t, dir, pki.Mesh.PEM, pki.Leaf(t, "web"))
	require.NoError(t, s.Reload())
	first := s.Current()
	require.NotNil(t, first)
	<-s.Loaded()
	require.NoError(t, s.Reload())
	assert.Same(t, first, s.Current(), "unchanged files keep the bundle")

	rotated := proxytest.NewPKI(t)
	proxytest.WriteTLSDir(t, dir, rotated.Mesh.PEM, pki.Leaf(t, "web")) // half-way: new CA, old leaf
	require.Error(t, s.Reload())
	require.Error(t, s.Reload())
	assert.Same(t, first, s.Current(), "invalid files keep the bundle")

	proxytest.WriteTLSDir(t, dir, rotated.Mesh.PEM, rotated.Leaf(t, "web"))
	require.NoError(t, s.Reload())
	assert.NotSame(t, first, s.Current())
	require.NoError(t, s.Current().Cert.Leaf.CheckSignatureFrom(rotated.Mesh.Cert), "the new leaf is signed by the new mesh CA")

	assert.InDelta(t, 2, testutil.ToFloat64(m.reloads.WithLabelValues("ok")), 0)
	assert.InDelta(t, 1, testutil.ToFloat64(m.reloads.WithLabelValues("invalid")), 0, "one invalid content, counted once")
	assert.InDelta(t, float64(s.Current().Cert.Leaf.NotAfter.Unix()), testutil.ToFloat64(m.notAfter), 0)
}
