package manifest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ParsePublicKey parses a workload-owner public key: PEM ("PUBLIC KEY" or
// "RSA PUBLIC KEY") or hex of DER PKIX. ECDSA, RSA (≥ 2048 bits) and Ed25519
// keys are accepted.
func ParsePublicKey(k HexString) (crypto.PublicKey, error) {
	der, err := keyDER(k)
	if err != nil {
		return nil, err
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		rsaPub, err2 := x509.ParsePKCS1PublicKey(der)
		if err2 != nil {
			return nil, fmt.Errorf("parsing public key: %w", err)
		}
		pub = rsaPub
	}
	switch p := pub.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
	case *rsa.PublicKey:
		if p.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits is too short", p.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("unsupported key type %T", pub)
	}
	return pub, nil
}

// ParseSeedShareOwnerKey parses a seed-share owner key, which must be RSA
// (the seed is encrypted with RSA-OAEP).
func ParseSeedShareOwnerKey(k HexString) (*rsa.PublicKey, error) {
	pub, err := ParsePublicKey(k)
	if err != nil {
		return nil, err
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("seed-share owner key must be RSA, got %T", pub)
	}
	return rsaPub, nil
}

func keyDER(k HexString) ([]byte, error) {
	s := strings.TrimSpace(string(k))
	if strings.HasPrefix(s, "-----BEGIN") {
		block, _ := pem.Decode([]byte(s))
		if block == nil {
			return nil, errors.New("invalid PEM")
		}
		return block.Bytes, nil
	}
	der, err := HexString(s).Bytes()
	if err != nil {
		return nil, errors.New("key must be PEM or hex-encoded DER")
	}
	return der, nil
}

// KeyDigest returns the SHA-256 of the DER PKIX encoding of pub, the form
// WorkloadOwnerKeyDigests lists and seed shares are labeled with.
func KeyDigest(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	d := sha256.Sum256(der)
	return d[:], nil
}

// OwnerKeyDigests returns the digests of every key allowed to replace this
// manifest (WorkloadOwnerPubKeys and WorkloadOwnerKeyDigests). Invalid
// entries are skipped; Validate reports them.
func (m *Manifest) OwnerKeyDigests() []HexString {
	var out []HexString
	for _, k := range m.WorkloadOwnerPubKeys {
		pub, err := ParsePublicKey(k)
		if err != nil {
			continue
		}
		d, err := KeyDigest(pub)
		if err != nil {
			continue
		}
		out = append(out, NewHexString(d))
	}
	for _, d := range m.WorkloadOwnerKeyDigests {
		out = append(out, HexString(strings.ToLower(string(d))))
	}
	return out
}

// IsOwner reports whether pub may replace this manifest.
func (m *Manifest) IsOwner(pub crypto.PublicKey) bool {
	if pub == nil {
		return false
	}
	d, err := KeyDigest(pub)
	if err != nil {
		return false
	}
	want := NewHexString(d)
	for _, h := range m.OwnerKeyDigests() {
		if h == want {
			return true
		}
	}
	return false
}
