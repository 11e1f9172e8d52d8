package snp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
	"google.golang.org/protobuf/proto"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/evidence"
)

// Config configures a Validator.
type Config struct {
	// ReferenceValues: evidence is accepted if any entry validates. All
	// entries must be real, or all simulated with the same SimulatedRoot.
	ReferenceValues []ReferenceValues
	// ExpectedHostData, if set, must equal HOST_DATA (the policy digest).
	// Usually the caller checks Result.PolicyDigest against its manifest.
	ExpectedHostData []byte
	// Cache fetches VCEKs and CRLs; defaults to an online cache.
	Cache *certcache.Cache
	// MaxCollateralAge bounds the age of the ARK's CRL, which is always
	// required (see certcache.Freshness). Zero means
	// certcache.DefaultMaxAge.
	MaxCollateralAge time.Duration
	// ChainCacheTTL bounds how long a verified VCEK chain is trusted
	// without re-verification (and CRL re-check). Zero means 10 minutes;
	// it is further bounded by the CRL's next update and maximum age.
	ChainCacheTTL time.Duration
	// Now is the clock; defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Validator validates SNP evidence. It is safe for concurrent use.
type Validator struct {
	cfg       Config
	platform  attest.Platform
	ns        string
	roots     map[string][]*trust.AMDRootCerts
	mu        sync.RWMutex
	verified  map[[32]byte]*chainEntry
	rootsHash []byte
}

type chainEntry struct {
	cert  *x509.Certificate
	until time.Time
	// revErr is the failed revocation check of a chain that verified; it
	// is reported after the reference-value checks. Such entries are
	// never cached.
	revErr error
}

// NewValidator returns a Validator for cfg, filling defaults.
func NewValidator(cfg Config) (*Validator, error) {
	platform, simRoot, err := attest.CheckReferenceSet(cfg.ReferenceValues, attest.PlatformSNP, attest.PlatformSimulatedSNP,
		func(rv *ReferenceValues) string { return rv.SimulatedRoot })
	if err != nil {
		return nil, err
	}
	v := &Validator{verified: map[[32]byte]*chainEntry{}, platform: platform}
	if v.platform == attest.PlatformSimulatedSNP {
		r, err := parseRoots(simRoot)
		if err != nil {
			return nil, err
		}
		v.roots = map[string][]*trust.AMDRootCerts{r.ProductLine: {r}}
		sum := sha256.Sum256(r.ProductCerts.Ark.Raw)
		v.ns = "snp-sim-" + hex.EncodeToString(sum[:8])
		v.rootsHash = sum[:]
	} else {
		roots, err := realRoots()
		if err != nil {
			return nil, err
		}
		v.roots = roots
		v.rootsHash = []byte("amd")
	}
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

// realRoots returns fresh copies of the embedded AMD roots, VCEK and VLEK.
func realRoots() (map[string][]*trust.AMDRootCerts, error) {
	bundles := map[string][2][]byte{
		"Milan": {trust.AskArkMilanVcekBytes, trust.AskArkMilanVlekBytes},
		"Genoa": {trust.AskArkGenoaVcekBytes, trust.AskArkGenoaVlekBytes},
		"Turin": {trust.AskArkTurinVcekBytes, trust.AskArkTurinVlekBytes},
	}
	out := map[string][]*trust.AMDRootCerts{}
	for line, b := range bundles {
		r := trust.AMDRootCertsProduct(line)
		r.ProductCerts = &trust.ProductCerts{}
		if err := r.ProductCerts.FromKDSCertBytes(b[0]); err != nil {
			return nil, fmt.Errorf("embedded %s roots: %w", line, err)
		}
		vl := &trust.ProductCerts{}
		if err := vl.FromKDSCertBytes(b[1]); err == nil && vl.Ark != nil && vl.Ark.Equal(r.ProductCerts.Ark) {
			r.ProductCerts.Asvk = vl.Asvk
		}
		out[line] = []*trust.AMDRootCerts{r}
	}
	return out, nil
}

// Platform returns the platform this validator accepts.
func (v *Validator) Platform() attest.Platform { return v.platform }

// CacheNamespace is the certcache namespace of the validator's documents:
// "" (the real vendor services) for hardware, a namespace of its own for
// each simulated root.
func (v *Validator) CacheNamespace() string { return v.ns }

// Validate implements attest.Validator.
func (v *Validator) Validate(ctx context.Context, ev []byte, reportData [64]byte) (*attest.Result, error) {
	frame, err := evidence.Unmarshal(ev)
	if err != nil {
		return nil, attest.NewCheckError(attest.CheckFormat, err)
	}
	if frame.Kind != evidence.KindSNP {
		return nil, attest.Errorf(attest.CheckPlatform, "evidence is %s, want snp", frame.Kind)
	}
	att, raw, err := ParseAttestation(frame.Evidence)
	if err != nil {
		return nil, attest.NewCheckError(attest.CheckFormat, err)
	}
	report := att.GetReport()
	info, err := abi.ParseSignerInfo(report.GetSignerInfo())
	if err != nil {
		return nil, attest.NewCheckError(attest.CheckFormat, err)
	}
	if info.SigningKey != abi.VcekReportSigner && info.SigningKey != abi.VlekReportSigner {
		return nil, attest.Errorf(attest.CheckSignature, "report signed by %v, want VCEK or VLEK", info.SigningKey)
	}
	chain, err := v.verifySignature(ctx, frame, att, raw, info.SigningKey)
	if err != nil {
		return nil, err
	}
	// Checks independent of the reference-value entry.
	if !bytes.Equal(report.GetReportData(), reportData[:]) {
		return nil, attest.Errorf(attest.CheckReportData, "REPORT_DATA does not match this session")
	}
	if report.GetVmpl() != 0 {
		return nil, attest.Errorf(attest.CheckVMPL, "report VMPL is %d, want 0", report.GetVmpl())
	}
	if v.cfg.ExpectedHostData != nil && !bytes.Equal(report.GetHostData(), v.cfg.ExpectedHostData) {
		return nil, attest.Errorf(attest.CheckPolicyDigest, "HOST_DATA %x is not the expected policy digest", report.GetHostData())
	}
	product := reportProduct(att, info.SigningKey)
	var errs []error
	for i := range v.cfg.ReferenceValues {
		rv := &v.cfg.ReferenceValues[i]
		if err := v.checkEntry(att, rv, product); err != nil {
			errs = append(errs, err)
			continue
		}
		if chain.revErr != nil {
			return nil, chain.revErr
		}
		return &attest.Result{
			Platform:      v.platform,
			PolicyDigest:  bytes.Clone(report.GetHostData()),
			Measurement:   bytes.Clone(report.GetMeasurement()),
			ReportData:    reportData,
			ChipID:        bytes.Clone(report.GetChipId()),
			TCB:           fmt.Sprintf("%016x", report.GetReportedTcb()),
			ReferenceName: rv.Name,
		}, nil
	}
	return nil, combine(errs)
}

// combine reports per-entry failures: a single entry's error as is, several
// as one CheckError naming the common check (or reference-values).
func combine(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	check, _ := attest.FailedCheck(errs[0])
	for _, e := range errs[1:] {
		if c, _ := attest.FailedCheck(e); c != check {
			check = attest.CheckReference
		}
	}
	return attest.NewCheckError(check, fmt.Errorf("no reference value entry matched: %w", errors.Join(errs...)))
}

// ParseAttestation decodes the SNP evidence payload (a protobuf
// sevsnp.Attestation) and returns it with the raw report bytes.
func ParseAttestation(b []byte) (*spb.Attestation, []byte, error) {
	att := &spb.Attestation{}
	if err := proto.Unmarshal(b, att); err != nil {
		return nil, nil, fmt.Errorf("decoding attestation: %w", err)
	}
	if att.GetReport() == nil {
		return nil, nil, errors.New("attestation has no report")
	}
	raw, err := abi.ReportToAbiBytes(att.GetReport())
	if err != nil {
		return nil, nil, fmt.Errorf("encoding report: %w", err)
	}
	if err := abi.ValidateReportFormat(raw); err != nil {
		return nil, nil, fmt.Errorf("report format: %w", err)
	}
	if att.CertificateChain == nil {
		att.CertificateChain = &spb.CertificateChain{}
	}
	return att, raw, nil
}

func endorsementDER(att *spb.Attestation, key abi.ReportSigner) []byte {
	if key == abi.VlekReportSigner {
		return att.GetCertificateChain().GetVlekCert()
	}
	return att.GetCertificateChain().GetVcekCert()
}

// verifySignature checks the report signature and the endorsement key's
// chain to the trusted root, and the chain's revocation status (reported in
// the entry). A chain is verified once per VCEK/VLEK (and root), then cached
// for ChainCacheTTL; every report's signature is checked.
func (v *Validator) verifySignature(ctx context.Context, frame *evidence.Frame, att *spb.Attestation, raw []byte, key abi.ReportSigner) (*chainEntry, error) {
	now := v.cfg.Now()
	der := endorsementDER(att, key)
	var ck [32]byte
	if len(der) > 0 {
		ck = sha256.Sum256(append(bytes.Clone(v.rootsHash), der...))
		v.mu.RLock()
		e, ok := v.verified[ck]
		v.mu.RUnlock()
		if ok && now.Before(e.until) {
			if err := verify.SnpReportSignature(raw, e.cert); err != nil {
				return nil, attest.NewCheckError(attest.CheckSignature, err)
			}
			return e, nil
		}
	}
	overlay := map[string]certcache.Artifact{}
	for _, a := range frame.Artifacts {
		overlay[a.URL] = certcache.Artifact{URL: a.URL, Header: a.Header, Body: a.Body}
	}
	getter := &certcache.SEVGetter{Cache: v.cfg.Cache, NS: v.ns, Overlay: overlay, Ctx: ctx}
	// The ASK and ARK the evidence carries are never trusted: the trusted
	// roots are used for verification, and filling them in here keeps
	// go-sev-guest from fetching them into its process-wide cache.
	line := productLine(att, key)
	rs := v.roots[line]
	if len(rs) > 0 {
		att.CertificateChain.ArkCert = rs[0].ProductCerts.Ark.Raw
		if rs[0].ProductCerts.Ask != nil {
			att.CertificateChain.AskCert = rs[0].ProductCerts.Ask.Raw
		}
	}
	// Revocation is checked below with a CRL chosen and checked for
	// freshness here, never through go-sev-guest, which would keep the
	// first CRL it sees in the shared roots and use it for other chips.
	opts := &verify.Options{
		// For v2 reports (no CPUID in the report) the product comes from the
		// endorsement certificate, which the chain verification then pins.
		Product:      reportProduct(att, key),
		Getter:       getter,
		Now:          now,
		TrustedRoots: v.roots,
	}
	if err := verify.SnpAttestationContext(ctx, att, opts); err != nil {
		return nil, v.classify(att, raw, key, err)
	}
	der = endorsementDER(att, key)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, attest.NewCheckError(attest.CheckChain, err)
	}
	until := now.Add(v.cfg.ChainCacheTTL)
	for _, r := range rs {
		for _, c := range []*x509.Certificate{cert, r.ProductCerts.Ark, r.ProductCerts.Ask} {
			if c != nil && c.NotAfter.Before(until) {
				until = c.NotAfter
			}
		}
	}
	e := &chainEntry{cert: cert, until: until}
	if len(rs) == 0 {
		e.revErr = attest.Errorf(attest.CheckRevocation, "no trusted root for product line %q", line)
		return e, nil
	}
	crlUntil, err := v.checkRevocation(ctx, frame, rs[0], line, key, cert)
	if err != nil {
		e.revErr = err
		return e, nil
	}
	if crlUntil.Before(e.until) {
		e.until = crlUntil
	}
	ck = sha256.Sum256(append(bytes.Clone(v.rootsHash), der...))
	v.mu.Lock()
	if len(v.verified) > 4096 {
		clear(v.verified)
	}
	v.verified[ck] = e
	v.mu.Unlock()
	return e, nil
}

// checkRevocation requires the ARK's CRL for the endorsement key's product
// line: the newest authentic copy of this verifier's own (cached, fetched)
// and the one the evidence carries, within its validity period and
// MaxCollateralAge. Neither the intermediate (ASK, or ASVK for a VLEK) nor
// the endorsement certificate may be on it. It returns when the verdict
// expires.
func (v *Validator) checkRevocation(ctx context.Context, frame *evidence.Frame, root *trust.AMDRootCerts, line string, key abi.ReportSigner, endorsement *x509.Certificate) (time.Time, error) {
	now := v.cfg.Now()
	url := kds.CrlLinkByKey(line, key)
	var carried *certcache.Artifact
	for _, a := range frame.Artifacts {
		if a.URL == url {
			carried = &certcache.Artifact{URL: a.URL, Body: a.Body}
		}
	}
	ark := root.ProductCerts.Ark
	intermediate := root.ProductCerts.Ask
	if key == abi.VlekReportSigner {
		intermediate = root.ProductCerts.Asvk
	}
	if ark == nil || intermediate == nil {
		return time.Time{}, attest.Errorf(attest.CheckRevocation, "trusted %s root lacks the ARK or the intermediate for %v", line, key)
	}
	sel, err := certcache.Select(ctx, v.cfg.Cache, v.ns, url, certcache.KindCRL, carried, func(a *certcache.Artifact) (*x509.RevocationList, time.Time, error) {
		crl, err := x509.ParseRevocationList(a.Body)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("parsing CRL: %w", err)
		}
		if !bytes.Equal(crl.RawIssuer, ark.RawSubject) {
			return nil, time.Time{}, errors.New("CRL is not issued by the ARK")
		}
		if err := crl.CheckSignatureFrom(ark); err != nil {
			return nil, time.Time{}, fmt.Errorf("CRL is not signed by the ARK: %w", err)
		}
		return crl, crl.ThisUpdate, nil
	})
	if err != nil {
		return time.Time{}, attest.NewCheckError(attest.CheckRevocation, fmt.Errorf("no usable CRL %s: %w", url, err))
	}
	crl := sel.Doc
	until, err := certcache.Freshness{MaxAge: v.cfg.MaxCollateralAge}.Check(now, crl.ThisUpdate, crl.NextUpdate, sel.Artifact.FetchedAt)
	if err != nil {
		return time.Time{}, attest.NewCheckError(attest.CheckRevocation, fmt.Errorf("CRL %s: %w", url, err))
	}
	for _, bad := range crl.RevokedCertificateEntries {
		for _, c := range []*x509.Certificate{intermediate, endorsement} {
			if c.SerialNumber.Cmp(bad.SerialNumber) == 0 {
				return time.Time{}, attest.Errorf(attest.CheckRevocation, "%s certificate %x was revoked at %s (CRL %s)",
					c.Subject.CommonName, c.SerialNumber, bad.RevocationTime.UTC().Format(time.RFC3339), url)
			}
		}
	}
	return until, nil
}

// classify names the check behind a go-sev-guest verification error.
func (v *Validator) classify(att *spb.Attestation, raw []byte, key abi.ReportSigner, err error) error {
	var missing *certcache.MissingError
	if errors.As(err, &missing) {
		return attest.NewCheckError(attest.CheckChain, err)
	}
	if cert, perr := x509.ParseCertificate(endorsementDER(att, key)); perr == nil {
		if serr := verify.SnpReportSignature(raw, cert); serr != nil {
			return attest.NewCheckError(attest.CheckSignature, serr)
		}
	}
	return attest.NewCheckError(attest.CheckChain, err)
}

// productLine returns the product line from the report's CPUID (v3+) or
// from the endorsement certificate's product name.
func productLine(att *spb.Attestation, key abi.ReportSigner) string {
	if fms := att.GetReport().GetCpuid1EaxFms(); fms != 0 {
		return kds.ProductLineFromFms(fms)
	}
	if p := reportProduct(att, key); p != nil {
		return kds.ProductLine(p)
	}
	return ""
}

func reportProduct(att *spb.Attestation, key abi.ReportSigner) *spb.SevProduct {
	if fms := att.GetReport().GetCpuid1EaxFms(); fms != 0 {
		return abi.SevProductFromCpuid1Eax(fms)
	}
	cert, err := x509.ParseCertificate(endorsementDER(att, key))
	if err != nil {
		return nil
	}
	exts, err := kds.CertificateExtensions(cert, key)
	if err != nil {
		return nil
	}
	p, err := kds.ParseProductName(exts.ProductName, key)
	if err != nil {
		return nil
	}
	return p
}

func tcbString(p kds.TCBParts) string {
	return fmt.Sprintf("bl=%d tee=%d snp=%d ucode=%d", p.BlSpl, p.TeeSpl, p.SnpSpl, p.UcodeSpl)
}

func tcbAtLeast(got, minimum kds.TCBParts) bool {
	return got.BlSpl >= minimum.BlSpl && got.TeeSpl >= minimum.TeeSpl && got.SnpSpl >= minimum.SnpSpl && got.UcodeSpl >= minimum.UcodeSpl
}

// checkEntry checks the report against one reference-value entry: explicit
// checks first, so the failing one is named, then go-sev-guest's validate
// with every option set as the authoritative backstop.
func (v *Validator) checkEntry(att *spb.Attestation, rv *ReferenceValues, product *spb.SevProduct) error {
	report := att.GetReport()
	if product == nil || kds.ProductLine(product) != rv.ProductName {
		return attest.Errorf(attest.CheckProduct, "report product %v is not %s", kds.ProductLine(product), rv.ProductName)
	}
	if !bytes.Equal(report.GetMeasurement(), rv.TrustedMeasurement) {
		return attest.Errorf(attest.CheckMeasurement, "launch measurement %x is not the trusted %x", report.GetMeasurement(), []byte(rv.TrustedMeasurement))
	}
	policy, err := abi.ParseSnpPolicy(report.GetPolicy())
	if err != nil {
		return attest.NewCheckError(attest.CheckGuestPolicy, err)
	}
	if policy.Debug && !rv.AllowDebug {
		return attest.Errorf(attest.CheckDebug, "guest policy allows debugging")
	}
	minTCB := rv.MinimumTCB.parts()
	minLaunch := minTCB
	if rv.MinimumLaunchTCB != nil {
		minLaunch = rv.MinimumLaunchTCB.parts()
	}
	for _, t := range []struct {
		name  string
		value uint64
		min   kds.TCBParts
	}{
		{"reported", report.GetReportedTcb(), minTCB},
		{"current", report.GetCurrentTcb(), minTCB},
		{"launch", report.GetLaunchTcb(), minLaunch},
	} {
		got := kds.DecomposeTCBVersion(kds.TCBVersion(t.value))
		if !tcbAtLeast(got, t.min) {
			return attest.Errorf(attest.CheckTCB, "%s TCB (%s) is below the minimum (%s)", t.name, tcbString(got), tcbString(t.min))
		}
	}
	if want := rv.MinimumMitigationVector; want != 0 {
		for _, mv := range []struct {
			name string
			got  uint64
		}{{"launch", report.GetLaunchMitVector()}, {"current", report.GetCurrentMitVector()}} {
			if mv.got&want != want {
				return attest.Errorf(attest.CheckMitigation, "%s mitigation vector %#x lacks required bits %#x", mv.name, mv.got, want&^mv.got)
			}
		}
	}
	if len(rv.AllowedChipIDs) > 0 {
		ok := false
		for _, id := range rv.AllowedChipIDs {
			ok = ok || bytes.Equal(id, report.GetChipId())
		}
		if !ok {
			return attest.Errorf(attest.CheckChipID, "CHIP_ID %x is not allowed", report.GetChipId())
		}
	}
	guestPolicy := rv.GuestPolicy
	guestPolicy.Debug = rv.AllowDebug
	vmpl := 0
	opts := &validate.Options{
		GuestPolicy:                    guestPolicy,
		Measurement:                    rv.TrustedMeasurement,
		ReportData:                     report.GetReportData(), // checked against the session above
		HostData:                       v.cfg.ExpectedHostData,
		MinimumTCB:                     minTCB,
		MinimumLaunchTCB:               minLaunch,
		PermitProvisionalFirmware:      true,
		PlatformInfo:                   rv.PlatformInfo,
		MinimumLaunchMitigationVector:  rv.MinimumMitigationVector,
		MinimumCurrentMitigationVector: rv.MinimumMitigationVector,
		VMPL:                           &vmpl,
	}
	if err := validate.SnpAttestation(att, opts); err != nil {
		pi, perr := abi.ParseSnpPlatformInfo(report.GetPlatformInfo())
		if perr != nil || !platformInfoOK(pi, *rv.PlatformInfo) {
			return attest.NewCheckError(attest.CheckPlatformInfo, err)
		}
		return attest.NewCheckError(attest.CheckReportFields, err)
	}
	return nil
}

func platformInfoOK(got, allowed abi.SnpPlatformInfo) bool {
	return (!got.SMTEnabled || allowed.SMTEnabled) && (!got.TSMEEnabled || allowed.TSMEEnabled) &&
		(got.ECCEnabled || !allowed.ECCEnabled) && (got.RAPLDisabled || !allowed.RAPLDisabled) &&
		(got.CiphertextHidingDRAMEnabled || !allowed.CiphertextHidingDRAMEnabled) &&
		(got.AliasCheckComplete || !allowed.AliasCheckComplete) && (!got.TIOEnabled || allowed.TIOEnabled)
}
