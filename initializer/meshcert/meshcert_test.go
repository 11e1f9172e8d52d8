package meshcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/atls"
	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
)

// testPKI issues a root CA, a mesh CA and a leaf for key, as the
// Coordinator does.
func testPKI(t *testing.T, key *ecdsa.PrivateKey) *meshpb.NewMeshCertResponse {
	t.Helper()
	now := time.Now()
	mk := func(cn string, pub any, parent *x509.Certificate, parentKey any, ca bool) *x509.Certificate {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), IsCA: ca, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
		require.NoError(t, err)
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return c
	}
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	meshKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := mk("root", &rootKey.PublicKey, nil, rootKey, true)
	mesh := mk("mesh", &meshKey.PublicKey, root, rootKey, true)
	leaf := mk("web", &key.PublicKey, mesh, meshKey, false)
	p := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return &meshpb.NewMeshCertResponse{
		MeshCa: p(mesh), CertChain: append(p(leaf), p(mesh)...), RootCa: p(root), WorkloadSecret: []byte{1, 2, 3, 0xfe},
	}
}

type step struct {
	resp *meshpb.NewMeshCertResponse
	err  error
}

// script returns a request func answering with steps in order.
func script(steps ...step) (func(context.Context) (*meshpb.NewMeshCertResponse, error), *int) {
	n := new(int)
	return func(context.Context) (*meshpb.NewMeshCertResponse, error) {
		s := steps[min(*n, len(steps)-1)]
		*n++
		return s.resp, s.err
	}, n
}

func testConfig(t *testing.T, key *ecdsa.PrivateKey, logs *bytes.Buffer) (Config, *[]time.Duration) {
	t.Helper()
	var waits []time.Duration
	return Config{
		OutDir: t.TempDir(), Key: key, Timeout: time.Minute,
		InitialBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		sleep: func(_ context.Context, d time.Duration) error {
			waits = append(waits, d)
			return nil
		},
	}, &waits
}

func TestRunStateMachine(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ok := testPKI(t, key)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	unreachable := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	coordinatorRejected := fmt.Errorf("validating peer evidence: %w", attest.Errorf(attest.CheckMeasurement, "measurement 00 not trusted"))
	refusedInHandshake := fmt.Errorf("x: %w", attest.NewCheckError(attest.CheckTCB, atls.ErrRejectedByPeer))

	cases := map[string]struct {
		steps     []step
		wantCode  ExitCode
		wantCheck attest.Check
		attempts  int
		waits     int
		logs      []string
	}{
		"first attempt": {steps: []step{{resp: ok}}, attempts: 1},
		"unreachable, then no manifest, then issued": {
			steps: []step{
				{err: unreachable},
				{err: status.Error(codes.FailedPrecondition, "no manifest has been set")},
				{resp: ok},
			},
			attempts: 3, waits: 2,
			logs: []string{"the Coordinator is unreachable", "the Coordinator is not ready: no manifest has been set"},
		},
		"refused: policy hash not in manifest": {
			steps:    []step{{err: status.Error(codes.PermissionDenied, "policy hash abcd is not in the manifest")}},
			wantCode: ExitRefused, attempts: 1,
			logs: []string{"the Coordinator refused the pod: policy hash abcd is not in the manifest"},
		},
		"refused in the handshake names the check": {
			steps: []step{{err: refusedInHandshake}}, wantCode: ExitRefused, wantCheck: attest.CheckTCB, attempts: 1,
			logs: []string{`check \"tcb\" failed`},
		},
		"the Coordinator's evidence rejected": {
			steps: []step{{err: coordinatorRejected}}, wantCode: ExitCoordinatorRejected, wantCheck: attest.CheckMeasurement, attempts: 1,
			logs: []string{"the Coordinator's evidence was rejected"},
		},
		"own device fails": {
			steps:    []step{{err: fmt.Errorf("issuing evidence: %w", fmt.Errorf("%w: no /dev/sev-guest", errDevice))}},
			wantCode: ExitDevice, attempts: 1,
		},
		"unavailable until the deadline": {
			steps: []step{{err: status.Error(codes.Unavailable, "connection refused")}}, wantCode: ExitUnreachable,
			attempts: 4, waits: 4, logs: []string{"gave up after"},
		},
		"no manifest until the deadline": {
			steps: []step{{err: status.Error(codes.FailedPrecondition, "recovery mode")}}, wantCode: ExitNotReady,
			attempts: 4, waits: 4, logs: []string{"the Coordinator is not ready: recovery mode"},
		},
		"response for another key": {
			steps: []step{{resp: testPKI(t, otherKey)}}, wantCode: ExitInternal, attempts: 1,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			cfg, waits := testConfig(t, key, &logs)
			var n *int
			cfg.request, n = script(tc.steps...)
			if tc.waits == 4 {
				// the fourth wait runs into the deadline
				inner := cfg.sleep
				cfg.sleep = func(c context.Context, d time.Duration) error {
					_ = inner(c, d)
					if len(*waits) == 4 {
						return context.DeadlineExceeded
					}
					return nil
				}
			}
			err := Run(context.Background(), cfg)
			assert.Equal(t, tc.attempts, *n, "attempts")
			assert.Len(t, *waits, tc.waits, "waits")
			for _, l := range tc.logs {
				assert.Contains(t, logs.String(), l)
			}
			if tc.wantCode == ExitOK {
				require.NoError(t, err)
				return
			}
			var ie *Error
			require.ErrorAs(t, err, &ie)
			assert.Equal(t, tc.wantCode, ie.Code, "exit code: %v", ie)
			assert.Equal(t, tc.wantCheck, ie.Check)
			// nothing is written on failure
			_, statErr := os.Stat(filepath.Join(cfg.OutDir, KeyFile))
			assert.ErrorIs(t, statErr, fs.ErrNotExist)
		})
	}
}

func TestBackoffIsCappedExponential(t *testing.T) {
	var logs bytes.Buffer
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cfg, waits := testConfig(t, key, &logs)
	steps := make([]step, 8)
	for i := range steps {
		steps[i] = step{err: status.Error(codes.Unavailable, "down")}
	}
	steps = append(steps, step{resp: testPKI(t, key)})
	cfg.request, _ = script(steps...)
	require.NoError(t, Run(context.Background(), cfg))
	require.Len(t, *waits, 8)
	base := []time.Duration{100, 200, 400, 400, 400, 400, 400, 400}
	for i, w := range *waits {
		b := base[i] * time.Millisecond
		assert.GreaterOrEqual(t, w, b*8/10, "wait %d", i)
		assert.LessOrEqual(t, w, b*12/10, "wait %d", i)
	}
	// one line per failed attempt
	assert.Equal(t, 8, strings.Count(logs.String(), "retrying"))
}

func TestDeadlineEndsTheRun(t *testing.T) {
	var logs bytes.Buffer
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cfg, _ := testConfig(t, key, &logs)
	cfg.Timeout = 50 * time.Millisecond
	cfg.sleep = sleepCtx
	cfg.request, _ = script(step{err: status.Error(codes.Unavailable, "down")})
	start := time.Now()
	err := Run(context.Background(), cfg)
	var ie *Error
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, ExitUnreachable, ie.Code)
	assert.Contains(t, ie.Msg, "gave up after 50ms: the Coordinator is unreachable: down")
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestFilesAndModes(t *testing.T) {
	var logs bytes.Buffer
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cfg, _ := testConfig(t, key, &logs)
	resp := testPKI(t, key)
	cfg.request, _ = script(step{resp: resp})
	require.NoError(t, Run(context.Background(), cfg))
	for _, f := range []struct {
		name string
		mode os.FileMode
		want []byte
	}{
		{KeyFile, 0o400, nil},
		{WorkloadSecretFile, 0o400, []byte(hex.EncodeToString(resp.WorkloadSecret))},
		{CertChainFile, 0o444, resp.CertChain},
		{MeshCAFile, 0o444, resp.MeshCa},
		{RootCAFile, 0o444, resp.RootCa},
	} {
		st, err := os.Stat(filepath.Join(cfg.OutDir, f.name))
		require.NoError(t, err, f.name)
		assert.Equal(t, f.mode, st.Mode().Perm(), f.name)
		b, err := os.ReadFile(filepath.Join(cfg.OutDir, f.name))
		require.NoError(t, err)
		if f.want != nil {
			assert.Equal(t, f.want, b, f.name)
		}
	}
	b, err := os.ReadFile(filepath.Join(cfg.OutDir, KeyFile))
	require.NoError(t, err)
	blk, _ := pem.Decode(b)
	require.NotNil(t, blk)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	require.NoError(t, err)
	assert.True(t, key.Equal(k))
	// no temporary files are left
	for _, d := range []string{TLSDir, SecretsDir} {
		ents, err := os.ReadDir(filepath.Join(cfg.OutDir, d))
		require.NoError(t, err)
		for _, e := range ents {
			assert.False(t, strings.HasPrefix(e.Name(), "."), e.Name())
		}
	}
	// the secret never reaches the log
	assert.NotContains(t, logs.String(), hex.EncodeToString(resp.WorkloadSecret))
	// no workload secret: no file, everything else written
	noSecret := testPKI(t, key)
	noSecret.WorkloadSecret = nil
	cfg2, _ := testConfig(t, key, &logs)
	cfg2.request, _ = script(step{resp: noSecret})
	require.NoError(t, Run(context.Background(), cfg2))
	assert.NoFileExists(t, filepath.Join(cfg2.OutDir, WorkloadSecretFile))
	assert.FileExists(t, filepath.Join(cfg2.OutDir, CertChainFile))
	// a second run replaces the files (a restarted init container)
	cfg.request, _ = script(step{resp: resp})
	require.NoError(t, Run(context.Background(), cfg))
}

func TestPolicyHash(t *testing.T) {
	h := bytes.Repeat([]byte{7}, 32)
	got, ok := policyHash(h)
	assert.True(t, ok)
	assert.Equal(t, h, got)
	got, ok = policyHash(append(append([]byte{}, h...), make([]byte, 16)...))
	assert.True(t, ok)
	assert.Equal(t, h, got)
	_, ok = policyHash(append(append([]byte{}, h...), bytes.Repeat([]byte{1}, 16)...))
	assert.False(t, ok)
	_, ok = policyHash(h[:31])
	assert.False(t, ok)
}

func TestClassifyUnknownErrorRetries(t *testing.T) {
	o := classify(errors.New("dial tcp: lookup coordinator: no such host"))
	assert.True(t, o.retry)
	assert.Equal(t, ExitUnreachable, o.code)
	o = classify(fmt.Errorf("x: %w", atls.ErrProtocol))
	assert.True(t, o.retry)
}
