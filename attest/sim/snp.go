package sim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/evidence"
	"github.com/contrast-cc/contrast/attest/snp"
)

// SNPProductLine is the product line the simulated AMD root claims.
const SNPProductLine = "Milan"

// KDS extension OIDs (AMD KDS specification, 1.3.6.1.4.1.3704.1.*).
var (
	oidStructVersion = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 1}
	oidProductName   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 2}
	oidSPL           = func(i int) asn1.ObjectIdentifier { return asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, i} }
	oidHWID          = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 4}
)

// SNPAuthority is a simulated AMD root: an ARK and an ASK with the names
// and CRL links AMD uses, but test-only RSA keys.
type SNPAuthority struct {
	arkKey, askKey *rsa.PrivateKey
	ARK, ASK       *x509.Certificate
	crl            []byte
	crlSigned      time.Time
	mu             sync.Mutex
	revoked        []*big.Int
}

// NewSNPAuthority generates a fresh simulated AMD root.
func NewSNPAuthority() (*SNPAuthority, error) {
	a := &SNPAuthority{}
	var err error
	// 3072-bit keys keep start-up fast; AMD uses 4096 bits.
	if a.arkKey, err = rsa.GenerateKey(rand.Reader, 3072); err != nil {
		return nil, fmt.Errorf("generating ARK: %w", err)
	}
	if a.askKey, err = rsa.GenerateKey(rand.Reader, 3072); err != nil {
		return nil, fmt.Errorf("generating ASK: %w", err)
	}
	return a, a.certify()
}

func (a *SNPAuthority) certify() error {
	now := time.Now().Add(-time.Hour)
	crlURL := kds.CrlLinkByRole(SNPProductLine, "ARK")
	ark := &x509.Certificate{
		SerialNumber: serial(), Subject: amdName("ARK-" + SNPProductLine), Issuer: amdName("ARK-" + SNPProductLine),
		NotBefore: now, NotAfter: now.AddDate(25, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SignatureAlgorithm: x509.SHA384WithRSAPSS,
		CRLDistributionPoints: []string{crlURL},
	}
	var err error
	if a.ARK, err = createCert(ark, nil, &a.arkKey.PublicKey, a.arkKey); err != nil {
		return err
	}
	ask := &x509.Certificate{
		SerialNumber: serial(), Subject: amdName("SEV-" + SNPProductLine),
		NotBefore: now, NotAfter: now.AddDate(25, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SignatureAlgorithm: x509.SHA384WithRSAPSS,
		CRLDistributionPoints: []string{kds.CrlLinkByRole(SNPProductLine, "ASK")},
	}
	if a.ASK, err = createCert(ask, a.ARK, &a.askKey.PublicKey, a.arkKey); err != nil {
		return err
	}
	return a.signCRL()
}

func (a *SNPAuthority) signCRL() error {
	now := time.Now().Add(-time.Minute)
	der, err := a.crlDER(now, now.Add(7*24*time.Hour), a.revoked)
	if err != nil {
		return err
	}
	a.crl, a.crlSigned = der, now
	return nil
}

func (a *SNPAuthority) crlDER(thisUpdate, nextUpdate time.Time, revoked []*big.Int) ([]byte, error) {
	var entries []x509.RevocationListEntry
	for _, s := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: thisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(thisUpdate.UnixNano()), ThisUpdate: thisUpdate, NextUpdate: nextUpdate,
		SignatureAlgorithm: x509.SHA384WithRSAPSS, RevokedCertificateEntries: entries,
	}, a.ARK, a.arkKey)
	if err != nil {
		return nil, fmt.Errorf("signing CRL: %w", err)
	}
	return der, nil
}

// SignCRL returns a CRL signed by the ARK with the given validity, revoking
// the ASK if revokeASK is set (for tests of stale and replayed CRLs).
func (a *SNPAuthority) SignCRL(thisUpdate, nextUpdate time.Time, revokeASK bool) ([]byte, error) {
	var revoked []*big.Int
	if revokeASK {
		revoked = []*big.Int{a.ASK.SerialNumber}
	}
	return a.crlDER(thisUpdate, nextUpdate, revoked)
}

// RevokeASK puts the ASK on the simulated CRL (for revocation tests).
func (a *SNPAuthority) RevokeASK() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revoked = append(a.revoked, a.ASK.SerialNumber)
	return a.signCRL()
}

// crlRefresh is how often the simulated ARK reissues its CRL, so that it is
// always fresh for a validator's maximum collateral age.
const crlRefresh = time.Hour

// CRL returns the DER CRL signed by the ARK, reissued when older than an
// hour (or empty if reissuing fails).
func (a *SNPAuthority) CRL() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	// an authority loaded from a device file has no ARK key: its CRL is
	// the one in the file, valid until its NextUpdate (7 days)
	if a.arkKey != nil && time.Since(a.crlSigned) > crlRefresh {
		if err := a.signCRL(); err != nil {
			return nil
		}
	}
	return a.crl
}

// CRLURL is where the simulated ASK's CRL lives (AMD's KDS URL; the
// validator keeps simulated artifacts apart).
func (a *SNPAuthority) CRLURL() string {
	return kds.CrlLinkByRole(SNPProductLine, "ASK")
}

// RootPEM returns the ARK and ASK in PEM, the value of SimulatedRoot.
func (a *SNPAuthority) RootPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.ASK.Raw})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.ARK.Raw}))
}

// Save writes the authority's keys and certificates to path (test-only material, mode 0600).
func (a *SNPAuthority) Save(path string) error {
	return savePEM(path, []*rsa.PrivateKey{a.arkKey, a.askKey}, []*x509.Certificate{a.ARK, a.ASK})
}

// LoadOrCreateSNPAuthority loads the authority saved at path, or creates
// and saves a new one, so that a simulated root stays stable across runs.
func LoadOrCreateSNPAuthority(path string) (*SNPAuthority, error) {
	keys, certs, err := loadPEM[*rsa.PrivateKey](path, "SNP", 2)
	if errors.Is(err, os.ErrNotExist) {
		a, err := NewSNPAuthority()
		if err != nil {
			return nil, err
		}
		return a, a.Save(path)
	}
	if err != nil {
		return nil, err
	}
	a := &SNPAuthority{arkKey: keys[0], askKey: keys[1], ARK: certs[0], ASK: certs[1]}
	return a, a.signCRL()
}

// SNPDeviceConfig chooses the values a simulated SNP device reports.
type SNPDeviceConfig struct {
	Measurement  [48]byte
	HostData     [32]byte
	ChipID       [64]byte
	TCB          kds.TCBParts
	Policy       abi.SnpPolicy
	PlatformInfo abi.SnpPlatformInfo
	VMPL         uint32
	// OmitCertificates leaves the certificate table empty, as on a host
	// that did not provision the VCEK.
	OmitCertificates bool
}

// DefaultSNPDeviceConfig returns a plausible configuration: SMT platform,
// ABI 0.0, TCB bl=3 tee=0 snp=8 ucode=115, random chip ID.
func DefaultSNPDeviceConfig() SNPDeviceConfig {
	c := SNPDeviceConfig{
		TCB:          kds.TCBParts{BlSpl: 3, TeeSpl: 0, SnpSpl: 8, UcodeSpl: 115},
		Policy:       abi.SnpPolicy{SMT: true},
		PlatformInfo: abi.SnpPlatformInfo{SMTEnabled: true},
	}
	_, _ = rand.Read(c.ChipID[:])
	_, _ = rand.Read(c.Measurement[:])
	return c
}

// SNPDevice is a simulated SEV-SNP guest device with its own VCEK.
type SNPDevice struct {
	auth     *SNPAuthority
	mu       sync.Mutex
	cfg      SNPDeviceConfig
	vcekKey  *ecdsa.PrivateKey
	VCEK     *x509.Certificate
	certTabl []byte
}

// NewDevice creates a simulated device whose VCEK the authority certifies.
func (a *SNPAuthority) NewDevice(cfg SNPDeviceConfig) (*SNPDevice, error) {
	d := &SNPDevice{auth: a}
	var err error
	if d.vcekKey, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		return nil, fmt.Errorf("generating VCEK: %w", err)
	}
	return d, d.Reconfigure(cfg)
}

// Reconfigure changes the reported values (and recertifies the VCEK for
// the new chip ID and TCB).
func (d *SNPDevice) Reconfigure(cfg SNPDeviceConfig) error {
	if _, err := kds.ComposeTCBParts(cfg.TCB); err != nil {
		return fmt.Errorf("TCB: %w", err)
	}
	if d.auth.askKey == nil {
		// loaded from a device file: the VCEK cannot be recertified
		cur := d.Config()
		if cfg.TCB != cur.TCB || cfg.ChipID != cur.ChipID {
			return errors.New("a device loaded from a device file cannot change its TCB or chip ID (its VCEK certifies them)")
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.cfg = cfg
		d.certTabl = nil
		if !cfg.OmitCertificates {
			d.certTabl = d.table(d.VCEK)
		}
		return nil
	}
	ext := func(id asn1.ObjectIdentifier, v any) pkix.Extension {
		b, _ := asn1.Marshal(v) // small non-negative ints always encode
		return pkix.Extension{Id: id, Value: b}
	}
	ia5, err := asn1.MarshalWithParams("Milan-B1", "ia5")
	if err != nil {
		return fmt.Errorf("encoding product name: %w", err)
	}
	now := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: amdName("SEV-VCEK"),
		NotBefore: now, NotAfter: now.AddDate(7, 0, 0), SignatureAlgorithm: x509.SHA384WithRSAPSS,
		ExtraExtensions: []pkix.Extension{
			ext(oidStructVersion, 1),
			{Id: oidProductName, Value: ia5},
			ext(oidSPL(1), int(cfg.TCB.BlSpl)), ext(oidSPL(2), int(cfg.TCB.TeeSpl)),
			ext(oidSPL(3), int(cfg.TCB.SnpSpl)), ext(oidSPL(4), 0), ext(oidSPL(5), 0),
			ext(oidSPL(6), 0), ext(oidSPL(7), 0), ext(oidSPL(8), int(cfg.TCB.UcodeSpl)),
			{Id: oidHWID, Value: cfg.ChipID[:]},
		},
	}
	vcek, err := createCert(tmpl, d.auth.ASK, &d.vcekKey.PublicKey, d.auth.askKey)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfg, d.VCEK = cfg, vcek
	d.certTabl = nil
	if !cfg.OmitCertificates {
		d.certTabl = d.table(vcek)
	}
	return nil
}

// table returns the certificate table of the device's reports.
func (d *SNPDevice) table(vcek *x509.Certificate) []byte {
	return abi.CertsFromProto(&spb.CertificateChain{VcekCert: vcek.Raw, AskCert: d.auth.ASK.Raw, ArkCert: d.auth.ARK.Raw}).Marshal()
}

// Config returns the device's current configuration.
func (d *SNPDevice) Config() SNPDeviceConfig {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Report returns a signed raw attestation report (version 3) and the
// certificate table.
func (d *SNPDevice) Report(reportData [64]byte) (raw, certs []byte, err error) {
	d.mu.Lock()
	cfg, certs := d.cfg, d.certTabl
	d.mu.Unlock()
	tcb, err := kds.ComposeTCBParts(cfg.TCB)
	if err != nil {
		return nil, nil, fmt.Errorf("TCB: %w", err)
	}
	r := &spb.Report{
		Version: abi.ReportVersion3, GuestSvn: 1, Policy: abi.SnpPolicyToBytes(cfg.Policy),
		FamilyId: make([]byte, 16), ImageId: make([]byte, 16), Vmpl: cfg.VMPL,
		SignatureAlgo: abi.SignEcdsaP384Sha384, CurrentTcb: uint64(tcb), PlatformInfo: platformInfoBits(cfg.PlatformInfo),
		ReportData: reportData[:], Measurement: cfg.Measurement[:], HostData: cfg.HostData[:],
		IdKeyDigest: make([]byte, 48), AuthorKeyDigest: make([]byte, 48), ReportId: make([]byte, 32),
		ReportIdMa: make([]byte, 32), ReportedTcb: uint64(tcb), ChipId: cfg.ChipID[:], CommittedTcb: uint64(tcb),
		CurrentBuild: 21, CurrentMinor: 55, CurrentMajor: 1, CommittedBuild: 21, CommittedMinor: 55, CommittedMajor: 1,
		LaunchTcb: uint64(tcb), Signature: make([]byte, abi.SignatureSize),
		Cpuid1EaxFms: abi.FmsToCpuid1Eax(0x19, 0x01, 0x01),
	}
	raw, err = abi.ReportToAbiBytes(r)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding report: %w", err)
	}
	digest := sha512.Sum384(abi.SignedComponent(raw))
	sig, err := d.vcekKey.Sign(rand.Reader, digest[:], crypto.SHA384)
	if err != nil {
		return nil, nil, fmt.Errorf("signing report: %w", err)
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(sig, &rs); err != nil {
		return nil, nil, fmt.Errorf("decoding signature: %w", err)
	}
	if err := abi.SetSignature(rs.R, rs.S, raw); err != nil {
		return nil, nil, fmt.Errorf("setting signature: %w", err)
	}
	return raw, certs, nil
}

func platformInfoBits(p abi.SnpPlatformInfo) uint64 {
	var v uint64
	for i, b := range []bool{p.SMTEnabled, p.TSMEEnabled, p.ECCEnabled, p.RAPLDisabled, p.CiphertextHidingDRAMEnabled, p.AliasCheckComplete} {
		if b {
			v |= 1 << i
		}
	}
	if p.TIOEnabled {
		v |= 1 << 7
	}
	return v
}

// Artifacts returns what the device's evidence carries beside the report:
// the simulated ARK's current CRL, for snp.IssuerConfig.ArtifactSource.
func (d *SNPDevice) Artifacts() []evidence.Artifact {
	return []evidence.Artifact{{URL: d.auth.CRLURL(), Body: d.auth.CRL()}}
}

// IssuerConfig returns the configuration of an SNP issuer backed by this
// device: its configfs-tsm fake, no device fallback, and the simulated
// ARK's current CRL attached to every evidence frame.
func (d *SNPDevice) IssuerConfig() snp.IssuerConfig {
	return snp.IssuerConfig{TSM: d.TSM(), DisableDeviceFallback: true, ArtifactSource: d.Artifacts}
}

// TSM returns a configfs-tsm client (the go-configfs-tsm fake) backed by
// this device, for snp.IssuerConfig.TSM.
func (d *SNPDevice) TSM() configfsi.Client {
	return tsmClient("sev_guest", func(rd [64]byte) ([]byte, []byte, error) {
		return d.Report(rd)
	})
}

// ReferenceValues returns reference values that accept this device's
// evidence, naming the simulated platform and carrying its root.
func (d *SNPDevice) ReferenceValues() snp.ReferenceValues {
	cfg := d.Config()
	u := func(v uint8) *uint8 { return &v }
	pi := cfg.PlatformInfo
	return snp.ReferenceValues{
		Name:               "simulated",
		Platform:           attest.PlatformSimulatedSNP,
		ProductName:        SNPProductLine,
		TrustedMeasurement: cfg.Measurement[:],
		MinimumTCB: snp.TCB{
			BootloaderVersion: u(cfg.TCB.BlSpl), TEEVersion: u(cfg.TCB.TeeSpl),
			SNPVersion: u(cfg.TCB.SnpSpl), MicrocodeVersion: u(cfg.TCB.UcodeSpl),
		},
		GuestPolicy:    cfg.Policy,
		AllowDebug:     cfg.Policy.Debug,
		PlatformInfo:   &pi,
		AllowedChipIDs: []attest.HexBytes{cfg.ChipID[:]},
		SimulatedRoot:  d.auth.RootPEM(),
	}
}
