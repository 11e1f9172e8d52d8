// Package atls implements attested TLS: TLS 1.3 in which one or both sides
// prove, right after the handshake and before any application byte, that
// they run in a TEE.
//
// Each attesting side uses a fresh key and a self-signed certificate; no
// certificate is trusted by PKI. Instead, the evidence's REPORT_DATA is
//
//	SHA-512("contrast-atls-v1" ‖ role ‖ exporter)
//
// where exporter is the RFC 8446 §7.5 exporter value of this TLS session
// (label "EXPORTER-contrast-atls-v1", 32 bytes) and role is "server" or
// "client". Evidence relayed from, or replayed into, another session fails
// the report-data check by construction.
//
// A client that will validate the server's evidence says so in its
// ClientHello by offering the ALPN protocol ID "contrast-atls-v1/evidence"
// next to "h2" (the server never selects it). A server with an Issuer
// attests only when asked: evidence nobody validates would cost the server a
// report (on real hardware a round trip to the secure processor) per
// connection for nothing. The hint is covered by the handshake transcript,
// and it cannot weaken anything: a client that validates requires evidence
// itself and fails on NONE.
//
// After the handshake the sides exchange messages, each framed as
// type (1 byte) ‖ length (uint32 big-endian) ‖ payload:
//
//	server → client  EVIDENCE(frame), or NONE when not asked or no Issuer
//	client → server  REJECT(check) | EVIDENCE(frame) or NONE
//	server → client  OK or REJECT(check)
//
// A rejection names the failed check (never its details) so the peer can
// report it; the side that rejected returns the full *attest.CheckError.
package atls

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"slices"
	"time"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/evidence"
)

// Label is the label of the REPORT_DATA binding.
const Label = "contrast-atls-v1"

const (
	exporterLabel = "EXPORTER-" + Label
	// evidenceProto is offered by a client that validates server evidence.
	evidenceProto = Label + "/evidence"
	exporterLen   = 32
	maxMessage    = evidence.MaxSize + 1024

	msgEvidence byte = 1
	msgNone     byte = 2
	msgOK       byte = 3
	msgReject   byte = 4
)

// Role is the side of the connection whose evidence is bound.
type Role string

// Roles.
const (
	RoleServer Role = "server"
	RoleClient Role = "client"
)

// ErrRejectedByPeer is wrapped in the *attest.CheckError returned when the
// peer rejected this side's evidence.
var ErrRejectedByPeer = errors.New("peer rejected our evidence")

// ErrProtocol reports a malformed or unexpected aTLS message.
var ErrProtocol = errors.New("atls protocol error")

// Config configures one side of an aTLS connection.
type Config struct {
	// Issuer, if set, makes this side attest.
	Issuer attest.Issuer
	// Validators, if non-empty, require the peer to attest; evidence is
	// accepted if any validator accepts it.
	Validators []attest.Validator
	// Key is this side's TLS key. Nil generates a fresh ECDSA P-256 key
	// when the Config is first used by a Server/Client/credential.
	Key crypto.Signer
	// HandshakeTimeout bounds the handshake and evidence exchange when
	// the caller's context has no deadline. Zero means 30 s.
	HandshakeTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Peer is what the handshake established about the other side.
type Peer struct {
	// Result is the peer's validated attestation, nil if the peer did not
	// have to attest.
	Result *attest.Result
	// PublicKey is the peer's TLS public key, bound to the evidence.
	PublicKey crypto.PublicKey
	// Certificate is the peer's self-signed certificate.
	Certificate *x509.Certificate
}

// Conn is an established aTLS connection.
type Conn struct {
	*tls.Conn
	Peer *Peer
}

// ReportData returns the REPORT_DATA binding evidence of role to the session.
func ReportData(cs *tls.ConnectionState, role Role) ([64]byte, error) {
	if cs.Version != tls.VersionTLS13 {
		return [64]byte{}, fmt.Errorf("%w: TLS version %x is not 1.3", ErrProtocol, cs.Version)
	}
	ekm, err := cs.ExportKeyingMaterial(exporterLabel, nil, exporterLen)
	if err != nil {
		return [64]byte{}, fmt.Errorf("exporting keying material: %w", err)
	}
	h := sha512.New()
	h.Write([]byte(Label))
	h.Write([]byte{0})
	h.Write([]byte(role))
	h.Write([]byte{0})
	h.Write(ekm)
	var out [64]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

type side struct {
	cfg  Config
	cert tls.Certificate
}

func newSide(cfg Config) (*side, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 30 * time.Second
	}
	if cfg.Key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating key: %w", err)
		}
		cfg.Key = k
	}
	cert, err := selfSigned(cfg.Key)
	if err != nil {
		return nil, err
	}
	return &side{cfg: cfg, cert: cert}, nil
}

func selfSigned(key crypto.Signer) (tls.Certificate, error) {
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: "contrast-atls"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"contrast-atls"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signing certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parsing certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// tlsConfig returns the TLS configuration of one connection. On the server,
// *wantEvidence is set during the handshake to whether the client asked for
// the server's evidence.
func (s *side) tlsConfig(server bool, wantEvidence *bool) *tls.Config {
	protos := []string{"h2"}
	if !server && len(s.cfg.Validators) > 0 {
		protos = append(protos, evidenceProto)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cert},
		NextProtos:   protos,
		// The certificate is not trusted by PKI: the peer is authenticated by
		// evidence bound to this session's exporter (see package comment).
		InsecureSkipVerify: true, //nolint:gosec // authenticated by attestation after the handshake
	}
	if server {
		c.ClientAuth = tls.RequireAnyClientCert
		if len(s.cfg.Validators) == 0 {
			c.ClientAuth = tls.RequestClientCert
		}
		c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			*wantEvidence = slices.Contains(hello.SupportedProtos, evidenceProto)
			return nil, nil //nolint:nilnil // nil config: keep this one
		}
	}
	return c
}

// Server performs the server side of the aTLS handshake on conn.
func Server(ctx context.Context, conn net.Conn, cfg Config) (*Conn, error) {
	s, err := newSide(cfg)
	if err != nil {
		return nil, err
	}
	return s.server(ctx, conn)
}

// Client performs the client side of the aTLS handshake on conn.
func Client(ctx context.Context, conn net.Conn, cfg Config) (*Conn, error) {
	s, err := newSide(cfg)
	if err != nil {
		return nil, err
	}
	return s.client(ctx, conn)
}

// Dial connects to addr and performs the client handshake.
func Dial(ctx context.Context, network, addr string, cfg Config) (*Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	c, err := Client(ctx, raw, cfg)
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	return c, nil
}

func (s *side) deadline(ctx context.Context, conn net.Conn) func() {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(s.cfg.HandshakeTimeout)
	}
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		_ = conn.SetDeadline(time.Time{})
	}
}

func (s *side) server(ctx context.Context, raw net.Conn) (*Conn, error) {
	defer s.deadline(ctx, raw)()
	var wantEvidence bool
	tc := tls.Server(raw, s.tlsConfig(true, &wantEvidence))
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	cs := tc.ConnectionState()
	// 1. Our evidence, if the client asked for it (or none).
	issuer := s.cfg.Issuer
	if !wantEvidence {
		issuer = nil
	}
	if err := sendEvidence(ctx, tc, issuer, &cs, RoleServer); err != nil {
		return nil, err
	}
	// 2. The client's verdict on ours, then its evidence.
	peer, err := s.receiveEvidence(ctx, tc, &cs, RoleClient, true)
	if err != nil {
		return nil, err
	}
	// 3. Our verdict.
	if err := writeMsg(tc, msgOK, nil); err != nil {
		return nil, err
	}
	return &Conn{Conn: tc, Peer: peer}, nil
}

func (s *side) client(ctx context.Context, raw net.Conn) (*Conn, error) {
	defer s.deadline(ctx, raw)()
	tc := tls.Client(raw, s.tlsConfig(false, nil))
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	cs := tc.ConnectionState()
	peer, err := s.receiveEvidence(ctx, tc, &cs, RoleServer, false)
	if err != nil {
		return nil, err
	}
	if err := sendEvidence(ctx, tc, s.cfg.Issuer, &cs, RoleClient); err != nil {
		return nil, err
	}
	typ, payload, err := readMsg(tc)
	if err != nil {
		return nil, err
	}
	switch typ {
	case msgOK:
	case msgReject:
		return nil, rejected(payload)
	default:
		return nil, fmt.Errorf("%w: unexpected message %d, want verdict", ErrProtocol, typ)
	}
	return &Conn{Conn: tc, Peer: peer}, nil
}

func rejected(payload []byte) error {
	return attest.NewCheckError(attest.Check(sanitize(payload)), ErrRejectedByPeer)
}

// sanitize keeps a peer-supplied check name printable and short.
func sanitize(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			out = append(out, c)
		}
	}
	return string(out)
}

// sendEvidence sends evidence from issuer, or NONE when issuer is nil.
func sendEvidence(ctx context.Context, w io.Writer, issuer attest.Issuer, cs *tls.ConnectionState, role Role) error {
	if issuer == nil {
		return writeMsg(w, msgNone, nil)
	}
	rd, err := ReportData(cs, role)
	if err != nil {
		return err
	}
	ev, err := issuer.Issue(ctx, rd)
	if err != nil {
		return fmt.Errorf("issuing evidence: %w", err)
	}
	return writeMsg(w, msgEvidence, ev)
}

// receiveEvidence reads the peer's evidence message and validates it. When
// verdictFirst, a REJECT from the peer may arrive instead (the peer's verdict
// on our evidence).
func (s *side) receiveEvidence(ctx context.Context, rw io.ReadWriter, cs *tls.ConnectionState, role Role, verdictFirst bool) (*Peer, error) {
	typ, payload, err := readMsg(rw)
	if err != nil {
		return nil, err
	}
	if typ == msgReject && verdictFirst {
		return nil, rejected(payload)
	}
	peer := &Peer{}
	if len(cs.PeerCertificates) > 0 {
		peer.Certificate = cs.PeerCertificates[0]
		peer.PublicKey = cs.PeerCertificates[0].PublicKey
	}
	if len(s.cfg.Validators) == 0 {
		if typ != msgEvidence && typ != msgNone {
			return nil, fmt.Errorf("%w: unexpected message %d", ErrProtocol, typ)
		}
		return peer, nil
	}
	var verr error
	switch {
	case typ == msgNone:
		verr = attest.Errorf(attest.CheckSession, "peer sent no evidence but attestation is required")
	case typ != msgEvidence:
		verr = attest.Errorf(attest.CheckSession, "unexpected message %d, want evidence", typ)
	case peer.Certificate == nil:
		verr = attest.Errorf(attest.CheckSession, "peer presented no certificate")
	}
	if verr == nil {
		rd, err := ReportData(cs, role)
		if err != nil {
			return nil, err
		}
		peer.Result, verr = attest.ValidateAny(ctx, s.cfg.Validators, payload, rd)
	}
	if verr != nil {
		check, _ := attest.FailedCheck(verr)
		if werr := writeMsg(rw, msgReject, []byte(check)); werr != nil {
			s.cfg.Logger.Debug("sending rejection failed", "error", werr)
		}
		return nil, fmt.Errorf("validating peer evidence: %w", verr)
	}
	return peer, nil
}

func writeMsg(w io.Writer, typ byte, payload []byte) error {
	if len(payload) > maxMessage {
		return fmt.Errorf("%w: message of %d bytes", ErrProtocol, len(payload))
	}
	buf := make([]byte, 5, 5+len(payload))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:], uint32(len(payload))) //nolint:gosec // bounded above
	buf = append(buf, payload...)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("writing atls message: %w", err)
	}
	return nil
}

func readMsg(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, fmt.Errorf("reading atls message: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxMessage {
		return 0, nil, fmt.Errorf("%w: message of %d bytes exceeds limit", ErrProtocol, n)
	}
	if hdr[0] < msgEvidence || hdr[0] > msgReject {
		return 0, nil, fmt.Errorf("%w: unknown message type %d", ErrProtocol, hdr[0])
	}
	var payload bytes.Buffer
	if _, err := io.CopyN(&payload, r, int64(n)); err != nil {
		return 0, nil, fmt.Errorf("reading atls message: %w", err)
	}
	return hdr[0], payload.Bytes(), nil
}
