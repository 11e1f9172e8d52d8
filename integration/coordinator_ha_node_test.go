package integration_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/integration/chart"
	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// haNodeEnv is what the HA test takes from TestChartOnRealNode: the
// cluster with the pushed images, helm and the chart, and the simulated
// platform the Coordinators run on.
type haNodeEnv struct {
	c           *cluster.Cluster
	h           *chart.Helm
	dir         string
	base        map[string]any // chart.LocalValues with the simulated platform
	authPEM     []byte
	auth        *sim.SNPAuthority
	measurement []byte
	ref         snp.ReferenceValues
	refValues   map[string]any
}

const (
	haNS      = "contrast-ha-system"
	haCoord   = "contrast-coordinator"
	haMeshSvc = "contrast-coordinator-mesh"
	// The Coordinator's metrics of peer recovery and attestation.
	peerOKRequester     = `contrast_coordinator_peer_recoveries_total{result="ok",role="requester"}`
	peerRefusedByPeer   = `contrast_coordinator_peer_recoveries_total{result="refused-by-peer",role="requester"}`
	peerRejectedServing = `contrast_coordinator_peer_recoveries_total{result="rejected",role="responder"}`
	peerOKServing       = `contrast_coordinator_peer_recoveries_total{result="ok",role="responder"}`
	attestNotCoord      = `contrast_coordinator_attestations_total{reason="not-coordinator",result="rejected"}`
	recoveryWaiting     = "waiting for a peer Coordinator or Recover"
)

// testCoordinatorHAOnRealNode installs a release with three Coordinator
// replicas (the chart's StatefulSet, peers Service, PDB) on the real node
// and walks through issue 16: a manifest set through one replica is served
// by the others; a replica whose evidence is not of Role coordinator gets
// nothing from its peers; 1,000 simulated Initializers request certificates
// through the mesh Service while replicas are deleted one by one (one
// killed with SIGKILL) and the manifest is updated; all replicas deleted,
// they wait in recovery mode until Recover through the user API Service,
// and the other two recover from the first without a human. It logs the
// figures of the issue: restart-to-Ready p50/p99, the certificate error
// rate during the deletions, issuance throughput of three replicas against
// one.
func testCoordinatorHAOnRealNode(ctx context.Context, t *testing.T, e *haNodeEnv) {
	c := e.c
	start := time.Now()
	c.Kubectl(t, "create", "namespace", haNS)
	require.NoError(t, c.WaitForNamespaceReady(ctx, haNS))
	_, err := c.Client.CoreV1().Secrets(haNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "sim-authority"},
		Data:       map[string][]byte{"authority.pem": e.authPEM},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	values := chart.MergeValues(e.base, map[string]any{
		"runtimeClass": map[string]any{"name": "contrast-cc-ha"},
		"webhook": map[string]any{
			"replicas":          1,
			"namespaceSelector": map[string]any{"matchLabels": map[string]any{"contrast.cc/inject": nil, "contrast.cc/inject-ha": "enabled"}},
		},
		"coordinator": map[string]any{
			"replicas":           3,
			"simAuthoritySecret": "sim-authority", "simMeasurement": hex.EncodeToString(e.measurement),
			"referenceValues": e.refValues,
		},
	})
	coord := coordinatorPolicyFromTemplate(ctx, t, e.h, e.dir, "contrast", haNS, values)
	values = chart.MergeValues(values, map[string]any{"coordinator": map[string]any{"policyHash": hex.EncodeToString(coord.Digest)}})
	_, err = chart.Install(ctx, e.h, e.dir, t.TempDir(), "contrast", haNS, values, 5*time.Minute)
	require.NoError(t, err)
	pods := readyPods(ctx, t, c, haNS, "app.kubernetes.io/component=coordinator")
	require.Len(t, pods, 3, "three Coordinators run as real pods and are Ready (no manifest yet)")
	t.Logf("TIMING HA release installed (3 Coordinators Ready) in %s", time.Since(start).Round(time.Millisecond))
	for _, p := range pods {
		require.Equal(t, hex.EncodeToString(coord.Digest), p.Annotations[policy.AnnotationPolicyHash], "%s: admitted with the template's policy", p.Name)
	}

	// The simulated Initializers' policy, and a rogue replica's: the
	// Coordinator's own pod with its initdata edited (as an untrusted
	// cluster admin can), a policy the manifest lists without Role
	// coordinator.
	workload := coordinatortest.NewPolicy("ha-initializers")
	rogueAnnotation, rogueDoc, rogueHash := editedInitData(t, pods[0].Annotations[policy.AnnotationInitData])
	hd := &haDeployment{e: e, coord: coord, workload: workload, rogue: rogueHash, rogueDoc: rogueDoc, owner: chartOwnerKey()}

	set1 := hd.set(ctx, t, coordAddr(ctx, t, c, 0, 1313), nil)
	require.NotEmpty(t, set1.GetSeedShares())

	t.Run("OthersServeManifestSetThroughOne", func(t *testing.T) {
		// Replicas 1 and 2 see the new head (watch), go into recovery
		// mode and recover from replica 0: wait for their own /readyz,
		// not the pods' condition, which lags by a probe period.
		start := time.Now()
		for i := 1; i <= 2; i++ {
			addr := coordAddr(ctx, t, c, i, 9102)
			require.NoError(t, wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				code, _, err := httpGet(ctx, "http://"+addr+"/readyz")
				if err != nil || code != http.StatusOK {
					return false, nil //nolint:nilerr // not yet
				}
				v, err := metricAt(ctx, strings.Split(addr, ":")[0], peerOKRequester)
				return err == nil && v == 1, nil
			}), "replica %d recovers from a peer", i)
		}
		t.Logf("TIMING replicas 1 and 2 recovered from replica 0 and ready %s after the manifest was set through it", time.Since(start).Round(time.Millisecond))
		readyPods(ctx, t, c, haNS, "app.kubernetes.io/component=coordinator")
		for i := 1; i <= 2; i++ {
			resp, err := coordinatortest.NewMeshCert(ctx, coordAddr(ctx, t, c, i, 7777), hd.issuer(t), coordinatortest.OwnerKey())
			require.NoError(t, err, "replica %d serves an Initializer", i)
			assert.Equal(t, set1.GetMeshCa(), resp.GetMeshCa(), "replica %d: the mesh CA of the manifest set through replica 0", i)
			assert.Equal(t, set1.GetRootCa(), resp.GetRootCa())
			assert.Contains(t, firstCert(t, string(resp.GetCertChain())).DNSNames, "initializer")
			assert.InDelta(t, 1, coordMetric(ctx, t, c, i, peerOKRequester), 0, "replica %d recovered from a peer", i)
		}
		assert.InDelta(t, 2, coordMetric(ctx, t, c, 0, peerOKServing)+coordMetric(ctx, t, c, 1, peerOKServing)+coordMetric(ctx, t, c, 2, peerOKServing), 0,
			"two seeds handed over")
	})

	t.Run("ReplicaWithoutRoleCoordinatorGetsNothing", func(t *testing.T) {
		testRogueReplica(ctx, t, c, rogueAnnotation, rogueHash)
	})

	t.Run("ThroughputThreeAgainstOne", func(t *testing.T) {
		const n = 200
		var addrs []string
		for i := range 3 {
			addrs = append(addrs, coordAddr(ctx, t, c, i, 7777))
		}
		one := hd.throughput(t, addrs[:1], n)
		three := hd.throughput(t, addrs, n)
		t.Logf("FIGURE issuance throughput: one replica %.0f/s, three replicas %.0f/s (ratio %.2f; same run, %d certificates each, 16 concurrent; all on one 2-core machine with the clients)",
			one, three, three/one, n)
	})

	var restarts []time.Duration
	set2 := set1
	t.Run("DeletionsWhileInitializersRequest", func(t *testing.T) {
		svc, err := c.Client.CoreV1().Services(haNS).Get(ctx, haMeshSvc, metav1.GetOptions{})
		require.NoError(t, err)
		meshAddr := net.JoinHostPort(svc.Spec.ClusterIP, "7777")
		churn := &haChurn{}
		const n = 1000
		const spread = 30 * time.Second
		done := make(chan struct{})
		churnStart := time.Now()
		iss := hd.issuer(t)
		go func() {
			defer close(done)
			runHAInitializers(iss, meshAddr, n, spread, churn)
		}()
		step := 3 * time.Second
		time.Sleep(step)
		churn.during("delete replica 0", func() { restarts = append(restarts, restartReplica(ctx, t, c, 0, false)) })
		time.Sleep(step)
		// An update through replica 2: a new mesh CA; every certificate
		// of an attempt that starts after the acknowledgement must be of it.
		var ackAt time.Time
		churn.during("manifest update through replica 2, until 2 s after the ack", func() {
			set2 = hd.set(ctx, t, coordAddr(ctx, t, c, 2, 1313), set1.GetTransitionHash(), "10.0.0.2")
			ackAt = time.Now()
			time.Sleep(2 * time.Second)
		})
		require.NotEqual(t, set1.GetMeshCa(), set2.GetMeshCa(), "the update rotated the mesh CA")
		time.Sleep(step)
		churn.during("kill -9 of replica 1's Coordinator", func() { restarts = append(restarts, restartReplica(ctx, t, c, 1, true)) })
		time.Sleep(step)
		churn.during("delete replica 2", func() { restarts = append(restarts, restartReplica(ctx, t, c, 2, false)) })
		churnEnd := time.Now()
		<-done
		t.Logf("churn: deletions from %s to %s after the first Initializer; Initializers started over %s",
			(3 * time.Second).String(), churnEnd.Sub(churnStart).Round(time.Millisecond), spread)
		churn.check(t, set1.GetMeshCa(), set2.GetMeshCa(), ackAt)
	})

	t.Run("RestartToReady", func(t *testing.T) {
		for i := range 8 {
			restarts = append(restarts, restartReplica(ctx, t, c, i%3, false))
		}
		require.GreaterOrEqual(t, len(restarts), 10)
		sorted := slices.Clone(restarts)
		slices.Sort(sorted)
		t.Logf("FIGURE restart (pod deleted or Coordinator killed) to Ready over %d restarts: p50 %s, p99 %s, max %s; all: %v",
			len(sorted), coordinatortest.Percentile(sorted, 0.5).Round(time.Millisecond),
			coordinatortest.Percentile(sorted, 0.99).Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond), roundAll(restarts))
		// Every restarted replica serves the current manifest.
		for i := range 3 {
			resp, err := coordinatortest.NewMeshCert(ctx, coordAddr(ctx, t, c, i, 7777), hd.issuer(t), coordinatortest.OwnerKey())
			require.NoError(t, err)
			assert.Equal(t, set2.GetMeshCa(), resp.GetMeshCa(), "replica %d", i)
		}
	})

	t.Run("AllDeletedThenRecoverThenPeers", func(t *testing.T) {
		require.NoError(t, c.Client.CoreV1().Pods(haNS).DeleteCollection(ctx, metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=coordinator"}))
		// All three come back in recovery mode: no ready peer is left.
		var ips []string
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			ps, err := c.Pods(ctx, haNS, "app.kubernetes.io/component=coordinator")
			if err != nil || len(ps) != 3 {
				return false, err
			}
			ips = ips[:0]
			for _, p := range ps {
				if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
					return false, nil
				}
				code, body, err := httpGet(ctx, "http://"+net.JoinHostPort(p.Status.PodIP, "9102")+"/readyz?verbose")
				if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, recoveryWaiting) {
					return false, nil //nolint:nilerr // not up yet
				}
				ips = append(ips, p.Status.PodIP)
			}
			return true, nil
		}), "three new Coordinators in recovery mode")
		// They stay there: a few peer rounds later, none is ready.
		time.Sleep(3 * time.Second)
		for _, ip := range ips {
			code, body, err := httpGet(ctx, "http://"+net.JoinHostPort(ip, "9102")+"/readyz?verbose")
			require.NoError(t, err)
			assert.Equal(t, http.StatusServiceUnavailable, code, body)
			assert.Contains(t, body, recoveryWaiting)
		}
		// `contrast recover` through the user API Service (it publishes
		// not-ready replicas): one replica gets the seed from its share.
		userSvc, err := c.Client.CoreV1().Services(haNS).Get(ctx, haCoord, metav1.GetOptions{})
		require.NoError(t, err)
		user, conn, err := coordinatortest.DialUser(net.JoinHostPort(userSvc.Spec.ClusterIP, "1313"), nil, []attest.Validator{hd.coordValidator(t)})
		require.NoError(t, err)
		defer conn.Close()
		seed := coordinatortest.DecryptSeedShare(t, coordinatortest.SeedShareKey(), set1.GetSeedShares()[0])
		recStart := time.Now()
		rec, err := user.Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt(), ExpectedLatestTransition: set2.GetTransitionHash()})
		require.NoError(t, err)
		assert.EqualValues(t, 2, rec.GetGeneration())
		assert.Equal(t, set2.GetMeshCa(), rec.GetMeshCa())
		pods := readyPods(ctx, t, c, haNS, "app.kubernetes.io/component=coordinator")
		require.Len(t, pods, 3)
		t.Logf("TIMING all three Ready %s after Recover through the user API Service", time.Since(recStart).Round(time.Millisecond))
		// Exactly one was recovered by hand; the other two from a peer.
		var fromPeer float64
		for i := range 3 {
			fromPeer += coordMetric(ctx, t, c, i, peerOKRequester)
			resp, err := coordinatortest.NewMeshCert(ctx, coordAddr(ctx, t, c, i, 7777), hd.issuer(t), coordinatortest.OwnerKey())
			require.NoError(t, err)
			assert.Equal(t, set2.GetMeshCa(), resp.GetMeshCa(), "replica %d serves the latest mesh CA", i)
		}
		assert.InDelta(t, 2, fromPeer, 0, "two replicas recovered from a peer without a human")
	})
	t.Logf("TIMING HA test %s", time.Since(start).Round(time.Millisecond))
}

// haDeployment builds the manifests of the HA test.
type haDeployment struct {
	e        *haNodeEnv
	coord    *policy.Result
	workload coordinatortest.Policy
	rogue    [32]byte
	rogueDoc []byte
	owner    *ecdsa.PrivateKey
	devOnce  sync.Once
	dev      *sim.SNPDevice
}

// set sets the manifest with the Coordinator, the Initializers' policy
// (SANs initializer and extra) and the rogue's (no role) through addr.
func (d *haDeployment) set(ctx context.Context, t *testing.T, addr string, expected []byte, extra ...string) *userpb.SetManifestResponse {
	t.Helper()
	m := &manifest.Manifest{
		Policies: map[manifest.HexString]manifest.PolicyEntry{
			manifest.NewHexString(d.coord.Digest): {SANs: []string{"coordinator"}, Role: manifest.RoleCoordinator},
			d.workload.HexHash():                  {SANs: append([]string{"initializer"}, extra...), WorkloadSecretID: "ha/initializer"},
			manifest.NewHexString(d.rogue[:]):     {SANs: []string{"rogue"}, WorkloadSecretID: "ha/rogue"},
		},
		ReferenceValues:       manifest.ReferenceValues{SNP: []snp.ReferenceValues{d.e.ref}},
		WorkloadOwnerPubKeys:  []manifest.HexString{coordinatortest.PubHex(&d.owner.PublicKey)},
		SeedshareOwnerPubKeys: []manifest.HexString{coordinatortest.PubHex(&coordinatortest.SeedShareKey().PublicKey)},
	}
	user, conn, err := coordinatortest.DialUser(addr, d.owner, []attest.Validator{d.coordValidator(t)})
	require.NoError(t, err)
	defer conn.Close()
	resp, err := user.SetManifest(ctx, &userpb.SetManifestRequest{
		Manifest: coordinatortest.JSON(m), Policies: [][]byte{d.coord.InitData, d.workload.Doc, d.rogueDoc},
		ExpectedLatestTransition: expected,
	})
	require.NoError(t, err, "SetManifest through %s", addr)
	return resp
}

// coordValidator validates a Coordinator of the release as `contrast set`
// does: the simulated platform and the Coordinator's policy hash.
func (d *haDeployment) coordValidator(t *testing.T) attest.Validator {
	t.Helper()
	v, err := snp.NewValidator(snp.Config{ReferenceValues: []snp.ReferenceValues{d.e.ref}, ExpectedHostData: d.coord.Digest})
	require.NoError(t, err)
	return v
}

// issuer is the simulated TEE of an Initializer: the Coordinators' platform
// and launch measurement, HOST_DATA the Initializers' policy hash.
func (d *haDeployment) issuer(t *testing.T) attest.Issuer {
	t.Helper()
	d.devOnce.Do(func() {
		cfg := sim.DefaultSNPDeviceConfig()
		copy(cfg.Measurement[:], d.e.measurement)
		cfg.HostData = d.workload.Hash
		var err error
		d.dev, err = d.e.auth.NewDevice(cfg)
		require.NoError(t, err)
	})
	return coordinatortest.Issuer(d.dev)
}

// throughput returns issuances/s of n Initializers (16 at a time) spread
// round-robin over addrs.
func (d *haDeployment) throughput(t *testing.T, addrs []string, n int) float64 {
	t.Helper()
	iss := d.issuer(t)
	var wg sync.WaitGroup
	var errs atomic.Int64
	var first atomic.Value
	sem := make(chan struct{}, 16)
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := coordinatortest.NewMeshCert(t.Context(), addrs[i%len(addrs)], iss, coordinatortest.OwnerKey()); err != nil {
				errs.Add(1)
				first.CompareAndSwap(nil, err)
			}
		})
	}
	wg.Wait()
	require.Zero(t, errs.Load(), "issuance errors in the throughput phase: %v", first.Load())
	return float64(n) / time.Since(start).Seconds()
}

// haChurn records the Initializers' attempts during the deletions.
type haChurn struct {
	mu       sync.Mutex
	attempts int
	errs     []error
	errAt    []time.Time
	phases   []haPhase
	failed   int
	certs    []haIssued
}

type haIssued struct {
	start  time.Time
	meshCA []byte
}

// runHAInitializers starts n simulated Initializers evenly over spread, each
// dialing the mesh API Service at addr; each retries as the Initializer
// does (back-off 100 ms doubling to 2 s) for up to two minutes, a new
// connection for every attempt (a fresh pick of the Service's endpoints).
func runHAInitializers(iss attest.Issuer, addr string, n int, spread time.Duration, res *haChurn) {
	var wg sync.WaitGroup
	tick := spread / time.Duration(n)
	for range n {
		wg.Go(func() {
			key := coordinatortest.OwnerKey()
			deadline := time.Now().Add(2 * time.Minute)
			backoff := 100 * time.Millisecond
			for {
				start := time.Now()
				resp, err := haAttempt(addr, iss, key)
				res.mu.Lock()
				res.attempts++
				if err == nil {
					res.certs = append(res.certs, haIssued{start: start, meshCA: resp.GetMeshCa()})
					res.mu.Unlock()
					return
				}
				res.errs = append(res.errs, err)
				res.errAt = append(res.errAt, time.Now())
				if time.Now().After(deadline) {
					res.failed++
					res.mu.Unlock()
					return
				}
				res.mu.Unlock()
				time.Sleep(backoff + rand.N(backoff/2)) //nolint:gosec // jitter
				backoff = min(2*backoff, 2*time.Second)
			}
		})
		time.Sleep(tick)
	}
	wg.Wait()
}

// haAttempt is one attempt: a new mutual aTLS connection and one call
// within 15 s, without waiting for a ready connection.
func haAttempt(addr string, iss attest.Issuer, key *ecdsa.PrivateKey) (*meshpb.NewMeshCertResponse, error) {
	client, conn, err := coordinatortest.DialMesh(addr, iss, key)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return client.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{}) //nolint:wrapcheck // counted as is
}

type haPhase struct {
	name       string
	start, end time.Time
}

// during runs f as the phase name (from its start until it returns).
func (r *haChurn) during(name string, f func()) {
	start := time.Now()
	f()
	r.mu.Lock()
	r.phases = append(r.phases, haPhase{name: name, start: start, end: time.Now()})
	r.mu.Unlock()
}

// byPhase counts the failed attempts of each phase (the rest: "between").
func (r *haChurn) byPhase() map[string]int {
	out := map[string]int{}
	for _, at := range r.errAt {
		name := "between the phases"
		for _, p := range r.phases {
			if !at.Before(p.start) && !at.After(p.end) {
				name = p.name
			}
		}
		out[name]++
	}
	return out
}

// check requires every Initializer to have its certificate, each of the
// first or the second mesh CA, and none of the first for an attempt that
// started after the update was acknowledged (ackAt).
func (r *haChurn) check(t *testing.T, oldCA, newCA []byte, ackAt time.Time) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var stale, oldBefore, newCerts int
	for _, x := range r.certs {
		switch {
		case bytes.Equal(x.meshCA, newCA):
			newCerts++
		case !bytes.Equal(x.meshCA, oldCA):
			require.FailNow(t, "a certificate of neither mesh CA")
		case x.start.After(ackAt):
			stale++
		default:
			oldBefore++
		}
	}
	byCode := map[codes.Code]int{}
	causes := map[string]int{}
	for _, err := range r.errs {
		st := status.Convert(err)
		byCode[st.Code()]++
		msg := st.Message()
		if len(msg) > 90 {
			msg = msg[:90] + "…"
		}
		causes[st.Code().String()+": "+msg]++
	}
	defer t.Logf("causes of the failed attempts: %v; by phase: %v", causes, r.byPhase())
	t.Logf("FIGURE during the deletions: %d Initializers, %d certificate attempts, %d failed and were retried (%.2f %% of attempts; by gRPC code %v), %d Initializers failed after their retries",
		len(r.certs)+r.failed, r.attempts, len(r.errs), 100*float64(len(r.errs))/float64(r.attempts), byCode, r.failed)
	t.Logf("mesh CAs: %d certificates of the new CA, %d of the old from attempts started before the update was acknowledged, %d after", newCerts, oldBefore, stale)
	require.Zero(t, r.failed, "Initializers failed after their retries; first errors: %v", r.errs[:min(len(r.errs), 3)])
	require.Len(t, r.certs, 1000)
	require.Zero(t, stale, "certificates of the old mesh CA for attempts started after the update was acknowledged")
	require.Positive(t, newCerts)
}

// testRogueReplica runs a Coordinator pod like the StatefulSet's, but with
// its initdata edited: valid evidence of the manifest's platform whose
// policy the manifest lists without Role coordinator. Its peers refuse it
// (PermissionDenied, not-coordinator) and it stays in recovery mode.
func testRogueReplica(ctx context.Context, t *testing.T, c *cluster.Cluster, annotation string, hash [32]byte) {
	sts, err := c.Client.AppsV1().StatefulSets(haNS).Get(ctx, haCoord, metav1.GetOptions{})
	require.NoError(t, err)
	before := make([]float64, 3)
	for i := range 3 {
		before[i] = coordMetric(ctx, t, c, i, peerRejectedServing)
	}
	tmpl := sts.Spec.Template.DeepCopy()
	rogue := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "rogue-coordinator",
			// Not the Coordinators' labels: no Service selects it and
			// the release's webhook does not admit it (the namespace is
			// the control plane's), so the edited initdata stays.
			Labels: map[string]string{"app": "rogue-coordinator"},
			Annotations: map[string]string{
				"contrast.cc/pod-role":    "coordinator",
				policy.AnnotationInitData: annotation,
			},
		},
		Spec: tmpl.Spec,
	}
	_, err = c.Client.CoreV1().Pods(haNS).Create(ctx, rogue, metav1.CreateOptions{})
	require.NoError(t, err)
	defer func() {
		_ = c.Client.CoreV1().Pods(haNS).Delete(context.WithoutCancel(ctx), rogue.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}()
	var ip string
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(haNS).Get(ctx, rogue.Name, metav1.GetOptions{})
		if err != nil || p.Status.PodIP == "" {
			return false, err
		}
		ip = p.Status.PodIP
		v, err := metricAt(ctx, ip, peerRefusedByPeer)
		return err == nil && v >= 3, nil
	}), "the rogue replica asked its three peers and each refused it")
	code, body, err := httpGet(ctx, "http://"+net.JoinHostPort(ip, "9102")+"/readyz?verbose")
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, code, "the rogue is not ready: %s", body)
	assert.Contains(t, body, recoveryWaiting)
	ok, err := metricAt(ctx, ip, peerOKRequester)
	require.NoError(t, err)
	assert.Zero(t, ok, "the rogue got no seed")
	// The cause, on both sides: each peer refused it as not of Role
	// coordinator (after its evidence was validated), and the rogue saw
	// PermissionDenied with that reason.
	for i := range 3 {
		assert.Greater(t, coordMetric(ctx, t, c, i, peerRejectedServing), before[i], "replica %d refused a peer", i)
		assert.GreaterOrEqual(t, coordMetric(ctx, t, c, i, attestNotCoord), 1.0, "replica %d: rejected as not-coordinator", i)
	}
	logs := c.Kubectl(t, "-n", haNS, "logs", rogue.Name)
	assert.Contains(t, logs, "code = PermissionDenied", "the peers answered PermissionDenied")
	assert.Contains(t, logs, "does not have Role coordinator in the manifest")
	assert.Contains(t, logs, hex.EncodeToString(hash[:]), "the reason names the rogue's policy hash")
}

// editedInitData returns the initdata annotation a with a comment added
// (a valid document whose digest the webhook did not compute) and the
// HOST_DATA the simulated TEE derives from it, with the edited document.
func editedInitData(t *testing.T, a string) (string, []byte, [32]byte) {
	t.Helper()
	doc, err := policy.DecodeInitDataAnnotation(a)
	require.NoError(t, err)
	doc = append(doc, "\n# a rogue replica\n"...)
	gz, err := policy.GzipInitData(doc)
	require.NoError(t, err)
	edited := base64.StdEncoding.EncodeToString(gz)
	digest, err := sim.InitDataDigest([]byte(edited))
	require.NoError(t, err)
	require.Equal(t, sha256.Sum256(doc), digest, "HOST_DATA is the digest of the initdata document")
	return edited, doc, digest
}

// restartReplica deletes the pod of replica i (or, with kill, sends
// SIGKILL to its Coordinator process on the host, as kill -9 does) and
// returns the time until the replica is Ready again.
func restartReplica(ctx context.Context, t *testing.T, c *cluster.Cluster, i int, kill bool) time.Duration {
	t.Helper()
	name := fmt.Sprintf("%s-%d", haCoord, i)
	old, err := c.Client.CoreV1().Pods(haNS).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, old.Status.ContainerStatuses)
	restarts := old.Status.ContainerStatuses[0].RestartCount
	var start time.Time
	if kill {
		pid := coordinatorPID(ctx, t, c, old)
		start = time.Now()
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL), "kill -9 %d", pid)
	} else {
		start = time.Now()
		require.NoError(t, c.Client.CoreV1().Pods(haNS).Delete(ctx, name, metav1.DeleteOptions{}))
	}
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(haNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil || p.DeletionTimestamp != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, nil //nolint:nilerr // recreated by the StatefulSet
		}
		if kill && p.Status.ContainerStatuses[0].RestartCount == restarts || !kill && p.UID == old.UID {
			return false, nil
		}
		return podReady(p), nil
	}), "%s Ready again", name)
	return time.Since(start)
}

// coordinatorPID finds the host PID of the Coordinator container of pod
// through containerd (ctr tasks ls: the node runs runc on this host).
func coordinatorPID(ctx context.Context, t *testing.T, c *cluster.Cluster, pod *corev1.Pod) int {
	t.Helper()
	id, ok := strings.CutPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	require.True(t, ok, pod.Status.ContainerStatuses[0].ContainerID)
	binDir, err := cluster.ResolveBinDir("")
	require.NoError(t, err)
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "ctr"), "--address", c.RuntimeSocket(), "--namespace", "k8s.io", "tasks", "ls").CombinedOutput()
	require.NoError(t, err, string(out))
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
			pid, err := strconv.Atoi(f[1])
			require.NoError(t, err, line)
			return pid
		}
	}
	require.FailNow(t, "no running task of the Coordinator container", "%s in:\n%s", id, out)
	return 0
}

// coordAddr returns the pod address of replica i at port.
func coordAddr(ctx context.Context, t *testing.T, c *cluster.Cluster, i, port int) string {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(haNS).Get(ctx, fmt.Sprintf("%s-%d", haCoord, i), metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, p.Status.PodIP)
	return net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port))
}

// coordMetric reads one series of replica i's /metrics (0 if absent).
func coordMetric(ctx context.Context, t *testing.T, c *cluster.Cluster, i int, series string) float64 {
	t.Helper()
	addr := coordAddr(ctx, t, c, i, 9102)
	host, _, _ := net.SplitHostPort(addr)
	v, err := metricAt(ctx, host, series)
	require.NoError(t, err)
	return v
}

func metricAt(ctx context.Context, ip, series string) (float64, error) {
	code, body, err := httpGet(ctx, "http://"+net.JoinHostPort(ip, "9102")+"/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("metrics of %s: HTTP %d", ip, code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}

func httpGet(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func roundAll(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond).String()
	}
	return out
}
