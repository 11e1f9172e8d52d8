package tdx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	_ "embed" // the Intel SGX root CA
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/evidence"
)

// intelRootPEM is Intel's SGX Root CA certificate, the trust anchor of
// real TDX evidence (the same certificate go-tdx-guest embeds; a test
// checks that they agree).
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

// IntelRoot returns the trusted Intel SGX Root CA certificate.
func IntelRoot() *x509.Certificate {
	c, err := parseRoot(string(intelRootPEM))
	if err != nil {
		panic(fmt.Sprintf("embedded Intel SGX root: %v", err)) // embedded constant
	}
	return c
}

// TCB statuses of Intel's TCB info and QE identity (Intel's DCAP
// specification). A reference value accepts UpToDate unless its
// AllowedTCBStatuses names others; Revoked is never accepted.
const (
	StatusUpToDate                          = "UpToDate"
	StatusSWHardeningNeeded                 = "SWHardeningNeeded"
	StatusConfigurationNeeded               = "ConfigurationNeeded"
	StatusConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	StatusOutOfDate                         = "OutOfDate"
	StatusOutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	StatusRevoked                           = "Revoked"
)

// acceptableStatuses are the statuses a reference value may allow.
var acceptableStatuses = []string{
	StatusUpToDate, StatusSWHardeningNeeded, StatusConfigurationNeeded, StatusConfigurationAndSWHardeningNeeded,
	StatusOutOfDate, StatusOutOfDateConfigurationNeeded,
}

const (
	tcbSigningCN        = "Intel SGX TCB Signing"
	tcbInfoChainHeader  = "Tcb-Info-Issuer-Chain"
	qeIDChainHeader     = "Sgx-Enclave-Identity-Issuer-Chain"
	tcbInfoMember       = "tcbInfo"
	qeIdentityMember    = "enclaveIdentity"
	tcbInfoIDTDX        = "TDX"
	tcbInfoVersion      = 3
	qeIdentityIDTDX     = "TD_QE"
	qeIdentityVersion   = 2
	tdxModuleIDPrefix   = "TDX_"
	tdxModuleVersionIdx = 1
)

// collateral is Intel's collateral for one platform, each document chosen
// by certcache.Select and checked here.
type collateral struct {
	tcbInfo  pcs.TcbInfo
	qeID     pcs.EnclaveIdentity
	docs     map[string]*certcache.Artifact // by URL, for go-tdx-guest
	until    time.Time
	evidence []string // kinds taken from the evidence, for logs
}

func header(a *certcache.Artifact, name string) string {
	for k, v := range a.Header {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// signerFromChainHeader returns the signing certificate of a PCS issuer
// chain header (URL-escaped PEM: signer, root), verified to chain to root
// at now. The root in the header is ignored: only root is trusted.
func signerFromChainHeader(a *certcache.Artifact, name string, root *x509.Certificate, now time.Time, wantCN string) (*x509.Certificate, error) {
	h := header(a, name)
	if h == "" {
		return nil, fmt.Errorf("no %s header", name)
	}
	p, err := url.QueryUnescape(h)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", name, err)
	}
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		return nil, fmt.Errorf("no certificate in %s", name)
	}
	signer, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing the signer in %s: %w", name, err)
	}
	if signer.Subject.CommonName != wantCN {
		return nil, fmt.Errorf("signer is %q, want %q", signer.Subject.CommonName, wantCN)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := signer.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("signer %q does not chain to the trusted root: %w", signer.Subject.CommonName, err)
	}
	return signer, nil
}

// signedMember verifies a PCS JSON document {member: {...}, "signature":
// hex r‖s} signed by signer (ECDSA P-256, SHA-256 over the member's raw
// bytes) and returns the member's raw JSON.
func signedMember(body []byte, member string, signer *x509.Certificate) (json.RawMessage, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	raw, ok := doc[member]
	if !ok {
		return nil, fmt.Errorf("no %q member", member)
	}
	var sigHex string
	if err := json.Unmarshal(doc["signature"], &sigHex); err != nil {
		return nil, fmt.Errorf("decoding signature: %w", err)
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != 64 {
		return nil, errors.New("signature is not 64 hex-encoded bytes")
	}
	key, ok := signer.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("signer key is not ECDSA")
	}
	h := sha256.Sum256(raw)
	if !ecdsa.Verify(key, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return nil, errors.New("signature does not verify with the TCB signing certificate")
	}
	return raw, nil
}

// revokedIn reports whether any of certs is on crl.
func revokedIn(crl *x509.RevocationList, certs ...*x509.Certificate) *x509.Certificate {
	for _, bad := range crl.RevokedCertificateEntries {
		for _, c := range certs {
			if c.SerialNumber.Cmp(bad.SerialNumber) == 0 {
				return c
			}
		}
	}
	return nil
}

func carriedArtifact(frame *evidence.Frame, u string) *certcache.Artifact {
	for _, a := range frame.Artifacts {
		if a.URL == u {
			return &certcache.Artifact{URL: a.URL, Header: a.Header, Body: a.Body}
		}
	}
	return nil
}

// crlSignedBy returns a verify function for certcache.Select that accepts
// a CRL issued and signed by issuer.
func crlSignedBy(issuer *x509.Certificate) func(*certcache.Artifact) (*x509.RevocationList, time.Time, error) {
	return func(a *certcache.Artifact) (*x509.RevocationList, time.Time, error) {
		crl, err := x509.ParseRevocationList(a.Body)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("parsing CRL: %w", err)
		}
		if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
			return nil, time.Time{}, fmt.Errorf("CRL is not issued by %q", issuer.Subject.CommonName)
		}
		if err := crl.CheckSignatureFrom(issuer); err != nil {
			return nil, time.Time{}, fmt.Errorf("CRL is not signed by %q: %w", issuer.Subject.CommonName, err)
		}
		return crl, crl.ThisUpdate, nil
	}
}

// obtainCollateral chooses and checks the root CA CRL, the PCK CRL, TCB
// info and QE identity for the platform of chain: each the newest
// authentic copy of this verifier's own and the evidence's, signed under
// the trusted root, inside its validity period and MaxCollateralAge, none
// of the chain's or the signers' certificates revoked. CRL failures are
// CheckRevocation, TCB info and QE identity failures CheckCollateral.
func (v *Validator) obtainCollateral(ctx context.Context, frame *evidence.Frame, chain *pckChain, fmspc string, now time.Time) (*collateral, error) {
	fresh := certcache.Freshness{MaxAge: v.cfg.MaxCollateralAge}
	c := &collateral{docs: map[string]*certcache.Artifact{}, until: now.Add(v.cfg.ChainCacheTTL)}
	bound := func(t time.Time) {
		if t.Before(c.until) {
			c.until = t
		}
	}
	use := func(u string, a *certcache.Artifact, fromEvidence bool, kind certcache.Kind) {
		c.docs[u] = a
		if fromEvidence {
			c.evidence = append(c.evidence, kind.String())
		}
	}
	crl := func(u string, issuer *x509.Certificate) (*x509.RevocationList, error) {
		sel, err := certcache.Select(ctx, v.cfg.Cache, v.ns, u, certcache.KindCRL, carriedArtifact(frame, u), crlSignedBy(issuer))
		if err != nil {
			return nil, attest.NewCheckError(attest.CheckRevocation, fmt.Errorf("no usable CRL %s: %w", u, err))
		}
		until, err := fresh.Check(now, sel.Doc.ThisUpdate, sel.Doc.NextUpdate, sel.Artifact.FetchedAt)
		if err != nil {
			return nil, attest.NewCheckError(attest.CheckRevocation, fmt.Errorf("CRL %s: %w", u, err))
		}
		bound(until)
		use(u, sel.Artifact, sel.FromEvidence, certcache.KindCRL)
		return sel.Doc, nil
	}
	rootCRL, err := crl(intelRootCRL, v.root)
	if err != nil {
		return nil, err
	}
	if r := revokedIn(rootCRL, chain.intermediate); r != nil {
		return nil, attest.Errorf(attest.CheckRevocation, "%q certificate %x is revoked by the root CA CRL", r.Subject.CommonName, r.SerialNumber)
	}
	pckCRL, err := crl(pcs.PckCrlURL(caType(chain.pck)), chain.intermediate)
	if err != nil {
		return nil, err
	}
	if r := revokedIn(pckCRL, chain.pck); r != nil {
		return nil, attest.Errorf(attest.CheckRevocation, "PCK certificate %x is revoked by the PCK CRL", r.SerialNumber)
	}

	signed := func(u string, kind certcache.Kind, chainHeader, member string, decode func(json.RawMessage) (issued, next time.Time, err error)) error {
		sel, err := certcache.Select(ctx, v.cfg.Cache, v.ns, u, kind, carriedArtifact(frame, u), func(a *certcache.Artifact) (json.RawMessage, time.Time, error) {
			signer, err := signerFromChainHeader(a, chainHeader, v.root, now, tcbSigningCN)
			if err != nil {
				return nil, time.Time{}, err
			}
			if r := revokedIn(rootCRL, signer); r != nil {
				return nil, time.Time{}, fmt.Errorf("TCB signing certificate %x is revoked by the root CA CRL", r.SerialNumber)
			}
			raw, err := signedMember(a.Body, member, signer)
			if err != nil {
				return nil, time.Time{}, err
			}
			issued, _, err := decode(raw)
			return raw, issued, err
		})
		if err != nil {
			return attest.NewCheckError(attest.CheckCollateral, fmt.Errorf("no usable %s %s: %w", kind, u, err))
		}
		issued, next, err := decode(sel.Doc)
		if err != nil {
			return attest.NewCheckError(attest.CheckCollateral, err)
		}
		until, err := fresh.Check(now, issued, next, sel.Artifact.FetchedAt)
		if err != nil {
			return attest.NewCheckError(attest.CheckCollateral, fmt.Errorf("%s %s: %w", kind, u, err))
		}
		bound(until)
		use(u, sel.Artifact, sel.FromEvidence, kind)
		return nil
	}
	err = signed(pcs.TcbInfoURL(fmspc), certcache.KindTCBInfo, tcbInfoChainHeader, tcbInfoMember, func(raw json.RawMessage) (time.Time, time.Time, error) {
		var ti pcs.TcbInfo
		if err := json.Unmarshal(raw, &ti); err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("decoding TCB info: %w", err)
		}
		if ti.ID != tcbInfoIDTDX || ti.Version != tcbInfoVersion {
			return time.Time{}, time.Time{}, fmt.Errorf("TCB info is %q version %d, want %q version %d", ti.ID, ti.Version, tcbInfoIDTDX, tcbInfoVersion)
		}
		c.tcbInfo = ti
		return ti.IssueDate, ti.NextUpdate, nil
	})
	if err != nil {
		return nil, err
	}
	err = signed(pcs.QeIdentityURL(), certcache.KindQEIdentity, qeIDChainHeader, qeIdentityMember, func(raw json.RawMessage) (time.Time, time.Time, error) {
		var qi pcs.EnclaveIdentity
		if err := json.Unmarshal(raw, &qi); err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("decoding QE identity: %w", err)
		}
		if qi.ID != qeIdentityIDTDX || qi.Version != qeIdentityVersion {
			return time.Time{}, time.Time{}, fmt.Errorf("QE identity is %q version %d, want %q version %d", qi.ID, qi.Version, qeIdentityIDTDX, qeIdentityVersion)
		}
		c.qeID = qi
		return qi.IssueDate, qi.NextUpdate, nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// checkQEIdentity checks the QE report against Intel's QE identity
// (MRSIGNER, ISVPRODID, MISCSELECT and ATTRIBUTES under their masks) and
// returns the TCB status of its ISVSVN.
func checkQEIdentity(qe *pb.EnclaveReport, id *pcs.EnclaveIdentity) (string, error) {
	if !bytes.Equal(qe.GetMrSigner(), id.Mrsigner.Bytes) {
		return "", attest.Errorf(attest.CheckQEIdentity, "QE MRSIGNER %x is not Intel's %x", qe.GetMrSigner(), id.Mrsigner.Bytes)
	}
	if qe.GetIsvProdId() != uint32(id.IsvProdID) {
		return "", attest.Errorf(attest.CheckQEIdentity, "QE ISVPRODID %d is not Intel's %d", qe.GetIsvProdId(), id.IsvProdID)
	}
	if len(id.Miscselect.Bytes) != 4 || len(id.MiscselectMask.Bytes) != 4 {
		return "", attest.Errorf(attest.CheckQEIdentity, "QE identity MISCSELECT or its mask is not 4 bytes")
	}
	mask := binary.LittleEndian.Uint32(id.MiscselectMask.Bytes)
	if got, want := qe.GetMiscSelect()&mask, binary.LittleEndian.Uint32(id.Miscselect.Bytes); got != want {
		return "", attest.Errorf(attest.CheckQEIdentity, "QE MISCSELECT %#x under mask %#x is not Intel's %#x", qe.GetMiscSelect(), mask, want)
	}
	attrs := qe.GetAttributes()
	if len(id.Attributes.Bytes) != len(attrs) || len(id.AttributesMask.Bytes) != len(attrs) {
		return "", attest.Errorf(attest.CheckQEIdentity, "QE identity ATTRIBUTES or its mask is not %d bytes", len(attrs))
	}
	for i := range attrs {
		if attrs[i]&id.AttributesMask.Bytes[i] != id.Attributes.Bytes[i] {
			return "", attest.Errorf(attest.CheckQEIdentity, "QE ATTRIBUTES %x under mask %x are not Intel's %x", attrs, id.AttributesMask.Bytes, id.Attributes.Bytes)
		}
	}
	for _, l := range id.TcbLevels {
		if l.Tcb.Isvsvn <= qe.GetIsvSvn() {
			return string(l.TcbStatus), nil
		}
	}
	return "", attest.Errorf(attest.CheckQEIdentity, "QE ISVSVN %d is below every TCB level of Intel's QE identity", qe.GetIsvSvn())
}

// atLeast reports whether every svn is at least its component's.
func atLeast(svns []byte, comps []pcs.TcbComponent, from int) bool {
	if len(svns) != len(comps) {
		return false
	}
	for i := from; i < len(svns); i++ {
		if svns[i] < comps[i].Svn {
			return false
		}
	}
	return true
}

// converge folds the status of a component (TDX module, QE) into the
// platform's, as Intel's quote verification library does.
func converge(platform, component string) string {
	switch component {
	case StatusRevoked:
		return StatusRevoked
	case StatusOutOfDate:
		switch platform {
		case StatusUpToDate, StatusSWHardeningNeeded:
			return StatusOutOfDate
		case StatusConfigurationNeeded, StatusConfigurationAndSWHardeningNeeded:
			return StatusOutOfDateConfigurationNeeded
		}
	}
	return platform
}

// tcbStatus evaluates the platform against Intel's TCB info: FMSPC and
// PCEID of the PCK certificate, the TDX module's signer and attributes
// (MRSIGNERSEAM, SEAM attributes), then the first TCB level that the PCK
// certificate's CPU SVNs and PCE SVN and the quote's TEE_TCB_SVN reach
// (Intel's algorithm, including the TDX module version and identity), and
// returns that level's status converged with the TDX module's.
func tcbStatus(body *pb.TDQuoteBody, exts *pcs.PckExtensions, ti *pcs.TcbInfo) (string, error) {
	if !strings.EqualFold(exts.FMSPC, ti.Fmspc) || !strings.EqualFold(exts.PCEID, ti.PceID) {
		return "", attest.Errorf(attest.CheckCollateral, "TCB info is for FMSPC %s PCEID %s, the PCK certificate's are %s %s", ti.Fmspc, ti.PceID, exts.FMSPC, exts.PCEID)
	}
	if !bytes.Equal(body.GetMrSignerSeam(), ti.TdxModule.Mrsigner.Bytes) {
		return "", attest.Errorf(attest.CheckTDXModule, "MRSIGNERSEAM %x is not the TDX module signer %x of Intel's TCB info", body.GetMrSignerSeam(), ti.TdxModule.Mrsigner.Bytes)
	}
	seam := body.GetSeamAttributes()
	if len(ti.TdxModule.AttributesMask.Bytes) != len(seam) || len(ti.TdxModule.Attributes.Bytes) != len(seam) {
		return "", attest.Errorf(attest.CheckTDXModule, "TCB info's TDX module attributes or mask is not %d bytes", len(seam))
	}
	for i := range seam {
		if seam[i]&ti.TdxModule.AttributesMask.Bytes[i] != ti.TdxModule.Attributes.Bytes[i] {
			return "", attest.Errorf(attest.CheckTDXModule, "SEAM attributes %x under mask %x are not %x", seam, ti.TdxModule.AttributesMask.Bytes, ti.TdxModule.Attributes.Bytes)
		}
	}
	tee := body.GetTeeTcbSvn()
	from := 0
	if tee[tdxModuleVersionIdx] > 0 {
		from = 2 // the TDX module's SVNs are evaluated by its identity below
	}
	idx := slices.IndexFunc(ti.TcbLevels, func(l pcs.TcbLevel) bool {
		return atLeast(exts.TCB.CPUSvnComponents, l.Tcb.SgxTcbcomponents, 0) && exts.TCB.PCESvn >= l.Tcb.Pcesvn &&
			atLeast(tee, l.Tcb.TdxTcbcomponents, from)
	})
	if idx < 0 {
		return "", attest.Errorf(attest.CheckTCBStatus, "no TCB level of Intel's TCB info (evaluation data number %d) matches the platform (CPU SVN %x, PCE SVN %d, TEE_TCB_SVN %x): TCB not supported",
			ti.TcbEvaluationDataNumber, exts.TCB.CPUSvnComponents, exts.TCB.PCESvn, tee)
	}
	level := ti.TcbLevels[idx]
	if got := level.Tcb.TdxTcbcomponents[tdxModuleVersionIdx].Svn; got != tee[tdxModuleVersionIdx] {
		return "", attest.Errorf(attest.CheckTCBStatus, "matching TCB level is for TDX module version %d, the platform runs %d: TCB not supported", got, tee[tdxModuleVersionIdx])
	}
	status := string(level.TcbStatus)
	if tee[tdxModuleVersionIdx] > 0 {
		id := tdxModuleIDPrefix + hex.EncodeToString(tee[tdxModuleVersionIdx:tdxModuleVersionIdx+1])
		mi := slices.IndexFunc(ti.TdxModuleIdentities, func(m pcs.TdxModuleIdentity) bool { return strings.EqualFold(m.ID, id) })
		if mi < 0 {
			return "", attest.Errorf(attest.CheckTCBStatus, "Intel's TCB info has no TDX module identity %s: TCB not supported", id)
		}
		mod := ti.TdxModuleIdentities[mi]
		li := slices.IndexFunc(mod.TcbLevels, func(l pcs.TcbLevel) bool { return uint32(tee[0]) >= l.Tcb.Isvsvn })
		if li < 0 {
			return "", attest.Errorf(attest.CheckTCBStatus, "TDX module %s ISVSVN %d is below every TCB level: TCB not supported", id, tee[0])
		}
		status = converge(status, string(mod.TcbLevels[li].TcbStatus))
	}
	return status, nil
}
