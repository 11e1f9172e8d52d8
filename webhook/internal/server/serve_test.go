package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/contrast-cc/contrast/webhook/internal/certs"
)

// TestServe runs the HTTPS webhook and the probe server: not ready until the
// certificate files appear, then an AdmissionReview over TLS is answered,
// and the servers stop when the context is canceled.
func TestServe(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	src := certs.NewFileSource(certs.FileConfig{CertFile: certFile, KeyFile: keyFile, Interval: 20 * time.Millisecond})
	probes := NewProbes()
	probes.AddReadiness("certificate", src.Ready)

	var lc net.ListenConfig
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wl, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	pl, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ServeConfig{
			Webhook: wl, Probes: pl, Admission: f.handler, ProbeHandler: probes.Handler(prometheus.NewRegistry()),
			GetCertificate: src.GetCertificate, Background: []func(context.Context) error{src.Run},
		})
	}()

	readyz := func() int {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pl.Addr().String()+"/readyz", nil)
		require.NoError(t, err)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, http.StatusServiceUnavailable, readyz())

	caPEM := writeServingCert(t, certFile, keyFile)
	require.Eventually(t, func() bool { return readyz() == http.StatusOK }, 5*time.Second, 20*time.Millisecond)

	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	call := func(path string, body []byte) *admissionv1.AdmissionResponse {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+wl.Addr().String()+path, bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		require.Equal(t, http.StatusOK, res.StatusCode)
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		var ar admissionv1.AdmissionReview
		require.NoError(t, json.Unmarshal(b, &ar))
		require.NotNil(t, ar.Response)
		return ar.Response
	}
	pod := webPod()
	resp := call(MutatePath, review(t, admissionv1.Create, "emojivoto", pod, false))
	assert.True(t, resp.Allowed)
	assert.NotEmpty(t, resp.Patch)

	// the validating webhook is served on the same port
	mutated := applyPatch(t, pod, resp)
	resp = call(ValidatePath, review(t, admissionv1.Create, "emojivoto", mutated, false))
	assert.True(t, resp.Allowed, "%v", resp.Result)
	resp = call(ValidatePath, review(t, admissionv1.Create, "emojivoto", pod, false))
	assert.False(t, resp.Allowed, "not mutated")

	// and the StatefulSet webhook
	st := dbStatefulSet()
	resp = call(MutateStatefulSetPath, reviewOf(t, admissionv1.Create, "demo", statefulSetKind, statefulSetResource, "", st, false))
	assert.True(t, resp.Allowed)
	assert.Equal(t, corev1.PersistentVolumeBlock, *patchStatefulSet(t, st, resp).Spec.VolumeClaimTemplates[0].Spec.VolumeMode)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// writeServingCert writes a self-signed certificate for 127.0.0.1 and
// returns it as PEM.
func writeServingCert(t *testing.T, certFile, keyFile string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600))
	require.NoError(t, os.WriteFile(certFile, certPEM, 0o600))
	return certPEM
}
