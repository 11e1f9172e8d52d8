package sim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/evidence"
	"github.com/contrast-cc/contrast/attest/tdx"
)

// IntelRootCRLURL is where the simulated root claims its CRL lives (the
// real Intel URL; the validator's cache keeps simulated artifacts apart).
const IntelRootCRLURL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

var (
	oidSGXExt   = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oidPPID     = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 1}
	oidTCB      = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 2}
	oidPCEID    = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 3}
	oidFMSPC    = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 4}
	oidSGXType  = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 5}
	oidPlatID   = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 6}
	oidConfig   = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7}
	qeVendorID  = []byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}
	simFMSPC    = []byte{0x50, 0x80, 0x6f, 0x00, 0x00, 0x00}
	simPCEID    = []byte{0x00, 0x00}
	simMRSigner = make([]byte, 32)
)

// TDXAuthority is a simulated Intel SGX root with a PCK platform CA and a
// TCB signing key for collateral. All keys are ECDSA P-256, as Intel's.
type TDXAuthority struct {
	rootKey, caKey, tcbKey *ecdsa.PrivateKey
	Root, PlatformCA, TCB  *x509.Certificate
}

// NewTDXAuthority generates a fresh simulated Intel root.
func NewTDXAuthority() (*TDXAuthority, error) {
	a := &TDXAuthority{}
	for _, k := range []**ecdsa.PrivateKey{&a.rootKey, &a.caKey, &a.tcbKey} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating key: %w", err)
		}
		*k = key
	}
	now := time.Now().Add(-time.Hour)
	var err error
	a.Root, err = createCert(&x509.Certificate{
		SerialNumber: serial(), Subject: intelName("Intel SGX Root CA"), NotBefore: now, NotAfter: now.AddDate(30, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SignatureAlgorithm: x509.ECDSAWithSHA256, CRLDistributionPoints: []string{IntelRootCRLURL},
	}, nil, &a.rootKey.PublicKey, a.rootKey)
	if err != nil {
		return nil, err
	}
	a.PlatformCA, err = createCert(&x509.Certificate{
		SerialNumber: serial(), Subject: intelName("Intel SGX PCK Platform CA"), NotBefore: now, NotAfter: now.AddDate(15, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SignatureAlgorithm: x509.ECDSAWithSHA256, CRLDistributionPoints: []string{IntelRootCRLURL},
	}, a.Root, &a.caKey.PublicKey, a.rootKey)
	if err != nil {
		return nil, err
	}
	a.TCB, err = createCert(&x509.Certificate{
		SerialNumber: serial(), Subject: intelName("Intel SGX TCB Signing"), NotBefore: now, NotAfter: now.AddDate(7, 0, 0),
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature, SignatureAlgorithm: x509.ECDSAWithSHA256,
		CRLDistributionPoints: []string{IntelRootCRLURL},
	}, a.Root, &a.tcbKey.PublicKey, a.rootKey)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// RootPEM returns the simulated root certificate, the value of SimulatedRoot.
func (a *TDXAuthority) RootPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Root.Raw}))
}

// TDXDeviceConfig chooses the values a simulated TD reports.
type TDXDeviceConfig struct {
	MrTd, MrSeam, MrConfigID [48]byte
	Rtmrs                    [4][48]byte
	Xfam, TdAttributes       [8]byte
	TeeTcbSvn                [16]byte
	QeSvn                    uint16
	PPID                     [16]byte
	// WithCollateral attaches signed TCB info, QE identity and CRLs.
	WithCollateral bool
	// TCBOutOfDate marks the platform's TCB level OutOfDate in the TCB info.
	TCBOutOfDate bool
	// TCBEvaluationDataNumber is the tcbEvaluationDataNumber of the TCB
	// info and QE identity.
	TCBEvaluationDataNumber int
	// SGXType is the PCK certificate's SGX type: 0 standard, 1 scalable,
	// 2 scalable with integrity.
	SGXType int
	// DynamicPlatform and SMTEnabled are the PCK certificate's platform
	// configuration; NoPlatformConfig omits it, as a certificate of the
	// PCK Processor CA does.
	DynamicPlatform, SMTEnabled, NoPlatformConfig bool
}

// DefaultTDXDeviceConfig returns a plausible TD: SEPT_VE_DISABLE set,
// debug off, typical XFAM, random measurements and PPID, with collateral
// (TCB evaluation data number 17), on a scalable, dynamic platform with
// SMT, as the Sapphire Rapids sample of go-tdx-guest.
func DefaultTDXDeviceConfig() TDXDeviceConfig {
	c := TDXDeviceConfig{QeSvn: 8, WithCollateral: true, TCBEvaluationDataNumber: 17, SGXType: 1, DynamicPlatform: true, SMTEnabled: true}
	for _, b := range [][]byte{c.MrTd[:], c.MrSeam[:], c.PPID[:], c.Rtmrs[0][:], c.Rtmrs[1][:], c.Rtmrs[2][:]} {
		_, _ = rand.Read(b)
	}
	binary.LittleEndian.PutUint64(c.Xfam[:], 0x602e7)
	binary.LittleEndian.PutUint64(c.TdAttributes[:], 1<<28)
	c.TeeTcbSvn = [16]byte{3, 0, 5}
	return c
}

// TDXDevice is a simulated TDX guest with its quoting enclave: it signs
// v4 quotes with an ECDSA P-256 attestation key certified by a QE report
// that its PCK key signs.
type TDXDevice struct {
	auth       *TDXAuthority
	mu         sync.Mutex
	cfg        TDXDeviceConfig
	akKey      *ecdsa.PrivateKey
	pckKey     *ecdsa.PrivateKey
	PCK        *x509.Certificate
	chain      []byte
	qeCert     *pb.QEReportCertificationData
	attData    []evidence.Artifact
	attDataAge time.Time
}

// NewDevice creates a simulated TD whose PCK the authority certifies.
func (a *TDXAuthority) NewDevice(cfg TDXDeviceConfig) (*TDXDevice, error) {
	d := &TDXDevice{auth: a}
	var err error
	if d.akKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, fmt.Errorf("generating attestation key: %w", err)
	}
	if d.pckKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, fmt.Errorf("generating PCK: %w", err)
	}
	return d, d.Reconfigure(cfg)
}

func sgxExtension(cfg TDXDeviceConfig) (pkix.Extension, error) {
	type kv struct {
		ID    asn1.ObjectIdentifier
		Value any
	}
	var tcb []any
	for i := 1; i <= 16; i++ {
		tcb = append(tcb, kv{append(append(asn1.ObjectIdentifier{}, oidTCB...), i), 2})
	}
	tcb = append(tcb, kv{append(append(asn1.ObjectIdentifier{}, oidTCB...), 17), 11})
	tcb = append(tcb, kv{append(append(asn1.ObjectIdentifier{}, oidTCB...), 18), make([]byte, 16)})
	type seq struct {
		ID    asn1.ObjectIdentifier
		Value []any
	}
	sub := func(parent asn1.ObjectIdentifier, i int) asn1.ObjectIdentifier {
		return append(append(asn1.ObjectIdentifier{}, parent...), i)
	}
	exts := []any{
		kv{oidPPID, cfg.PPID[:]},
		seq{oidTCB, tcb},
		kv{oidPCEID, simPCEID},
		kv{oidFMSPC, simFMSPC},
		kv{oidSGXType, asn1.Enumerated(cfg.SGXType)},
	}
	if !cfg.NoPlatformConfig {
		exts = append(exts, kv{oidPlatID, cfg.PPID[:]}, seq{oidConfig, []any{
			kv{sub(oidConfig, 1), cfg.DynamicPlatform}, kv{sub(oidConfig, 2), false}, kv{sub(oidConfig, 3), cfg.SMTEnabled},
		}})
	}
	val, err := asn1.Marshal(exts)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encoding SGX extension: %w", err)
	}
	return pkix.Extension{Id: oidSGXExt, Value: val}, nil
}

// Reconfigure changes the reported values (and recertifies the PCK).
func (d *TDXDevice) Reconfigure(cfg TDXDeviceConfig) error {
	ext, err := sgxExtension(cfg)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	pck, err := createCert(&x509.Certificate{
		SerialNumber: serial(), Subject: intelName("Intel SGX PCK Certificate"), NotBefore: now, NotAfter: now.AddDate(7, 0, 0),
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		SignatureAlgorithm: x509.ECDSAWithSHA256, SubjectKeyId: []byte{1, 2, 3, 4},
		CRLDistributionPoints: []string{pcs.PckCrlURL("platform")}, ExtraExtensions: []pkix.Extension{ext},
	}, d.auth.PlatformCA, &d.pckKey.PublicKey, d.auth.caKey)
	if err != nil {
		return err
	}
	var chain []byte
	for _, c := range []*x509.Certificate{pck, d.auth.PlatformCA, d.auth.Root} {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	// The QE report binds the attestation key: REPORT_DATA = SHA-256(AK ‖ QE auth data) ‖ zeros.
	ak := attestationKeyBytes(&d.akKey.PublicKey)
	authData := []byte("contrast simulated QE")
	h := sha256.Sum256(append(append([]byte{}, ak...), authData...))
	qeReport := &pb.EnclaveReport{
		CpuSvn: make([]byte, 16), Reserved1: make([]byte, 28), Attributes: make([]byte, 16),
		MrEnclave: make([]byte, 32), Reserved2: make([]byte, 32), MrSigner: simMRSigner, Reserved3: make([]byte, 96),
		IsvProdId: 2, IsvSvn: uint32(cfg.QeSvn), Reserved4: make([]byte, 60), ReportData: append(h[:], make([]byte, 32)...),
	}
	rawQE, err := abi.EnclaveReportToAbiBytes(qeReport)
	if err != nil {
		return fmt.Errorf("encoding QE report: %w", err)
	}
	qeSig, err := signP256(d.pckKey, rawQE)
	if err != nil {
		return err
	}
	qeCert := &pb.QEReportCertificationData{
		QeReport: qeReport, QeReportSignature: qeSig,
		QeAuthData:              &pb.QeAuthData{ParsedDataSize: uint32(len(authData)), Data: authData},                              //nolint:gosec // constant length
		PckCertificateChainData: &pb.PCKCertificateChainData{CertificateDataType: 5, Size: uint32(len(chain)), PckCertChain: chain}, //nolint:gosec // small
	}
	var arts []evidence.Artifact
	if cfg.WithCollateral {
		if arts, err = d.auth.collateral(cfg, pck, TDXCollateralOptions{}); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfg, d.PCK, d.chain, d.qeCert, d.attData, d.attDataAge = cfg, pck, chain, qeCert, arts, time.Now()
	return nil
}

func attestationKeyBytes(k *ecdsa.PublicKey) []byte {
	b, err := k.Bytes() // 0x04 ‖ X ‖ Y
	if err != nil || len(b) != 65 {
		panic("P-256 public key encoding") // cannot happen for a generated P-256 key
	}
	return b[1:]
}

// signP256 returns the raw r‖s ECDSA-SHA256 signature of msg.
func signP256(k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	h := sha256.Sum256(msg)
	der, err := ecdsa.SignASN1(rand.Reader, k, h[:])
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &rs); err != nil {
		return nil, fmt.Errorf("decoding signature: %w", err)
	}
	out := make([]byte, 64)
	rs.R.FillBytes(out[:32])
	rs.S.FillBytes(out[32:])
	return out, nil
}

// Config returns the device's current configuration.
func (d *TDXDevice) Config() TDXDeviceConfig {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Quote returns a signed TDX v4 quote for reportData.
func (d *TDXDevice) Quote(reportData [64]byte) ([]byte, error) {
	d.mu.Lock()
	cfg, qeCert := d.cfg, d.qeCert
	d.mu.Unlock()
	qeSvn := make([]byte, 2)
	binary.LittleEndian.PutUint16(qeSvn, cfg.QeSvn)
	rtmrs := make([][]byte, 4)
	for i := range rtmrs {
		rtmrs[i] = cfg.Rtmrs[i][:]
	}
	q := &pb.QuoteV4{
		Header: &pb.Header{
			Version: 4, AttestationKeyType: 2, TeeType: abi.TeeTDX, QeSvn: qeSvn, PceSvn: []byte{11, 0},
			QeVendorId: qeVendorID, UserData: make([]byte, 20),
		},
		TdQuoteBody: &pb.TDQuoteBody{
			TeeTcbSvn: cfg.TeeTcbSvn[:], MrSeam: cfg.MrSeam[:], MrSignerSeam: make([]byte, 48), SeamAttributes: make([]byte, 8),
			TdAttributes: cfg.TdAttributes[:], Xfam: cfg.Xfam[:], MrTd: cfg.MrTd[:], MrConfigId: cfg.MrConfigID[:],
			MrOwner: make([]byte, 48), MrOwnerConfig: make([]byte, 48), Rtmrs: rtmrs, ReportData: reportData[:],
		},
	}
	header, err := abi.HeaderToAbiBytes(q.Header)
	if err != nil {
		return nil, fmt.Errorf("encoding header: %w", err)
	}
	body, err := abi.TdQuoteBodyToAbiBytes(q.TdQuoteBody)
	if err != nil {
		return nil, fmt.Errorf("encoding body: %w", err)
	}
	sig, err := signP256(d.akKey, append(header, body...))
	if err != nil {
		return nil, err
	}
	chainLen := uint32(len(qeCert.PckCertificateChainData.PckCertChain)) //nolint:gosec // small
	certSize := 384 + 64 + 2 + qeCert.QeAuthData.ParsedDataSize + 6 + chainLen
	q.SignedData = &pb.Ecdsa256BitQuoteV4AuthData{
		Signature: sig, EcdsaAttestationKey: attestationKeyBytes(&d.akKey.PublicKey),
		CertificationData: &pb.CertificationData{CertificateDataType: 6, Size: certSize, QeReportCertificationData: qeCert},
	}
	q.SignedDataSize = 64 + 64 + 6 + certSize
	return abi.QuoteToAbiBytes(q)
}

// Artifacts returns the collateral attached to this device's evidence
// (none without WithCollateral), reissued when older than an hour so that
// it stays within a validator's maximum collateral age; for
// tdx.IssuerConfig.ArtifactSource.
func (d *TDXDevice) Artifacts() []evidence.Artifact {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.WithCollateral && time.Since(d.attDataAge) > collateralRefresh {
		if arts, err := d.auth.collateral(d.cfg, d.PCK, TDXCollateralOptions{}); err == nil {
			d.attData, d.attDataAge = arts, time.Now()
		}
	}
	return d.attData
}

// collateralRefresh is how often simulated collateral is reissued.
const collateralRefresh = time.Hour

// TDXCollateralOptions change the simulated collateral, for tests of what
// a validator must refuse. The zero value is what Artifacts returns.
type TDXCollateralOptions struct {
	// IssuedAt is the issue date of every document (TCB info, QE
	// identity, CRLs); zero means an hour ago.
	IssuedAt time.Time
	// NextUpdate of every document; zero means IssuedAt plus 30 days.
	NextUpdate time.Time
	// TCBStatus of the platform's TCB level; empty means UpToDate (or
	// OutOfDate with TDXDeviceConfig.TCBOutOfDate).
	TCBStatus string
	// QEStatus of the QE's TCB level; empty means UpToDate.
	QEStatus string
	// QEMrSigner replaces the QE identity's MRSIGNER.
	QEMrSigner []byte
	// MrSignerSeam replaces the TCB info's TDX module signer.
	MrSignerSeam []byte
	// RevokePCK puts the device's PCK certificate on the PCK CRL.
	RevokePCK bool
	// RevokeTCBSigner puts the TCB signing certificate on the root CA CRL.
	RevokeTCBSigner bool
}

// Collateral returns collateral for this device's platform, signed under
// the simulated root, changed by opts.
func (d *TDXDevice) Collateral(opts TDXCollateralOptions) ([]evidence.Artifact, error) {
	d.mu.Lock()
	cfg, pck := d.cfg, d.PCK
	d.mu.Unlock()
	return d.auth.collateral(cfg, pck, opts)
}

// IssuerConfig returns the configuration of a TDX issuer backed by this
// device: its configfs-tsm fake, no device fallback, and its current
// collateral attached to every evidence frame.
func (d *TDXDevice) IssuerConfig() tdx.IssuerConfig {
	return tdx.IssuerConfig{TSM: d.TSM(), DisableDeviceFallback: true, ArtifactSource: d.Artifacts}
}

// TSM returns a configfs-tsm client (the go-configfs-tsm fake) backed by
// this device, for tdx.IssuerConfig.TSM.
func (d *TDXDevice) TSM() configfsi.Client {
	return tsmClient("tdx_guest", func(rd [64]byte) ([]byte, []byte, error) {
		q, err := d.Quote(rd)
		return q, nil, err
	})
}

// ReferenceValues returns reference values that accept this device's
// evidence, naming the simulated platform and carrying its root.
func (d *TDXDevice) ReferenceValues() tdx.ReferenceValues {
	cfg := d.Config()
	var rtmrs [4]attest.HexBytes
	for i := range rtmrs {
		rtmrs[i] = cfg.Rtmrs[i][:]
	}
	qe := cfg.QeSvn
	return tdx.ReferenceValues{
		Name: "simulated", Platform: attest.PlatformSimulatedTDX,
		MrTd: cfg.MrTd[:], MrSeam: cfg.MrSeam[:], Rtmrs: rtmrs, Xfam: cfg.Xfam[:], TdAttributes: cfg.TdAttributes[:],
		AllowDebug: cfg.TdAttributes[0]&1 == 1, MinimumTeeTcbSvn: cfg.TeeTcbSvn[:], MinimumQeSvn: &qe,
		AllowedPIIDs: []attest.HexBytes{cfg.PPID[:]}, SimulatedRoot: d.auth.RootPEM(),
	}
}

// collateral produces TCB info, QE identity and CRLs signed under the
// simulated root, with the response headers Intel PCS sends.
func (a *TDXAuthority) collateral(cfg TDXDeviceConfig, pck *x509.Certificate, opts TDXCollateralOptions) ([]evidence.Artifact, error) {
	issued := opts.IssuedAt
	if issued.IsZero() {
		issued = time.Now().Add(-time.Hour)
	}
	issued = issued.UTC().Truncate(time.Second)
	next := opts.NextUpdate
	if next.IsZero() {
		next = issued.Add(30 * 24 * time.Hour)
	}
	next = next.UTC().Truncate(time.Second)
	comps := func(vals []byte) []map[string]any {
		out := make([]map[string]any, len(vals))
		for i, v := range vals {
			out[i] = map[string]any{"svn": v}
		}
		return out
	}
	status := opts.TCBStatus
	if status == "" {
		status = "UpToDate"
		if cfg.TCBOutOfDate {
			status = "OutOfDate"
		}
	}
	qeStatus := opts.QEStatus
	if qeStatus == "" {
		qeStatus = "UpToDate"
	}
	qeSigner := simMRSigner
	if opts.QEMrSigner != nil {
		qeSigner = opts.QEMrSigner
	}
	seamSigner := make([]byte, 48)
	if opts.MrSignerSeam != nil {
		seamSigner = opts.MrSignerSeam
	}
	sgx := make([]byte, 16)
	for i := range sgx {
		sgx[i] = 2
	}
	tcbInfo := map[string]any{
		"id": "TDX", "version": 3, "issueDate": issued, "nextUpdate": next,
		"fmspc": hex.EncodeToString(simFMSPC), "pceId": hex.EncodeToString(simPCEID), "tcbType": 0, "tcbEvaluationDataNumber": cfg.TCBEvaluationDataNumber,
		"tdxModule": map[string]any{"mrsigner": hex.EncodeToString(seamSigner), "attributes": "0000000000000000", "attributesMask": "ffffffffffffffff"},
		"tcbLevels": []any{map[string]any{
			"tcb":     map[string]any{"sgxtcbcomponents": comps(sgx), "pcesvn": 11, "tdxtcbcomponents": comps(cfg.TeeTcbSvn[:])},
			"tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": status,
		}},
	}
	qeID := map[string]any{
		"id": "TD_QE", "version": 2, "issueDate": issued, "nextUpdate": next,
		"tcbEvaluationDataNumber": cfg.TCBEvaluationDataNumber, "miscselect": "00000000", "miscselectMask": "ffffffff",
		"attributes": hex.EncodeToString(make([]byte, 16)), "attributesMask": hex.EncodeToString(make([]byte, 16)),
		"mrsigner": hex.EncodeToString(qeSigner), "isvprodid": 2,
		"tcbLevels": []any{map[string]any{"tcb": map[string]any{"isvsvn": cfg.QeSvn}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": qeStatus}},
	}
	signed := func(name string, v any) ([]byte, error) {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", name, err)
		}
		sig, err := signP256(a.tcbKey, raw)
		if err != nil {
			return nil, err
		}
		return json.Marshal(map[string]any{name: json.RawMessage(raw), "signature": hex.EncodeToString(sig)})
	}
	tcbBody, err := signed("tcbInfo", tcbInfo)
	if err != nil {
		return nil, err
	}
	qeBody, err := signed("enclaveIdentity", qeID)
	if err != nil {
		return nil, err
	}
	issuerChain := func(inter *x509.Certificate) string {
		p := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: inter.Raw}),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Root.Raw})...)
		return url.QueryEscape(string(p))
	}
	crl := func(issuer *x509.Certificate, key *ecdsa.PrivateKey, revoked ...*x509.Certificate) ([]byte, error) {
		var entries []x509.RevocationListEntry
		for _, c := range revoked {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: issued})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(issued.Unix()), ThisUpdate: issued, NextUpdate: next,
			SignatureAlgorithm: x509.ECDSAWithSHA256, RevokedCertificateEntries: entries,
		}, issuer, key)
		if err != nil {
			return nil, fmt.Errorf("signing CRL: %w", err)
		}
		return der, nil
	}
	var revokedPCK, revokedRoot []*x509.Certificate
	if opts.RevokePCK {
		revokedPCK = append(revokedPCK, pck)
	}
	if opts.RevokeTCBSigner {
		revokedRoot = append(revokedRoot, a.TCB)
	}
	pckCRL, err := crl(a.PlatformCA, a.caKey, revokedPCK...)
	if err != nil {
		return nil, err
	}
	rootCRL, err := crl(a.Root, a.rootKey, revokedRoot...)
	if err != nil {
		return nil, err
	}
	return []evidence.Artifact{
		{URL: pcs.TcbInfoURL(hex.EncodeToString(simFMSPC)), Header: map[string]string{"Tcb-Info-Issuer-Chain": issuerChain(a.TCB)}, Body: tcbBody},
		{URL: pcs.QeIdentityURL(), Header: map[string]string{"Sgx-Enclave-Identity-Issuer-Chain": issuerChain(a.TCB)}, Body: qeBody},
		{URL: pcs.PckCrlURL("platform"), Header: map[string]string{"Sgx-Pck-Crl-Issuer-Chain": issuerChain(a.PlatformCA)}, Body: pckCRL},
		{URL: IntelRootCRLURL, Body: rootCRL},
	}, nil
}

// Save writes the authority's keys and certificates to path (test-only material, mode 0600).
func (a *TDXAuthority) Save(path string) error {
	return savePEM(path, []*ecdsa.PrivateKey{a.rootKey, a.caKey, a.tcbKey}, []*x509.Certificate{a.Root, a.PlatformCA, a.TCB})
}

// LoadOrCreateTDXAuthority loads the authority saved at path, or creates
// and saves a new one, so that a simulated root stays stable across runs.
func LoadOrCreateTDXAuthority(path string) (*TDXAuthority, error) {
	keys, certs, err := loadPEM[*ecdsa.PrivateKey](path, "TDX", 3)
	if errors.Is(err, os.ErrNotExist) {
		a, err := NewTDXAuthority()
		if err != nil {
			return nil, err
		}
		return a, a.Save(path)
	}
	if err != nil {
		return nil, err
	}
	return &TDXAuthority{rootKey: keys[0], caKey: keys[1], tcbKey: keys[2], Root: certs[0], PlatformCA: certs[1], TCB: certs[2]}, nil
}
