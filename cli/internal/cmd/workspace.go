package cmd

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// Files of the workspace (DESIGN.md §4).
const (
	fileManifest         = "manifest.json"
	fileChartValues      = "chart-values.yaml"
	fileWorkloadOwnerKey = "workload-owner.pem"
	fileSeedshareKey     = "seedshare-owner.pem"
	fileSeedShares       = "seed-shares.json"
	fileRootCA           = "coordinator-root-ca.pem"
	fileMeshCA           = "mesh-ca.pem"
	fileLatest           = "latest-transition"
	dirPolicies          = "policies"
	dirVerify            = "verify"
)

// seedShareKeyBits is the size of a new seed-share owner key.
const seedShareKeyBits = 3072

// writeFile writes data atomically (temporary file and rename) with perm.
func writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return withCode(ExitFailure, fmt.Errorf("creating directory of %s: %w", path, err))
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return withCode(ExitFailure, fmt.Errorf("writing %s: %w", path, err))
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return withCode(ExitFailure, fmt.Errorf("writing %s: %w", path, err))
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return withCode(ExitFailure, fmt.Errorf("writing %s: %w", path, err))
	}
	if err := tmp.Close(); err != nil {
		return withCode(ExitFailure, fmt.Errorf("writing %s: %w", path, err))
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return withCode(ExitFailure, fmt.Errorf("writing %s: %w", path, err))
	}
	return nil
}

// ensureKey loads the private key at path, or creates it (0600) with gen if
// the file does not exist. created reports the latter.
func ensureKey(path string, gen func() (crypto.Signer, error)) (key crypto.Signer, created bool, err error) {
	key, err = loadKey(path)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	key, err = gen()
	if err != nil {
		return nil, false, withCode(ExitFailure, fmt.Errorf("generating %s: %w", path, err))
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, withCode(ExitFailure, fmt.Errorf("encoding %s: %w", path, err))
	}
	if err := writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

func newOwnerKey() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func newSeedShareKey() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, seedShareKeyBits) }

// loadKey reads a PEM private key (PKCS #8, SEC 1 or PKCS #1). A missing
// file is an error wrapping fs.ErrNotExist.
func loadKey(path string) (crypto.Signer, error) {
	raw, err := readPath(path)
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("reading key: %w", err))
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, usageErrorf("%s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, usageErrorf("%s: PEM block %q is not a private key", path, block.Type)
	}
	if err != nil {
		return nil, usageErrorf("%s: parsing private key: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, usageErrorf("%s: unsupported key type %T", path, key)
	}
	return signer, nil
}

// pubHex is the manifest's form of a public key: hex DER PKIX.
func pubHex(pub crypto.PublicKey) (manifest.HexString, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encoding public key: %w", err)
	}
	return manifest.NewHexString(der), nil
}

// readManifest reads and validates a manifest file with the Coordinator's
// own parser, so every problem is reported with its JSON path.
func readManifest(path string) (*manifest.Manifest, []byte, error) {
	raw, err := readPath(path)
	if err != nil {
		return nil, nil, withCode(ExitUsage, fmt.Errorf("reading manifest: %w", err))
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		return nil, nil, usageErrorf("%s: %w", path, err)
	}
	return m, raw, nil
}

// readLatest reads the latest transition recorded in the workspace (nil if
// there is none).
func readLatest(path string) ([]byte, error) {
	raw, err := readPath(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("reading the latest transition: %w", err))
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(b) != 32 {
		return nil, usageErrorf("%s: want the 64 hex digits of a transition hash", path)
	}
	return b, nil
}

func writeLatest(path string, transition []byte) error {
	return writeFile(path, []byte(hex.EncodeToString(transition)+"\n"), 0o644)
}

// seedSharesFile is seed-shares.json.
type seedSharesFile struct {
	// Salt is the salt of the seed derivation (hex).
	Salt manifest.HexString
	// SeedShares are the seed encrypted to each seed-share owner key.
	SeedShares []seedShare
	// Generation and Transition are those of the manifest that returned
	// the shares (the first).
	Generation uint64
	Transition manifest.HexString
}

type seedShare struct {
	// PublicKeyHash is the SHA-256 of the owner's DER PKIX public key.
	PublicKeyHash manifest.HexString
	// EncryptedSeed is RSA-OAEP (SHA-256, empty label) of the seed.
	EncryptedSeed manifest.HexString
}

func marshalJSON(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding JSON: %w", err)
	}
	return append(b, '\n'), nil
}

// readPath reads a file the user named (flags, arguments) or a file of the
// workspace the user chose.
func readPath(path string) ([]byte, error) {
	return os.ReadFile(path) //nolint:gosec // G304: reading the files the user names is the point
}
