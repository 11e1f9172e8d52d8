// Package manifest defines the Contrast manifest (DESIGN.md §5): the policy
// hashes of the deployment and the identities they receive, the reference
// values workload evidence must match, and the keys of the workload owners
// and seed-share owners. Field names follow the original Contrast manifest
// so existing manifest.json files read unchanged.
//
// The package is imported by the Coordinator and the CLI.
package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/attest/tdx"
)

// MaxSize bounds the size of a manifest document (the ConfigMap limit is 1 MiB).
const MaxSize = 512 << 10

// Manifest is the Coordinator's configuration of a confidential deployment.
type Manifest struct {
	// Policies maps the hex SHA-256 policy hash of every pod to its identity.
	Policies map[HexString]PolicyEntry
	// ReferenceValues are the accepted TEE evidence; evidence is accepted if
	// any entry validates.
	ReferenceValues ReferenceValues
	// WorkloadOwnerPubKeys are the public keys (hex DER PKIX or PEM) allowed
	// to replace this manifest.
	WorkloadOwnerPubKeys []HexString `json:",omitempty"`
	// WorkloadOwnerKeyDigests are hex SHA-256 digests of DER PKIX public keys
	// allowed to replace this manifest (the original Contrast's form).
	WorkloadOwnerKeyDigests []HexString `json:",omitempty"`
	// SeedshareOwnerPubKeys are RSA public keys (hex DER PKIX or PKCS #1, or
	// PEM) to which the seed is encrypted on the first manifest.
	SeedshareOwnerPubKeys []HexString `json:",omitempty"`
	// AcceptUnenforced lists the JSON paths of reference-value fields the
	// manifest sets although the evidence cannot show them (Unenforced),
	// e.g. "ReferenceValues.snp[0].CPUs": the owner accepts that they are
	// only notes. Without it, the Coordinator refuses such a manifest
	// (CheckEnforceable).
	AcceptUnenforced []string `json:",omitempty"`
}

// PolicyEntry is the identity of the pods launched with one policy.
type PolicyEntry struct {
	// SANs are the subject alternative names of the pods' mesh certificates:
	// DNS names (a leading "*." wildcard, or "*" alone), IP addresses, URIs.
	SANs []string
	// WorkloadSecretID selects the workload secret the pods receive.
	WorkloadSecretID string `json:",omitempty"`
	// Role is empty for workloads, or RoleCoordinator.
	Role Role `json:",omitempty"`
}

// Role of a policy entry.
type Role string

// RoleCoordinator marks the policy of the Coordinator itself.
const RoleCoordinator Role = "coordinator"

// ReferenceValues groups the reference values per platform. Real and
// simulated platforms must not be mixed.
type ReferenceValues struct {
	SNP []snp.ReferenceValues `json:"snp,omitempty"`
	TDX []tdx.ReferenceValues `json:"tdx,omitempty"`
}

// HexString is a hex-encoded byte string.
type HexString string

// NewHexString encodes b.
func NewHexString(b []byte) HexString { return HexString(hex.EncodeToString(b)) }

// Bytes decodes h.
func (h HexString) Bytes() ([]byte, error) { return hex.DecodeString(string(h)) }

// String returns h.
func (h HexString) String() string { return string(h) }

// Parse decodes and validates a manifest. Unknown fields are rejected, so a
// misspelled field never silently weakens a check. A failure is a
// *ValidationError listing every problem with its JSON path: first every
// decoding problem (unknown fields, values of the wrong type), else every
// validation problem.
func Parse(data []byte) (*Manifest, error) {
	if len(data) > MaxSize {
		return nil, &ValidationError{Errors: []FieldError{{Path: "", Msg: fmt.Sprintf("manifest of %d bytes exceeds %d", len(data), MaxSize)}}}
	}
	var m Manifest
	if errs := decode(data, &m); len(errs) > 0 {
		return nil, &ValidationError{Errors: errs}
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Marshal encodes m as indented JSON, as `contrast generate` writes it.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	return b, nil
}

// Simulated reports whether the manifest's reference values name simulated
// platforms (a valid manifest never mixes the two).
func (m *Manifest) Simulated() bool {
	for i := range m.ReferenceValues.SNP {
		if m.ReferenceValues.SNP[i].Simulated() {
			return true
		}
	}
	for i := range m.ReferenceValues.TDX {
		if m.ReferenceValues.TDX[i].Simulated() {
			return true
		}
	}
	return false
}

// PolicyHashSize is the size of a policy hash (SHA-256).
const PolicyHashSize = sha256.Size

// PolicyHashFromDigest maps the policy digest a TEE reports to the manifest's
// policy-hash key. SNP HOST_DATA is the 32-byte hash itself; TDX MRCONFIGID
// is 48 bytes: the hash followed by 16 zero bytes (DESIGN.md §4). Any other
// shape is not a policy hash.
func PolicyHashFromDigest(digest []byte) (HexString, bool) {
	switch len(digest) {
	case PolicyHashSize:
	case 48:
		for _, b := range digest[PolicyHashSize:] {
			if b != 0 {
				return "", false
			}
		}
		digest = digest[:PolicyHashSize]
	default:
		return "", false
	}
	return NewHexString(digest), true
}

// Policy returns the entry for the reported policy digest.
func (m *Manifest) Policy(digest []byte) (HexString, PolicyEntry, bool) {
	h, ok := PolicyHashFromDigest(digest)
	if !ok {
		return "", PolicyEntry{}, false
	}
	e, ok := m.Policies[h]
	return h, e, ok
}

// CoordinatorPolicyHashes returns the policy hashes with Role coordinator.
func (m *Manifest) CoordinatorPolicyHashes() []HexString {
	var out []HexString
	for h, e := range m.Policies {
		if e.Role == RoleCoordinator {
			out = append(out, h)
		}
	}
	return out
}
