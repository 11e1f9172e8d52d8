package tdx

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/contrast-cc/contrast/attest"
)

// ReferenceValues are the manifest's expectations of TDX evidence. Every
// field is checked; none is optional unless stated.
type ReferenceValues struct {
	// Name identifies the entry in results and logs (optional).
	Name string `json:",omitempty"`
	// Platform is "tdx" (or empty) for hardware, "tdx-simulated" for the
	// simulated device.
	Platform attest.Platform `json:",omitempty"`
	// MrTd is the 48-byte TD measurement.
	MrTd attest.HexBytes
	// MrSeam is the 48-byte TDX module measurement.
	MrSeam attest.HexBytes
	// Rtmrs are the four 48-byte runtime measurement registers.
	Rtmrs [4]attest.HexBytes
	// Xfam is the 8-byte XFAM.
	Xfam attest.HexBytes
	// TdAttributes is the 8-byte TD_ATTRIBUTES. Bit 0 (DEBUG) requires AllowDebug.
	TdAttributes attest.HexBytes
	// AllowDebug must be true for a debug TD to be accepted.
	AllowDebug bool `json:",omitempty"`
	// MinimumTeeTcbSvn is the component-wise minimum TEE_TCB_SVN (16 bytes).
	MinimumTeeTcbSvn attest.HexBytes
	// MinimumQeSvn is the minimum quoting enclave SVN.
	MinimumQeSvn *uint16
	// AllowedPIIDs lists accepted platform IDs (the 16-byte PPID of the PCK
	// certificate); empty accepts any platform.
	AllowedPIIDs []attest.HexBytes `json:",omitempty"`
	// SimulatedRoot is the PEM root of the simulated platform. Required
	// for, and only allowed with, tdx-simulated.
	SimulatedRoot string `json:",omitempty"`
}

// Simulated reports whether r names the simulated platform.
func (r *ReferenceValues) Simulated() bool { return r.Platform == attest.PlatformSimulatedTDX }

func fixed(path string, b []byte, n int) error {
	if len(b) != n {
		return &attest.FieldError{Path: path, Err: fmt.Errorf("must be %d bytes, got %d", n, len(b))}
	}
	return nil
}

// Validate checks that r is complete and consistent.
func (r *ReferenceValues) Validate() error {
	switch r.Platform {
	case "", attest.PlatformTDX:
		if r.SimulatedRoot != "" {
			return &attest.FieldError{Path: "SimulatedRoot", Err: errors.New("only allowed for platform tdx-simulated")}
		}
	case attest.PlatformSimulatedTDX:
		if _, err := parseRoot(r.SimulatedRoot); err != nil {
			return &attest.FieldError{Path: "SimulatedRoot", Err: err}
		}
	default:
		return &attest.FieldError{Path: "Platform", Err: fmt.Errorf("unknown TDX platform %q", r.Platform)}
	}
	for _, f := range []struct {
		path string
		b    []byte
		n    int
	}{
		{"MrTd", r.MrTd, 48}, {"MrSeam", r.MrSeam, 48}, {"Rtmrs[0]", r.Rtmrs[0], 48}, {"Rtmrs[1]", r.Rtmrs[1], 48},
		{"Rtmrs[2]", r.Rtmrs[2], 48}, {"Rtmrs[3]", r.Rtmrs[3], 48}, {"Xfam", r.Xfam, 8},
		{"TdAttributes", r.TdAttributes, 8}, {"MinimumTeeTcbSvn", r.MinimumTeeTcbSvn, 16},
	} {
		if err := fixed(f.path, f.b, f.n); err != nil {
			return err
		}
	}
	if r.TdAttributes[0]&1 == 1 && !r.AllowDebug {
		return &attest.FieldError{Path: "TdAttributes", Err: errors.New("debug attribute requires AllowDebug")}
	}
	if r.MinimumQeSvn == nil {
		return &attest.FieldError{Path: "MinimumQeSvn", Err: errors.New("must be set")}
	}
	for i, id := range r.AllowedPIIDs {
		if err := fixed(fmt.Sprintf("AllowedPIIDs[%d]", i), id, 16); err != nil {
			return err
		}
	}
	return nil
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
