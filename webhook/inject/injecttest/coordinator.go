package injecttest

import (
	"bytes"

	"github.com/google/go-sev-guest/abi"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/initializer/initenv"
)

// CoordinatorPolicyHash is a fixed Coordinator policy hash for injection
// tests (the policy of no real Coordinator).
var CoordinatorPolicyHash = bytes.Repeat([]byte{0xc0}, 32)

// CoordinatorReferenceValues returns fixed, valid real-SNP reference values
// for injection tests, so that golden files are stable.
func CoordinatorReferenceValues() initenv.ReferenceValues {
	u := func(v uint8) *uint8 { return &v }
	return initenv.ReferenceValues{SNP: []snp.ReferenceValues{{
		Name:               "test",
		Platform:           attest.PlatformSNP,
		ProductName:        "Milan",
		TrustedMeasurement: bytes.Repeat([]byte{0x4d}, 48),
		MinimumTCB:         snp.TCB{BootloaderVersion: u(3), TEEVersion: u(0), SNPVersion: u(8), MicrocodeVersion: u(115)},
		GuestPolicy:        abi.SnpPolicy{SMT: true},
		PlatformInfo:       &abi.SnpPlatformInfo{SMTEnabled: true},
	}}}
}
