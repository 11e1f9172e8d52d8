package integration_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest/snp"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/initializer/initenv"
	"github.com/contrast-cc/contrast/initializer/meshcert"
)

// initdataAnnotation returns a pod's initdata annotation value for a policy
// named name (base64 of gzip of the TOML) and the policy hash Kata derives
// from it (SHA-256 of the TOML).
func initdataAnnotation(t testing.TB, name string) (string, coordinatortest.Policy) {
	t.Helper()
	doc := []byte(fmt.Sprintf("algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\n# %s\ndefault CreateContainerRequest := true\n'''\n", name))
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, err := zw.Write(doc)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return base64.StdEncoding.EncodeToString(z.Bytes()), coordinatortest.Policy{Doc: doc, Hash: sha256.Sum256(doc)}
}

// simPod is what the webhook gives an Initializer in a simulated runc pod:
// the device file (from the Secret), the pod's initdata annotation (downward
// API) and the environment.
type simPod struct {
	dir string
	env map[string]string
}

func newSimPod(t testing.TB, h *coordinatortest.Harness, coordinatorAddr, annotation string) *simPod {
	t.Helper()
	dir := t.TempDir()
	dev, err := h.Platform.Device([32]byte{}, nil)
	require.NoError(t, err)
	file, err := dev.MarshalDeviceFile()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "device.json"), file, 0o400))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "initdata"), []byte(annotation), 0o444))
	rv, err := json.Marshal(initenv.ReferenceValues{SNP: []snp.ReferenceValues{h.Platform.ReferenceValues()}})
	require.NoError(t, err)
	return &simPod{dir: dir, env: map[string]string{
		initenv.EnvCoordinatorHost:                   coordinatorAddr,
		initenv.EnvPlatform:                          "snp-simulated",
		initenv.EnvCoordinatorPolicyHashes:           hex.EncodeToString(h.CoordinatorPolicy.Hash[:]),
		initenv.EnvCoordinatorReferenceValues + "_0": string(rv), // one chunk: the parser takes any size
		initenv.EnvSimDeviceFile:                     filepath.Join(dir, "device.json"),
		initenv.EnvSimInitDataFile:                   filepath.Join(dir, "initdata"),
	}}
}

type initializerRun struct {
	code        meshcert.ExitCode
	out         string
	logs        string
	termination string
}

// run runs the Initializer as the binary does, in process.
func (p *simPod) run(ctx context.Context, t testing.TB, timeout time.Duration) initializerRun {
	t.Helper()
	out := filepath.Join(p.dir, fmt.Sprintf("contrast-%d", time.Now().UnixNano()))
	term := filepath.Join(p.dir, "termination-log")
	_ = os.Remove(term)
	var logs syncBuffer
	code := meshcert.Main(ctx, meshcert.Options{
		OutDir: out, Timeout: timeout, TerminationLog: term,
		InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)).With("component", "initializer"),
	}, func(k string) (string, bool) { v, ok := p.env[k]; return v, ok })
	termination, _ := os.ReadFile(term)
	return initializerRun{code: code, out: out, logs: logs.String(), termination: string(termination)}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// metric returns the value of the sample of the Coordinator's metrics that
// starts with prefix (0 if absent).
func metric(t testing.TB, r *coordinatortest.Running, prefix string) float64 {
	t.Helper()
	_, body := coordinatortest.Probe(t, r, "/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(prefix) + `\S* (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

// TestInitializerWithCoordinator runs the Initializer in process against a
// real Coordinator (in-memory store) with simulated SNP, in a configuration
// the webhook injects: the device file, the pod's initdata annotation and the
// Coordinator's expectations.
func TestInitializerWithCoordinator(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	h := coordinatortest.NewHarness(t, nil)
	coord := h.Start(t)
	owner := coordinatortest.OwnerKey()
	webAnn, web := initdataAnnotation(t, "web")
	entry := manifest.PolicyEntry{SANs: []string{"web", "web.emojivoto.svc.cluster.local"}, WorkloadSecretID: "emojivoto/web"}
	m := h.Platform.Manifest(h.CoordinatorPolicy, []coordinatortest.Workload{{Policy: web, Entry: entry}}, &owner.PublicKey)

	t.Run("waits for the manifest, then gets its certificate", func(t *testing.T) {
		pod := newSimPod(t, h, coord.MeshAddr(), webAnn)
		done := make(chan initializerRun, 1)
		go func() { done <- pod.run(ctx, t, time.Minute) }()
		// the Initializer retries while the Coordinator has no manifest
		require.Eventually(t, func() bool {
			return metric(t, coord, `contrast_coordinator_attestations_total{reason="no-manifest",result="rejected"}`) >= 2
		}, 30*time.Second, 20*time.Millisecond)
		_, err := h.User(t, coord, owner).SetManifest(ctx, &userpb.SetManifestRequest{
			Manifest: coordinatortest.JSON(m), Policies: [][]byte{h.CoordinatorPolicy.Doc, web.Doc},
		})
		require.NoError(t, err)
		res := <-done
		require.Equal(t, meshcert.ExitOK, res.code, "logs: %s", res.logs)
		assert.Contains(t, res.logs, "the Coordinator is not ready")
		assert.Contains(t, res.logs, `"simulated":true`)

		chain := coordinatortest.ParseCerts(t, mustRead(t, res.out, meshcert.CertChainFile))
		assert.ElementsMatch(t, entry.SANs, chain[0].DNSNames)
		keyPEM := mustRead(t, res.out, meshcert.KeyFile)
		blk, _ := pem.Decode(keyPEM)
		require.NotNil(t, blk)
		key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		require.NoError(t, err)
		assert.True(t, chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.(crypto.Signer).Public()), "the leaf certifies key.pem")
		for f, mode := range map[string]os.FileMode{
			meshcert.KeyFile: 0o400, meshcert.WorkloadSecretFile: 0o400, meshcert.CertChainFile: 0o444,
			meshcert.MeshCAFile: 0o444, meshcert.RootCAFile: 0o444,
		} {
			st, err := os.Stat(filepath.Join(res.out, f))
			require.NoError(t, err)
			assert.Equal(t, mode, st.Mode().Perm(), f)
		}
		secret := mustRead(t, res.out, meshcert.WorkloadSecretFile)
		assert.Len(t, secret, 64, "hex of a 32-byte secret")
		assert.NotContains(t, res.logs, string(secret), "the workload secret never reaches the log")
		assert.Empty(t, res.termination)
	})

	t.Run("refused pod: policy hash not in the manifest", func(t *testing.T) {
		ann, other := initdataAnnotation(t, "not-in-manifest")
		before := metric(t, coord, "contrast_coordinator_certificates_issued_total")
		res := newSimPod(t, h, coord.MeshAddr(), ann).run(ctx, t, time.Minute)
		require.Equal(t, meshcert.ExitRefused, res.code, "logs: %s", res.logs)
		// the Coordinator's reason, with the pod's policy hash
		assert.Contains(t, res.logs, "the Coordinator refused the pod")
		assert.Contains(t, res.logs, hex.EncodeToString(other.Hash[:]))
		assert.Contains(t, res.termination, hex.EncodeToString(other.Hash[:]))
		assert.InDelta(t, before, metric(t, coord, "contrast_coordinator_certificates_issued_total"), 0)
		assert.NoFileExists(t, filepath.Join(res.out, meshcert.KeyFile))
	})

	t.Run("tampered annotation is refused", func(t *testing.T) {
		// the annotation the device reads differs from the one the manifest
		// was generated for: HOST_DATA changes with it
		tampered, _ := initdataAnnotation(t, "web-edited")
		res := newSimPod(t, h, coord.MeshAddr(), tampered).run(ctx, t, time.Minute)
		require.Equal(t, meshcert.ExitRefused, res.code, "logs: %s", res.logs)
	})

	for name, tc := range map[string]struct {
		mutate    func(env map[string]string)
		wantCheck string
	}{
		"another Coordinator policy hash": {
			mutate: func(env map[string]string) {
				other := coordinatortest.NewPolicy("another-coordinator")
				env[initenv.EnvCoordinatorPolicyHashes] = hex.EncodeToString(other.Hash[:])
			},
			wantCheck: "policy-digest",
		},
		"another measurement": {
			mutate: func(env map[string]string) {
				rv := h.Platform.ReferenceValues()
				rv.TrustedMeasurement = bytes.Repeat([]byte{0x42}, 48)
				b, err := json.Marshal(initenv.ReferenceValues{SNP: []snp.ReferenceValues{rv}})
				require.NoError(t, err)
				env[initenv.EnvCoordinatorReferenceValues+"_0"] = string(b)
			},
			wantCheck: "measurement",
		},
	} {
		t.Run("Coordinator evidence mismatch: "+name, func(t *testing.T) {
			rejectedBefore := metric(t, coord, `contrast_coordinator_attestations_total{reason="rejected-by-peer",result="rejected"}`)
			callsBefore := metric(t, coord, `contrast_coordinator_grpc_server_handled_total{grpc_code="OK",grpc_method="NewMeshCert"`)
			deniedBefore := metric(t, coord, `contrast_coordinator_grpc_server_handled_total{grpc_code="PermissionDenied",grpc_method="NewMeshCert"`)
			pod := newSimPod(t, h, coord.MeshAddr(), webAnn)
			tc.mutate(pod.env)
			res := pod.run(ctx, t, time.Minute)
			require.Equal(t, meshcert.ExitCoordinatorRejected, res.code, "logs: %s", res.logs)
			assert.Contains(t, res.logs, fmt.Sprintf(`"check":%q`, tc.wantCheck))
			assert.Contains(t, res.termination, "the Coordinator's evidence was rejected")
			// the Coordinator saw the rejection of its evidence and no request
			require.Eventually(t, func() bool {
				return metric(t, coord, `contrast_coordinator_attestations_total{reason="rejected-by-peer",result="rejected"}`) == rejectedBefore+1
			}, 10*time.Second, 20*time.Millisecond)
			assert.InDelta(t, callsBefore, metric(t, coord, `contrast_coordinator_grpc_server_handled_total{grpc_code="OK",grpc_method="NewMeshCert"`), 0)
			assert.InDelta(t, deniedBefore, metric(t, coord, `contrast_coordinator_grpc_server_handled_total{grpc_code="PermissionDenied",grpc_method="NewMeshCert"`), 0)
			assert.NoFileExists(t, filepath.Join(res.out, meshcert.KeyFile))
		})
	}

	t.Run("Coordinator unreachable", func(t *testing.T) {
		pod := newSimPod(t, h, "127.0.0.1:1", webAnn)
		res := pod.run(ctx, t, 500*time.Millisecond)
		require.Equal(t, meshcert.ExitUnreachable, res.code, "logs: %s", res.logs)
		assert.Contains(t, res.termination, "gave up after 500ms: the Coordinator is unreachable")
	})
}

func mustRead(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	require.NoError(t, err)
	return b
}

// BenchmarkInitializerRatio measures the Initializer from start (parsing its
// environment, loading the simulated device, deriving HOST_DATA from the
// initdata annotation) to the certificate written, interleaved in the same
// run with the issuance the Coordinator's own benchmark measures
// (coordinator/server BenchmarkMeshCertIssuance's operation: one mutual aTLS
// connection, the client's evidence, NewMeshCert, with a client that does not
// validate the Coordinator). It reports issuance-time / initializer-time
// (1.0 = the Initializer adds nothing to an issuance).
func BenchmarkInitializerRatio(b *testing.B) {
	ctx := b.Context()
	h := coordinatortest.NewHarness(b, nil)
	coord := h.Start(b)
	owner := coordinatortest.OwnerKey()
	ann, web := initdataAnnotation(b, "web")
	m := h.Platform.Manifest(h.CoordinatorPolicy, []coordinatortest.Workload{{Policy: web, Entry: manifest.PolicyEntry{SANs: []string{"web"}}}}, &owner.PublicKey)
	_, err := h.User(b, coord, owner).SetManifest(ctx, &userpb.SetManifestRequest{
		Manifest: coordinatortest.JSON(m), Policies: [][]byte{h.CoordinatorPolicy.Doc, web.Doc},
	})
	require.NoError(b, err)
	pod := newSimPod(b, h, coord.MeshAddr(), ann)
	tee := h.Pod(b, web, nil)
	issuer := coordinatortest.Issuer(tee.Device)
	var issueTime, initTime time.Duration
	for b.Loop() {
		t0 := time.Now()
		_, err := coordinatortest.NewMeshCert(ctx, coord.MeshAddr(), issuer, tee.Key)
		require.NoError(b, err)
		issueTime += time.Since(t0)
		t0 = time.Now()
		res := pod.run(ctx, b, time.Minute)
		initTime += time.Since(t0)
		require.Equal(b, meshcert.ExitOK, res.code, res.logs)
		_ = os.RemoveAll(res.out)
	}
	b.ReportMetric(issueTime.Seconds()/initTime.Seconds(), "ratio")
	b.ReportMetric(initTime.Seconds()*1e3/float64(b.N), "initializer-ms/op")
	b.ReportMetric(issueTime.Seconds()*1e3/float64(b.N), "issuance-ms/op")
}
