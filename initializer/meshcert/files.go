package meshcert

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
)

// Files the Initializer writes below its output directory (DESIGN.md §4):
// the same paths as the original Contrast, so applications built for it
// work unchanged.
const (
	TLSDir             = "tls-config"
	SecretsDir         = "secrets"
	MeshCAFile         = "tls-config/mesh-ca.pem"
	CertChainFile      = "tls-config/certChain.pem"
	KeyFile            = "tls-config/key.pem"
	RootCAFile         = "tls-config/coordinator-root-ca.pem"
	WorkloadSecretFile = "secrets/workload-secret-seed"
)

// identity is the pod's mesh identity, checked for consistency.
type identity struct {
	key                            crypto.Signer
	leaf                           *x509.Certificate
	meshCA, certChain, rootCA, sec []byte
}

func parsePEMCerts(what string, b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: unexpected PEM block %q", what, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no certificate", what)
	}
	return out, nil
}

// newIdentity checks that the leaf certifies key and chains through the
// mesh CA to the root CA.
func newIdentity(resp *meshpb.NewMeshCertResponse, key crypto.Signer) (*identity, error) {
	chain, err := parsePEMCerts("certificate chain", resp.GetCertChain())
	if err != nil {
		return nil, err
	}
	mesh, err := parsePEMCerts("mesh CA", resp.GetMeshCa())
	if err != nil {
		return nil, err
	}
	roots, err := parsePEMCerts("root CA", resp.GetRootCa())
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := key.Public().(equaler); !ok || !pub.Equal(leaf.PublicKey) {
		return nil, errors.New("the mesh certificate is not for the pod's key")
	}
	inter, rootPool := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range mesh {
		inter.AddCert(c)
	}
	for _, c := range roots {
		rootPool.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Intermediates: inter, Roots: rootPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("the mesh certificate does not chain to the root CA through the mesh CA: %w", err)
	}
	return &identity{key: key, leaf: leaf, meshCA: resp.GetMeshCa(), certChain: resp.GetCertChain(), rootCA: resp.GetRootCa(), sec: resp.GetWorkloadSecret()}, nil
}

// write writes the files atomically (each to a temporary file in the same
// directory, synced, then renamed): key.pem and the workload secret 0400,
// certificates 0444. The key file is written first and the root CA last.
// Without a workload secret (an entry without WorkloadSecretID) its file
// is not written.
func (id *identity) write(dir string) error {
	der, err := x509.MarshalPKCS8PrivateKey(id.key)
	if err != nil {
		return fmt.Errorf("encoding the pod's key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	secret := []byte(hex.EncodeToString(id.sec))
	for _, d := range []string{TLSDir, SecretsDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil { //nolint:gosec // readable by the pod's containers, which may run as other users
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{KeyFile, keyPEM, 0o400},
		{WorkloadSecretFile, secret, 0o400},
		{CertChainFile, id.certChain, 0o444},
		{MeshCAFile, id.meshCA, 0o444},
		{RootCAFile, id.rootCA, 0o444},
	} {
		if f.name == WorkloadSecretFile && len(id.sec) == 0 {
			// a manifest entry without WorkloadSecretID: no secret, as in the original
			continue
		}
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("writing %s: %w", f.name, err)
		}
	}
	for _, d := range []string{TLSDir, SecretsDir} {
		if err := syncDir(filepath.Join(dir, d)); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err //nolint:wrapcheck // the caller names the file
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return err //nolint:wrapcheck // the caller names the file
	}
	if _, err = f.Write(data); err != nil {
		return err //nolint:wrapcheck // the caller names the file
	}
	if err = f.Sync(); err != nil {
		return err //nolint:wrapcheck // the caller names the file
	}
	if err = f.Close(); err != nil {
		return err //nolint:wrapcheck // the caller names the file
	}
	return os.Rename(f.Name(), path) //nolint:wrapcheck // the caller names the file
}

func syncDir(dir string) error {
	d, err := os.Open(dir) //nolint:gosec // our own output directory
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
