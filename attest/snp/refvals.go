package snp

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/contrast-cc/contrast/attest"
)

// ReferenceValues are the manifest's expectations of SNP evidence. Field
// names follow the original Contrast manifest so existing manifests read
// unchanged. Every field is checked unless its comment says otherwise.
type ReferenceValues struct {
	// Name identifies the entry in results and logs (optional).
	Name string `json:",omitempty"`
	// Platform is "snp" (or empty) for hardware, "snp-simulated" for the
	// simulated device. The original Contrast's SNP platform names
	// (Metal-QEMU-SNP, Metal-QEMU-SNP-GPU, K3s-QEMU-SNP, K3s-QEMU-SNP-GPU,
	// AKS-CLH-SNP; any case) also mean hardware. A validator never mixes
	// hardware and simulated entries.
	Platform attest.Platform `json:",omitempty"`
	// ProductName is the product line: Milan or Genoa. Turin is refused
	// (see errTurin) until its TCB_VERSION layout is decoded.
	ProductName string
	// TrustedMeasurement is the 48-byte launch measurement.
	TrustedMeasurement attest.HexBytes
	// MinimumTCB is the minimum reported and current TCB. All four
	// components must be set.
	MinimumTCB TCB
	// MinimumLaunchTCB is the minimum TCB at launch; defaults to MinimumTCB.
	MinimumLaunchTCB *TCB `json:",omitempty"`
	// GuestPolicy is the most permissive guest policy accepted.
	GuestPolicy abi.SnpPolicy
	// AllowDebug must be true for GuestPolicy.Debug to be accepted. It
	// exists so that a debug policy is never accepted by accident.
	AllowDebug bool `json:",omitempty"`
	// PlatformInfo is the most permissive PLATFORM_INFO accepted.
	PlatformInfo *abi.SnpPlatformInfo
	// MinimumMitigationVector lists mitigation bits that must all be set in
	// the report's launch and current mitigation vectors (report version 5
	// and later; an older report has none, so a non-zero value rejects it).
	MinimumMitigationVector uint64 `json:",omitempty"`
	// AllowedChipIDs lists accepted CHIP_IDs (64 bytes each); empty accepts any chip.
	AllowedChipIDs []attest.HexBytes `json:",omitempty"`
	// CPUs is the number of vCPUs. The report has no vCPU count: the
	// launch measurement covers one VMSA per vCPU, so TrustedMeasurement,
	// matched exactly, admits only the count it was computed for, but
	// whether that is CPUs cannot be checked. Listed by Unenforced.
	CPUs uint64 `json:",omitempty"`
	// APEIP is the original Contrast's AP reset EIP (4 bytes) from which it
	// recomputes the measurement for every vCPU count. Its length is
	// checked, the value is not used: TrustedMeasurement is matched
	// exactly (the AP reset address is in every AP's VMSA), so a VM with
	// another vCPU count is rejected. Listed by Unenforced.
	APEIP attest.HexBytes `json:",omitempty"`
	// SimulatedRoot is the PEM ARK (and optionally ASK) of the simulated
	// platform. Required for, and only allowed with, snp-simulated.
	SimulatedRoot string `json:",omitempty"`
}

// TCB names the SNP TCB components.
type TCB struct {
	BootloaderVersion *uint8
	TEEVersion        *uint8
	SNPVersion        *uint8
	MicrocodeVersion  *uint8
}

func (t TCB) parts() kds.TCBParts {
	v := func(p *uint8) uint8 {
		if p == nil {
			return 0
		}
		return *p
	}
	return kds.TCBParts{BlSpl: v(t.BootloaderVersion), TeeSpl: v(t.TEEVersion), SnpSpl: v(t.SNPVersion), UcodeSpl: v(t.MicrocodeVersion)}
}

// errTurin refuses Turin reference values. Turin's TCB_VERSION has an FMC
// SPL in byte 0 and BOOT_LOADER, TEE, SNP SPL in bytes 1–3, where Milan and
// Genoa have BOOT_LOADER, TEE in bytes 0–1 and SNP SPL in byte 6; the
// go-sev-guest version in go.mod decodes every report, VCEK TCB extension
// and minimum with the Milan/Genoa layout, so MinimumTCB would be compared
// with the wrong bytes (a Turin report's SNP SPL would read as 0).
var errTurin = errors.New("product line Turin is not supported yet: its TCB_VERSION layout (FMC SPL in byte 0) is not decoded, " +
	"so MinimumTCB could not be checked; use a Milan or Genoa platform")

// errMissing reports a required field that is absent.
var errMissing = errors.New("missing")

func (t TCB) validate(path string) []error {
	var errs []error
	for _, c := range []struct {
		name string
		v    *uint8
	}{
		{"BootloaderVersion", t.BootloaderVersion}, {"TEEVersion", t.TEEVersion},
		{"SNPVersion", t.SNPVersion}, {"MicrocodeVersion", t.MicrocodeVersion},
	} {
		if c.v == nil {
			errs = append(errs, &attest.FieldError{Path: path + "." + c.name, Err: errMissing})
		}
	}
	return errs
}

// originalPlatforms are the original Contrast's names of SNP hardware
// platforms, compared case-insensitively as the original does.
var originalPlatforms = []string{"Metal-QEMU-SNP", "Metal-QEMU-SNP-GPU", "K3s-QEMU-SNP", "K3s-QEMU-SNP-GPU", "AKS-CLH-SNP"}

// hardware reports whether p names SNP hardware.
func hardware(p attest.Platform) bool {
	if p == "" || p == attest.PlatformSNP {
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
func (r *ReferenceValues) Simulated() bool { return r.Platform == attest.PlatformSimulatedSNP }

// Validate checks that r is complete and consistent. It reports every
// problem: the error joins (errors.Join) *attest.FieldError values with the
// JSON path relative to the entry; attest.FieldErrors lists them.
func (r *ReferenceValues) Validate() error {
	var errs []error
	field := func(path string, err error) { errs = append(errs, &attest.FieldError{Path: path, Err: err}) }
	switch {
	case r.Simulated():
		if _, err := parseRoots(r.SimulatedRoot); err != nil {
			field("SimulatedRoot", err)
		}
	case hardware(r.Platform):
		if r.SimulatedRoot != "" {
			field("SimulatedRoot", errors.New("only allowed for platform snp-simulated"))
		}
	default:
		field("Platform", fmt.Errorf("unknown SNP platform %q", r.Platform))
	}
	if r.ProductName == "" {
		field("ProductName", errMissing)
	} else if _, err := kds.ParseProductLine(r.ProductName); err != nil {
		field("ProductName", err)
	} else if r.ProductName == "Turin" {
		field("ProductName", errTurin)
	}
	switch len(r.TrustedMeasurement) {
	case 0:
		field("TrustedMeasurement", errMissing)
	case abi.MeasurementSize:
	default:
		field("TrustedMeasurement", fmt.Errorf("must be %d bytes, got %d", abi.MeasurementSize, len(r.TrustedMeasurement)))
	}
	errs = append(errs, r.MinimumTCB.validate("MinimumTCB")...)
	if r.MinimumLaunchTCB != nil {
		errs = append(errs, r.MinimumLaunchTCB.validate("MinimumLaunchTCB")...)
	}
	if r.GuestPolicy.Debug && !r.AllowDebug {
		field("GuestPolicy.Debug", errors.New("debug policy requires AllowDebug"))
	}
	if r.PlatformInfo == nil {
		field("PlatformInfo", errMissing)
	}
	for i, id := range r.AllowedChipIDs {
		if len(id) != abi.ChipIDSize {
			field(fmt.Sprintf("AllowedChipIDs[%d]", i), fmt.Errorf("must be %d bytes, got %d", abi.ChipIDSize, len(id)))
		}
	}
	if len(r.APEIP) != 0 && len(r.APEIP) != 4 {
		field("APEIP", fmt.Errorf("must be 4 bytes, got %d", len(r.APEIP)))
	}
	return errors.Join(errs...)
}

// Unenforced lists the fields of r that are set but that the evidence
// cannot show, so the validator does not check them, each with what that
// means, as *attest.FieldError values. A manifest must accept them
// explicitly (manifest.AcceptUnenforced).
func (r *ReferenceValues) Unenforced() []*attest.FieldError {
	var out []*attest.FieldError
	if r.CPUs != 0 {
		out = append(out, attest.FieldErrorf("CPUs", "not in the report: only TrustedMeasurement (one VMSA per vCPU, matched exactly) pins the vCPU count; "+
			"that it was computed for %d vCPUs cannot be checked", r.CPUs))
	}
	if len(r.APEIP) > 0 {
		out = append(out, attest.FieldErrorf("APEIP", "not used: TrustedMeasurement is matched exactly, so a VM with another vCPU count is rejected, "+
			"unlike in the original Contrast, which recomputes the measurement for any vCPU count"))
	}
	return out
}

// parseRoots parses a PEM bundle holding the ARK and optionally the ASK of
// a simulated product line into go-sev-guest's root type.
func parseRoots(pemData string) (*trust.AMDRootCerts, error) {
	var ark, ask *x509.Certificate
	rest := []byte(pemData)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing root certificate: %w", err)
		}
		if c.Subject.CommonName == c.Issuer.CommonName {
			ark = c
		} else {
			ask = c
		}
	}
	if ark == nil || ask == nil {
		return nil, errors.New("need the ARK and ASK certificates in PEM")
	}
	if err := ask.CheckSignatureFrom(ark); err != nil {
		return nil, fmt.Errorf("ASK not signed by ARK: %w", err)
	}
	productLine := ""
	if n := len(ark.Subject.CommonName); n > 4 && ark.Subject.CommonName[:4] == "ARK-" {
		productLine = ark.Subject.CommonName[4:]
	}
	if _, err := kds.ParseProductLine(productLine); err != nil {
		return nil, fmt.Errorf("root common name %q: %w", ark.Subject.CommonName, err)
	}
	r := trust.AMDRootCertsProduct(productLine)
	r.ProductCerts = &trust.ProductCerts{Ark: ark, Ask: ask}
	return r, nil
}
