package coordinatortest

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// Deployment is the manifest of the scenarios: the coordinator, a web
// workload and an emoji workload.
type Deployment struct {
	Web, Emoji Policy
	Owners     []*ecdsa.PrivateKey
}

// NewDeployment returns a deployment with n workload owners.
func NewDeployment(n int) *Deployment {
	d := &Deployment{Web: NewPolicy("web"), Emoji: NewPolicy("emoji")}
	for range n {
		d.Owners = append(d.Owners, OwnerKey())
	}
	return d
}

// Request returns the SetManifest request; extraSANs are added to web.
func (h *Harness) Request(d *Deployment, expected []byte, extraSANs ...string) *userpb.SetManifestRequest {
	var owners []any
	for _, o := range d.Owners {
		owners = append(owners, &o.PublicKey)
	}
	// Workload secret IDs are names, not secrets.
	webEntry := manifest.PolicyEntry{SANs: append([]string{"web", "web.emojivoto.svc.cluster.local", "*"}, extraSANs...)}
	webEntry.WorkloadSecretID = "emojivoto/web"
	emojiEntry := manifest.PolicyEntry{SANs: []string{"emoji"}}
	emojiEntry.WorkloadSecretID = "emojivoto/emoji"
	m := h.Platform.Manifest(h.CoordinatorPolicy, []Workload{{Policy: d.Web, Entry: webEntry}, {Policy: d.Emoji, Entry: emojiEntry}}, owners...)
	return &userpb.SetManifestRequest{
		Manifest:                 JSON(m),
		Policies:                 [][]byte{h.CoordinatorPolicy.Doc, d.Web.Doc, d.Emoji.Doc},
		ExpectedLatestTransition: expected,
	}
}

// RunLifecycle runs the Coordinator's user story against the harness's
// store: first manifest, attested mesh certificates and rejections,
// unauthorized and authorized updates with mesh CA rotation, a kill and
// restart into recovery mode, and recovery with the seed share.
func RunLifecycle(t *testing.T, h *Harness) {
	ctx := context.Background()
	d := NewDeployment(1)
	owner := d.Owners[0]

	c1 := h.Start(t)
	anon := h.User(t, c1, nil)
	_, err := anon.GetManifests(ctx, &userpb.GetManifestsRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "no manifest")
	web := h.Pod(t, d.Web, nil)
	// A connection that attests before the first manifest is told to reconnect once there is one.
	early, earlyConn, err := DialMesh(c1.MeshAddr(), Issuer(web.Device), web.Key)
	require.NoError(t, err)
	defer earlyConn.Close()
	_, err = early.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "no manifest")

	// An invalid manifest lists every error with its JSON path.
	bad := h.Request(d, nil)
	bad.Manifest = []byte(strings.Replace(string(bad.Manifest), `"SNPVersion":8,`, "", 1))
	bad.Manifest = []byte(strings.Replace(string(bad.Manifest), `"Role":"coordinator"`, `"Role":"admin"`, 1))
	_, err = anon.SetManifest(ctx, bad)
	RequireCode(t, err, codes.InvalidArgument, "ReferenceValues.snp[0].MinimumTCB.SNPVersion: missing", `unknown role "admin"`)

	// The first manifest is open to anyone and returns the seed share once.
	set1, err := anon.SetManifest(ctx, h.Request(d, nil))
	require.NoError(t, err)
	require.Len(t, set1.GetSeedShares(), 1)
	require.NotEmpty(t, set1.GetSalt())
	root := ParseCerts(t, set1.GetRootCa())
	mesh1 := ParseCerts(t, set1.GetMeshCa())
	code, _ := Probe(t, c1, "/readyz")
	require.Equal(t, 200, code)
	_, err = early.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "manifest generation 1 became active", "reconnect")

	// Accepted policy → certificate with the policy's SANs for the pod's key.
	meshConn, conn, err := DialMesh(c1.MeshAddr(), Issuer(web.Device), web.Key)
	require.NoError(t, err)
	defer conn.Close()
	resp, err := meshConn.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{})
	require.NoError(t, err)
	chain := ParseCerts(t, resp.GetCertChain())
	require.Len(t, chain, 2)
	leaf1 := chain[0]
	assert.ElementsMatch(t, []string{"web", "web.emojivoto.svc.cluster.local", "*"}, leaf1.DNSNames)
	assert.True(t, web.Key.PublicKey.Equal(leaf1.PublicKey), "leaf key is the pod's aTLS key")
	require.NoError(t, verifyLeaf(leaf1, mesh1, root))
	assert.Equal(t, set1.GetMeshCa(), resp.GetMeshCa())
	assert.Equal(t, set1.GetRootCa(), resp.GetRootCa())
	webSecret := resp.GetWorkloadSecret()
	require.Len(t, webSecret, 32)
	emoji := h.Pod(t, d.Emoji, nil)
	emojiResp, err := NewMeshCert(ctx, c1.MeshAddr(), Issuer(emoji.Device), emoji.Key)
	require.NoError(t, err)
	assert.NotEqual(t, webSecret, emojiResp.GetWorkloadSecret())

	// Rejections name the failed check: the negative matrix (tamper.go).
	requireRejections(t, h, c1, d)

	// Updates: a stranger's key is refused; an owner's rotates the mesh CA.
	gm, err := anon.GetManifests(ctx, &userpb.GetManifestsRequest{})
	require.NoError(t, err)
	_, err = h.User(t, c1, OwnerKey()).SetManifest(ctx, h.Request(d, gm.GetLatestTransition(), "10.0.0.7"))
	RequireCode(t, err, codes.PermissionDenied, "not a workload-owner key")
	_, err = anon.SetManifest(ctx, h.Request(d, gm.GetLatestTransition(), "10.0.0.7"))
	RequireCode(t, err, codes.PermissionDenied)
	set2, err := h.User(t, c1, owner).SetManifest(ctx, h.Request(d, gm.GetLatestTransition(), "10.0.0.7"))
	require.NoError(t, err)
	assert.Empty(t, set2.GetSeedShares())
	assert.EqualValues(t, 2, set2.GetGeneration())
	assert.Equal(t, set1.GetRootCa(), set2.GetRootCa())
	mesh2 := ParseCerts(t, set2.GetMeshCa())
	RequireMeshCARotated(t, leaf1, mesh1[0], mesh2[0], root[0])
	// The connection that attested under generation 1 must reconnect.
	_, err = meshConn.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "reconnect")
	resp2, err := NewMeshCert(ctx, c1.MeshAddr(), Issuer(web.Device), web.Key)
	require.NoError(t, err)
	leaf2 := ParseCerts(t, resp2.GetCertChain())[0]
	require.NoError(t, verifyLeaf(leaf2, mesh2, root))
	assert.Len(t, leaf2.IPAddresses, 1)
	assert.Equal(t, webSecret, resp2.GetWorkloadSecret())

	// Kill and restart: recovery mode until Recover with the seed share.
	c1.Stop()
	c2 := h.Start(t)
	code, body := Probe(t, c2, "/readyz")
	require.Equal(t, 503, code, body)
	assert.Contains(t, body, "secrets failed")
	recMesh, recConn, err := DialMesh(c2.MeshAddr(), Issuer(web.Device), web.Key)
	require.NoError(t, err)
	defer recConn.Close()
	_, err = recMesh.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "recovery mode")
	anon2 := h.User(t, c2, nil)
	_, err = anon2.GetManifests(ctx, &userpb.GetManifestsRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "recovery mode")
	_, err = h.User(t, c2, owner).SetManifest(ctx, h.Request(d, nil, "10.0.0.9"))
	RequireCode(t, err, codes.FailedPrecondition, "recovery mode")
	wrongSeed := sha256.Sum256([]byte("wrong"))
	_, err = anon2.Recover(ctx, &userpb.RecoverRequest{Seed: wrongSeed[:], Salt: set1.GetSalt()})
	RequireCode(t, err, codes.PermissionDenied, "seed does not match")
	_, err = anon2.Recover(ctx, &userpb.RecoverRequest{Seed: wrongSeed[:16], Salt: set1.GetSalt()})
	RequireCode(t, err, codes.InvalidArgument, "32 bytes")
	_, err = anon2.Recover(ctx, &userpb.RecoverRequest{Seed: wrongSeed[:], Salt: nil})
	RequireCode(t, err, codes.InvalidArgument, "32 bytes")

	seed := DecryptSeedShare(t, SeedShareKey(), set1.GetSeedShares()[0])
	_, err = anon2.Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt(), ExpectedLatestTransition: []byte("short")})
	RequireCode(t, err, codes.InvalidArgument, "expected_latest_transition")
	rec, err := anon2.Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt(), ExpectedLatestTransition: set2.GetTransitionHash()})
	require.NoError(t, err)
	assert.Equal(t, set1.GetRootCa(), rec.GetRootCa(), "same root CA")
	assert.Equal(t, set2.GetMeshCa(), rec.GetMeshCa(), "same mesh CA")
	assert.Equal(t, set2.GetTransitionHash(), rec.GetLatestTransition())
	assert.EqualValues(t, 2, rec.GetGeneration())
	code, _ = Probe(t, c2, "/readyz")
	require.Equal(t, 200, code)
	// The connection that attested in recovery mode must reconnect.
	_, err = recMesh.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "manifest generation 2 became active", "reconnect")
	_, err = anon2.Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt()})
	RequireCode(t, err, codes.FailedPrecondition, "not in recovery mode")
	resp3, err := NewMeshCert(ctx, c2.MeshAddr(), Issuer(web.Device), web.Key)
	require.NoError(t, err)
	assert.Equal(t, webSecret, resp3.GetWorkloadSecret(), "same workload secret")
	require.NoError(t, verifyLeaf(ParseCerts(t, resp3.GetCertChain())[0], mesh2, root))
	gm2, err := anon2.GetManifests(ctx, &userpb.GetManifestsRequest{})
	require.NoError(t, err)
	require.Len(t, gm2.GetManifests(), 2, "history intact")
	assert.Equal(t, h.Request(d, nil).GetManifest(), gm2.GetManifests()[0])
	assert.Len(t, gm2.GetPolicies(), 3)
	assert.EqualValues(t, 2, gm2.GetGeneration())

	_, metrics := Probe(t, c2, "/metrics")
	for _, m := range []string{
		"contrast_coordinator_manifest_generation 2",
		"contrast_coordinator_certificates_issued_total 1",
		`contrast_build_info{component="coordinator"`,
		`contrast_coordinator_grpc_server_handled_total{grpc_code="OK",grpc_method="Recover",grpc_service="contrast.userapi.v1.UserAPIService"} 1`,
	} {
		assert.Contains(t, metrics, m)
	}
}

// RunRollback puts an older signed latest pointer back into the store, as
// whoever controls the API server can; its signature still verifies.
//
// A running Coordinator does not adopt it (it is older than its active
// generation): updates are Aborted until the genuine pointer is back. After
// a restart only the owner, who knows a later transition, can detect it:
// Recover with expected_latest_transition fails with FailedPrecondition
// naming both generations and restores nothing; without it, the response
// tells the owner which (older) generation was restored.
func RunRollback(t *testing.T, h *Harness) {
	require.NotNil(t, h.Latest, "the rollback scenario needs Harness.Latest")
	ctx := context.Background()
	d := NewDeployment(1)

	c1 := h.Start(t)
	own := h.User(t, c1, d.Owners[0])
	set1, err := own.SetManifest(ctx, h.Request(d, nil))
	require.NoError(t, err)
	gen1Pointer, err := h.Latest.Latest(ctx)
	require.NoError(t, err)
	require.NotNil(t, gen1Pointer)
	set2, err := own.SetManifest(ctx, h.Request(d, set1.GetTransitionHash(), "10.0.0.7"))
	require.NoError(t, err)
	require.EqualValues(t, 2, set2.GetGeneration())
	genuine, err := h.Latest.Latest(ctx)
	require.NoError(t, err)

	require.NoError(t, h.Latest.SetLatest(ctx, gen1Pointer), "the attacker puts back the pointer of generation 1")
	for range 2 {
		_, err = own.SetManifest(ctx, h.Request(d, set2.GetTransitionHash(), "10.0.0.8"))
		RequireCode(t, err, codes.Aborted, "changed by another writer")
	}
	gm, err := own.GetManifests(ctx, &userpb.GetManifestsRequest{})
	require.NoError(t, err)
	assert.EqualValues(t, 2, gm.GetGeneration(), "the running Coordinator stays at generation 2")
	// With the genuine pointer back, the Coordinator (which reads the
	// pointer before every update) verifies it and writes on top of it.
	require.NoError(t, h.Latest.SetLatest(ctx, genuine), "the genuine pointer is restored")
	set3, err := own.SetManifest(ctx, h.Request(d, set2.GetTransitionHash(), "10.0.0.8"))
	require.NoError(t, err)
	require.EqualValues(t, 3, set3.GetGeneration())
	c1.Stop()

	require.NoError(t, h.Latest.SetLatest(ctx, gen1Pointer), "the attacker puts back the pointer of generation 1 and restarts the Coordinator")
	c2 := h.Start(t)
	anon := h.User(t, c2, nil)
	seed := DecryptSeedShare(t, SeedShareKey(), set1.GetSeedShares()[0])
	_, err = anon.Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt(), ExpectedLatestTransition: set3.GetTransitionHash()})
	RequireCode(t, err, codes.FailedPrecondition, "stored latest pointer is generation 1", "is generation 3", "rolled back", "nothing was restored")
	code, _ := Probe(t, c2, "/readyz")
	require.Equal(t, 503, code, "still in recovery mode")
	_, err = anon.GetManifests(ctx, &userpb.GetManifestsRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "recovery mode")

	// A wrong seed is told so before anything about the history.
	wrongSeed := sha256.Sum256([]byte("wrong"))
	_, err = anon.Recover(ctx, &userpb.RecoverRequest{Seed: wrongSeed[:], Salt: set1.GetSalt(), ExpectedLatestTransition: set3.GetTransitionHash()})
	RequireCode(t, err, codes.PermissionDenied, "seed does not match")

	// Without an expectation the rolled-back generation is restored, and
	// the response says which one: the owner compares it.
	rec, err := anon.Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt()})
	require.NoError(t, err)
	assert.EqualValues(t, 1, rec.GetGeneration())
	assert.Equal(t, set1.GetTransitionHash(), rec.GetLatestTransition())
	assert.Equal(t, set1.GetMeshCa(), rec.GetMeshCa())
}

// RunLatestDeleted deletes the latest pointer and restarts the Coordinator,
// hoping it starts empty and accepts the attacker's first manifest. It
// refuses instead: not ready, SetManifest, GetManifests, Recover and the
// mesh API answer FailedPrecondition naming the missing pointer. With the
// pointer restored, a restart is in ordinary recovery mode.
func RunLatestDeleted(t *testing.T, h *Harness) {
	require.NotNil(t, h.Latest, "the takeover scenario needs Harness.Latest")
	ctx := context.Background()
	d := NewDeployment(1)
	c1 := h.Start(t)
	set1, err := h.User(t, c1, nil).SetManifest(ctx, h.Request(d, nil))
	require.NoError(t, err)
	genuine, err := h.Latest.Latest(ctx)
	require.NoError(t, err)
	c1.Stop()

	require.NoError(t, h.Latest.SetLatest(ctx, nil), "the attacker deletes the latest pointer")
	c2 := h.Start(t)
	code, body := Probe(t, c2, "/readyz?verbose")
	require.Equal(t, 503, code, body)
	assert.Contains(t, body, "latest pointer is missing")
	attacker := NewDeployment(1)
	anon := h.User(t, c2, nil)
	_, err = anon.SetManifest(ctx, h.Request(attacker, nil))
	RequireCode(t, err, codes.FailedPrecondition, "latest pointer is missing", "refusing to start a new history")
	_, err = anon.GetManifests(ctx, &userpb.GetManifestsRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "latest pointer is missing")
	seed := DecryptSeedShare(t, SeedShareKey(), set1.GetSeedShares()[0])
	_, err = anon.Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt()})
	RequireCode(t, err, codes.FailedPrecondition, "latest pointer is missing")
	web := h.Pod(t, d.Web, nil)
	_, err = NewMeshCert(ctx, c2.MeshAddr(), Issuer(web.Device), web.Key)
	RequireCode(t, err, codes.FailedPrecondition, "latest pointer is missing")
	_, metrics := Probe(t, c2, "/metrics")
	assert.Contains(t, metrics, "contrast_coordinator_recovery_mode 1")
	assert.Contains(t, metrics, `contrast_coordinator_attestations_total{reason="latest-missing",result="rejected"} 1`)
	c2.Stop()

	require.NoError(t, h.Latest.SetLatest(ctx, genuine), "an operator restores the pointer")
	c3 := h.Start(t)
	rec, err := h.User(t, c3, nil).Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt(), ExpectedLatestTransition: set1.GetTransitionHash()})
	require.NoError(t, err)
	assert.Equal(t, set1.GetRootCa(), rec.GetRootCa())
}

// RunSharedStore runs two Coordinators with the same seed on one store, so
// that the latest pointer moves behind each one's back and the store's
// compare-and-swap (the API server's resourceVersion precondition for
// ConfigMaps), not a Coordinator's lock, decides. The Coordinator that
// loses gets Aborted, reloads the verified pointer, and the owner's retry
// with the new expected transition succeeds.
func RunSharedStore(t *testing.T, h *Harness) {
	ctx := context.Background()
	d := NewDeployment(1)
	owner := d.Owners[0]
	c1 := h.Start(t)
	set1, err := h.User(t, c1, nil).SetManifest(ctx, h.Request(d, nil))
	require.NoError(t, err)
	c2 := h.Start(t)
	seed := DecryptSeedShare(t, SeedShareKey(), set1.GetSeedShares()[0])
	_, err = h.User(t, c2, nil).Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt(), ExpectedLatestTransition: set1.GetTransitionHash()})
	require.NoError(t, err)
	own1, own2 := h.User(t, c1, owner), h.User(t, c2, owner)

	set2, err := own2.SetManifest(ctx, h.Request(d, set1.GetTransitionHash(), "via-c2"))
	require.NoError(t, err)
	// c1 reads the stored pointer before it checks the owner's expected
	// transition (and follows it through its watch): generation 2 is
	// adopted and the stale expectation refused.
	_, err = own1.SetManifest(ctx, h.Request(d, set1.GetTransitionHash(), "via-c1"))
	RequireCode(t, err, codes.Aborted, "latest transition differs", "the latest is generation 2")
	gm, err := own1.GetManifests(ctx, &userpb.GetManifestsRequest{})
	require.NoError(t, err)
	assert.EqualValues(t, 2, gm.GetGeneration(), "c1 reloaded the pointer c2 wrote")
	assert.Equal(t, set2.GetTransitionHash(), gm.GetLatestTransition())
	assert.Equal(t, set2.GetMeshCa(), gm.GetMeshCa())
	require.Len(t, gm.GetManifests(), 2)
	set3, err := own1.SetManifest(ctx, h.Request(d, gm.GetLatestTransition(), "via-c1"))
	require.NoError(t, err)
	assert.EqualValues(t, 3, set3.GetGeneration())

	// A mesh certificate from c2 after it reloads is of the new generation.
	_, err = own2.SetManifest(ctx, h.Request(d, set2.GetTransitionHash(), "via-c2-again"))
	RequireCode(t, err, codes.Aborted, "the latest is generation 3")
	web := h.Pod(t, d.Web, nil)
	resp, err := NewMeshCert(ctx, c2.MeshAddr(), Issuer(web.Device), web.Key)
	require.NoError(t, err)
	assert.Equal(t, set3.GetMeshCa(), resp.GetMeshCa())
}

// RunSquattedBlob runs a first SetManifest after someone who can write the
// store has put other content under the manifest's content address (squat
// creates that blob, kind "manifest" and the hex SHA-256). SetManifest must
// fail instead of succeeding with a history that no read can verify, and
// no latest pointer may be written.
func RunSquattedBlob(t *testing.T, h *Harness, squat func(ctx context.Context, kind, hash string) error) {
	require.NotNil(t, h.Latest, "the squatting scenario needs Harness.Latest")
	ctx := context.Background()
	req := h.Request(NewDeployment(1), nil)
	sum := sha256.Sum256(req.GetManifest())
	require.NoError(t, squat(ctx, "manifest", hexOf(sum[:])))
	c := h.Start(t)
	anon := h.User(t, c, nil)
	_, err := anon.SetManifest(ctx, req)
	RequireCode(t, err, codes.Internal)
	_, err = anon.GetManifests(ctx, &userpb.GetManifestsRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "no manifest")
	latest, err := h.Latest.Latest(ctx)
	require.NoError(t, err)
	require.Nil(t, latest, "no latest pointer was written")
}

// RunConcurrentOwners races two owners that both read the latest
// transition and then set different manifests with compare-and-swap:
// exactly one wins, the other gets Aborted.
func RunConcurrentOwners(t *testing.T, h *Harness) {
	ctx := context.Background()
	d := NewDeployment(2)
	c := h.Start(t)
	_, err := h.User(t, c, d.Owners[0]).SetManifest(ctx, h.Request(d, nil))
	require.NoError(t, err)
	gm, err := h.User(t, c, nil).GetManifests(ctx, &userpb.GetManifestsRequest{})
	require.NoError(t, err)

	clients := []userpb.UserAPIServiceClient{h.User(t, c, d.Owners[0]), h.User(t, c, d.Owners[1])}
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, cl := range clients {
		wg.Go(func() {
			<-start
			_, errs[i] = cl.SetManifest(ctx, h.Request(d, gm.GetLatestTransition(), fmt.Sprintf("owner-%d", i)))
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
			continue
		}
		RequireCode(t, err, codes.Aborted, "latest transition differs")
	}
	require.Equal(t, 1, wins)
	gm2, err := h.User(t, c, nil).GetManifests(ctx, &userpb.GetManifestsRequest{})
	require.NoError(t, err)
	assert.Len(t, gm2.GetManifests(), 2)
}

// DecryptSeedShare decrypts a seed share with the seed-share owner's key.
func DecryptSeedShare(t testing.TB, key *rsa.PrivateKey, share *userpb.SeedShare) []byte {
	t.Helper()
	seed, err := rsa.DecryptOAEP(sha256.New(), nil, key, share.GetEncryptedSeed(), nil)
	require.NoError(t, err)
	return seed
}

func hexOf(b []byte) string { return manifest.NewHexString(b).String() }
