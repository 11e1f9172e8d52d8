package atls

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// AuthInfo is the credentials.AuthInfo of an aTLS connection. Servers get
// the peer's validated attestation with PeerFromContext.
type AuthInfo struct {
	credentials.CommonAuthInfo
	Peer *Peer
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return "atls" }

// Credentials are gRPC transport credentials for aTLS. The same value can
// serve as client and server credentials; the Config decides who attests.
type Credentials struct {
	s *side
}

// NewCredentials returns transport credentials for cfg. For the user API the
// server sets Issuer; for the mesh API the server sets Validators and the
// client Issuer.
func NewCredentials(cfg Config) (*Credentials, error) {
	s, err := newSide(cfg)
	if err != nil {
		return nil, err
	}
	return &Credentials{s: s}, nil
}

var _ credentials.TransportCredentials = (*Credentials)(nil)

// ClientHandshake implements credentials.TransportCredentials.
func (c *Credentials) ClientHandshake(ctx context.Context, _ string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, err := c.s.client(ctx, raw)
	if err != nil {
		return nil, nil, err
	}
	return conn, authInfo(conn), nil
}

// ServerHandshake implements credentials.TransportCredentials.
func (c *Credentials) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.s.cfg.HandshakeTimeout)
	defer cancel()
	conn, err := c.s.server(ctx, raw)
	if err != nil {
		c.s.cfg.Logger.Info("aTLS handshake failed", "remote", raw.RemoteAddr().String(), "error", err)
		return nil, nil, err
	}
	return conn, authInfo(conn), nil
}

func authInfo(conn *Conn) AuthInfo {
	return AuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, Peer: conn.Peer}
}

// Info implements credentials.TransportCredentials.
func (c *Credentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "atls"}
}

// Clone implements credentials.TransportCredentials.
func (c *Credentials) Clone() credentials.TransportCredentials {
	return &Credentials{s: c.s}
}

// OverrideServerName implements credentials.TransportCredentials; the
// server name plays no part in aTLS.
func (c *Credentials) OverrideServerName(string) error { return nil }

// ErrNoPeer is returned by PeerFromContext outside an aTLS connection.
var ErrNoPeer = errors.New("no aTLS peer in context")

// PeerFromContext returns the aTLS peer of a gRPC call.
func PeerFromContext(ctx context.Context) (*Peer, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, ErrNoPeer
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	if !ok {
		return nil, fmt.Errorf("%w: auth info is %T", ErrNoPeer, p.AuthInfo)
	}
	return ai.Peer, nil
}
