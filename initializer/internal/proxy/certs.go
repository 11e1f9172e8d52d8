package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Files the Initializer writes into the TLS directory (DESIGN.md §4).
const (
	FileMeshCA    = "mesh-ca.pem"
	FileCertChain = "certChain.pem"
	FileKey       = "key.pem"
	// DefaultTLSDir is where the Initializer writes them.
	DefaultTLSDir = "/contrast/tls-config"
)

// errNoClientCertificate rejects an mTLS client that sent no certificate.
var errNoClientCertificate = errors.New("client sent no certificate")

// Bundle is one loaded set of mesh credentials and the TLS configurations
// built from it. A Bundle never changes; a reload makes a new one.
type Bundle struct {
	// Cert is the mesh certificate chain with its key.
	Cert tls.Certificate
	// MeshCA holds the mesh CA certificates peers must chain to.
	MeshCA *x509.CertPool

	mtls     *tls.Config // ingress: client certificate required
	tlsOnly  *tls.Config // ingress: #false ports, no client certificate
	sessions tls.ClientSessionCache
	digest   [sha256.Size]byte
}

// LoadBundle reads the mesh credentials from dir and checks that the leaf
// chains to the mesh CA for both server and client use. Errors name the
// file, never its content.
func LoadBundle(dir string) (*Bundle, error) {
	contents, digest, err := readFiles(dir)
	if err != nil {
		return nil, err
	}
	return parseBundle(dir, contents, digest)
}

func readFiles(dir string) ([3][]byte, [sha256.Size]byte, error) {
	var out [3][]byte
	h := sha256.New()
	for i, name := range []string{FileMeshCA, FileCertChain, FileKey} {
		b, err := os.ReadFile(filepath.Join(dir, name)) //nolint:gosec // the configured TLS folder and fixed file names.
		if err != nil {
			return out, [sha256.Size]byte{}, err
		}
		out[i] = b
		// Length-prefix each file so that moving bytes between files
		// changes the digest.
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return out, [sha256.Size]byte(h.Sum(nil)), nil
}

func parseBundle(dir string, contents [3][]byte, digest [sha256.Size]byte) (*Bundle, error) {
	caPEM, chainPEM, keyPEM := contents[0], contents[1], contents[2]
	pool := x509.NewCertPool()
	rest := bytes.TrimSpace(caPEM)
	n := 0
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: want PEM CERTIFICATE blocks only", filepath.Join(dir, FileMeshCA))
		}
		ca, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", filepath.Join(dir, FileMeshCA), n+1, err)
		}
		if !ca.IsCA || !ca.BasicConstraintsValid {
			return nil, fmt.Errorf("%s: certificate %d (%s) is not a CA certificate", filepath.Join(dir, FileMeshCA), n+1, ca.Subject)
		}
		pool.AddCert(ca)
		n++
		rest = bytes.TrimSpace(rest)
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no certificate", filepath.Join(dir, FileMeshCA))
	}
	cert, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		// X509KeyPair's errors describe the PEM structure or a key
		// mismatch, never key material.
		return nil, fmt.Errorf("%s and %s: %w", filepath.Join(dir, FileCertChain), filepath.Join(dir, FileKey), err)
	}
	intermediates := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, FileCertChain), err)
		}
		intermediates.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return nil, fmt.Errorf("%s does not chain to %s: %w", filepath.Join(dir, FileCertChain), filepath.Join(dir, FileMeshCA), err)
		}
	}
	b := &Bundle{Cert: cert, MeshCA: pool, digest: digest}
	b.mtls = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// Certificates that are given are verified against the mesh CA
		// by crypto/tls; VerifyConnection then requires one. This is
		// RequireAndVerifyClientCert with a typed error for the metrics.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || len(cs.VerifiedChains) == 0 {
				return errNoClientCertificate
			}
			return nil
		},
	}
	b.tlsOnly = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.NoClientCert,
	}
	// Session resumption (TLS 1.3 PSK with a fresh key exchange, so
	// forward secret) skips the certificates and their signatures on
	// repeated connections between the same pods. It is bound to this
	// bundle: each configuration gets its own random ticket key, and the
	// egress its own session cache, so a reload (a new certificate or mesh
	// CA) makes every earlier ticket useless, and a ticket from a #false
	// port is not one of an mTLS port. Within a bundle crypto/tls resumes
	// only if a chain verified at the full handshake is still within its
	// validity and rooted in this bundle's mesh CA, and the server's only
	// with the client certificate it verified then; VerifyConnection runs
	// on resumption too.
	for _, cfg := range []*tls.Config{b.mtls, b.tlsOnly} {
		var key [32]byte
		if _, err := rand.Read(key[:]); err != nil {
			return nil, fmt.Errorf("session ticket key: %w", err)
		}
		cfg.SetSessionTicketKeys([][32]byte{key})
	}
	b.sessions = tls.NewLRUClientSessionCache(sessionCacheSize)
	return b, nil
}

// sessionCacheSize bounds the egress's session cache: one ticket per
// remote name, the least recently used dropped first.
const sessionCacheSize = 256

// clientConfig is the egress TLS configuration for a remote named
// serverName (a DNS name or an IP address): the mesh certificate as client
// certificate, and the server verified against the mesh CA and serverName.
func (b *Bundle) clientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{b.Cert},
		RootCAs:            b.MeshCA,
		ServerName:         serverName,
		ClientSessionCache: b.sessions,
	}
}

// Store holds the current Bundle and reloads it when the files change.
type Store struct {
	dir     string
	log     *slog.Logger
	metrics *Metrics

	cur        atomic.Pointer[Bundle]
	mu         sync.Mutex
	lastFailed [sha256.Size]byte // digest of the last content that failed to load
	loaded     chan struct{}
	loadedOnce sync.Once
}

// NewStore returns a Store for dir; nothing is loaded yet.
func NewStore(dir string, log *slog.Logger, m *Metrics) *Store {
	return &Store{dir: dir, log: log, metrics: m, loaded: make(chan struct{})}
}

// Current returns the current bundle, nil before the first load.
func (s *Store) Current() *Bundle { return s.cur.Load() }

// Reload reads the files and swaps in a new bundle when their content
// changed and is valid. Invalid content (e.g. files half rewritten) leaves
// the current bundle in place.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	contents, digest, err := readFiles(s.dir)
	if err != nil {
		return err
	}
	if cur := s.cur.Load(); cur != nil && cur.digest == digest {
		return nil
	}
	b, err := parseBundle(s.dir, contents, digest)
	if err != nil {
		if s.lastFailed != digest {
			s.lastFailed = digest
			s.metrics.certificateReload(false)
		}
		return err
	}
	s.cur.Store(b)
	s.metrics.certificateReload(true)
	s.metrics.certificateNotAfter(b.Cert.Leaf.NotAfter)
	s.log.Info("loaded mesh certificate", "dir", s.dir, "serial", b.Cert.Leaf.SerialNumber.String(),
		"dnsNames", b.Cert.Leaf.DNSNames, "ipAddresses", b.Cert.Leaf.IPAddresses, "notAfter", b.Cert.Leaf.NotAfter)
	s.loadedOnce.Do(func() { close(s.loaded) })
	return nil
}

// Loaded is closed once a bundle is loaded.
func (s *Store) Loaded() <-chan struct{} { return s.loaded }

// Run reloads every interval until ctx ends. Absent or invalid files are
// logged (once per distinct state) and retried.
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		err := s.Reload()
		switch {
		case err != nil && err.Error() != lastErr:
			if s.Current() == nil {
				s.log.Info("waiting for mesh certificates", "dir", s.dir, "error", err)
			} else {
				s.log.Warn("mesh certificates not reloaded, keeping the current ones", "dir", s.dir, "error", err)
			}
			lastErr = err.Error()
		case err == nil:
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
