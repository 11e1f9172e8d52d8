package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math"
	"math/big"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/internal/ca"
)

// issuanceOp returns one attested certificate issuance over a new mutual
// aTLS gRPC connection (worker w picks its simulated pod).
func issuanceOp(b *testing.B) func(w int) error {
	h := memoryHarness(b)
	c := h.Start(b)
	d := coordinatortest.NewDeployment(1)
	_, err := h.User(b, c, nil).SetManifest(b.Context(), h.Request(d, nil))
	require.NoError(b, err)
	pods := make([]*coordinatortest.Pod, 4)
	for i := range pods {
		pods[i] = h.Pod(b, d.Web, nil)
	}
	return func(w int) error {
		p := pods[w%len(pods)]
		_, err := coordinatortest.NewMeshCert(context.Background(), c.MeshAddr(), coordinatortest.Issuer(p.Device), p.Key)
		return err
	}
}

// BenchmarkIssuanceRatio interleaves rounds of the floor and of real
// issuances under the same load and reports floor-time / issuance-time
// (1.0 = issuance as fast as the floor; the target is ≥ 0.5).
func BenchmarkIssuanceRatio(b *testing.B) {
	const (
		workers  = 8
		perRound = 100
	)
	floor := floorOp(b)
	issue := issuanceOp(b)
	round := func(op func(int) error) time.Duration {
		t0 := time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for range perRound / workers {
					if err := op(w); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(t0)
	}
	var floorTime, issueTime time.Duration
	for b.Loop() {
		floorTime += round(floor)
		issueTime += round(issue)
	}
	b.ReportMetric(floorTime.Seconds()/issueTime.Seconds(), "ratio")
	b.ReportMetric(float64(b.N*perRound)/issueTime.Seconds(), "issuances/s")
	b.ReportMetric(float64(b.N*perRound)/floorTime.Seconds(), "floor/s")
}

// BenchmarkMeshCertIssuance measures attested certificate issuances over
// real mutual aTLS gRPC connections (one new connection per issuance:
// handshake, both sides' evidence, NewMeshCert), with simulated SNP evidence.
// Compare with BenchmarkIssuanceFloor of the same run.
func BenchmarkMeshCertIssuance(b *testing.B) {
	op := issuanceOp(b)
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := int(next.Add(1))
		for pb.Next() {
			if err := op(w); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issuances/s")
}

// BenchmarkIssuanceFloor is the floor of one issuance: one evidence
// validation, one leaf signature and one TLS 1.3 handshake (mutual, ECDSA
// P-256, loopback TCP), with nothing else.
func BenchmarkIssuanceFloor(b *testing.B) {
	op := floorOp(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issuances/s")
}

// floorOp returns one floor operation: a mutual TLS 1.3 handshake over
// loopback TCP, one SNP evidence validation and one leaf signature.
func floorOp(b *testing.B) func(int) error {
	p, err := coordinatortest.SharedPlatform()
	require.NoError(b, err)
	pol := coordinatortest.NewPolicy("web")
	dev, err := p.Device(pol.Hash, nil)
	require.NoError(b, err)
	var rd [64]byte
	ev, err := coordinatortest.Issuer(dev).Issue(b.Context(), rd)
	require.NoError(b, err)
	v, err := snp.NewValidator(snp.Config{ReferenceValues: []snp.ReferenceValues{p.ReferenceValues()}, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(b, err)
	rootKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	root, err := ca.NewRoot(rootKey, time.Now())
	require.NoError(b, err)
	meshKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mesh, err := ca.NewMesh(root, meshKey, 1, time.Now())
	require.NoError(b, err)

	serverCert := selfSigned(b)
	clientCert := selfSigned(b)
	lis, err := (&net.ListenConfig{}).Listen(b.Context(), "tcp", "127.0.0.1:0")
	require.NoError(b, err)
	b.Cleanup(func() { _ = lis.Close() })
	srvCfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAnyClientCert}
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(conn, srvCfg)
				_ = tc.HandshakeContext(context.Background())
				_, _ = tc.Read(make([]byte, 1))
				_ = tc.Close()
			}()
		}
	}()
	cliCfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{clientCert}, InsecureSkipVerify: true} //nolint:gosec // benchmark floor
	return func(int) error {
		var dl net.Dialer
		conn, err := dl.DialContext(context.Background(), "tcp", lis.Addr().String())
		if err != nil {
			return err
		}
		tc := tls.Client(conn, cliCfg)
		defer tc.Close()
		if err := tc.HandshakeContext(context.Background()); err != nil {
			return err
		}
		res, err := v.Validate(context.Background(), ev, rd)
		if err != nil {
			return err
		}
		_, err = mesh.IssueLeaf(ca.LeafRequest{PublicKey: clientCert.Leaf.PublicKey, SANs: []string{"web"}, Claims: ca.Claims{PolicyHash: string(res.Platform)}}, time.Now())
		return err
	}
}

func selfSigned(tb testing.TB) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(tb, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(tb, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// BenchmarkInitializerStorm serves 5,000 initializers that connect at once,
// each on its own mutual aTLS connection, and reports errors (must be 0)
// and latency percentiles.
func BenchmarkInitializerStorm(b *testing.B) {
	const n = 5000
	h := memoryHarness(b)
	c := h.Start(b)
	d := coordinatortest.NewDeployment(1)
	_, err := h.User(b, c, nil).SetManifest(b.Context(), h.Request(d, nil))
	require.NoError(b, err)
	for b.Loop() {
		lat := make([]float64, n)
		t0 := time.Now()
		errs := storm(context.Background(), b, h, c, d, n, func(i int, s float64) { lat[i] = s })
		wall := time.Since(t0)
		slices.Sort(lat)
		b.ReportMetric(float64(len(errs)), "errors")
		b.ReportMetric(percentile(lat, 0.50), "p50-s")
		b.ReportMetric(percentile(lat, 0.99), "p99-s")
		b.ReportMetric(float64(n)/wall.Seconds(), "issuances/s")
		if len(errs) > 0 {
			b.Fatalf("%d of %d initializers failed; first: %v", len(errs), n, errs[0])
		}
	}
}

func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	return sorted[int(math.Ceil(q*float64(len(sorted))))-1]
}

// BenchmarkHAIssuanceRatio interleaves rounds of issuances against one
// replica and spread over three replicas (peer-recovered, one shared store)
// under the same load, and reports three-replica / one-replica throughput.
// On one machine the replicas share its cores, so this measures the cost
// of replication (the head check, the watch), not added capacity.
func BenchmarkHAIssuanceRatio(b *testing.B) {
	const (
		workers  = 8
		perRound = 96
	)
	h := memoryHarness(b)
	r0 := h.Replica(b, nil, nil)
	d := coordinatortest.NewDeployment(1)
	_, err := h.User(b, r0, nil).SetManifest(b.Context(), h.Request(d, nil))
	require.NoError(b, err)
	r1 := h.Replica(b, []*coordinatortest.Running{r0}, nil)
	r2 := h.Replica(b, []*coordinatortest.Running{r0, r1}, nil)
	coordinatortest.WaitReady(b, r1, 30*time.Second)
	coordinatortest.WaitReady(b, r2, 30*time.Second)
	pods := make([]*coordinatortest.Pod, 4)
	for i := range pods {
		pods[i] = h.Pod(b, d.Web, nil)
	}
	round := func(addrs ...string) time.Duration {
		t0 := time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range perRound / workers {
					p := pods[w%len(pods)]
					addr := addrs[(w+i)%len(addrs)]
					if _, err := coordinatortest.NewMeshCert(context.Background(), addr, coordinatortest.Issuer(p.Device), p.Key); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(t0)
	}
	var one, three time.Duration
	for b.Loop() {
		one += round(r0.MeshAddr())
		three += round(r0.MeshAddr(), r1.MeshAddr(), r2.MeshAddr())
	}
	b.ReportMetric(one.Seconds()/three.Seconds(), "ratio")
	b.ReportMetric(float64(b.N*perRound)/one.Seconds(), "one/s")
	b.ReportMetric(float64(b.N*perRound)/three.Seconds(), "three/s")
}
