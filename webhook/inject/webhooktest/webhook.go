// Package webhooktest runs the admission webhook in-process for tests (the
// integration tests register it with a real API server).
package webhooktest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/initializer/initenv"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/internal/certs"
	"github.com/contrast-cc/contrast/webhook/internal/server"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// Webhook is an in-process admission webhook serving HTTPS on 127.0.0.1.
type Webhook struct {
	// URL is the mutating admission endpoint (https://127.0.0.1:<port>/mutate).
	URL string
	// StatefulSetURL is the StatefulSet admission endpoint of the same
	// server (https://127.0.0.1:<port>/mutate-statefulsets).
	StatefulSetURL string
	// ValidateURL is the validating admission endpoint of the same server
	// (https://127.0.0.1:<port>/validate).
	ValidateURL string
	// CABundle is the PEM CA certificate for the webhook configuration.
	CABundle []byte
	// Mutator is the mutator the webhook uses.
	Mutator *inject.Mutator
	// Registry holds the webhook's metrics.
	Registry *prometheus.Registry
}

// Config configures Start.
type Config struct {
	Images *injecttest.Images
	// CoordinatorAddress defaults to coordinator.contrast-system.svc:7777.
	CoordinatorAddress string
	// ExcludedNamespaces defaults to kube-system and contrast-system.
	ExcludedNamespaces []string
	// Platform defaults to snp, CoordinatorPolicyHashes and
	// CoordinatorReferenceValues to injecttest's fixed values.
	Platform                   attest.Platform
	CoordinatorPolicyHashes    [][]byte
	CoordinatorReferenceValues initenv.ReferenceValues
	Logger                     *slog.Logger
}

// Start runs the webhook (the same handler, certificate source and
// servers as the webhook binary) until the test ends.
func Start(t testing.TB, cfg Config) *Webhook {
	t.Helper()
	if cfg.CoordinatorAddress == "" {
		cfg.CoordinatorAddress = "coordinator.contrast-system.svc:7777"
	}
	if cfg.ExcludedNamespaces == nil {
		cfg.ExcludedNamespaces = []string{"kube-system", "contrast-system"}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	icfg := inject.Config{
		InitializerImage: cfg.Images.InitializerImage, ProxyImage: cfg.Images.ProxyImage, CoordinatorAddress: cfg.CoordinatorAddress,
		Platform: cfg.Platform, CoordinatorPolicyHashes: cfg.CoordinatorPolicyHashes,
		CoordinatorReferenceValues: cfg.CoordinatorReferenceValues,
	}
	if icfg.Platform == "" {
		icfg.Platform = attest.PlatformSNP
	}
	if icfg.CoordinatorPolicyHashes == nil {
		icfg.CoordinatorPolicyHashes = [][]byte{injecttest.CoordinatorPolicyHash}
	}
	if len(icfg.CoordinatorReferenceValues.SNP)+len(icfg.CoordinatorReferenceValues.TDX) == 0 {
		icfg.CoordinatorReferenceValues = injecttest.CoordinatorReferenceValues()
	}
	if err := icfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	metrics := server.NewMetrics(reg)
	// the policy and patch caches as the webhook command configures them by default
	m := &inject.Mutator{Config: icfg, Images: server.NewCachingSource(cfg.Images.Source, metrics),
		Policies: policy.NewCache(policy.CacheConfig{Observer: metrics})}
	h, err := server.NewAdmissionHandler(server.AdmissionConfig{
		Mutator: m, Metrics: metrics, Logger: cfg.Logger, ExcludedNamespaces: cfg.ExcludedNamespaces,
		Patches: server.NewPatchCache(server.PatchCacheConfig{Observer: metrics}),
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	caPEM := writeServingCert(t, certFile, keyFile)
	src := certs.NewFileSource(certs.FileConfig{CertFile: certFile, KeyFile: keyFile, Logger: cfg.Logger})
	if err := src.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	probes := server.NewProbes()
	probes.AddReadiness("certificate", src.Ready)

	ctx, cancel := context.WithCancel(context.Background())
	var lc net.ListenConfig
	wl, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	pl, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- server.Serve(ctx, server.ServeConfig{
			Webhook: wl, Probes: pl, Admission: h, ProbeHandler: probes.Handler(reg),
			GetCertificate: src.GetCertificate, Logger: cfg.Logger,
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("webhook server: %v", err)
		}
	})
	base := "https://" + wl.Addr().String()
	return &Webhook{URL: base + server.MutatePath, StatefulSetURL: base + server.MutateStatefulSetPath, ValidateURL: base + server.ValidatePath, CABundle: caPEM, Mutator: m, Registry: reg}
}

// writeServingCert writes a CA-signed serving certificate for 127.0.0.1 and
// returns the CA certificate as PEM.
func writeServingCert(t testing.TB, certFile, keyFile string) []byte {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "contrast webhook test CA"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(err)
	ca, err := x509.ParseCertificate(caDER)
	must(err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	must(err)
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	must(err)
	must(os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600))
	must(os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}
