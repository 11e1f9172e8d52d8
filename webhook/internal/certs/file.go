// Package certs provides the webhook's serving certificate: from files
// (reloaded when they change, e.g. a cert-manager Secret volume) or
// self-managed.
package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ErrNotReady is returned while no certificate is loaded.
var ErrNotReady = errors.New("no serving certificate")

// FileSource serves a certificate and key read from PEM files and reloads
// them when their content changes. A failed reload keeps the last good
// certificate.
type FileSource struct {
	certFile, keyFile string
	interval          time.Duration
	log               *slog.Logger
	now               func() time.Time

	mu       sync.RWMutex
	cert     *tls.Certificate
	certPEM  []byte
	keyPEM   []byte
	lastErr  error
	notAfter time.Time
}

// FileConfig configures a FileSource.
type FileConfig struct {
	CertFile, KeyFile string
	// Interval is how often the files are checked (default 10s).
	Interval time.Duration
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// NewFileSource returns a FileSource and loads the files once; a failed
// first load is not an error (Ready reports it until the files appear).
func NewFileSource(cfg FileConfig) *FileSource {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &FileSource{certFile: cfg.CertFile, keyFile: cfg.KeyFile, interval: cfg.Interval, log: cfg.Logger, now: cfg.Now}
	_ = s.Reload()
	return s
}

// Reload reads the files and replaces the certificate if they changed.
func (s *FileSource) Reload() error {
	certPEM, err := os.ReadFile(s.certFile)
	if err != nil {
		return s.fail(fmt.Errorf("reading certificate: %w", err))
	}
	keyPEM, err := os.ReadFile(s.keyFile)
	if err != nil {
		return s.fail(fmt.Errorf("reading key: %w", err))
	}
	s.mu.RLock()
	unchanged := s.cert != nil && bytes.Equal(certPEM, s.certPEM) && bytes.Equal(keyPEM, s.keyPEM)
	s.mu.RUnlock()
	if unchanged {
		return nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// a writer may have replaced one file but not yet the other
		return s.fail(fmt.Errorf("loading key pair: %w", err))
	}
	// tls.X509KeyPair fills Leaf (unless GODEBUG x509keypairleaf=0)
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return s.fail(fmt.Errorf("parsing certificate: %w", err))
		}
	}
	leaf := cert.Leaf
	s.mu.Lock()
	s.cert, s.certPEM, s.keyPEM, s.lastErr, s.notAfter = &cert, certPEM, keyPEM, nil, leaf.NotAfter
	s.mu.Unlock()
	s.log.Info("serving certificate loaded", "file", s.certFile, "notAfter", leaf.NotAfter, "serial", leaf.SerialNumber.String())
	return nil
}

func (s *FileSource) fail(err error) error {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	return err
}

// Run reloads the files every interval until ctx is done.
func (s *FileSource) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.Reload(); err != nil {
				s.log.Warn("reloading serving certificate", "error", err)
			}
		}
	}
}

// GetCertificate is the tls.Config callback.
func (s *FileSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cert == nil {
		return nil, ErrNotReady
	}
	return s.cert, nil
}

// Ready reports whether a valid certificate is loaded.
func (s *FileSource) Ready(context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.cert == nil && s.lastErr != nil:
		return fmt.Errorf("%w: %w", ErrNotReady, s.lastErr)
	case s.cert == nil:
		return ErrNotReady
	case !s.now().Before(s.notAfter):
		return fmt.Errorf("serving certificate expired at %s", s.notAfter.UTC().Format(time.RFC3339))
	}
	return nil
}
