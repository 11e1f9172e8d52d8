package sim_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest/sim"
)

func TestLoadOrCreateSNPAuthorityIsStable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snp-root.pem")
	a, err := sim.LoadOrCreateSNPAuthority(path)
	require.NoError(t, err)
	b, err := sim.LoadOrCreateSNPAuthority(path)
	require.NoError(t, err)
	assert.Equal(t, a.RootPEM(), b.RootPEM())
	dev, err := b.NewDevice(sim.DefaultSNPDeviceConfig())
	require.NoError(t, err)
	var rd [64]byte
	_, _, err = dev.Report(rd)
	require.NoError(t, err)
}

func TestLoadOrCreateTDXAuthorityIsStable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tdx-root.pem")
	a, err := sim.LoadOrCreateTDXAuthority(path)
	require.NoError(t, err)
	b, err := sim.LoadOrCreateTDXAuthority(path)
	require.NoError(t, err)
	assert.Equal(t, a.RootPEM(), b.RootPEM())
	dev, err := b.NewDevice(sim.DefaultTDXDeviceConfig())
	require.NoError(t, err)
	var rd [64]byte
	_, err = dev.Quote(rd)
	require.NoError(t, err)
}
