// Package seed holds the Coordinator's secret seed and derives every secret
// from it with HKDF-SHA256 (DESIGN.md §5): the root CA key, the
// history-signing key, the mesh CA key of each manifest generation and the
// workload secrets. The seed is encrypted to seed-share owners with
// RSA-OAEP so that a restarted Coordinator can be recovered.
//
// Nothing in this package logs, and no error message contains secret bytes.
package seed

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Size is the length of the seed and of the salt.
const Size = 32

// Derivation labels (HKDF info). They are stable: changing one changes the
// derived keys of every existing deployment.
const (
	infoRootCA         = "CONTRAST ROOT CA KEY"
	infoHistorySigning = "CONTRAST HISTORY SIGNING KEY"
	infoMeshCA         = "CONTRAST MESH CA KEY: "
	// InfoWorkloadSecret prefixes the WorkloadSecretID (as in the original Contrast).
	infoWorkloadSecret = "WORKLOAD SECRET ID: "
)

// ErrInvalid reports a seed or salt of the wrong size.
var ErrInvalid = errors.New("seed and salt must be 32 bytes each")

// Secrets is a seed and its salt.
type Secrets struct {
	seed, salt []byte
}

// New draws a fresh seed and salt.
func New() (*Secrets, error) {
	s := &Secrets{seed: make([]byte, Size), salt: make([]byte, Size)}
	if _, err := rand.Read(s.seed); err != nil {
		return nil, fmt.Errorf("drawing seed: %w", err)
	}
	if _, err := rand.Read(s.salt); err != nil {
		return nil, fmt.Errorf("drawing salt: %w", err)
	}
	return s, nil
}

// FromBytes restores secrets from a recovered seed and salt (copied).
func FromBytes(seedBytes, salt []byte) (*Secrets, error) {
	if len(seedBytes) != Size || len(salt) != Size {
		return nil, ErrInvalid
	}
	return &Secrets{seed: append([]byte(nil), seedBytes...), salt: append([]byte(nil), salt...)}, nil
}

// Salt returns the salt (not secret).
func (s *Secrets) Salt() []byte { return append([]byte(nil), s.salt...) }

// Seed returns a copy of the secret seed. It exists only to hand the seed
// over to an attested peer Coordinator (peer recovery); never log it.
func (s *Secrets) Seed() []byte { return append([]byte(nil), s.seed...) }

func (s *Secrets) derive(info string, n int) []byte {
	out, err := hkdf.Key(sha256.New, s.seed, s.salt, info, n)
	if err != nil {
		panic(fmt.Sprintf("hkdf: %v", err)) // only for n > 255*32, never here
	}
	return out
}

// ecdsaKey derives a P-256 or P-384 key: the HKDF stream is read in
// scalar-sized blocks until one is a valid scalar (the first, except with
// negligible probability).
func (s *Secrets) ecdsaKey(info string, curve elliptic.Curve) *ecdsa.PrivateKey {
	size := (curve.Params().BitSize + 7) / 8
	const tries = 8
	stream := s.derive(info, size*tries)
	for i := range tries {
		k, err := ecdsa.ParseRawPrivateKey(curve, stream[i*size:(i+1)*size])
		if err == nil {
			return k
		}
	}
	panic("no valid scalar in HKDF output") // probability ~2^-256
}

// RootCAKey derives the root CA key (P-384), stable for the life of the seed.
func (s *Secrets) RootCAKey() *ecdsa.PrivateKey {
	return s.ecdsaKey(infoRootCA, elliptic.P384())
}

// MeshCAKey derives the mesh CA key (P-256) of one manifest generation; the
// label names the generation uniquely (see package state), so every update
// gets a fresh key that is nonetheless restored by recovery.
func (s *Secrets) MeshCAKey(label string) *ecdsa.PrivateKey {
	return s.ecdsaKey(infoMeshCA+label, elliptic.P256())
}

// HistorySigningKey derives the key that signs the latest-transition pointer.
func (s *Secrets) HistorySigningKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(s.derive(infoHistorySigning, ed25519.SeedSize))
}

// WorkloadSecret derives the 32-byte secret of a WorkloadSecretID.
func (s *Secrets) WorkloadSecret(id string) []byte {
	return s.derive(infoWorkloadSecret+id, 32)
}

// EncryptTo encrypts the seed to pub with RSA-OAEP (SHA-256, empty label).
func (s *Secrets) EncryptTo(pub *rsa.PublicKey) ([]byte, error) {
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, s.seed, nil)
	if err != nil {
		return nil, fmt.Errorf("encrypting seed share: %w", err)
	}
	return ct, nil
}

// DecryptShare decrypts a seed share with the seed-share owner's key (for
// the CLI and tests).
func DecryptShare(priv *rsa.PrivateKey, share []byte) ([]byte, error) {
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, priv, share, nil)
	if err != nil {
		return nil, fmt.Errorf("decrypting seed share: %w", err)
	}
	return pt, nil
}
