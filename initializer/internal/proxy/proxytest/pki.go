// Package proxytest is a test PKI shaped like the Coordinator's: a root CA,
// a mesh CA (intermediate) under it, and mesh leaves with the manifest's
// SANs, usable for server and client authentication. It writes the files
// the Initializer writes.
package proxytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority with its key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

// PKI is a root CA and the mesh CA it signed.
type PKI struct {
	Root *CA
	Mesh *CA
}

var serial atomic.Int64

func nextSerial() *big.Int { return big.NewInt(serial.Add(1)) }

// NewPKI creates a root CA and a mesh CA.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	root := newCA(t, "test root CA", nil, 1)
	mesh := newCA(t, "test mesh CA", root, 0)
	return &PKI{Root: root, Mesh: mesh}
}

func newCA(t testing.TB, cn string, parent *CA, maxPath int) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPath,
		MaxPathLenZero:        maxPath == 0,
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// LeafOptions vary a leaf.
type LeafOptions struct {
	NotBefore, NotAfter time.Time
	// ExtKeyUsage defaults to server and client authentication.
	ExtKeyUsage []x509.ExtKeyUsage
}

// Leaf is a mesh certificate chain (leaf, mesh CA) and its key, PEM-encoded.
type Leaf struct {
	ChainPEM []byte
	KeyPEM   []byte
}

// Leaf issues a leaf under the mesh CA for the SANs (IP addresses become IP
// SANs, everything else DNS SANs).
func (p *PKI) Leaf(t testing.TB, sans ...string) Leaf {
	t.Helper()
	return p.Mesh.Leaf(t, LeafOptions{}, sans...)
}

// Leaf issues a leaf under ca.
func (ca *CA) Leaf(t testing.TB, opts LeafOptions, sans ...string) Leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if opts.NotBefore.IsZero() {
		opts.NotBefore = time.Now().Add(-time.Hour)
	}
	if opts.NotAfter.IsZero() {
		opts.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if opts.ExtKeyUsage == nil {
		opts.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: "contrast mesh"},
		NotBefore:    opts.NotBefore,
		NotAfter:     opts.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  opts.ExtKeyUsage,
	}
	if len(sans) > 0 {
		tmpl.Subject.CommonName = sans[0]
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, ca.PEM...)
	return Leaf{ChainPEM: chain, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}
}

// WriteTLSDir writes mesh-ca.pem, certChain.pem and key.pem (0400, as the
// Initializer does) into dir, replacing what is there.
func WriteTLSDir(t testing.TB, dir string, meshCA []byte, leaf Leaf) {
	t.Helper()
	for _, f := range []struct {
		name string
		data []byte
	}{{"mesh-ca.pem", meshCA}, {"certChain.pem", leaf.ChainPEM}, {"key.pem", leaf.KeyPEM}} {
		path := filepath.Join(dir, f.name)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, f.data, 0o400); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
}

// TLSDir writes a fresh leaf for sans under p into a new temporary folder
// and returns it.
func (p *PKI) TLSDir(t testing.TB, sans ...string) string {
	t.Helper()
	dir := t.TempDir()
	WriteTLSDir(t, dir, p.Mesh.PEM, p.Leaf(t, sans...))
	return dir
}
