package attest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Platform names a kind of TEE evidence. Simulated platforms are distinct
// values so that a reference value can never silently cover both.
type Platform string

const (
	// PlatformSNP is AMD SEV-SNP hardware, trusting the embedded AMD roots.
	PlatformSNP Platform = "snp"
	// PlatformTDX is Intel TDX hardware, trusting the embedded Intel root.
	PlatformTDX Platform = "tdx"
	// PlatformSimulatedSNP is the simulated SNP device of package sim,
	// trusting only the simulated root carried in the reference value.
	PlatformSimulatedSNP Platform = "snp-simulated"
	// PlatformSimulatedTDX is the simulated TDX device of package sim.
	PlatformSimulatedTDX Platform = "tdx-simulated"
)

// Simulated reports whether p is a simulated platform.
func (p Platform) Simulated() bool {
	return p == PlatformSimulatedSNP || p == PlatformSimulatedTDX
}

// Issuer produces evidence bound to reportData inside a TEE guest.
type Issuer interface {
	// Issue returns framed evidence (see package evidence) whose
	// REPORT_DATA equals reportData.
	Issue(ctx context.Context, reportData [64]byte) ([]byte, error)
}

// Validator checks framed evidence against reference values.
type Validator interface {
	// Validate checks evidence and that its REPORT_DATA equals reportData.
	// On failure the error is (or wraps) a *CheckError naming the check.
	Validate(ctx context.Context, evidence []byte, reportData [64]byte) (*Result, error)
}

// Result is what a successful validation established about the peer.
type Result struct {
	// Platform of the accepted evidence.
	Platform Platform
	// PolicyDigest is SNP HOST_DATA (32 bytes) or TDX MRCONFIGID (48 bytes):
	// the digest of the Kata policy the host launched the VM with.
	PolicyDigest []byte
	// Measurement is the SNP launch measurement or the TDX MRTD.
	Measurement []byte
	// ReportData is the REPORT_DATA that was checked.
	ReportData [64]byte
	// ChipID is the SNP CHIP_ID, or for TDX the PPID of the PCK certificate.
	ChipID []byte
	// TCB is a platform-specific description of the TCB (hex).
	TCB string
	// TCBStatus is, for TDX, the platform's TCB status per Intel's
	// collateral (UpToDate, or a status the reference value allowed).
	TCBStatus string
	// ReferenceName is the Name of the reference value entry that matched.
	ReferenceName string
}

// Check names one validation step, so that callers can report precisely
// which one failed.
type Check string

// The checks performed by the validators. Their string values are stable.
const (
	CheckFormat       Check = "format"
	CheckPlatform     Check = "platform"
	CheckSignature    Check = "signature"
	CheckChain        Check = "certificate-chain"
	CheckCollateral   Check = "collateral"
	CheckRevocation   Check = "revocation"
	CheckProduct      Check = "product"
	CheckMeasurement  Check = "measurement"
	CheckTCB          Check = "tcb"
	CheckGuestPolicy  Check = "guest-policy"
	CheckDebug        Check = "debug"
	CheckPlatformInfo Check = "platform-info"
	CheckVMPL         Check = "vmpl"
	CheckChipID       Check = "chip-id"
	CheckReportData   Check = "report-data"
	CheckPolicyDigest Check = "policy-digest"
	CheckMRSEAM       Check = "mrseam"
	CheckRTMR         Check = "rtmr"
	CheckXFAM         Check = "xfam"
	CheckTDAttributes Check = "td-attributes"
	CheckQESVN        Check = "qe-svn"
	CheckPCESVN       Check = "pce-svn"
	CheckMitigation   Check = "mitigation-vector"
	CheckReportFields Check = "report-fields"
	CheckReference    Check = "reference-values"
	CheckSession      Check = "session"
	CheckQEIdentity   Check = "qe-identity"
	CheckTDXModule    Check = "tdx-module"
	CheckTCBStatus    Check = "tcb-status"
)

// knownChecks holds every Check declared above. It is the authoritative list:
// callers that bound a label or report set by check names use Known or Checks.
var knownChecks = []Check{
	CheckFormat, CheckPlatform, CheckSignature, CheckChain, CheckCollateral,
	CheckRevocation, CheckProduct, CheckMeasurement, CheckTCB, CheckGuestPolicy,
	CheckDebug, CheckPlatformInfo, CheckVMPL, CheckChipID, CheckReportData,
	CheckPolicyDigest, CheckMRSEAM, CheckRTMR, CheckXFAM, CheckTDAttributes,
	CheckQESVN, CheckPCESVN, CheckMitigation, CheckReportFields, CheckReference,
	CheckSession, CheckQEIdentity, CheckTDXModule, CheckTCBStatus,
}

// Checks returns every check the validators can report, in declaration order.
func Checks() []Check {
	return slices.Clone(knownChecks)
}

// Known reports whether c is one of the declared checks.
func (c Check) Known() bool {
	return slices.Contains(knownChecks, c)
}

// CheckError reports a failed validation step. Match it with errors.As.
type CheckError struct {
	Check Check
	Err   error
}

// NewCheckError wraps err as a failure of check c.
func NewCheckError(c Check, err error) *CheckError {
	return &CheckError{Check: c, Err: err}
}

// Errorf returns a *CheckError for check c with a formatted cause.
func Errorf(c Check, format string, args ...any) *CheckError {
	return &CheckError{Check: c, Err: fmt.Errorf(format, args...)}
}

func (e *CheckError) Error() string {
	return fmt.Sprintf("attestation check %q failed: %v", e.Check, e.Err)
}

func (e *CheckError) Unwrap() error { return e.Err }

// FailedCheck returns the check that err reports, if any.
func FailedCheck(err error) (Check, bool) {
	var ce *CheckError
	if errors.As(err, &ce) {
		return ce.Check, true
	}
	return "", false
}

// HexBytes is a byte slice that marshals to and from a hex string in JSON, as
// the manifest writes reference values.
type HexBytes []byte

// MarshalJSON encodes b as a hex string.
func (b HexBytes) MarshalJSON() ([]byte, error) {
	return json.Marshal(hex.EncodeToString(b))
}

// UnmarshalJSON decodes a hex string.
func (b *HexBytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("hex bytes: %w", err)
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("hex bytes: %w", err)
	}
	*b = v
	return nil
}

// String returns the hex encoding of b.
func (b HexBytes) String() string { return hex.EncodeToString(b) }

// FieldError names the JSON path of an invalid reference-value field.
// Validation that finds several problems returns them joined
// (errors.Join); FieldErrors lists them.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return fmt.Sprintf("%s: %v", e.Path, e.Err)
}

func (e *FieldError) Unwrap() error { return e.Err }

// FieldErrorf returns a *FieldError at path with a formatted cause.
func FieldErrorf(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
}

// JoinPath appends a relative JSON path to prefix: "a" + "b" is "a.b",
// "a" + "[1].b" is "a[1].b"; an empty side leaves the other unchanged.
func JoinPath(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix
	case path[0] == '[':
		return prefix + path
	default:
		return prefix + "." + path
	}
}

// FieldErrors flattens err, which may join several errors (errors.Join,
// nested), into its field errors in order. An error that is not a
// *FieldError becomes one with an empty path. FieldErrors(nil) is nil.
func FieldErrors(err error) []*FieldError {
	if err == nil {
		return nil
	}
	if fe, ok := err.(*FieldError); ok { //nolint:errorlint // this error itself, not one it wraps
		return []*FieldError{fe}
	}
	if u, ok := err.(interface{ Unwrap() []error }); ok { //nolint:errorlint // walking the join tree
		var out []*FieldError
		for _, e := range u.Unwrap() {
			out = append(out, FieldErrors(e)...)
		}
		return out
	}
	return []*FieldError{{Err: err}}
}

// PrefixFieldErrors returns err with prefix joined (JoinPath) to the path of
// every field error in it, all errors joined; nil stays nil.
func PrefixFieldErrors(prefix string, err error) error {
	fes := FieldErrors(err)
	if len(fes) == 0 {
		return nil
	}
	errs := make([]error, len(fes))
	for i, fe := range fes {
		errs[i] = &FieldError{Path: JoinPath(prefix, fe.Path), Err: fe.Err}
	}
	return errors.Join(errs...)
}

// ValidateAny accepts evidence if any validator accepts it. With one
// validator its error is returned unchanged. With several, validators of
// another platform (CheckPlatform) are ignored when one of the evidence's
// platform rejected it, so the rejection names that validator's check;
// the remaining errors are joined under their common failed check (or
// CheckReference if they differ).
func ValidateAny(ctx context.Context, validators []Validator, evidence []byte, reportData [64]byte) (*Result, error) {
	if len(validators) == 0 {
		return nil, Errorf(CheckReference, "no validators configured")
	}
	var errs []error
	for _, v := range validators {
		res, err := v.Validate(ctx, evidence, reportData)
		if err == nil {
			return res, nil
		}
		errs = append(errs, err)
	}
	if relevant := slices.DeleteFunc(slices.Clone(errs), func(e error) bool {
		c, _ := FailedCheck(e)
		return c == CheckPlatform
	}); len(relevant) > 0 {
		errs = relevant
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	check, _ := FailedCheck(errs[0])
	for _, e := range errs[1:] {
		if c, _ := FailedCheck(e); c != check {
			check = CheckReference
		}
	}
	return nil, NewCheckError(check, fmt.Errorf("no validator accepted the evidence: %w", errors.Join(errs...)))
}
