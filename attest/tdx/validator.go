package tdx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/validate"
	"github.com/google/go-tdx-guest/verify"
	"google.golang.org/protobuf/proto"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/evidence"
)

const intelRootCRL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

// Config configures a Validator.
type Config struct {
	// ReferenceValues: evidence is accepted if any entry validates. All
	// entries must be real, or all simulated with the same SimulatedRoot.
	ReferenceValues []ReferenceValues
	// ExpectedMrConfigID, if set, must equal MRCONFIGID (the policy digest).
	ExpectedMrConfigID []byte
	// Cache fetches collateral; defaults to an online cache.
	Cache *certcache.Cache
	// MaxCollateralAge bounds the age of TCB info, QE identity and the
	// CRLs, which are always required (see certcache.Freshness). Zero
	// means certcache.DefaultMaxAge.
	MaxCollateralAge time.Duration
	// ChainCacheTTL bounds how long a verified PCK chain, QE report and
	// collateral verdict is reused. Zero means 10 minutes; it is further
	// bounded by the collateral's next updates and maximum age.
	ChainCacheTTL time.Duration
	// Now is the clock; defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Validator validates TDX evidence. It is safe for concurrent use.
type Validator struct {
	cfg      Config
	platform attest.Platform
	ns       string
	roots    *x509.CertPool
	root     *x509.Certificate
	rootID   []byte
	mu       sync.RWMutex
	verified map[[32]byte]*platformEntry
}

type platformEntry struct {
	signed *pb.Ecdsa256BitQuoteV4AuthData
	ak     *ecdsa.PublicKey
	ppid   []byte
	// pck is what the PCK certificate says about the platform.
	pck pckPlatform
	// tcbEvalNum is the tcbEvaluationDataNumber of the chosen collateral
	// (the smaller of TCB info and QE identity); 0 if it was not obtained.
	tcbEvalNum int
	until      time.Time
	// status is the platform's TCB status per Intel's collateral.
	status string
	// collErr is the failed collateral, revocation, QE identity, TDX
	// module or TCB level check of a quote whose signatures verified; it
	// is reported after the reference-value checks. Such entries are
	// never cached.
	collErr error
}

// NewValidator returns a Validator for cfg, filling defaults.
func NewValidator(cfg Config) (*Validator, error) {
	platform, simRoot, err := attest.CheckReferenceSet(cfg.ReferenceValues, attest.PlatformTDX, attest.PlatformSimulatedTDX,
		func(rv *ReferenceValues) string { return rv.SimulatedRoot })
	if err != nil {
		return nil, err
	}
	v := &Validator{verified: map[[32]byte]*platformEntry{}, platform: platform}
	v.rootID = []byte("intel")
	v.root = IntelRoot()
	if v.platform == attest.PlatformSimulatedTDX {
		root, err := parseRoot(simRoot)
		if err != nil {
			return nil, err
		}
		v.root = root
		sum := sha256.Sum256(root.Raw)
		v.rootID = sum[:]
		v.ns = "tdx-sim-" + hex.EncodeToString(sum[:8])
	}
	v.roots = x509.NewCertPool()
	v.roots.AddCert(v.root)
	if cfg.Cache == nil {
		cfg.Cache = certcache.New(certcache.Config{})
	}
	if cfg.ChainCacheTTL == 0 {
		cfg.ChainCacheTTL = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	v.cfg = cfg
	return v, nil
}

// Platform returns the platform this validator accepts.
func (v *Validator) Platform() attest.Platform { return v.platform }

// CacheNamespace is the certcache namespace of the validator's documents:
// "" (the real vendor services) for hardware, a namespace of its own for
// each simulated root.
func (v *Validator) CacheNamespace() string { return v.ns }

type pckChain struct{ pck, intermediate, root *x509.Certificate }

// checkQuoteLayout walks the v4 quote layout and checks that every
// declared length lies within the buffer. go-tdx-guest v0.3.1's
// abi.QuoteToProto panics (slice bounds out of range) on some malformed
// quotes, which fuzzing found; this check runs first.
func checkQuoteLayout(raw []byte) error {
	const (
		headerAndBody = 48 + 584
		qeReportLen   = 384
		sigLen        = 64
	)
	need := func(off, n int) error {
		if n < 0 || off < 0 || off+n > len(raw) {
			return fmt.Errorf("quote truncated: need %d bytes at offset %d, have %d", n, off, len(raw))
		}
		return nil
	}
	if err := need(0, headerAndBody+4); err != nil {
		return err
	}
	if v := binary.LittleEndian.Uint16(raw[0:2]); v != 4 {
		return fmt.Errorf("quote version %d, want 4", v)
	}
	off := headerAndBody
	signedLen := int(binary.LittleEndian.Uint32(raw[off:]))
	off += 4
	if err := need(off, signedLen); err != nil {
		return err
	}
	end := off + signedLen
	raw = raw[:end]
	// signature, attestation key, certification data type and size.
	if err := need(off, sigLen+64+6); err != nil {
		return err
	}
	off += sigLen + 64
	if t := binary.LittleEndian.Uint16(raw[off:]); t != 6 {
		return fmt.Errorf("certification data type %d, want 6", t)
	}
	certLen := int(binary.LittleEndian.Uint32(raw[off+2:]))
	off += 6
	if off+certLen != end {
		return fmt.Errorf("certification data size %d does not fill the signed data", certLen)
	}
	if err := need(off, qeReportLen+sigLen+2); err != nil {
		return err
	}
	off += qeReportLen + sigLen
	authLen := int(binary.LittleEndian.Uint16(raw[off:]))
	off += 2
	if err := need(off, authLen+6); err != nil {
		return err
	}
	off += authLen
	if t := binary.LittleEndian.Uint16(raw[off:]); t != 5 {
		return fmt.Errorf("PCK certification data type %d, want 5", t)
	}
	chainLen := int(binary.LittleEndian.Uint32(raw[off+2:]))
	off += 6
	if off+chainLen != end {
		return fmt.Errorf("PCK chain size %d does not fill the certification data", chainLen)
	}
	return nil
}

// parseQuote checks the layout of a raw v4 quote and parses it.
func parseQuote(raw []byte) (*pb.QuoteV4, error) {
	if err := checkQuoteLayout(raw); err != nil {
		return nil, err
	}
	return decodeQuote(raw)
}

// decodeQuote parses a raw v4 quote. Requires checkQuoteLayout.
func decodeQuote(raw []byte) (q *pb.QuoteV4, err error) {
	defer func() {
		if r := recover(); r != nil {
			q, err = nil, fmt.Errorf("parsing quote: malformed input (%v)", r)
		}
	}()
	anyQ, err := abi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing quote: %w", err)
	}
	q, ok := anyQ.(*pb.QuoteV4)
	if !ok || q == nil {
		return nil, fmt.Errorf("unsupported quote type %T", anyQ)
	}
	return q, nil
}

// parseChain parses the PCK certificate chain carried in the quote.
func parseChain(q *pb.QuoteV4) (*pckChain, error) {
	pemChain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	var certs []*x509.Certificate
	for len(certs) < 3 {
		var b *pem.Block
		b, pemChain = pem.Decode(pemChain)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing PCK chain: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 3 {
		return nil, fmt.Errorf("PCK chain has %d certificates, want 3", len(certs))
	}
	return &pckChain{pck: certs[0], intermediate: certs[1], root: certs[2]}, nil
}

func caType(pck *x509.Certificate) string {
	if pck.Issuer.CommonName == "Intel SGX PCK Processor CA" {
		return "processor"
	}
	return "platform"
}

// Validate implements attest.Validator.
func (v *Validator) Validate(ctx context.Context, ev []byte, reportData [64]byte) (*attest.Result, error) {
	frame, err := evidence.Unmarshal(ev)
	if err != nil {
		return nil, attest.NewCheckError(attest.CheckFormat, err)
	}
	if frame.Kind != evidence.KindTDX {
		return nil, attest.Errorf(attest.CheckPlatform, "evidence is %s, want tdx", frame.Kind)
	}
	raw := frame.Evidence
	if err := checkQuoteLayout(raw); err != nil {
		return nil, attest.NewCheckError(attest.CheckFormat, err)
	}
	key := v.platformKey(raw)
	var q *pb.QuoteV4
	v.mu.RLock()
	entry, ok := v.verified[key]
	v.mu.RUnlock()
	if ok && v.cfg.Now().Before(entry.until) {
		// Warm path: the certification data is byte-identical to what was
		// verified, so reuse its parse; header and body are fixed-layout.
		q = &pb.QuoteV4{
			Header:         parseHeader(raw),
			TdQuoteBody:    parseBody(raw),
			SignedDataSize: binary.LittleEndian.Uint32(raw[signedLen:]),
			SignedData: &pb.Ecdsa256BitQuoteV4AuthData{
				Signature:           raw[signedLen+4 : signedLen+4+64],
				EcdsaAttestationKey: entry.signed.GetEcdsaAttestationKey(),
				CertificationData:   entry.signed.GetCertificationData(),
			},
		}
		if err := verifyQuoteSignature(raw, q, entry.ak); err != nil {
			return nil, attest.NewCheckError(attest.CheckSignature, err)
		}
	} else {
		// The layout was checked above; verifyPlatform checks the signature.
		if q, err = decodeQuote(raw); err != nil {
			return nil, attest.NewCheckError(attest.CheckFormat, err)
		}
		if entry, err = v.verifyPlatform(ctx, frame, q, key); err != nil {
			return nil, err
		}
	}
	body := q.GetTdQuoteBody()
	if !bytes.Equal(body.GetReportData(), reportData[:]) {
		return nil, attest.Errorf(attest.CheckReportData, "REPORT_DATA does not match this session")
	}
	if v.cfg.ExpectedMrConfigID != nil && !bytes.Equal(body.GetMrConfigId(), v.cfg.ExpectedMrConfigID) {
		return nil, attest.Errorf(attest.CheckPolicyDigest, "MRCONFIGID %x is not the expected policy digest", body.GetMrConfigId())
	}
	var errs []error
	for i := range v.cfg.ReferenceValues {
		rv := &v.cfg.ReferenceValues[i]
		if err := checkEntry(q, rv, entry); err != nil {
			errs = append(errs, err)
			continue
		}
		if entry.collErr != nil {
			return nil, entry.collErr
		}
		if allowed := rv.allowedTCBStatuses(); !slices.Contains(allowed, entry.status) {
			errs = append(errs, attest.Errorf(attest.CheckTCBStatus, "TCB status %s is not allowed (allowed: %s)", entry.status, strings.Join(allowed, ", ")))
			continue
		}
		return &attest.Result{
			Platform:      v.platform,
			PolicyDigest:  bytes.Clone(body.GetMrConfigId()),
			Measurement:   bytes.Clone(body.GetMrTd()),
			ReportData:    reportData,
			ChipID:        bytes.Clone(entry.ppid),
			TCB:           hex.EncodeToString(body.GetTeeTcbSvn()),
			TCBStatus:     entry.status,
			ReferenceName: rv.Name,
		}, nil
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	check, _ := attest.FailedCheck(errs[0])
	for _, e := range errs[1:] {
		if c, _ := attest.FailedCheck(e); c != check {
			check = attest.CheckReference
		}
	}
	return nil, attest.NewCheckError(check, fmt.Errorf("no reference value entry matched: %w", errors.Join(errs...)))
}

// signedLen is the length of the quote's signed part: header and TD quote body.
const signedLen = 48 + 584

// verifyQuoteSignature checks the quote's ECDSA P-256 signature over the
// raw header and TD quote body (which parseQuote decoded) with the
// attestation key.
func verifyQuoteSignature(raw []byte, q *pb.QuoteV4, ak *ecdsa.PublicKey) error {
	if len(raw) < signedLen {
		return errors.New("quote too short")
	}
	sig, err := abi.SignatureToDER(q.GetSignedData().GetSignature())
	if err != nil {
		return fmt.Errorf("decoding signature: %w", err)
	}
	h := sha256.Sum256(raw[:signedLen])
	if !ecdsa.VerifyASN1(ak, h[:], sig) {
		return errors.New("quote signature does not verify with the attestation key")
	}
	return nil
}

func attestationKey(b []byte) (*ecdsa.PublicKey, error) {
	if len(b) != 64 {
		return nil, fmt.Errorf("attestation key is %d bytes, want 64", len(b))
	}
	k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, b...))
	if err != nil {
		return nil, fmt.Errorf("attestation key is not on P-256: %w", err)
	}
	return k, nil
}

// platformKey identifies everything verifyPlatform established: the root,
// the header (QE/PCE SVN, vendor), the body fields the TCB-info check reads
// (TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAM attributes) and all signed data
// after the quote signature (attestation key, QE report and its signature,
// QE auth data, PCK chain) plus any trailing bytes. Requires checkQuoteLayout.
func (v *Validator) platformKey(raw []byte) [32]byte {
	h := sha256.New()
	h.Write(v.rootID)
	h.Write(raw[:48+16+48+48+8])
	h.Write(raw[signedLen+4+64:])
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// parseHeader and parseBody decode the fixed-layout quote header and TD
// quote body (TDX DCAP quote v4, field offsets as go-tdx-guest abi reads
// them). Requires checkQuoteLayout. The
// first quote of every platform is parsed by go-tdx-guest's abi and
// cross-checked against these (see verifyPlatform).
func parseHeader(raw []byte) *pb.Header {
	return &pb.Header{
		Version:            uint32(binary.LittleEndian.Uint16(raw[0:])),
		AttestationKeyType: uint32(binary.LittleEndian.Uint16(raw[2:])),
		TeeType:            binary.LittleEndian.Uint32(raw[4:]),
		PceSvn:             raw[8:10], QeSvn: raw[10:12], QeVendorId: raw[12:28], UserData: raw[28:48],
	}
}

func parseBody(raw []byte) *pb.TDQuoteBody {
	b := raw[48:signedLen]
	f := func(off, n int) []byte { return b[off : off+n] }
	return &pb.TDQuoteBody{
		TeeTcbSvn: f(0, 16), MrSeam: f(16, 48), MrSignerSeam: f(64, 48), SeamAttributes: f(112, 8),
		TdAttributes: f(120, 8), Xfam: f(128, 8), MrTd: f(136, 48), MrConfigId: f(184, 48),
		MrOwner: f(232, 48), MrOwnerConfig: f(280, 48),
		Rtmrs:      [][]byte{f(328, 48), f(376, 48), f(424, 48), f(472, 48)},
		ReportData: f(520, 64),
	}
}

// verifyPlatform verifies, with go-tdx-guest verify, the PCK chain to the
// trusted root, the QE report signature and its binding of the attestation
// key, and the collateral. The verdict is cached per platform (see
// platformKey) for ChainCacheTTL. It also checks the quote signature, which
// Validate checks itself on the cached path.
func (v *Validator) verifyPlatform(ctx context.Context, frame *evidence.Frame, q *pb.QuoteV4, key [32]byte) (*platformEntry, error) {
	now := v.cfg.Now()
	raw := frame.Evidence
	if !proto.Equal(q.GetHeader(), parseHeader(raw)) || !proto.Equal(q.GetTdQuoteBody(), parseBody(raw)) {
		return nil, attest.Errorf(attest.CheckFormat, "quote header or body decodes inconsistently")
	}
	ak, err := attestationKey(q.GetSignedData().GetEcdsaAttestationKey())
	if err != nil {
		return nil, attest.NewCheckError(attest.CheckSignature, err)
	}
	// Check the quote signature first so a tampered quote is named as such.
	if err := verifyQuoteSignature(frame.Evidence, q, ak); err != nil {
		return nil, attest.NewCheckError(attest.CheckSignature, err)
	}
	chain, err := parseChain(q)
	if err != nil {
		return nil, attest.NewCheckError(attest.CheckChain, err)
	}
	// Chain and QE report, without collateral.
	if err := verify.TdxQuote(q, &verify.Options{Now: now, TrustedRoots: v.roots}); err != nil {
		return nil, attest.NewCheckError(attest.CheckChain, err)
	}
	exts, err := pcs.PckCertificateExtensions(chain.pck)
	if err != nil {
		return nil, attest.NewCheckError(attest.CheckChain, err)
	}
	ppid, err := hex.DecodeString(exts.PPID)
	if err != nil {
		return nil, attest.NewCheckError(attest.CheckChain, err)
	}
	pck, err := parsePCKPlatform(chain.pck)
	if err != nil {
		return nil, attest.NewCheckError(attest.CheckChain, err)
	}
	e := &platformEntry{ak: ak, ppid: ppid, pck: pck, signed: q.GetSignedData()}
	until, status, evalNum, err := v.checkCollateral(ctx, frame, q, chain, exts, now)
	if err != nil {
		e.collErr = err
		return e, nil
	}
	e.status, e.tcbEvalNum = status, evalNum
	for _, c := range []*x509.Certificate{chain.pck, chain.intermediate, chain.root} {
		if c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	e.until = until
	v.mu.Lock()
	if len(v.verified) > 4096 {
		clear(v.verified)
	}
	v.verified[key] = e
	v.mu.Unlock()
	return e, nil
}

// checkCollateral obtains Intel's collateral (obtainCollateral), checks the
// QE report against the QE identity and the platform against the TCB info,
// and returns the converged TCB status and when the verdict expires. A
// platform that is UpToDate is additionally verified by go-tdx-guest with
// exactly the chosen collateral, as a backstop; go-tdx-guest accepts no
// other status, so for a status a reference value opts in to, this
// package's checks stand alone.
func (v *Validator) checkCollateral(ctx context.Context, frame *evidence.Frame, q *pb.QuoteV4, chain *pckChain, exts *pcs.PckExtensions, now time.Time) (time.Time, string, int, error) {
	coll, err := v.obtainCollateral(ctx, frame, chain, exts.FMSPC, now)
	if err != nil {
		return time.Time{}, "", 0, err
	}
	qeStatus, err := checkQEIdentity(q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport(), &coll.qeID)
	if err != nil {
		return time.Time{}, "", 0, err
	}
	status, err := tcbStatus(q.GetTdQuoteBody(), exts, &coll.tcbInfo)
	if err != nil {
		return time.Time{}, "", 0, err
	}
	evalNum := min(coll.tcbInfo.TcbEvaluationDataNumber, coll.qeID.TcbEvaluationDataNumber)
	status = converge(status, qeStatus)
	if len(coll.evidence) > 0 {
		v.cfg.Logger.Debug("using collateral carried by the evidence", "kinds", coll.evidence)
	}
	if status == StatusUpToDate {
		getter := &fixedGetter{docs: coll.docs}
		err := verify.TdxQuote(q, &verify.Options{Now: now, TrustedRoots: v.roots, GetCollateral: true, CheckRevocations: true, Getter: getter})
		if err != nil {
			return time.Time{}, "", 0, attest.NewCheckError(attest.CheckCollateral, fmt.Errorf("go-tdx-guest rejects the collateral: %w", err))
		}
	}
	return coll.until, status, evalNum, nil
}

// fixedGetter serves go-tdx-guest exactly the chosen documents.
type fixedGetter struct {
	docs map[string]*certcache.Artifact
}

// Get implements go-tdx-guest's trust.HTTPSGetter.
func (g *fixedGetter) Get(u string) (map[string][]string, []byte, error) {
	a, ok := g.docs[u]
	if !ok {
		return nil, nil, fmt.Errorf("%s was not chosen for this quote", u)
	}
	hdr := make(map[string][]string, len(a.Header))
	for k, v := range a.Header {
		hdr[http.CanonicalHeaderKey(k)] = []string{v}
	}
	return hdr, a.Body, nil
}

func checkEntry(q *pb.QuoteV4, entry *ReferenceValues, platform *platformEntry) error {
	ppid := platform.ppid
	withDefaults := entry.withDefaults()
	rv := &withDefaults
	body := q.GetTdQuoteBody()
	if !bytes.Equal(body.GetMrTd(), rv.MrTd) {
		return attest.Errorf(attest.CheckMeasurement, "MRTD %x is not the trusted %x", body.GetMrTd(), []byte(rv.MrTd))
	}
	if !bytes.Equal(body.GetMrSeam(), rv.MrSeam) {
		return attest.Errorf(attest.CheckMRSEAM, "MRSEAM %x is not the trusted %x", body.GetMrSeam(), []byte(rv.MrSeam))
	}
	for i, want := range rv.Rtmrs {
		if got := body.GetRtmrs()[i]; !bytes.Equal(got, want) {
			return attest.Errorf(attest.CheckRTMR, "RTMR%d %x is not the trusted %x", i, got, []byte(want))
		}
	}
	if body.GetTdAttributes()[0]&1 == 1 && !rv.AllowDebug {
		return attest.Errorf(attest.CheckDebug, "TD attributes have DEBUG set")
	}
	if !bytes.Equal(body.GetTdAttributes(), rv.TdAttributes) {
		return attest.Errorf(attest.CheckTDAttributes, "TD_ATTRIBUTES %x are not %x", body.GetTdAttributes(), []byte(rv.TdAttributes))
	}
	if !bytes.Equal(body.GetXfam(), rv.Xfam) {
		return attest.Errorf(attest.CheckXFAM, "XFAM %x is not %x", body.GetXfam(), []byte(rv.Xfam))
	}
	for i, s := range body.GetTeeTcbSvn() {
		if s < rv.MinimumTeeTcbSvn[i] {
			return attest.Errorf(attest.CheckTCB, "TEE_TCB_SVN %x is below the minimum %x", body.GetTeeTcbSvn(), []byte(rv.MinimumTeeTcbSvn))
		}
	}
	if qe := binary.LittleEndian.Uint16(q.GetHeader().GetQeSvn()); qe < *rv.MinimumQeSvn {
		return attest.Errorf(attest.CheckQESVN, "QE SVN %d is below the minimum %d", qe, *rv.MinimumQeSvn)
	}
	if pce := binary.LittleEndian.Uint16(q.GetHeader().GetPceSvn()); pce < *rv.MinimumPceSvn {
		return attest.Errorf(attest.CheckPCESVN, "PCE SVN %d is below the minimum %d", pce, *rv.MinimumPceSvn)
	}
	if len(rv.AllowedPIIDs) > 0 {
		ok := false
		for _, id := range rv.AllowedPIIDs {
			ok = ok || bytes.Equal(id, ppid)
		}
		if !ok {
			return attest.Errorf(attest.CheckChipID, "platform ID %x is not allowed", ppid)
		}
	}
	if err := platform.pck.check(rv); err != nil {
		return attest.NewCheckError(attest.CheckPlatformInfo, err)
	}
	if want := rv.MinTCBEvaluationDataNumber; want > 0 {
		switch got := platform.tcbEvalNum; {
		case platform.collErr != nil:
			return platform.collErr
		case got < want:
			return attest.Errorf(attest.CheckCollateral, "the collateral's tcbEvaluationDataNumber %d is below MinTCBEvaluationDataNumber %d", got, want)
		}
	}
	rtmrs := make([][]byte, 4)
	for i := range rtmrs {
		rtmrs[i] = rv.Rtmrs[i]
	}
	opts := &validate.Options{
		HeaderOptions: validate.HeaderOptions{MinimumQeSvn: *rv.MinimumQeSvn, MinimumPceSvn: *rv.MinimumPceSvn},
		TdQuoteBodyOptions: validate.TdQuoteBodyOptions{
			MinimumTeeTcbSvn: rv.MinimumTeeTcbSvn, MrSeam: rv.MrSeam, TdAttributes: rv.TdAttributes,
			Xfam: rv.Xfam, MrTd: rv.MrTd, Rtmrs: rtmrs, ReportData: body.GetReportData(),
		},
	}
	if err := validate.TdxQuote(q, opts); err != nil {
		return attest.NewCheckError(attest.CheckReportFields, err)
	}
	return nil
}
