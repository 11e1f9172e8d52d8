// Package sim provides simulated SEV-SNP and TDX devices for development and
// tests: test-only roots generated at start-up (or loaded from a file), and
// devices that produce real-format SNP reports and TDX v4 quotes with chosen
// REPORT_DATA and HOST_DATA/MRCONFIGID. The devices plug into the issuers
// through a configfs-tsm fake, so issuers and validators run their real code
// paths; only the root of trust differs.
//
// Simulated evidence is accepted only by validators built from reference
// values that name a simulated platform and carry the simulated root.
//
// Nothing here is secure: keys are test-only and may be written to disk.
package sim

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"syscall"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
)

// serial returns a random positive certificate serial number.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n.Add(n, big.NewInt(1))
}

// createCert signs tmpl with the parent key; tmpl is its own parent when parent is nil.
func createCert(tmpl, parent *x509.Certificate, pub, parentKey any) (*x509.Certificate, error) {
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, fmt.Errorf("creating certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

func amdName(cn string) pkix.Name {
	return pkix.Name{
		CommonName: cn, Country: []string{"US"}, Locality: []string{"Santa Clara"},
		Province: []string{"CA"}, Organization: []string{"Advanced Micro Devices"},
		OrganizationalUnit: []string{"Engineering"},
	}
}

func intelName(cn string) pkix.Name {
	return pkix.Name{
		CommonName: cn, Organization: []string{"Intel Corporation"}, Locality: []string{"Santa Clara"},
		Province: []string{"CA"}, Country: []string{"US"},
	}
}

// tsmClient returns a configfs-tsm fake whose report subsystem answers with
// the given provider name and the blobs produced by gen from the inblob.
func tsmClient(provider string, gen func(inblob [64]byte) (out, aux []byte, err error)) configfsi.Client {
	rs := faketsm.ReportV7(0)
	base := rs.ReadAttr
	rs.ReadAttr = func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
		switch attr {
		case "provider":
			return []byte(provider + "\n"), nil
		case "outblob", "auxblob":
			in, ok := e.InAttrs["inblob"]
			if !ok || len(in.Value) == 0 || len(in.Value) > 64 {
				return nil, syscall.EINVAL
			}
			var rd [64]byte
			copy(rd[:], in.Value)
			out, aux, err := gen(rd)
			if err != nil {
				return nil, err
			}
			if attr == "outblob" {
				return out, nil
			}
			return aux, nil
		default:
			return base(e, attr)
		}
	}
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": rs}}
}

// writeFile0600 writes test-only key material.
func writeFile0600(path string, data []byte) error {
	return os.WriteFile(path, data, 0o600)
}

// savePEM writes keys (PKCS #8) and then certs, all PEM, to path: test-only
// material, mode 0600. loadPEM reads it back in the same order.
func savePEM[K any](path string, keys []K, certs []*x509.Certificate) error {
	var out []byte
	for _, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return fmt.Errorf("encoding key: %w", err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...)
	}
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return writeFile0600(path, out)
}

// loadPEM reads n keys of type K and n certificates saved by savePEM for the
// simulated platform (for messages). A missing file yields an error matching
// os.ErrNotExist.
func loadPEM[K any](path, platform string, n int) ([]K, []*x509.Certificate, error) {
	data, err := os.ReadFile(path) //nolint:gosec // path is chosen by the operator
	if err != nil {
		return nil, nil, fmt.Errorf("reading simulated %s root: %w", platform, err)
	}
	var keys []K
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parsing key: %w", err)
			}
			tk, ok := k.(K)
			if !ok {
				return nil, nil, fmt.Errorf("simulated %s key is %T, want %T", platform, k, tk)
			}
			keys = append(keys, tk)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parsing certificate: %w", err)
			}
			certs = append(certs, c)
		}
	}
	if len(keys) != n || len(certs) != n {
		return nil, nil, fmt.Errorf("%s: want %d keys and %d certificates", path, n, n)
	}
	return keys, certs, nil
}
