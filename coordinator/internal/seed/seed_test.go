package seed_test

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/coordinator/internal/seed"
)

func TestDerivationsAreStableAndSeparated(t *testing.T) {
	s, err := seed.New()
	require.NoError(t, err)
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	share, err := s.EncryptTo(&priv.PublicKey)
	require.NoError(t, err)
	raw, err := seed.DecryptShare(priv, share)
	require.NoError(t, err)
	r, err := seed.FromBytes(raw, s.Salt())
	require.NoError(t, err)

	assert.True(t, s.RootCAKey().Equal(r.RootCAKey()))
	assert.True(t, s.MeshCAKey("1:a:b").Equal(r.MeshCAKey("1:a:b")))
	assert.False(t, s.MeshCAKey("1:a:b").Equal(s.MeshCAKey("2:a:b")))
	assert.Equal(t, s.HistorySigningKey(), r.HistorySigningKey())
	assert.Equal(t, s.WorkloadSecret("web"), r.WorkloadSecret("web"))
	assert.NotEqual(t, s.WorkloadSecret("web"), s.WorkloadSecret("emoji"))

	other, err := seed.FromBytes(raw, make([]byte, seed.Size))
	require.NoError(t, err)
	assert.NotEqual(t, s.WorkloadSecret("web"), other.WorkloadSecret("web"), "the salt takes part")
	_, err = seed.FromBytes(raw[:31], s.Salt())
	require.ErrorIs(t, err, seed.ErrInvalid)
}
