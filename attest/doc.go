// Package attest is the root of Contrast's attestation library: TEE evidence
// issuers and validators for AMD SEV-SNP and Intel TDX, the simulated TEEs used
// in development and tests, and attested TLS (aTLS).
//
// The library imports nothing of Kubernetes and nothing of the other Contrast
// modules; see DESIGN.md §2 for the dependency direction, enforced by
// `make check-imports`.
package attest
