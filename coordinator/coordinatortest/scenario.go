package coordinatortest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/coordinator/server"
)

// Harness starts Coordinators on loopback ports that share one history
// store (chosen by Configure), with a simulated SNP device whose HOST_DATA
// is the coordinator policy.
type Harness struct {
	Platform          *Platform
	CoordinatorPolicy Policy
	// Configure selects the history store (and anything else) of every
	// Coordinator the harness starts.
	Configure func(*server.Config)
	// Logger receives the Coordinators' logs; nil discards them.
	Logger *slog.Logger
	// Latest tampers with the store's latest pointer; scenarios of attacks
	// on the store need it.
	Latest LatestStore
}

// NewHarness returns a harness on the shared simulated platform.
func NewHarness(t testing.TB, configure func(*server.Config)) *Harness {
	t.Helper()
	p, err := SharedPlatform()
	require.NoError(t, err)
	return &Harness{Platform: p, CoordinatorPolicy: NewPolicy("coordinator"), Configure: configure}
}

// Running is a serving Coordinator.
type Running struct {
	*server.Coordinator
	stop func()
}

// Stop kills the Coordinator (cancels it and waits for it to stop).
func (r *Running) Stop() { r.stop() }

// Kill stops the Coordinator at once, as kill -9 would: every connection
// is closed without waiting for calls in flight.
func (r *Running) Kill() {
	r.Abort()
	r.stop()
}

// Start starts a Coordinator; it is stopped at the end of the test.
func (h *Harness) Start(t testing.TB) *Running {
	t.Helper()
	return h.StartWith(t, nil)
}

// StartWith starts a Coordinator whose configuration extra changes after
// Configure (peers, another issuer); it is stopped at the end of the test.
func (h *Harness) StartWith(t testing.TB, extra func(*server.Config)) *Running {
	t.Helper()
	dev, err := h.Platform.Device(h.CoordinatorPolicy.Hash, nil)
	require.NoError(t, err)
	logger := h.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg := server.Config{
		Issuer:   Issuer(dev),
		UserAddr: "127.0.0.1:0", MeshAddr: "127.0.0.1:0", ProbeAddr: "127.0.0.1:0",
		ValidatorOptions: manifest.ValidatorOptions{Logger: logger},
		ShutdownTimeout:  2 * time.Second,
		Logger:           logger,
	}
	if h.Configure != nil {
		h.Configure(&cfg)
	}
	if extra != nil {
		extra(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		require.NoError(t, err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx) }()
	var once sync.Once
	r := &Running{Coordinator: c, stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("coordinator stopped with error: %v", err)
			}
		})
	}}
	t.Cleanup(r.Stop)
	return r
}

// CoordinatorValidators validate the Coordinator's evidence, including its
// policy digest, as `contrast set` does.
func (h *Harness) CoordinatorValidators(t testing.TB) []attest.Validator {
	t.Helper()
	v, err := snp.NewValidator(snp.Config{
		ReferenceValues:  []snp.ReferenceValues{h.Platform.ReferenceValues()},
		ExpectedHostData: h.CoordinatorPolicy.Hash[:],
		Logger:           slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	return []attest.Validator{v}
}

// User dials the user API of r with the owner key key (nil: anonymous).
func (h *Harness) User(t testing.TB, r *Running, key *ecdsa.PrivateKey) userpb.UserAPIServiceClient {
	t.Helper()
	var signer crypto.Signer
	if key != nil {
		signer = key
	}
	c, conn, err := DialUser(r.UserAddr(), signer, h.CoordinatorValidators(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return c
}

// Pod is a simulated confidential pod: a device and its aTLS key.
type Pod struct {
	Device *sim.SNPDevice
	Key    *ecdsa.PrivateKey
}

// Pod returns a pod launched with policy p; mutate changes its device.
func (h *Harness) Pod(t testing.TB, p Policy, mutate func(*sim.SNPDeviceConfig)) *Pod {
	t.Helper()
	dev, err := h.Platform.Device(p.Hash, mutate)
	require.NoError(t, err)
	return &Pod{Device: dev, Key: OwnerKey()}
}

// Probe returns the status code and body of a probe path.
func Probe(t testing.TB, r *Running, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+r.ProbeAddr()+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// ParseCerts parses a PEM bundle.
func ParseCerts(t testing.TB, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		require.NoError(t, err)
		out = append(out, c)
	}
}

// RequireCode fails unless err is a gRPC status with code and a message
// containing every fragment.
func RequireCode(t testing.TB, err error, code codes.Code, fragments ...string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a gRPC status: %v", err)
	require.Equal(t, code, st.Code(), "message: %s", st.Message())
	for _, f := range fragments {
		require.Contains(t, st.Message(), f)
	}
}

func certPool(cs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

func verifyLeaf(leaf *x509.Certificate, mesh, root []*x509.Certificate) error {
	_, err := leaf.Verify(x509.VerifyOptions{Roots: certPool(root...), Intermediates: certPool(mesh...), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Errorf("verifying leaf: %w", err)
	}
	return nil
}

// RequireMeshCARotated checks a mesh CA rotation: the new mesh CA has a
// different key, a leaf issued under the old one was signed by the old key
// and not by the new one, and both mesh CAs are signed by the root.
func RequireMeshCARotated(t testing.TB, oldLeaf, oldMesh, newMesh, root *x509.Certificate) {
	t.Helper()
	oldPub, ok := oldMesh.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	require.True(t, ok, "mesh CA key type %T", oldMesh.PublicKey)
	require.False(t, oldPub.Equal(newMesh.PublicKey), "the new mesh CA must have a fresh key")
	require.NoError(t, oldLeaf.CheckSignatureFrom(oldMesh), "the old leaf is signed by the old mesh CA")
	require.Error(t, oldLeaf.CheckSignatureFrom(newMesh), "the old leaf must not verify against the new mesh CA")
	for _, m := range []*x509.Certificate{oldMesh, newMesh} {
		_, err := m.Verify(x509.VerifyOptions{Roots: certPool(root), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		require.NoError(t, err, "mesh CA %s chains to the root", m.Subject)
	}
	require.NoError(t, verifyLeaf(oldLeaf, []*x509.Certificate{oldMesh}, []*x509.Certificate{root}), "the old leaf still chains to the root")
}
