package coordinatortest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/snp"
	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/server"
)

// HAOptions sizes the high-availability scenario.
type HAOptions struct {
	// Initializers request certificates while replicas are deleted (the
	// issue asks for 1,000).
	Initializers int
	// Restarts are measured for restart-to-Ready (at least 10).
	Restarts int
	// Throughput is the number of issuances of each phase of the
	// 3-replicas-against-1 measurement (0 skips it).
	Throughput int
}

// HAReport are the figures the scenario measured.
type HAReport struct {
	RestartToReady          []time.Duration // sorted
	Attempts, FailedAttempt int             // certificate attempts during the churn
	Failed                  int             // initializers that failed after their retries
	StaleAfterAck           int             // certificates of the old mesh CA from attempts started after the ack
	OldCAIssuedBeforeAck    int             // certificates of the old mesh CA from attempts started before the ack
	OneReplicaRate          float64         // issuances/s against one replica
	ThreeReplicaRate        float64         // issuances/s spread over three
}

// Percentile returns the q-quantile (nearest rank) of sorted durations.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(math.Ceil(q*float64(len(sorted))))-1]
}

const peerInterval = 200 * time.Millisecond

// Replica starts a Coordinator with peer recovery from peers (their mesh
// API addresses); extra may change more of its configuration.
func (h *Harness) Replica(t testing.TB, peers []*Running, extra func(*server.Config)) *Running {
	t.Helper()
	var addrs []string
	for _, p := range peers {
		addrs = append(addrs, p.MeshAddr())
	}
	return h.StartWith(t, func(c *server.Config) {
		c.Peers, c.PeerInterval = addrs, peerInterval
		if len(addrs) == 0 {
			// No live peer to name: point at a closed port, as a restarted
			// replica whose peers are all gone sees it.
			c.Peers = []string{"127.0.0.1:1"}
		}
		if extra != nil {
			extra(c)
		}
	})
}

func isReady(r *Running) bool {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+r.ProbeAddr()+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitReady polls /readyz every 5 ms until it answers 200 and the
// Coordinator serves a manifest.
func WaitReady(t testing.TB, r *Running, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !isReady(r) || r.Mode().String() != "ready" {
		if time.Now().After(deadline) {
			_, body := Probe(t, r, "/readyz?verbose")
			require.FailNow(t, "replica not ready", "after %s: %s", timeout, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Counter returns the value of one series of /metrics (0 if absent), e.g.
// `contrast_coordinator_peer_recoveries_total{result="ok",role="responder"}`.
func Counter(t testing.TB, r *Running, series string) float64 {
	t.Helper()
	_, m := Probe(t, r, "/metrics")
	for line := range strings.SplitSeq(m, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, line)
			return f
		}
	}
	return 0
}

// waitCounter polls /metrics until series reaches at least least.
func waitCounter(t testing.TB, r *Running, series string, least float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for Counter(t, r, series) < least {
		if time.Now().After(deadline) {
			require.FailNow(t, "metric not reached", "%s < %v after %s", series, least, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const (
	peerSeries      = `contrast_coordinator_peer_recoveries_total{result="%s",role="%s"}`
	respondedOK     = `contrast_coordinator_peer_recoveries_total{result="ok",role="responder"}`
	refusedByPeer   = `contrast_coordinator_peer_recoveries_total{result="refused-by-peer",role="requester"}`
	responderRefuse = `contrast_coordinator_peer_recoveries_total{result="rejected",role="responder"}`
	requesterReject = `contrast_coordinator_peer_recoveries_total{result="rejected",role="requester"}`
	requesterFailed = `contrast_coordinator_peer_recoveries_total{result="failed",role="requester"}`
	notCoordinator  = `contrast_coordinator_attestations_total{reason="not-coordinator",result="rejected"}`
)

// RunHA runs Coordinator replicas on one shared store (issue 16): a
// manifest set through one replica is served by the others, which recover
// the seed from it; an update through one replica is never followed by a
// certificate of the old mesh CA from another; replicas whose evidence is
// not of Role coordinator get nothing and give nothing; replicas are
// deleted (gracefully and killed) while Initializers request certificates,
// and every Initializer succeeds after its retries; all replicas deleted,
// the first to come back waits for Recover and the others recover from it.
func RunHA(t *testing.T, h *Harness, opts HAOptions) *HAReport {
	ctx := context.Background()
	rep := &HAReport{}
	d := NewDeployment(1)
	owner := d.Owners[0]

	// Three replicas; the first manifest through r0; r1 and r2 notice it
	// (watch), go into recovery mode and recover from r0.
	r := []*Running{h.Replica(t, nil, nil)}
	r = append(r, h.Replica(t, r[:1], nil))
	r = append(r, h.Replica(t, r[:2], nil))
	set1, err := h.User(t, r[0], owner).SetManifest(ctx, h.Request(d, nil))
	require.NoError(t, err)
	for _, x := range r[1:] {
		WaitReady(t, x, 2*time.Minute)
	}
	web := h.Pod(t, d.Web, nil)
	for i, x := range r[1:] {
		resp, err := NewMeshCert(ctx, x.MeshAddr(), Issuer(web.Device), web.Key)
		require.NoError(t, err, "replica %d", i+1)
		assert.Equal(t, set1.GetMeshCa(), resp.GetMeshCa())
		assert.Equal(t, set1.GetRootCa(), resp.GetRootCa())
		require.NoError(t, verifyLeaf(ParseCerts(t, resp.GetCertChain())[0], ParseCerts(t, set1.GetMeshCa()), ParseCerts(t, set1.GetRootCa())))
	}
	assert.InDelta(t, 2, Counter(t, r[0], respondedOK)+Counter(t, r[1], respondedOK), 0, "two seeds handed over")

	// An update through r1 is acknowledged; r2 then never hands out a
	// certificate of the old mesh CA, whether or not its watch fired yet.
	early, earlyConn, err := DialMesh(r[2].MeshAddr(), Issuer(web.Device), web.Key)
	require.NoError(t, err)
	_, err = early.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{})
	require.NoError(t, err)
	set2, err := h.User(t, r[1], owner).SetManifest(ctx, h.Request(d, set1.GetTransitionHash(), "10.0.0.2"))
	require.NoError(t, err)
	_, err = early.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "reconnect")
	_ = earlyConn.Close()
	resp, err := NewMeshCert(ctx, r[2].MeshAddr(), Issuer(web.Device), web.Key)
	require.NoError(t, err)
	assert.Equal(t, set2.GetMeshCa(), resp.GetMeshCa())
	// The owner's next update may go through a replica that has not seen
	// generation 2 yet: it reads the stored pointer before it checks.
	gm, err := h.User(t, r[0], nil).GetManifests(ctx, &userpb.GetManifestsRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 2, gm.GetGeneration())

	// A replica whose policy is not of Role coordinator gets nothing.
	t.Run("peer without Role coordinator gets nothing", func(t *testing.T) {
		rogue := h.Replica(t, r, func(c *server.Config) { c.Issuer = Issuer(web.Device) })
		// One round asks all three; each refuses.
		waitCounter(t, rogue, refusedByPeer, 3, 10*time.Second)
		code, body := Probe(t, rogue, "/readyz?verbose")
		assert.Equal(t, 503, code, body)
		assert.Contains(t, body, "waiting for a peer Coordinator or Recover")
		assert.Equal(t, "recovery", rogue.Mode().String())
		assert.Zero(t, Counter(t, rogue, fmt.Sprintf(peerSeries, "ok", "requester")))
		for i, x := range r {
			assert.GreaterOrEqual(t, Counter(t, x, responderRefuse), 1.0, "replica %d", i)
			assert.GreaterOrEqual(t, Counter(t, x, notCoordinator), 1.0, "replica %d", i)
		}
		rogue.Stop()
	})
	// And a replica does not take the seed from a peer that is not of Role
	// coordinator, even one that holds it.
	t.Run("requester refuses a peer without Role coordinator", func(t *testing.T) {
		holder := h.Replica(t, nil, func(c *server.Config) { c.Issuer = Issuer(web.Device) })
		seed := DecryptSeedShare(t, SeedShareKey(), set1.GetSeedShares()[0])
		// The holder attests with the web policy: a client that expects it.
		v, err := snp.NewValidator(snp.Config{
			ReferenceValues: []snp.ReferenceValues{h.Platform.ReferenceValues()}, ExpectedHostData: d.Web.Hash[:],
			Logger: slog.New(slog.DiscardHandler),
		})
		require.NoError(t, err)
		user, conn, err := DialUser(holder.UserAddr(), nil, []attest.Validator{v})
		require.NoError(t, err)
		defer conn.Close()
		_, err = user.Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt()})
		require.NoError(t, err)
		fresh := h.Replica(t, []*Running{holder}, nil)
		waitCounter(t, fresh, requesterReject, 2, 10*time.Second)
		code, _ := Probe(t, fresh, "/readyz")
		assert.Equal(t, 503, code)
		assert.Equal(t, "recovery", fresh.Mode().String())
		assert.Zero(t, Counter(t, holder, respondedOK), "the handshake failed before the holder was asked")
		fresh.Stop()
		holder.Stop()
	})

	if opts.Throughput > 0 {
		rep.OneReplicaRate, rep.ThreeReplicaRate = throughput(t, h, d, r, opts.Throughput)
	}

	// Churn: replicas deleted one by one (r1 killed as with kill -9) and a
	// manifest update, while Initializers request certificates through a
	// "Service" of the ready replicas.
	svc := &service{}
	svc.set(r)
	churn := &churnResult{}
	var ackAt atomic.Int64
	var set3 *userpb.SetManifestResponse
	initDone := make(chan struct{})
	go func() {
		defer close(initDone)
		runInitializers(h, d, svc, opts.Initializers, 8*time.Second, churn)
	}()
	step := 8 * time.Second / 5
	restart := func(i int, kill bool) {
		others := slices.Delete(slices.Clone(r), i, i+1)
		if kill {
			// kill -9: connections break at once; the endpoint stays in
			// the Service until its readiness probe fails.
			r[i].Kill()
			time.Sleep(100 * time.Millisecond)
			svc.set(others)
		} else {
			// Deletion: the endpoint is removed as the pod terminates.
			svc.set(others)
			r[i].Stop()
		}
		t0 := time.Now()
		r[i] = h.Replica(t, others, nil)
		WaitReady(t, r[i], 2*time.Minute) // generous: -race on a loaded machine
		rep.RestartToReady = append(rep.RestartToReady, time.Since(t0))
		svc.set(r)
	}
	time.Sleep(step)
	restart(0, false)
	time.Sleep(step)
	set3, err = h.User(t, r[2], owner).SetManifest(ctx, h.Request(d, set2.GetTransitionHash(), "10.0.0.3"))
	require.NoError(t, err)
	ackAt.Store(time.Now().UnixNano())
	time.Sleep(step)
	restart(1, true)
	time.Sleep(step)
	restart(2, false)
	<-initDone
	churn.check(t, set3.GetMeshCa(), ackAt.Load(), rep)

	// Restart-to-Ready over many restarts.
	for i := range opts.Restarts {
		restart(i%3, i%2 == 1)
	}
	slices.Sort(rep.RestartToReady)

	// All replicas deleted: the first back waits for Recover (its peers
	// are gone), the others recover from it without a human.
	for _, x := range r {
		x.Stop()
	}
	first := h.Replica(t, r, nil)
	waitCounter(t, first, requesterFailed, 3, 10*time.Second)
	code, body := Probe(t, first, "/readyz?verbose")
	require.Equal(t, 503, code, body)
	seed := DecryptSeedShare(t, SeedShareKey(), set1.GetSeedShares()[0])
	rec, err := h.User(t, first, nil).Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: set1.GetSalt(), ExpectedLatestTransition: set3.GetTransitionHash()})
	require.NoError(t, err)
	assert.EqualValues(t, 3, rec.GetGeneration())
	WaitReady(t, first, 5*time.Second)
	second := h.Replica(t, []*Running{first}, nil)
	third := h.Replica(t, []*Running{first, second}, nil)
	for _, x := range []*Running{second, third} {
		WaitReady(t, x, 2*time.Minute)
		resp, err := NewMeshCert(ctx, x.MeshAddr(), Issuer(web.Device), web.Key)
		require.NoError(t, err)
		assert.Equal(t, set3.GetMeshCa(), resp.GetMeshCa())
	}
	return rep
}

// service is the mesh API Service: the addresses of ready replicas.
type service struct {
	mu    sync.Mutex
	addrs []string
}

func (s *service) set(rs []*Running) {
	var a []string
	for _, r := range rs {
		a = append(a, r.MeshAddr())
	}
	s.mu.Lock()
	s.addrs = a
	s.mu.Unlock()
}

func (s *service) pick() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs[rand.IntN(len(s.addrs))] //nolint:gosec // load spreading
}

type churnResult struct {
	mu       sync.Mutex
	attempts int
	failed   int
	errs     []error
	certs    []issued
}

type issued struct {
	start  time.Time
	meshCA []byte
}

// runInitializers starts n Initializers evenly over spread; each retries
// (backoff 50 ms doubling to 1 s) for up to two minutes, as the
// Initializer does, choosing a ready replica for every attempt.
func runInitializers(h *Harness, d *Deployment, svc *service, n int, spread time.Duration, res *churnResult) {
	pods := make([]*Pod, 8)
	for i := range pods {
		dev, err := h.Platform.Device(d.Web.Hash, nil)
		if err != nil {
			panic(err)
		}
		pods[i] = &Pod{Device: dev}
	}
	var wg sync.WaitGroup
	tick := spread / time.Duration(max(n, 1))
	for i := range n {
		wg.Go(func() {
			p := pods[i%len(pods)]
			key := OwnerKey()
			deadline := time.Now().Add(2 * time.Minute)
			backoff := 50 * time.Millisecond
			for {
				start := time.Now()
				resp, err := attempt(svc.pick(), p, key)
				res.mu.Lock()
				res.attempts++
				if err == nil {
					res.certs = append(res.certs, issued{start: start, meshCA: resp.GetMeshCa()})
					res.mu.Unlock()
					return
				}
				res.errs = append(res.errs, err)
				if time.Now().After(deadline) {
					res.failed++
					res.mu.Unlock()
					return
				}
				res.mu.Unlock()
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
			}
		})
		time.Sleep(tick)
	}
	wg.Wait()
}

// attempt is one Initializer attempt: a new mutual aTLS connection and one
// call, failing fast (no wait for a ready connection) within 10 s.
func attempt(addr string, p *Pod, key *ecdsa.PrivateKey) (*meshpb.NewMeshCertResponse, error) {
	c, conn, err := DialMesh(addr, Issuer(p.Device), key)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{}) //nolint:wrapcheck // counted as is
}

// check requires every Initializer to have succeeded, and no certificate of
// the old mesh CA for an attempt that started after the update was
// acknowledged (ackAt, Unix nanoseconds).
func (c *churnResult) check(t *testing.T, newMesh []byte, ackAt int64, rep *HAReport) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	rep.Attempts, rep.FailedAttempt, rep.Failed = c.attempts, len(c.errs), c.failed
	for _, x := range c.certs {
		if bytes.Equal(x.meshCA, newMesh) {
			continue
		}
		if x.start.UnixNano() > ackAt {
			rep.StaleAfterAck++
		} else {
			rep.OldCAIssuedBeforeAck++
		}
	}
	require.Zero(t, c.failed, "initializers failed after their retries; first errors: %v", c.errs[:min(len(c.errs), 3)])
	require.Len(t, c.certs, rep.Attempts-rep.FailedAttempt)
	require.Zero(t, rep.StaleAfterAck, "certificates of the old mesh CA for attempts started after the update was acknowledged")
	codesSeen := map[codes.Code]int{}
	for _, err := range c.errs {
		codesSeen[status.Code(err)]++
	}
	t.Logf("churn: %d attempts, %d failed and retried (by code %v), %d initializers failed; old-CA certificates from attempts started before the ack: %d, after: %d",
		rep.Attempts, rep.FailedAttempt, codesSeen, rep.Failed, rep.OldCAIssuedBeforeAck, rep.StaleAfterAck)
}

// throughput measures issuances/s of n Initializers against one replica,
// then spread over three, in the same run.
func throughput(t *testing.T, h *Harness, d *Deployment, r []*Running, n int) (float64, float64) {
	t.Helper()
	pods := make([]*Pod, 8)
	for i := range pods {
		pods[i] = h.Pod(t, d.Web, nil)
	}
	phase := func(addrs []string) float64 {
		var wg sync.WaitGroup
		var errs atomic.Int64
		sem := make(chan struct{}, 32)
		t0 := time.Now()
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				p := pods[i%len(pods)]
				if _, err := NewMeshCert(context.Background(), addrs[i%len(addrs)], Issuer(p.Device), OwnerKey()); err != nil {
					errs.Add(1)
				}
			})
		}
		wg.Wait()
		require.Zero(t, errs.Load(), "issuance errors in the throughput phase")
		return float64(n) / time.Since(t0).Seconds()
	}
	one := phase([]string{r[0].MeshAddr()})
	three := phase([]string{r[0].MeshAddr(), r[1].MeshAddr(), r[2].MeshAddr()})
	return one, three
}
