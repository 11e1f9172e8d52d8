// Package coordinatortest builds simulated TEEs, manifests and policies for the
// Coordinator's tests: fakes, not mocks, shared by every test package.
package coordinatortest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"sync"

	"github.com/google/go-sev-guest/abi"

	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// Platform is a simulated SNP platform (one authority) from which devices
// (pods) are made.
type Platform struct {
	Authority *sim.SNPAuthority
	Base      sim.SNPDeviceConfig
	ref       snp.ReferenceValues
}

var (
	platformOnce sync.Once
	platform     *Platform
	platformErr  error
)

// SharedPlatform returns a process-wide simulated platform (creating an
// authority costs RSA key generation, so tests share one).
func SharedPlatform() (*Platform, error) {
	platformOnce.Do(func() {
		a, err := sim.NewSNPAuthority()
		if err != nil {
			platformErr = err
			return
		}
		base := sim.DefaultSNPDeviceConfig()
		dev, err := a.NewDevice(base)
		if err != nil {
			platformErr = err
			return
		}
		platform = &Platform{Authority: a, Base: base, ref: dev.ReferenceValues()}
	})
	return platform, platformErr
}

// ReferenceValues accept devices made with the base configuration. Chip IDs
// are not pinned, so every device of the platform is accepted.
func (p *Platform) ReferenceValues() snp.ReferenceValues {
	r := p.ref
	r.AllowedChipIDs = nil
	return r
}

// Device returns a simulated SNP device reporting policy digest hostData;
// mutate may change the rest of the configuration.
func (p *Platform) Device(hostData [32]byte, mutate func(*sim.SNPDeviceConfig)) (*sim.SNPDevice, error) {
	cfg := p.Base
	cfg.HostData = hostData
	if mutate != nil {
		mutate(&cfg)
	}
	return p.Authority.NewDevice(cfg)
}

// Issuer returns an SNP issuer backed by dev.
func Issuer(dev *sim.SNPDevice) *snp.Issuer {
	return snp.NewIssuer(dev.IssuerConfig())
}

// Policy is a fake policy document and its hash.
type Policy struct {
	Doc  []byte
	Hash [32]byte
}

// NewPolicy returns a policy document named name.
func NewPolicy(name string) Policy {
	doc := []byte(fmt.Sprintf("package agent_policy\n# %s\ndefault CreateContainerRequest := true\n", name))
	return Policy{Doc: doc, Hash: sha256.Sum256(doc)}
}

// HexHash returns the manifest key of p.
func (p Policy) HexHash() manifest.HexString { return manifest.NewHexString(p.Hash[:]) }

// OwnerKey returns a fresh workload-owner key (ECDSA P-256).
func OwnerKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// PubHex returns the hex DER PKIX encoding of pub, as the manifest lists keys.
func PubHex(pub any) manifest.HexString {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return manifest.NewHexString(der)
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// SeedShareKey returns a process-wide RSA-3072 seed-share owner key.
func SeedShareKey() *rsa.PrivateKey {
	rsaOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 3072); err != nil {
			panic(err)
		}
	})
	return rsaKey
}

// Workload is a policy and its manifest entry.
type Workload struct {
	Policy Policy
	Entry  manifest.PolicyEntry
}

// Manifest builds a manifest for the platform: the coordinator policy and
// the given workload policies.
func (p *Platform) Manifest(coordinator Policy, workloads []Workload, owners ...any) *manifest.Manifest {
	m := &manifest.Manifest{
		Policies: map[manifest.HexString]manifest.PolicyEntry{
			coordinator.HexHash(): {SANs: []string{"coordinator"}, Role: manifest.RoleCoordinator},
		},
		ReferenceValues:       manifest.ReferenceValues{SNP: []snp.ReferenceValues{p.ReferenceValues()}},
		SeedshareOwnerPubKeys: []manifest.HexString{PubHex(&SeedShareKey().PublicKey)},
	}
	for _, w := range workloads {
		m.Policies[w.Policy.HexHash()] = w.Entry
	}
	for _, o := range owners {
		m.WorkloadOwnerPubKeys = append(m.WorkloadOwnerPubKeys, PubHex(o))
	}
	return m
}

// JSON encodes m.
func JSON(m *manifest.Manifest) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// PubPEM returns the PEM PKIX encoding of pub.
func PubPEM(pub any) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// SNPPlatformInfo is a plausible PLATFORM_INFO for real reference values in tests.
var SNPPlatformInfo = abi.SnpPlatformInfo{SMTEnabled: true}
