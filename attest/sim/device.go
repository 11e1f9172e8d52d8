package sim

import (
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/pelletier/go-toml/v2"

	"github.com/contrast-cc/contrast/attest"
)

// A device file holds what a simulated guest needs to sign evidence, as a
// pod that stands in for a Kata VM receives it from a Secret: the device's
// own key (the VCEK), its certificate chain up to the simulated root, and the
// values the platform reports (measurement, TCB, chip ID, policy). It holds
// no key of the authority, so a pod that reads it can sign evidence for this
// one simulated chip and cannot certify others. The policy digest is not in
// the file: the pod derives it from its own initdata (InitDataDigest), as
// the hypervisor would.

// DeviceFileMaxSize bounds a device file.
const DeviceFileMaxSize = 64 << 10

// snpDeviceFile is the JSON of an SNP device file.
type snpDeviceFile struct {
	Platform     attest.Platform
	Measurement  attest.HexBytes
	ChipID       attest.HexBytes
	TCB          kds.TCBParts
	Policy       abi.SnpPolicy
	PlatformInfo abi.SnpPlatformInfo
	VMPL         uint32
	// Key is the VCEK's PKCS #8 private key, PEM.
	Key string
	// Chain is the VCEK, ASK and ARK certificates, PEM, in that order.
	Chain string
	// CRL is the ARK's CRL (DER) when the file was written, attached to
	// the evidence as a KDS artifact; it is valid for 7 days, so a device
	// file must be rewritten within that time.
	CRL []byte
}

// MarshalDeviceFile returns the device file of d (test-only material: it
// contains the VCEK's private key).
func (d *SNPDevice) MarshalDeviceFile() ([]byte, error) {
	cfg := d.Config()
	der, err := x509.MarshalPKCS8PrivateKey(d.vcekKey)
	if err != nil {
		return nil, fmt.Errorf("encoding VCEK key: %w", err)
	}
	d.mu.Lock()
	vcek := d.VCEK
	d.mu.Unlock()
	var chain []byte
	for _, c := range []*x509.Certificate{vcek, d.auth.ASK, d.auth.ARK} {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	b, err := json.MarshalIndent(snpDeviceFile{
		Platform: attest.PlatformSimulatedSNP, Measurement: cfg.Measurement[:], ChipID: cfg.ChipID[:],
		TCB: cfg.TCB, Policy: cfg.Policy, PlatformInfo: cfg.PlatformInfo, VMPL: cfg.VMPL,
		Key:   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		Chain: string(chain),
		CRL:   d.auth.CRL(),
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding device file: %w", err)
	}
	return b, nil
}

// ParseSNPDeviceFile loads a simulated SNP device from a device file and
// sets its HOST_DATA to hostData. The device's certificate chain is checked
// (VCEK ← ASK ← ARK, the key matches the VCEK); what the validator checks
// beyond that is left to the validator. The device cannot be recertified:
// Reconfigure accepts only changes that keep the VCEK valid (HOST_DATA,
// measurement, policy, VMPL, platform info).
func ParseSNPDeviceFile(data []byte, hostData [32]byte) (*SNPDevice, error) {
	if len(data) > DeviceFileMaxSize {
		return nil, fmt.Errorf("simulated SNP device file of %d bytes exceeds %d", len(data), DeviceFileMaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f snpDeviceFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decoding simulated SNP device file: %w", err)
	}
	if f.Platform != attest.PlatformSimulatedSNP {
		return nil, fmt.Errorf("simulated SNP device file: platform %q, want %q", f.Platform, attest.PlatformSimulatedSNP)
	}
	cfg := SNPDeviceConfig{
		HostData: hostData, TCB: f.TCB, Policy: f.Policy, PlatformInfo: f.PlatformInfo, VMPL: f.VMPL,
	}
	if len(f.Measurement) != len(cfg.Measurement) || len(f.ChipID) != len(cfg.ChipID) {
		return nil, fmt.Errorf("simulated SNP device file: Measurement must be %d bytes and ChipID %d", len(cfg.Measurement), len(cfg.ChipID))
	}
	copy(cfg.Measurement[:], f.Measurement)
	copy(cfg.ChipID[:], f.ChipID)
	key, err := parseECKey(f.Key)
	if err != nil {
		return nil, fmt.Errorf("simulated SNP device file: Key: %w", err)
	}
	certs, err := parseCerts(f.Chain, 3)
	if err != nil {
		return nil, fmt.Errorf("simulated SNP device file: Chain: %w", err)
	}
	vcek, ask, ark := certs[0], certs[1], certs[2]
	if err := checkChain(vcek, ask, ark); err != nil {
		return nil, fmt.Errorf("simulated SNP device file: %w", err)
	}
	if !key.PublicKey.Equal(vcek.PublicKey) {
		return nil, errors.New("simulated SNP device file: Key is not the VCEK's key")
	}
	if _, err := kds.ComposeTCBParts(cfg.TCB); err != nil {
		return nil, fmt.Errorf("simulated SNP device file: TCB: %w", err)
	}
	crl, err := x509.ParseRevocationList(f.CRL)
	if err != nil {
		return nil, fmt.Errorf("simulated SNP device file: CRL: %w", err)
	}
	if err := crl.CheckSignatureFrom(ark); err != nil {
		return nil, fmt.Errorf("simulated SNP device file: CRL is not signed by the ARK: %w", err)
	}
	d := &SNPDevice{auth: &SNPAuthority{ARK: ark, ASK: ask, crl: f.CRL, crlSigned: crl.ThisUpdate}, cfg: cfg, vcekKey: key, VCEK: vcek}
	d.certTabl = d.table(vcek)
	return d, nil
}

func parseECKey(p string) (*ecdsa.PrivateKey, error) {
	b, rest := pem.Decode([]byte(p))
	if b == nil || b.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("want one PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want ECDSA", k)
	}
	return ek, nil
}

func parseCerts(p string, n int) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(p)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) != n || len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("want exactly %d PEM certificates", n)
	}
	return out, nil
}

// checkChain checks that each certificate is signed by the next and the last
// by itself.
func checkChain(certs ...*x509.Certificate) error {
	for i, c := range certs {
		parent := c
		if i+1 < len(certs) {
			parent = certs[i+1]
		}
		if err := c.CheckSignatureFrom(parent); err != nil {
			return fmt.Errorf("certificate %q is not signed by %q: %w", c.Subject.CommonName, parent.Subject.CommonName, err)
		}
	}
	return nil
}

// InitDataMaxSize bounds the decoded initdata document (and its annotation).
const InitDataMaxSize = 1 << 20

// ErrInitData is wrapped by every error of InitDataDigest.
var ErrInitData = errors.New("malformed initdata annotation")

// InitDataDigest returns the policy digest a Kata host reports for a pod
// whose initdata annotation (io.katacontainers.config.hypervisor.cc_init_data)
// has the value annotation: base64 (standard, padded) of one gzip member
// holding the initdata TOML document; the digest is SHA-256 over the raw TOML
// document, as Kata computes it. The simulated device reports it as
// HOST_DATA (SNP; MRCONFIGID for TDX is the digest followed by 16 zero
// bytes).
//
// Anything malformed is refused, never hashed as it is: bad base64, not
// exactly one gzip member, trailing data, a document that is not UTF-8 TOML
// with algorithm "sha256", a version and a [data] table.
func InitDataDigest(annotation []byte) ([32]byte, error) {
	var zero [32]byte
	if len(annotation) > InitDataMaxSize {
		return zero, fmt.Errorf("%w: %d bytes exceed %d", ErrInitData, len(annotation), InitDataMaxSize)
	}
	if bytes.ContainsAny(annotation, "\r\n") {
		// the base64 decoder would skip them; the annotation has none
		return zero, fmt.Errorf("%w: line breaks in the base64 value", ErrInitData)
	}
	z, err := base64.StdEncoding.Strict().DecodeString(string(annotation))
	if err != nil {
		return zero, fmt.Errorf("%w: base64: %w", ErrInitData, err)
	}
	// bytes.Reader is an io.ByteReader: gzip reads exactly one member from
	// it, so what is left after the member is trailing data.
	br := bytes.NewReader(z)
	zr, err := gzip.NewReader(br)
	if err != nil {
		return zero, fmt.Errorf("%w: gzip: %w", ErrInitData, err)
	}
	zr.Multistream(false)
	doc, err := io.ReadAll(io.LimitReader(zr, InitDataMaxSize+1))
	if err != nil {
		return zero, fmt.Errorf("%w: gzip: %w", ErrInitData, err)
	}
	if len(doc) > InitDataMaxSize {
		return zero, fmt.Errorf("%w: the document exceeds %d bytes", ErrInitData, InitDataMaxSize)
	}
	if br.Len() > 0 {
		return zero, fmt.Errorf("%w: %d bytes after the gzip member", ErrInitData, br.Len())
	}
	if !utf8.Valid(doc) {
		return zero, fmt.Errorf("%w: the document is not UTF-8", ErrInitData)
	}
	var v struct {
		Algorithm string         `toml:"algorithm"`
		Version   string         `toml:"version"`
		Data      map[string]any `toml:"data"`
	}
	if err := toml.Unmarshal(doc, &v); err != nil {
		return zero, fmt.Errorf("%w: TOML: %w", ErrInitData, err)
	}
	switch {
	case v.Algorithm != "sha256":
		return zero, fmt.Errorf("%w: algorithm %q, want \"sha256\"", ErrInitData, v.Algorithm)
	case v.Version == "":
		return zero, fmt.Errorf("%w: no version", ErrInitData)
	case v.Data == nil:
		return zero, fmt.Errorf("%w: no [data] table", ErrInitData)
	}
	return sha256.Sum256(doc), nil
}
