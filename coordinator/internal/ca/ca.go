// Package ca creates the Coordinator's root CA, the mesh CA of each manifest
// generation and the mesh certificates of attested workloads (DESIGN.md §5).
//
// Root CA (P-384, key derived from the seed) → mesh CA (P-256, a new key per
// manifest generation, derived from the seed and the generation, path length 0) → leaf (the workload's aTLS key, SANs
// from its policy entry, attestation claims in an extension).
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 5280 §4.2.1.2 key identifier method, not a security function
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// OIDAttestationClaims identifies the leaf extension carrying the attestation
// claims (JSON of Claims in an ASN.1 UTF8String). The arc under 2.25 was drawn
// at random (31 bits, the largest arc crypto/x509 parses); it is stable.
var OIDAttestationClaims = asn1.ObjectIdentifier{2, 25, 1260935559, 1}

// Validity periods.
const (
	RootValidity = 20 * 365 * 24 * time.Hour
	MeshValidity = 10 * 365 * 24 * time.Hour
	LeafValidity = 365 * 24 * time.Hour
	backdate     = time.Hour
)

// CA is a certificate authority: a certificate and its key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte
}

func serial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("drawing serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	h := sha1.Sum(spki.PublicKey.Bytes) //nolint:gosec // key identifier, see import
	return h[:], nil
}

func createDER(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("creating certificate: %w", err)
	}
	return der, nil
}

func create(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := createDER(tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	return c, nil
}

// PEMEncode encodes DER certificates as PEM.
func PEMEncode(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// NewRoot creates the self-signed root CA certificate for key.
func NewRoot(key *ecdsa.PrivateKey, now time.Time) (*CA, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	ski, err := keyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{"Contrast"}, CommonName: "Contrast Root CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		SubjectKeyId:          ski,
	}
	c, err := create(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: c, Key: key, PEM: PEMEncode(c)}, nil
}

// NewMesh creates the mesh CA of one manifest generation, signed by root.
func NewMesh(root *CA, key *ecdsa.PrivateKey, generation uint64, now time.Time) (*CA, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	ski, err := keyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{"Contrast"}, CommonName: fmt.Sprintf("Contrast Mesh CA (generation %d)", generation)},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(MeshValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski,
	}
	c, err := create(tmpl, root.Cert, key.Public(), root.Key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: c, Key: key, PEM: PEMEncode(c)}, nil
}

// Restore pairs a stored certificate with its re-derived key, checking that
// they match and, for a non-root CA, that parent signed it.
func Restore(der []byte, key *ecdsa.PrivateKey, parent *CA) (*CA, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing stored CA certificate: %w", err)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("stored CA certificate does not match the derived key")
	}
	signer := c
	if parent != nil {
		signer = parent.Cert
	}
	if err := c.CheckSignatureFrom(signer); err != nil {
		return nil, fmt.Errorf("stored CA certificate signature: %w", err)
	}
	return &CA{Cert: c, Key: key, PEM: PEMEncode(c)}, nil
}

// Claims are the attestation facts recorded in a leaf certificate.
type Claims struct {
	PolicyHash     string
	Platform       string
	Measurement    string `json:",omitempty"`
	ReferenceName  string `json:",omitempty"`
	TransitionHash string
}

// LeafRequest describes a mesh certificate to issue.
type LeafRequest struct {
	PublicKey crypto.PublicKey
	SANs      []string
	Claims    Claims
}

// IssueLeaf signs a mesh certificate for req with the mesh CA.
func (m *CA) IssueLeaf(req LeafRequest, now time.Time) (*x509.Certificate, error) {
	tmpl, err := leafTemplate(req, now)
	if err != nil {
		return nil, err
	}
	return create(tmpl, m.Cert, req.PublicKey, m.Key)
}

// IssueLeafPEM is IssueLeaf returning the certificate PEM-encoded, without
// parsing back the freshly signed DER.
func (m *CA) IssueLeafPEM(req LeafRequest, now time.Time) ([]byte, error) {
	tmpl, err := leafTemplate(req, now)
	if err != nil {
		return nil, err
	}
	der, err := createDER(tmpl, m.Cert, req.PublicKey, m.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func leafTemplate(req LeafRequest, now time.Time) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	claims, err := json.Marshal(req.Claims)
	if err != nil {
		return nil, fmt.Errorf("encoding claims: %w", err)
	}
	ext, err := asn1.MarshalWithParams(string(claims), "utf8")
	if err != nil {
		return nil, fmt.Errorf("encoding claims extension: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    sn,
		Subject:         pkix.Name{Organization: []string{"Contrast"}, CommonName: commonName(req)},
		NotBefore:       now.Add(-backdate),
		NotAfter:        now.Add(LeafValidity),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{{Id: OIDAttestationClaims, Value: ext}},
	}
	addSANs(tmpl, req.SANs)
	return tmpl, nil
}

func commonName(req LeafRequest) string {
	for _, s := range req.SANs {
		if s != "*" && !isURI(s) && net.ParseIP(s) == nil {
			return s
		}
	}
	if len(req.Claims.PolicyHash) >= 16 {
		return "contrast-" + req.Claims.PolicyHash[:16]
	}
	return "contrast-workload"
}

// isURI applies the manifest package's rule (manifest.ValidateSAN): a SAN
// with a ':' that is not an IP address is an absolute URI, with or without
// "//" (`spiffe://…`, `urn:uuid:…`).
func isURI(s string) bool {
	return strings.Contains(s, ":") && net.ParseIP(s) == nil
}

// addSANs sorts the manifest's SANs (syntax-checked by the manifest package)
// into the certificate's DNS, IP and URI fields.
func addSANs(tmpl *x509.Certificate, sans []string) {
	for _, s := range sans {
		if isURI(s) {
			if u, err := url.Parse(s); err == nil {
				tmpl.URIs = append(tmpl.URIs, u)
			}
			continue
		}
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		tmpl.DNSNames = append(tmpl.DNSNames, s)
	}
}

// ParseClaims returns the attestation claims of a leaf certificate.
func ParseClaims(c *x509.Certificate) (*Claims, error) {
	for _, e := range c.Extensions {
		if !e.Id.Equal(OIDAttestationClaims) {
			continue
		}
		var s string
		if _, err := asn1.UnmarshalWithParams(e.Value, &s, "utf8"); err != nil {
			return nil, fmt.Errorf("decoding claims extension: %w", err)
		}
		var cl Claims
		if err := json.Unmarshal([]byte(s), &cl); err != nil {
			return nil, fmt.Errorf("decoding claims: %w", err)
		}
		return &cl, nil
	}
	return nil, errors.New("no attestation claims extension")
}
