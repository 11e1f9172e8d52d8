package snp

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/contrast-cc/contrast/attest"
)

// ReferenceValues are the manifest's expectations of SNP evidence. Field
// names follow the original Contrast manifest so existing manifests read
// unchanged. Every field is checked; none is optional unless stated.
type ReferenceValues struct {
	// Name identifies the entry in results and logs (optional).
	Name string `json:",omitempty"`
	// Platform is "snp" (or empty) for hardware, "snp-simulated" for the
	// simulated device. A validator never mixes the two.
	Platform attest.Platform `json:",omitempty"`
	// ProductName is the product line: Milan, Genoa or Turin.
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
	// AllowedChipIDs lists accepted CHIP_IDs (64 bytes each); empty accepts any chip.
	AllowedChipIDs []attest.HexBytes `json:",omitempty"`
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

func (t TCB) validate(path string) error {
	for name, p := range map[string]*uint8{
		"BootloaderVersion": t.BootloaderVersion, "TEEVersion": t.TEEVersion,
		"SNPVersion": t.SNPVersion, "MicrocodeVersion": t.MicrocodeVersion,
	} {
		if p == nil {
			return &attest.FieldError{Path: path + "." + name, Err: errors.New("must be set")}
		}
	}
	return nil
}

// Simulated reports whether r names the simulated platform.
func (r *ReferenceValues) Simulated() bool { return r.Platform == attest.PlatformSimulatedSNP }

// Validate checks that r is complete and consistent. Errors are
// *attest.FieldError with the JSON path relative to the entry.
func (r *ReferenceValues) Validate() error {
	switch r.Platform {
	case "", attest.PlatformSNP:
		if r.SimulatedRoot != "" {
			return &attest.FieldError{Path: "SimulatedRoot", Err: errors.New("only allowed for platform snp-simulated")}
		}
	case attest.PlatformSimulatedSNP:
		if _, err := parseRoots(r.SimulatedRoot); err != nil {
			return &attest.FieldError{Path: "SimulatedRoot", Err: err}
		}
	default:
		return &attest.FieldError{Path: "Platform", Err: fmt.Errorf("unknown SNP platform %q", r.Platform)}
	}
	if _, err := kds.ParseProductLine(r.ProductName); err != nil {
		return &attest.FieldError{Path: "ProductName", Err: err}
	}
	if len(r.TrustedMeasurement) != abi.MeasurementSize {
		return &attest.FieldError{Path: "TrustedMeasurement", Err: fmt.Errorf("must be %d bytes, got %d", abi.MeasurementSize, len(r.TrustedMeasurement))}
	}
	if err := r.MinimumTCB.validate("MinimumTCB"); err != nil {
		return err
	}
	if r.MinimumLaunchTCB != nil {
		if err := r.MinimumLaunchTCB.validate("MinimumLaunchTCB"); err != nil {
			return err
		}
	}
	if r.GuestPolicy.Debug && !r.AllowDebug {
		return &attest.FieldError{Path: "GuestPolicy.Debug", Err: errors.New("debug policy requires AllowDebug")}
	}
	if r.PlatformInfo == nil {
		return &attest.FieldError{Path: "PlatformInfo", Err: errors.New("must be set")}
	}
	for i, id := range r.AllowedChipIDs {
		if len(id) != abi.ChipIDSize {
			return &attest.FieldError{Path: fmt.Sprintf("AllowedChipIDs[%d]", i), Err: fmt.Errorf("must be %d bytes, got %d", abi.ChipIDSize, len(id))}
		}
	}
	return nil
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
