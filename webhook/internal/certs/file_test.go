package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var testNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func writePair(t *testing.T, dir string, serial int64, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "webhook"},
		DNSNames:     []string{"webhook.contrast-system.svc"},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600))
}

func TestFileSource(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := NewFileSource(FileConfig{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), Now: func() time.Time { return testNow }})

	// not ready until the files exist
	require.ErrorIs(t, s.Ready(ctx), ErrNotReady)
	_, err := s.GetCertificate(nil)
	require.ErrorIs(t, err, ErrNotReady)

	writePair(t, dir, 1, testNow.Add(24*time.Hour))
	require.NoError(t, s.Reload())
	require.NoError(t, s.Ready(ctx))
	c, err := s.GetCertificate(nil)
	require.NoError(t, err)
	assert.Equal(t, int64(1), c.Leaf.SerialNumber.Int64())

	// a rotated pair is picked up
	writePair(t, dir, 2, testNow.Add(48*time.Hour))
	require.NoError(t, s.Reload())
	c, err = s.GetCertificate(nil)
	require.NoError(t, err)
	assert.Equal(t, int64(2), c.Leaf.SerialNumber.Int64())

	// a half-written pair (key of another certificate) keeps the last good one
	crt, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	require.NoError(t, err)
	writePair(t, dir, 3, testNow.Add(48*time.Hour))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), crt, 0o600))
	require.Error(t, s.Reload())
	c, err = s.GetCertificate(nil)
	require.NoError(t, err)
	assert.Equal(t, int64(2), c.Leaf.SerialNumber.Int64())
	require.NoError(t, s.Ready(ctx))

	// an expired certificate makes the webhook unready
	writePair(t, dir, 4, testNow.Add(-time.Minute))
	require.NoError(t, s.Reload())
	require.ErrorContains(t, s.Ready(ctx), "expired")
}

func TestFileSourceRunReloads(t *testing.T) {
	dir := t.TempDir()
	writePair(t, dir, 1, time.Now().Add(time.Hour))
	s := NewFileSource(FileConfig{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	writePair(t, dir, 7, time.Now().Add(time.Hour))
	require.Eventually(t, func() bool {
		c, err := s.GetCertificate(nil)
		return err == nil && c.Leaf.SerialNumber.Int64() == 7
	}, 5*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}
