package state_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/internal/history"
	"github.com/contrast-cc/contrast/coordinator/internal/seed"
	"github.com/contrast-cc/contrast/coordinator/internal/state"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

type fixture struct {
	platform    *coordinatortest.Platform
	coordinator coordinatortest.Policy
	web         coordinatortest.Policy
	owner       any
	ownerPub    any
	store       *history.MemStore
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	p, err := coordinatortest.SharedPlatform()
	require.NoError(t, err)
	o := coordinatortest.OwnerKey()
	return &fixture{
		platform: p, coordinator: coordinatortest.NewPolicy("coordinator"), web: coordinatortest.NewPolicy("web"),
		owner: o, ownerPub: &o.PublicKey, store: history.NewMemStore(),
	}
}

func (f *fixture) manifest(sans ...string) ([]byte, [][]byte) {
	m := f.platform.Manifest(f.coordinator, []coordinatortest.Workload{
		{Policy: f.web, Entry: manifest.PolicyEntry{SANs: sans, WorkloadSecretID: "web"}},
	}, f.ownerPub)
	return coordinatortest.JSON(m), [][]byte{f.coordinator.Doc, f.web.Doc}
}

// request sets the manifest whose web workload has these SANs, with no
// client and no expected transition: what an empty Coordinator accepts
// as its first manifest.
func (f *fixture) request(sans ...string) state.SetRequest {
	m, pols := f.manifest(sans...)
	return state.SetRequest{Manifest: m, Policies: pols}
}

// ownerRequest is the workload owner's update to the manifest whose web
// workload has these SANs, replacing expected (nil: whatever is latest).
func (f *fixture) ownerRequest(expected *history.Hash, sans ...string) state.SetRequest {
	req := f.request(sans...)
	req.Client, req.Expected = f.ownerPub, expected
	return req
}

func (f *fixture) authority(t *testing.T) *state.Authority {
	t.Helper()
	a, err := state.New(t.Context(), state.Config{
		History:          history.New(f.store),
		ValidatorOptions: manifest.ValidatorOptions{Logger: slog.New(slog.DiscardHandler)},
	})
	require.NoError(t, err)
	return a
}

// set applies req to a and requires it to succeed.
func set(t *testing.T, a *state.Authority, req state.SetRequest) *state.SetResult {
	t.Helper()
	res, err := a.SetManifest(t.Context(), req)
	require.NoError(t, err)
	return res
}

// first installs the first manifest (SANs "web") on the empty a.
func (f *fixture) first(t *testing.T, a *state.Authority) *state.SetResult {
	t.Helper()
	return set(t, a, f.request("web"))
}

// recovery is the request that recovers the seed res (a first manifest's
// result) handed out: its first seed share decrypted, and its salt.
func recovery(t *testing.T, res *state.SetResult) state.RecoverRequest {
	t.Helper()
	seedBytes, err := seed.DecryptShare(coordinatortest.SeedShareKey(), res.SeedShares[0].EncryptedSeed)
	require.NoError(t, err)
	return state.RecoverRequest{Seed: seedBytes, Salt: res.Salt}
}

// latest is the raw latest pointer in the store.
func (f *fixture) latest(t *testing.T) []byte {
	t.Helper()
	b, _, err := f.store.GetLatest(t.Context())
	require.NoError(t, err)
	return b
}

// expecting is r with the expected latest transition set to h.
func expecting(r state.RecoverRequest, h *history.Hash) state.RecoverRequest {
	r.Expected = h
	return r
}

func (f *fixture) attest(t *testing.T, snap *state.Snapshot, p coordinatortest.Policy) *attest.Result {
	t.Helper()
	dev, err := f.platform.Device(p.Hash, nil)
	require.NoError(t, err)
	var rd [64]byte
	rd[0] = 7
	ev, err := coordinatortest.Issuer(dev).Issue(t.Context(), rd)
	require.NoError(t, err)
	res, err := snap.Validate(t.Context(), ev, rd)
	require.NoError(t, err)
	return res
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func parsePEM(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	require.NotNil(t, block)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}

func pool(cs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

func verify(t *testing.T, leaf, mesh, root *x509.Certificate) {
	t.Helper()
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool(root), Intermediates: pool(mesh), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	require.NoError(t, err)
}

func signed(key ed25519.PrivateKey, th history.Hash, gen uint64) history.Latest {
	s := history.NewMemStore()
	if _, err := history.New(s).SwapLatest(context.Background(), "", th, gen, key); err != nil {
		panic(err)
	}
	b, _, err := s.GetLatest(context.Background())
	if err != nil {
		panic(err)
	}
	var l history.Latest
	if err := json.Unmarshal(b, &l); err != nil {
		panic(err)
	}
	return l
}

// mustChain returns the transition hashes of the history ending at head,
// oldest first.
func mustChain(t *testing.T, f *fixture, head history.Hash) []history.Hash {
	t.Helper()
	chain, err := history.New(f.store).Chain(t.Context(), head)
	require.NoError(t, err)
	out := make([]history.Hash, len(chain))
	for i := 1; i < len(chain); i++ {
		out[i-1] = chain[i].Previous
	}
	out[len(chain)-1] = head
	return out
}

func withGeneration(l history.Latest, gen uint64) history.Latest {
	l.Generation = gen
	return l
}
