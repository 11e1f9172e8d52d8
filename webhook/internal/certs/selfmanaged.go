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
	"slices"
	"sync"
	"time"
)

// CABundlePatcher keeps CA certificates in the caBundle the API servers
// verify the webhook with (the webhook configurations). Implementations add
// the CAs to those already there, so other replicas and the previous CA keep
// working.
type CABundlePatcher interface {
	// EnsureCAs makes sure every CA of cas is in the caBundle, adding the
	// missing ones (it may drop others, e.g. expired ones). It returns the
	// CAs it found missing: added if err is nil, possibly still missing
	// otherwise. A CA it does not return is known to be present only if err
	// is nil (e.g. the configuration could not be read).
	EnsureCAs(ctx context.Context, cas ...*x509.Certificate) (missing []*x509.Certificate, err error)
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
	// Interval is how often expiry and the presence of the CA in the
	// caBundle are checked and a failed publication retried (default a
	// tenth of LeafValidity, at most one minute and at least 100ms).
	Interval time.Duration
	// Propagation is how long a CA added to the caBundle is left to reach
	// every API server before the webhook relies on it: a new CA's first
	// certificate is served only then (the current, still valid, certificate
	// is kept meanwhile), and the webhook is not ready until then - also for
	// its first CA (it serves no certificate before) and when its CA had to
	// be added again because it was missing from the caBundle. So an API
	// server that has not yet seen the caBundle is not sent to this replica
	// and, with failurePolicy Fail, cannot reject a pod for a TLS failure.
	// Default: a tenth of LeafValidity, at most one minute.
	Propagation time.Duration
	Now         func() time.Time
	Logger      *slog.Logger
}

// SelfManaged generates its own CA, publishes it with the Patcher, and
// issues and rotates the serving certificate before it expires. It checks
// on every run that its CA is still in the caBundle and adds it again if
// not. It is not ready until its CA has been in the caBundle for
// Propagation and a certificate is issued, nor while its CA is missing from
// the caBundle.
type SelfManaged struct {
	cfg SelfManagedConfig

	mu     sync.RWMutex
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	leaf   *tls.Certificate
	status error
	// trustedAt is when every API server can be expected to trust ca: its
	// last addition to the caBundle plus Propagation.
	trustedAt time.Time
	// missing is set while ca is known to be missing from the caBundle.
	missing error

	// next is a new CA waiting for publication and then Propagation before
	// it is used; only Rotate touches it (Run calls Rotate from one
	// goroutine).
	next *pendingCA
}

type pendingCA struct {
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
	// published is when the CA was (last) added to the caBundle; zero
	// while that is not known.
	published time.Time
	// failed is when publication last failed: the caBundle may or may not
	// have been updated.
	failed time.Time
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

// Run issues the certificates and keeps them fresh and published until ctx
// is done. Failures (e.g. the API server unreachable) are retried every
// interval; a CA waiting for Propagation is taken into use when it is over.
func (s *SelfManaged) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.Rotate(ctx); err != nil {
			s.cfg.Logger.Warn("managing serving certificate", "error", err)
		}
		wait := s.cfg.Interval
		if n := s.next; n != nil && !n.published.IsZero() {
			if d := n.published.Add(s.cfg.Propagation).Sub(s.cfg.Now()); d < wait {
				wait = max(d, 10*time.Millisecond)
			}
		}
		t.Reset(wait)
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

// Rotate makes sure the CA is in the caBundle, and replaces the CA and the
// serving certificate when due.
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
		s.next = &pendingCA{ca: newCA, key: newKey}
	}
	// publish a new CA before serving a certificate of it; check that the
	// current one is still there
	bundleErr := s.ensurePublished(ctx, now, ca)

	// switch to the new CA once every API server has had time to see it
	// (or when the current one has expired: nothing better to serve)
	if n := s.next; n != nil && !n.published.IsZero() {
		if !now.Before(n.published.Add(s.cfg.Propagation)) || (ca != nil && !now.Before(ca.NotAfter)) {
			ca, caKey, leaf = n.ca, n.key, nil
			s.next = nil
			s.mu.Lock()
			s.ca, s.caKey, s.trustedAt, s.missing = ca, caKey, n.published.Add(s.cfg.Propagation), nil
			s.mu.Unlock()
		}
	}
	if ca == nil {
		// the first CA: nothing is served until the API servers trust it
		if bundleErr != nil {
			return s.fail(bundleErr)
		}
		s.mu.Lock()
		s.status = fmt.Errorf("%w: CA added to the caBundle at %s, used from %s when every API server has had time to see it",
			ErrNotReady, s.next.published.UTC().Format(time.RFC3339Nano), s.next.published.Add(s.cfg.Propagation).UTC().Format(time.RFC3339Nano))
		s.mu.Unlock()
		return nil
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
			return errors.Join(bundleErr, s.fail(fmt.Errorf("issuing serving certificate: %w", err)))
		}
		leaf = &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
		s.cfg.Logger.Info("serving certificate issued", "notAfter", cert.NotAfter, "serial", cert.SerialNumber.String())
	}
	s.mu.Lock()
	s.leaf, s.status = leaf, nil
	s.mu.Unlock()
	return bundleErr
}

// ensurePublished makes sure the current CA ca (if any) and the new CA
// waiting in s.next (if any) are in the caBundle, and records when they were
// added.
func (s *SelfManaged) ensurePublished(ctx context.Context, now time.Time, ca *x509.Certificate) error {
	var cas []*x509.Certificate
	if ca != nil {
		cas = append(cas, ca)
	}
	n := s.next
	if n != nil {
		cas = append(cas, n.ca)
	}
	missing, err := s.cfg.Patcher.EnsureCAs(ctx, cas...)
	isMissing := func(c *x509.Certificate) bool { return slices.ContainsFunc(missing, c.Equal) }
	if ca != nil {
		switch {
		case isMissing(ca) && err == nil:
			s.cfg.Logger.Warn("webhook CA was missing from the caBundle: added again, unready until every API server has had time to see it",
				"serial", ca.SerialNumber.String(), "propagation", s.cfg.Propagation)
			s.mu.Lock()
			s.trustedAt, s.missing = now.Add(s.cfg.Propagation), nil
			s.mu.Unlock()
		case isMissing(ca):
			s.mu.Lock()
			s.missing = fmt.Errorf("webhook CA missing from the caBundle, adding it failed: %w", err)
			s.mu.Unlock()
		case err == nil:
			s.mu.Lock()
			s.missing = nil
			s.mu.Unlock()
		}
	}
	if n != nil {
		switch {
		case isMissing(n.ca) && err == nil:
			if n.published.IsZero() {
				s.cfg.Logger.Info("webhook CA published", "notAfter", n.ca.NotAfter, "serial", n.ca.SerialNumber.String())
			} else {
				s.cfg.Logger.Warn("new webhook CA was missing from the caBundle: added again", "serial", n.ca.SerialNumber.String())
			}
			n.published = now
		case isMissing(n.ca):
			n.published, n.failed = time.Time{}, now
		case err == nil && n.published.IsZero():
			// there without a confirmed addition: an earlier attempt that
			// reported failure added it, at the latest at the last one
			n.published = n.failed
			if n.published.IsZero() {
				n.published = now
			}
			s.cfg.Logger.Info("webhook CA published", "notAfter", n.ca.NotAfter, "serial", n.ca.SerialNumber.String())
		case err != nil && n.published.IsZero():
			n.failed = now
		}
	}
	if err != nil {
		if n != nil && n.published.IsZero() {
			return fmt.Errorf("publishing CA bundle: %w", err)
		}
		return fmt.Errorf("checking CA bundle: %w", err)
	}
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

// Ready reports whether an unexpired certificate is served whose CA is in
// the caBundle and has been for Propagation.
func (s *SelfManaged) Ready(context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.leaf == nil {
		return s.status
	}
	now := s.cfg.Now()
	switch {
	case !now.Before(s.leaf.Leaf.NotAfter):
		return fmt.Errorf("serving certificate expired at %s", s.leaf.Leaf.NotAfter.UTC().Format(time.RFC3339))
	case s.missing != nil:
		return s.missing
	case now.Before(s.trustedAt):
		return fmt.Errorf("webhook CA added to the caBundle: waiting until %s for every API server to see it", s.trustedAt.UTC().Format(time.RFC3339Nano))
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
