package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"time"
)

// CABundlePatcher publishes a CA certificate to the API server (the caBundle
// of the webhook's MutatingWebhookConfiguration). Implementations add ca to
// the CAs already there, so replicas and the previous CA keep working.
type CABundlePatcher interface {
	AddCA(ctx context.Context, ca *x509.Certificate) error
}

// SelfManagedConfig configures a SelfManaged source.
type SelfManagedConfig struct {
	// DNSNames and IPs are the serving certificate's SANs (the webhook
	// Service's names, e.g. contrast-webhook.contrast-system.svc).
	DNSNames []string
	IPs      []net.IP
	// Patcher publishes the CA. Required.
	Patcher CABundlePatcher
	// CAValidity defaults to one year, LeafValidity to 30 days. Each is
	// replaced after two thirds of its validity, counted from issuance.
	CAValidity, LeafValidity time.Duration
	// Interval is how often expiry is checked and a failed publication
	// retried (default a tenth of LeafValidity, at most one minute and at
	// least 100ms).
	Interval time.Duration
	// Propagation is how long a newly published CA is left to reach every
	// API server before a certificate of it is served; until then the
	// current (still valid) certificate is kept, so an API server that has
	// not yet seen the new caBundle cannot fail a call and, with
	// failurePolicy Fail, reject a pod. Default: a tenth of LeafValidity,
	// at most one minute. The first CA is served at once (there is no
	// current certificate; readiness gates traffic).
	Propagation time.Duration
	Now         func() time.Time
	Logger      *slog.Logger
}

// SelfManaged generates its own CA, publishes it with the Patcher, and
// issues and rotates the serving certificate before it expires. It is not
// ready until the CA is published and a certificate is issued.
type SelfManaged struct {
	cfg SelfManagedConfig

	mu     sync.RWMutex
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	leaf   *tls.Certificate
	status error

	// next is a published CA waiting for Propagation before it is used;
	// only Rotate touches it (Run calls Rotate from one goroutine).
	next *pendingCA
}

type pendingCA struct {
	ca        *x509.Certificate
	key       *ecdsa.PrivateKey
	published time.Time
}

// NewSelfManaged returns a SelfManaged source; Run does the work.
func NewSelfManaged(cfg SelfManagedConfig) (*SelfManaged, error) {
	if cfg.Patcher == nil {
		return nil, errors.New("a CA bundle patcher is required")
	}
	if len(cfg.DNSNames) == 0 && len(cfg.IPs) == 0 {
		return nil, errors.New("the serving certificate needs a DNS name or IP address")
	}
	if cfg.CAValidity <= 0 {
		cfg.CAValidity = 365 * 24 * time.Hour
	}
	if cfg.LeafValidity <= 0 {
		cfg.LeafValidity = 30 * 24 * time.Hour
	}
	if cfg.LeafValidity > cfg.CAValidity {
		return nil, errors.New("leaf validity exceeds CA validity")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = min(max(cfg.LeafValidity/10, 100*time.Millisecond), time.Minute)
	}
	if cfg.Propagation <= 0 {
		cfg.Propagation = min(cfg.LeafValidity/10, time.Minute)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &SelfManaged{cfg: cfg, status: ErrNotReady}, nil
}

// Run issues the certificates and keeps them fresh until ctx is done.
// Failures (e.g. the API server unreachable) are retried every interval.
func (s *SelfManaged) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if err := s.Rotate(ctx); err != nil {
			s.cfg.Logger.Warn("managing serving certificate", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// backdate is how far NotBefore lies before issuance, for clock skew.
const backdate = 5 * time.Minute

// renewAt is the time after two thirds of the validity of c, counted from
// its issuance (not from the backdated NotBefore, which would make short
// validities due at once).
func renewAt(c *x509.Certificate) time.Time {
	issued := c.NotBefore.Add(backdate)
	return issued.Add(c.NotAfter.Sub(issued) * 2 / 3)
}

// Rotate replaces the CA and the serving certificate when due.
func (s *SelfManaged) Rotate(ctx context.Context) error {
	now := s.cfg.Now()
	s.mu.RLock()
	ca, caKey, leaf := s.ca, s.caKey, s.leaf
	s.mu.RUnlock()

	if (ca == nil || !now.Before(renewAt(ca))) && s.next == nil {
		newCA, newKey, err := newCertificate(now, s.cfg.CAValidity, nil, nil, &x509.Certificate{
			Subject:               pkix.Name{CommonName: "contrast webhook CA"},
			IsCA:                  true,
			BasicConstraintsValid: true,
			MaxPathLenZero:        true,
			KeyUsage:              x509.KeyUsageCertSign,
		})
		if err != nil {
			return s.fail(fmt.Errorf("generating CA: %w", err))
		}
		// publish before serving a leaf of the new CA
		if err := s.cfg.Patcher.AddCA(ctx, newCA); err != nil {
			return s.fail(fmt.Errorf("publishing CA bundle: %w", err))
		}
		s.cfg.Logger.Info("webhook CA published", "notAfter", newCA.NotAfter, "serial", newCA.SerialNumber.String())
		s.next = &pendingCA{ca: newCA, key: newKey, published: now}
	}
	// switch to the published CA once every API server has had time to see
	// it, or at once when there is no usable current certificate
	if n := s.next; n != nil {
		usable := leaf != nil && now.Before(leaf.Leaf.NotAfter)
		if !usable || !now.Before(n.published.Add(s.cfg.Propagation)) {
			ca, caKey, leaf = n.ca, n.key, nil
			s.next = nil
			s.mu.Lock()
			s.ca, s.caKey = ca, caKey
			s.mu.Unlock()
		} else {
			// keep the current certificate until the switch: it has at
			// least a third of its validity left, Propagation is a tenth
			return nil
		}
	}
	// every CA has the same subject: whether the leaf is of the current CA
	// is decided by its signature
	if leaf == nil || !now.Before(renewAt(leaf.Leaf)) || leaf.Leaf.NotAfter.After(ca.NotAfter) || leaf.Leaf.CheckSignatureFrom(ca) != nil {
		validity := min(s.cfg.LeafValidity, ca.NotAfter.Sub(now))
		cert, key, err := newCertificate(now, validity, ca, caKey, &x509.Certificate{
			Subject:     pkix.Name{CommonName: "contrast webhook"},
			DNSNames:    s.cfg.DNSNames,
			IPAddresses: s.cfg.IPs,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return s.fail(fmt.Errorf("issuing serving certificate: %w", err))
		}
		leaf = &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
		s.cfg.Logger.Info("serving certificate issued", "notAfter", cert.NotAfter, "serial", cert.SerialNumber.String())
	}
	s.mu.Lock()
	s.leaf, s.status = leaf, nil
	s.mu.Unlock()
	return nil
}

func (s *SelfManaged) fail(err error) error {
	s.mu.Lock()
	if s.leaf == nil {
		s.status = fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	s.mu.Unlock()
	return err
}

// GetCertificate is the tls.Config callback.
func (s *SelfManaged) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.leaf == nil {
		return nil, ErrNotReady
	}
	return s.leaf, nil
}

// Ready reports whether a published, unexpired certificate is served.
func (s *SelfManaged) Ready(context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.leaf == nil {
		return s.status
	}
	if !s.cfg.Now().Before(s.leaf.Leaf.NotAfter) {
		return fmt.Errorf("serving certificate expired at %s", s.leaf.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// CAPEM returns the current CA certificate as PEM (nil before Run).
func (s *SelfManaged) CAPEM() []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ca == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ca.Raw})
}

func newCertificate(now time.Time, validity time.Duration, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(validity)
	signer, signerKey := parent, parentKey
	if parent == nil {
		signer, signerKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}
