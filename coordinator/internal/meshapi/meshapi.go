// Package meshapi serves the mesh API (port 7777, mutual aTLS): an attested
// Initializer receives a mesh certificate for its aTLS key, the CA
// certificates and its workload secret.
//
// The handshake validator never fails a handshake on a policy decision: it
// validates the evidence against the manifest generation active at that
// moment and records the verdict for the connection. An interceptor turns a
// negative verdict into PermissionDenied naming the failed check (or
// FailedPrecondition without an active manifest), so Initializers get a precise,
// non-retryable status instead of a transport error that gRPC reports as
// Unavailable. No RPC is served without a positive verdict for the current
// generation.
package meshapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"weak"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/atls"
	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
	"github.com/contrast-cc/contrast/coordinator/internal/metrics"
	"github.com/contrast-cc/contrast/coordinator/internal/state"
)

// Server implements the mesh API.
type Server struct {
	meshpb.UnimplementedMeshAPIServiceServer

	auth     *state.Authority
	metrics  *metrics.Metrics
	log      *slog.Logger
	verdicts sync.Map // weak.Pointer[attest.Result] → *verdict
}

type verdict struct {
	snap *state.Snapshot // generation the evidence was validated against
	err  error
}

// New returns a mesh API server over auth. metrics may be nil.
func New(auth *state.Authority, m *metrics.Metrics, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{auth: auth, metrics: m, log: log}
}

// Validator returns the attest.Validator for the server's aTLS credentials.
func (s *Server) Validator() attest.Validator { return handshakeValidator{s} }

type handshakeValidator struct{ s *Server }

// Validate implements attest.Validator; see the package comment.
func (v handshakeValidator) Validate(ctx context.Context, evidence []byte, reportData [64]byte) (*attest.Result, error) {
	vd := &verdict{}
	res := &attest.Result{}
	snap := v.s.auth.Current()
	switch {
	case snap != nil:
		r, err := snap.Validate(ctx, evidence, reportData)
		if err != nil {
			vd.err = err
		} else {
			cp := *r
			res, vd.snap = &cp, snap
		}
	case v.s.auth.Mode() == state.ModeRecovery:
		vd.err = state.ErrRecoveryMode
	case v.s.auth.Mode() == state.ModeLatestMissing:
		vd.err = state.ErrLatestMissing
	default:
		vd.err = state.ErrNoManifest
	}
	v.s.record(res, vd)
	return res, nil
}

// record remembers the verdict for res until res is garbage collected (when
// its connection is gone).
func (s *Server) record(res *attest.Result, vd *verdict) {
	key := weak.Make(res)
	s.verdicts.Store(key, vd)
	runtime.AddCleanup(res, func(k weak.Pointer[attest.Result]) { s.verdicts.Delete(k) }, key)
}

func (s *Server) lookup(res *attest.Result) *verdict {
	if res == nil {
		return nil
	}
	v, ok := s.verdicts.Load(weak.Make(res))
	if !ok {
		return nil
	}
	return v.(*verdict)
}

// Reasons for the attestation metric besides the check names.
const (
	// Handshake-level failures (the connection never reached a call).
	reasonPeerRejected = "rejected-by-peer"
	reasonProtocol     = "protocol"
	reasonTLS          = "tls"
	reasonTimeout      = "timeout"
	reasonClosed       = "connection-closed"

	reasonOK            = "ok"
	reasonUnknownPolicy = "unknown-policy"
	reasonNoManifest    = "no-manifest"
	reasonRecovery      = "recovery-mode"
	reasonLatestMissing = "latest-missing"
	reasonStale         = "stale-generation"
	// The stored latest pointer could not be confirmed after signing.
	reasonHeadUnconfirmed = "head-unconfirmed"
	// RecoverPeer from a policy hash without Role coordinator.
	reasonNotCoordinator = "not-coordinator"
	reasonOther          = "other"
)

// Credentials wraps the mesh API's transport credentials so that a failed
// server handshake is counted as a rejected attestation. Verdicts on
// evidence never fail a handshake (see the package comment), so these are
// the failures no call sees: no evidence, a malformed aTLS message, TLS
// errors, timeouts, a peer that hung up or rejected the Coordinator's own
// evidence.
func (s *Server) Credentials(c credentials.TransportCredentials) credentials.TransportCredentials {
	return &countingCredentials{TransportCredentials: c, s: s}
}

type countingCredentials struct {
	credentials.TransportCredentials
	s *Server
}

// ServerHandshake implements credentials.TransportCredentials.
func (c *countingCredentials) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		c.s.metrics.Attestation(metrics.ResultRejected, handshakeReason(err))
	}
	return conn, info, err //nolint:wrapcheck // the wrapped credentials' error, unchanged for gRPC
}

// Clone implements credentials.TransportCredentials.
func (c *countingCredentials) Clone() credentials.TransportCredentials {
	return &countingCredentials{TransportCredentials: c.TransportCredentials.Clone(), s: c.s}
}

// handshakeReason maps a failed server handshake to a bounded reason.
func handshakeReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, atls.ErrRejectedByPeer):
		return reasonPeerRejected
	case errors.Is(err, atls.ErrProtocol):
		return reasonProtocol
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return reasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return reasonClosed
	}
	if check, ok := attest.FailedCheck(err); ok {
		if check.Known() {
			return string(check)
		}
		return reasonOther
	}
	// crypto/tls errors (alerts, a first record that is not TLS, no common
	// version) all start with "tls: ".
	inner := err
	for u := errors.Unwrap(inner); u != nil; u = errors.Unwrap(inner) {
		inner = u
	}
	if strings.HasPrefix(inner.Error(), "tls: ") {
		return reasonTLS
	}
	return reasonOther
}

// authorize returns the snapshot and peer of an attested call, or a gRPC
// status error.
func (s *Server) authorize(ctx context.Context) (*state.Snapshot, *atls.Peer, error) {
	p, err := atls.PeerFromContext(ctx)
	if err != nil || p.Result == nil {
		return nil, nil, status.Error(codes.Unauthenticated, "not an attested aTLS connection")
	}
	vd := s.lookup(p.Result)
	if vd != nil && vd.snap == nil && isModeError(vd.err) {
		// The connection attested while there was no active manifest
		// (none yet, or recovery mode). If one is active now, its evidence
		// was never checked against it: the same answer as a stale
		// generation, so the client reconnects instead of giving up.
		if cur := s.auth.Current(); cur != nil {
			s.metrics.Attestation(metrics.ResultRejected, reasonStale)
			return nil, nil, status.Errorf(codes.FailedPrecondition,
				"manifest generation %d became active since this connection attested (%v); reconnect", cur.Generation, vd.err)
		}
	}
	switch {
	case vd == nil:
		s.metrics.Attestation(metrics.ResultRejected, reasonOther)
		return nil, nil, status.Error(codes.PermissionDenied, "connection has no attestation verdict")
	case errors.Is(vd.err, state.ErrRecoveryMode):
		s.metrics.Attestation(metrics.ResultRejected, reasonRecovery)
		return nil, nil, status.Error(codes.FailedPrecondition, state.ErrRecoveryMode.Error())
	case errors.Is(vd.err, state.ErrNoManifest):
		s.metrics.Attestation(metrics.ResultRejected, reasonNoManifest)
		return nil, nil, status.Error(codes.FailedPrecondition, state.ErrNoManifest.Error())
	case errors.Is(vd.err, state.ErrLatestMissing):
		s.metrics.Attestation(metrics.ResultRejected, reasonLatestMissing)
		return nil, nil, status.Error(codes.FailedPrecondition, state.ErrLatestMissing.Error())
	case vd.err != nil:
		check, ok := attest.FailedCheck(vd.err)
		reason := string(check)
		if !ok || !check.Known() {
			reason = reasonOther
		}
		s.metrics.Attestation(metrics.ResultRejected, reason)
		s.log.Info("attestation rejected", "check", string(check), "error", vd.err)
		if !ok {
			return nil, nil, status.Error(codes.PermissionDenied, "attestation rejected")
		}
		return nil, nil, status.Errorf(codes.PermissionDenied, "attestation check %q failed", check)
	}
	if cur := s.auth.Current(); cur != vd.snap {
		s.metrics.Attestation(metrics.ResultRejected, reasonStale)
		if cur == nil {
			return nil, nil, status.Error(codes.FailedPrecondition, state.ErrRecoveryMode.Error())
		}
		return nil, nil, status.Errorf(codes.FailedPrecondition,
			"manifest generation %d replaced generation %d since this connection attested; reconnect", cur.Generation, vd.snap.Generation)
	}
	return vd.snap, p, nil
}

// isModeError reports a verdict that says nothing about the evidence, only
// that no manifest was active to check it against.
func isModeError(err error) bool {
	return errors.Is(err, state.ErrRecoveryMode) || errors.Is(err, state.ErrNoManifest) || errors.Is(err, state.ErrLatestMissing)
}

// UnaryInterceptor enforces the attestation verdict on every mesh API call.
func (s *Server) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		snap, p, err := s.authorize(ctx)
		if err != nil {
			return nil, err
		}
		return handler(context.WithValue(ctx, callKey{}, &call{snap: snap, peer: p}), req)
	}
}

// StreamInterceptor refuses streams: the mesh API has none.
func (s *Server) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(any, grpc.ServerStream, *grpc.StreamServerInfo, grpc.StreamHandler) error {
		return status.Error(codes.Unimplemented, "the mesh API has no streaming methods")
	}
}

type callKey struct{}

type call struct {
	snap *state.Snapshot
	peer *atls.Peer
}

// NewMeshCert implements meshapi.MeshAPIServiceServer.
func (s *Server) NewMeshCert(ctx context.Context, _ *meshpb.NewMeshCertRequest) (*meshpb.NewMeshCertResponse, error) {
	c, ok := ctx.Value(callKey{}).(*call)
	if !ok {
		return nil, status.Error(codes.Internal, "call not authorized by the interceptor")
	}
	mc, err := s.auth.IssueMeshCert(ctx, c.snap, c.peer.Result, c.peer.PublicKey)
	switch {
	case errors.Is(err, state.ErrUnknownPolicy):
		s.metrics.Attestation(metrics.ResultRejected, reasonUnknownPolicy)
		s.log.Info("attestation rejected", "check", "policy-hash", "policyDigest", fmt.Sprintf("%x", c.peer.Result.PolicyDigest))
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, state.ErrStaleGeneration):
		s.metrics.Attestation(metrics.ResultRejected, reasonStale)
		return nil, status.Errorf(codes.FailedPrecondition, "%v; reconnect", err)
	case errors.Is(err, state.ErrHeadUnconfirmed):
		s.metrics.Attestation(metrics.ResultRejected, reasonHeadUnconfirmed)
		s.log.Warn("mesh certificate withheld", "error", err)
		return nil, status.Error(codes.Unavailable, err.Error())
	case err != nil:
		s.log.Error("issuing mesh certificate", "error", err)
		return nil, status.Error(codes.Internal, "issuing mesh certificate failed")
	}
	s.metrics.Attestation(metrics.ResultAccepted, reasonOK)
	if s.metrics != nil {
		s.metrics.CertificatesIssued.Inc()
	}
	s.log.Debug("mesh certificate issued", "policyHash", string(mc.PolicyHash), "generation", c.snap.Generation)
	return &meshpb.NewMeshCertResponse{
		MeshCa:         mc.MeshCA,
		CertChain:      append(append([]byte(nil), mc.Leaf...), mc.MeshCA...),
		RootCa:         mc.RootCA,
		WorkloadSecret: mc.WorkloadSecret,
	}, nil
}

// RecoverPeer implements meshapi.MeshAPIServiceServer: the seed for an
// attested peer Coordinator (see package state, Handover).
func (s *Server) RecoverPeer(ctx context.Context, _ *meshpb.RecoverPeerRequest) (*meshpb.RecoverPeerResponse, error) {
	c, ok := ctx.Value(callKey{}).(*call)
	if !ok {
		return nil, status.Error(codes.Internal, "call not authorized by the interceptor")
	}
	h, err := s.auth.Handover(c.snap, c.peer.Result)
	if err != nil {
		s.metrics.Attestation(metrics.ResultRejected, reasonNotCoordinator)
		s.metrics.PeerRecovery(metrics.PeerServed, metrics.PeerRejected)
		s.log.Warn("peer recovery refused", "error", err)
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	s.metrics.Attestation(metrics.ResultAccepted, reasonOK)
	s.metrics.PeerRecovery(metrics.PeerServed, metrics.PeerOK)
	s.log.Info("handed the seed to a peer Coordinator", "generation", h.Generation, "policyDigest", fmt.Sprintf("%x", c.peer.Result.PolicyDigest))
	return &meshpb.RecoverPeerResponse{
		Seed: h.Seed, Salt: h.Salt, LatestTransition: h.Transition[:], Generation: h.Generation,
	}, nil
}
