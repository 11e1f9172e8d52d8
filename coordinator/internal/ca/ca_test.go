package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/coordinator/internal/ca"
)

func key(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	require.NoError(t, err)
	return k
}

func TestChainSANsAndClaims(t *testing.T) {
	now := time.Now()
	root, err := ca.NewRoot(key(t, elliptic.P384()), now)
	require.NoError(t, err)
	mesh, err := ca.NewMesh(root, key(t, elliptic.P256()), 3, now)
	require.NoError(t, err)
	leafKey := key(t, elliptic.P256())
	claims := ca.Claims{PolicyHash: "ab12", Platform: "snp-simulated", TransitionHash: "cd34"}
	leaf, err := mesh.IssueLeaf(ca.LeafRequest{
		PublicKey: &leafKey.PublicKey,
		SANs:      []string{"*", "web", "*.web.svc", "10.0.0.1", "2001:db8::1", "spiffe://cluster/web", "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"},
		Claims:    claims,
	}, now)
	require.NoError(t, err)

	assert.Equal(t, []string{"*", "web", "*.web.svc"}, leaf.DNSNames)
	assert.Len(t, leaf.IPAddresses, 2)
	require.Len(t, leaf.URIs, 2)
	assert.Equal(t, "spiffe://cluster/web", leaf.URIs[0].String())
	assert.Equal(t, "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", leaf.URIs[1].String())
	assert.Equal(t, "web", leaf.Subject.CommonName)
	assert.True(t, leafKey.PublicKey.Equal(leaf.PublicKey))
	got, err := ca.ParseClaims(leaf)
	require.NoError(t, err)
	assert.Equal(t, claims, *got)

	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	inter.AddCert(mesh.Cert)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "web", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	assert.True(t, mesh.Cert.MaxPathLenZero)

	// Restore checks the key and the parent's signature.
	_, err = ca.Restore(mesh.Cert.Raw, mesh.Key.(*ecdsa.PrivateKey), root)
	require.NoError(t, err)
	_, err = ca.Restore(mesh.Cert.Raw, key(t, elliptic.P256()), root)
	require.Error(t, err)
	other, err := ca.NewRoot(key(t, elliptic.P384()), now)
	require.NoError(t, err)
	_, err = ca.Restore(mesh.Cert.Raw, mesh.Key.(*ecdsa.PrivateKey), other)
	require.Error(t, err)
}

func TestIssueLeafPEM(t *testing.T) {
	now := time.Now()
	root, err := ca.NewRoot(key(t, elliptic.P384()), now)
	require.NoError(t, err)
	mesh, err := ca.NewMesh(root, key(t, elliptic.P256()), 3, now)
	require.NoError(t, err)
	leafKey := key(t, elliptic.P256())
	claims := ca.Claims{PolicyHash: "ab12", Platform: "snp-simulated"}
	out, err := mesh.IssueLeafPEM(ca.LeafRequest{PublicKey: &leafKey.PublicKey, SANs: []string{"web"}, Claims: claims}, now)
	require.NoError(t, err)
	block, rest := pem.Decode(out)
	require.NotNil(t, block)
	assert.Empty(t, rest)
	assert.Equal(t, "CERTIFICATE", block.Type)
	leaf, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	assert.Equal(t, []string{"web"}, leaf.DNSNames)
	assert.True(t, leafKey.PublicKey.Equal(leaf.PublicKey))
	got, err := ca.ParseClaims(leaf)
	require.NoError(t, err)
	assert.Equal(t, claims, *got)
	require.NoError(t, leaf.CheckSignatureFrom(mesh.Cert))
}
