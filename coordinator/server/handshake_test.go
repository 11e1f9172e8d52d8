package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest/atls"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
)

// Handshakes that fail never reach a call, so the per-call attestation
// outcome never saw them: they are counted once per failed handshake.
func TestHandshakeFailuresAreCounted(t *testing.T) {
	ctx := t.Context()
	h := memoryHarness(t)
	c := h.Start(t)
	d := coordinatortest.NewDeployment(1)
	_, err := h.User(t, c, nil).SetManifest(ctx, h.Request(d, nil))
	require.NoError(t, err)
	addr := c.MeshAddr()

	// An aTLS client that sends no evidence.
	_, err = atls.Dial(ctx, "tcp", addr, atls.Config{Logger: slog.New(slog.DiscardHandler)})
	require.ErrorIs(t, err, atls.ErrRejectedByPeer)

	// TLS 1.3 with a client certificate, then a message of unknown type.
	tc, err := (&tls.Dialer{Config: &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{clientCert(t)}, NextProtos: []string{"h2"},
		InsecureSkipVerify: true, //nolint:gosec // the test talks garbage to the server
	}}).DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	hdr := make([]byte, 5)
	_, err = io.ReadFull(tc, hdr)
	require.NoError(t, err, "the server's evidence message (none: not asked for)")
	_, err = tc.Write([]byte{9, 0, 0, 0, 0})
	require.NoError(t, err)
	drain(t, tc)

	// Not TLS at all.
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	_, err = raw.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	require.NoError(t, err)
	drain(t, raw)

	// A peer that hangs up at once.
	raw, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	require.NoError(t, raw.Close())

	want := []string{
		`contrast_coordinator_attestations_total{reason="session",result="rejected"} 1`,
		`contrast_coordinator_attestations_total{reason="protocol",result="rejected"} 1`,
		`contrast_coordinator_attestations_total{reason="tls",result="rejected"} 1`,
		`contrast_coordinator_attestations_total{reason="connection-closed",result="rejected"} 1`,
	}
	var metrics string
	assert.Eventually(t, func() bool {
		_, metrics = coordinatortest.Probe(t, c, "/metrics")
		for _, w := range want {
			if !strings.Contains(metrics, w) {
				return false
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond)
	got := grepAttestations(metrics)
	for _, w := range want {
		assert.Contains(t, got, w)
	}
	assert.NotContains(t, got, `reason="other"`)
}

func drain(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, _ = io.Copy(io.Discard, c) // until the server closes the connection
	require.NoError(t, c.Close())
}

func clientCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "garbage"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func grepAttestations(metrics string) string {
	var out []string
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "contrast_coordinator_attestations_total") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
