package tdx

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/contrast-cc/contrast/attest"
)

// ReferenceValues are the manifest's expectations of TDX evidence. Field
// names follow the original Contrast manifest so existing manifests read
// unchanged. Every field is checked unless its comment says otherwise.
type ReferenceValues struct {
	// Name identifies the entry in results and logs (optional).
	Name string `json:",omitempty"`
	// Platform is "tdx" (or empty) for hardware, "tdx-simulated" for the
	// simulated device. The original Contrast's TDX platform names
	// (Metal-QEMU-TDX, Metal-QEMU-TDX-GPU, K3s-QEMU-TDX, RKE2-QEMU-TDX; any
	// case) also mean hardware.
	Platform attest.Platform `json:",omitempty"`
	// MrTd is the 48-byte TD measurement.
	MrTd attest.HexBytes
	// MrSeam is the 48-byte TDX module measurement.
	MrSeam attest.HexBytes
	// Rtmrs are the four 48-byte runtime measurement registers.
	Rtmrs [4]attest.HexBytes
	// Rtrms is how early releases of the original Contrast spelled Rtmrs;
	// it is read as Rtmrs (giving both is an error).
	Rtrms *[4]attest.HexBytes `json:",omitempty"`
	// Xfam is the 8-byte XFAM.
	Xfam attest.HexBytes
	// TdAttributes is the exact 8-byte TD_ATTRIBUTES. Omitted, it is
	// DefaultTdAttributes (only SEPT_VE_DISABLE, as the original Contrast
	// requires). Bit 0 (DEBUG) requires AllowDebug.
	TdAttributes attest.HexBytes `json:",omitempty"`
	// AllowDebug must be true for a debug TD to be accepted.
	AllowDebug bool `json:",omitempty"`
	// MinimumTeeTcbSvn is the component-wise minimum TEE_TCB_SVN (16
	// bytes). Omitted, there is no minimum beyond the TCB status of
	// Intel's collateral.
	MinimumTeeTcbSvn attest.HexBytes `json:",omitempty"`
	// MinimumQeSvn is the minimum quoting enclave SVN; omitted, 0.
	MinimumQeSvn *uint16 `json:",omitempty"`
	// MinimumPceSvn is the minimum provisioning certification enclave SVN
	// of the quote header; omitted, 0.
	MinimumPceSvn *uint16 `json:",omitempty"`
	// AllowedTCBStatuses lists the TCB statuses of Intel's collateral that
	// are accepted (checked after the collateral, the QE identity and the
	// TDX module); empty means UpToDate only. Revoked is never accepted.
	AllowedTCBStatuses []string `json:",omitempty"`
	// AllowedPIIDs lists accepted platform IDs (the 16-byte PPID of the PCK
	// certificate); empty accepts any platform.
	AllowedPIIDs []attest.HexBytes `json:",omitempty"`
	// MinTCBEvaluationDataNumber is the minimum tcbEvaluationDataNumber of
	// Intel's collateral: both the TCB info and the QE identity that
	// verified the quote must have at least this number (check
	// collateral). Set, it needs the collateral: a quote verified without
	// it is rejected.
	MinTCBEvaluationDataNumber int `json:",omitempty"`
	// MemoryIntegrity requires the PCK certificate's SGX type "scalable
	// with integrity" (2). SMTDisabled and StaticPlatform require the
	// platform configuration of the PCK certificate (only a PCK Platform
	// CA certificate carries one) to say SMT disabled and not a dynamic
	// platform. Check platform-info.
	MemoryIntegrity bool `json:",omitempty"`
	SMTDisabled     bool `json:",omitempty"`
	StaticPlatform  bool `json:",omitempty"`
	// CPUs is the number of vCPUs. The quote has no vCPU count; the
	// measurements, matched exactly, cover the firmware configuration that
	// lists the vCPUs, but whether they were computed for CPUs cannot be
	// checked. Listed by Unenforced.
	CPUs uint64 `json:",omitempty"`
	// SimulatedRoot is the PEM root of the simulated platform. Required
	// for, and only allowed with, tdx-simulated.
	SimulatedRoot string `json:",omitempty"`
}

// DefaultTdAttributes is the TD_ATTRIBUTES required when a reference value
// omits TdAttributes: only bit 28 (SEPT_VE_DISABLE) set, as Kata's QEMU
// configures a TD and the original Contrast requires. DEBUG is clear.
var DefaultTdAttributes = attest.HexBytes{0, 0, 0, 0x10, 0, 0, 0, 0}

// originalPlatforms are the original Contrast's names of TDX hardware
// platforms, compared case-insensitively as the original does.
var originalPlatforms = []string{"Metal-QEMU-TDX", "Metal-QEMU-TDX-GPU", "K3s-QEMU-TDX", "RKE2-QEMU-TDX"}

// hardware reports whether p names TDX hardware.
func hardware(p attest.Platform) bool {
	if p == "" || p == attest.PlatformTDX {
		return true
	}
	for _, o := range originalPlatforms {
		if strings.EqualFold(string(p), o) {
			return true
		}
	}
	return false
}

// Simulated reports whether r names the simulated platform.
func (r *ReferenceValues) Simulated() bool { return r.Platform == attest.PlatformSimulatedTDX }

// errMissing reports a required field that is absent.
var errMissing = errors.New("missing")

func fixed(path string, b []byte, n int, required bool) error {
	switch {
	case len(b) == 0 && required:
		return &attest.FieldError{Path: path, Err: errMissing}
	case len(b) == 0, len(b) == n:
		return nil
	default:
		return &attest.FieldError{Path: path, Err: fmt.Errorf("must be %d bytes, got %d", n, len(b))}
	}
}

func empty(rtmrs [4]attest.HexBytes) bool {
	for _, m := range rtmrs {
		if len(m) > 0 {
			return false
		}
	}
	return true
}

// rtmrs returns the RTMRs and the field they were given in.
func (r *ReferenceValues) rtmrs() ([4]attest.HexBytes, string) {
	if r.Rtrms != nil && empty(r.Rtmrs) {
		return *r.Rtrms, "Rtrms"
	}
	return r.Rtmrs, "Rtmrs"
}

// withDefaults returns r with omitted optional fields set to their
// defaults (and Rtrms read as Rtmrs), as the validator checks them.
func (r *ReferenceValues) withDefaults() ReferenceValues {
	d := *r
	d.Rtmrs, _ = r.rtmrs()
	d.Rtrms = nil
	if len(d.TdAttributes) == 0 {
		d.TdAttributes = DefaultTdAttributes
	}
	if len(d.MinimumTeeTcbSvn) == 0 {
		d.MinimumTeeTcbSvn = make(attest.HexBytes, 16)
	}
	var zero uint16
	if d.MinimumQeSvn == nil {
		d.MinimumQeSvn = &zero
	}
	if d.MinimumPceSvn == nil {
		d.MinimumPceSvn = &zero
	}
	return d
}

// Validate checks that r is complete and consistent. It reports every
// problem: the error joins (errors.Join) *attest.FieldError values with the
// JSON path relative to the entry; attest.FieldErrors lists them.
func (r *ReferenceValues) Validate() error {
	var errs []error
	field := func(path string, err error) { errs = append(errs, &attest.FieldError{Path: path, Err: err}) }
	switch {
	case r.Simulated():
		if _, err := parseRoot(r.SimulatedRoot); err != nil {
			field("SimulatedRoot", err)
		}
	case hardware(r.Platform):
		if r.SimulatedRoot != "" {
			field("SimulatedRoot", errors.New("only allowed for platform tdx-simulated"))
		}
	default:
		field("Platform", fmt.Errorf("unknown TDX platform %q", r.Platform))
	}
	if r.Rtrms != nil && !empty(r.Rtmrs) {
		field("Rtrms", errors.New("the original's misspelling of Rtmrs; give only Rtmrs"))
	}
	rtmrs, rtmrsName := r.rtmrs()
	for _, f := range []struct {
		path     string
		b        []byte
		n        int
		required bool
	}{
		{"MrTd", r.MrTd, 48, true}, {"MrSeam", r.MrSeam, 48, true},
		{rtmrsName + "[0]", rtmrs[0], 48, true}, {rtmrsName + "[1]", rtmrs[1], 48, true},
		{rtmrsName + "[2]", rtmrs[2], 48, true}, {rtmrsName + "[3]", rtmrs[3], 48, true},
		{"Xfam", r.Xfam, 8, true},
		{"TdAttributes", r.TdAttributes, 8, false}, {"MinimumTeeTcbSvn", r.MinimumTeeTcbSvn, 16, false},
	} {
		if err := fixed(f.path, f.b, f.n, f.required); err != nil {
			errs = append(errs, err)
		}
	}
	if len(r.TdAttributes) == 8 && r.TdAttributes[0]&1 == 1 && !r.AllowDebug {
		field("TdAttributes", errors.New("debug attribute requires AllowDebug"))
	}
	if r.MinTCBEvaluationDataNumber < 0 {
		field("MinTCBEvaluationDataNumber", errors.New("must not be negative"))
	}
	for i, st := range r.AllowedTCBStatuses {
		if !slices.Contains(acceptableStatuses, st) {
			field(fmt.Sprintf("AllowedTCBStatuses[%d]", i), fmt.Errorf("%q is not an acceptable TCB status (one of %s)", st, strings.Join(acceptableStatuses, ", ")))
		}
	}
	for i, id := range r.AllowedPIIDs {
		if len(id) != 16 {
			field(fmt.Sprintf("AllowedPIIDs[%d]", i), fmt.Errorf("must be 16 bytes, got %d", len(id)))
		}
	}
	return errors.Join(errs...)
}

// allowedTCBStatuses returns the TCB statuses r accepts.
func (r *ReferenceValues) allowedTCBStatuses() []string {
	if len(r.AllowedTCBStatuses) == 0 {
		return []string{StatusUpToDate}
	}
	return r.AllowedTCBStatuses
}

// Unenforced lists the fields of r that are set but that the evidence
// cannot show, so the validator does not check them, each with what that
// means, as *attest.FieldError values. A manifest must accept them
// explicitly (manifest.AcceptUnenforced).
func (r *ReferenceValues) Unenforced() []*attest.FieldError {
	var out []*attest.FieldError
	if r.CPUs != 0 {
		out = append(out, attest.FieldErrorf("CPUs", "not in the quote: only the measurements (matched exactly) pin the vCPU count; "+
			"that they were computed for %d vCPUs cannot be checked", r.CPUs))
	}
	return out
}

func parseRoot(pemData string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(pemData))
	if block == nil {
		return nil, errors.New("no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing root certificate: %w", err)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		return nil, fmt.Errorf("root is not self-signed: %w", err)
	}
	return c, nil
}
