package meshcert

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/atls"
	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
)

// errDevice marks a failure of the pod's own TEE device.
var errDevice = errors.New("the pod's TEE device produced no evidence")

// deviceIssuer marks the issuer's errors with errDevice, so that they are
// told apart from the Coordinator's after the aTLS handshake wrapped them.
type deviceIssuer struct{ attest.Issuer }

func (i deviceIssuer) Issue(ctx context.Context, reportData [64]byte) ([]byte, error) {
	ev, err := i.Issuer.Issue(ctx, reportData)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errDevice, err)
	}
	return ev, nil
}

// expectCoordinator accepts the Coordinator's evidence only if one of the
// validators accepts it and its policy digest is one of the expected
// Coordinator policy hashes.
type expectCoordinator struct {
	validators []attest.Validator
	hashes     [][]byte
}

// Validate implements attest.Validator.
func (e expectCoordinator) Validate(ctx context.Context, ev []byte, reportData [64]byte) (*attest.Result, error) {
	res, err := attest.ValidateAny(ctx, e.validators, ev, reportData)
	if err != nil {
		return nil, err //nolint:wrapcheck // a *attest.CheckError, passed on unchanged
	}
	hash, ok := policyHash(res.PolicyDigest)
	if !ok || !slices.ContainsFunc(e.hashes, func(h []byte) bool { return bytes.Equal(h, hash) }) {
		return nil, attest.Errorf(attest.CheckPolicyDigest, "the Coordinator's policy digest %x is not an expected Coordinator policy hash", res.PolicyDigest)
	}
	return res, nil
}

// policyHash maps a reported policy digest to the policy hash: SNP HOST_DATA
// is the 32-byte hash, TDX MRCONFIGID the hash followed by 16 zero bytes
// (DESIGN.md §4).
func policyHash(digest []byte) ([]byte, bool) {
	switch len(digest) {
	case 32:
		return digest, true
	case 48:
		if slices.ContainsFunc(digest[32:], func(b byte) bool { return b != 0 }) {
			return nil, false
		}
		return digest[:32], true
	}
	return nil, false
}

// dialAndRequest is one attempt: the aTLS handshake (the Coordinator's
// evidence is validated first; on rejection the Initializer sends neither
// its evidence nor any request), then NewMeshCert on that connection.
func (c *Config) dialAndRequest(ctx context.Context) (*meshpb.NewMeshCertResponse, error) {
	conn, err := atls.Dial(ctx, "tcp", c.CoordinatorAddress, atls.Config{
		Issuer:     deviceIssuer{c.Issuer},
		Validators: []attest.Validator{expectCoordinator{validators: c.Validators, hashes: c.CoordinatorPolicyHashes}},
		Key:        c.Key,
		Logger:     c.Logger,
	})
	if err != nil {
		return nil, err //nolint:wrapcheck // classified by classify
	}
	var used atomic.Bool
	cc, err := grpc.NewClient("passthrough:///coordinator",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used.Swap(true) {
				return nil, errConnUsed
			}
			return conn, nil
		}),
		grpc.WithTransportCredentials(established{peer: conn.Peer}),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("mesh API client: %w", err)
	}
	defer cc.Close()
	resp, err := meshpb.NewMeshAPIServiceClient(cc).NewMeshCert(ctx, &meshpb.NewMeshCertRequest{})
	if err != nil {
		return nil, err //nolint:wrapcheck // a gRPC status, classified by classify
	}
	return resp, nil
}

// errConnUsed: gRPC wanted a second connection; the attempt ends and the
// next one makes a new handshake.
var errConnUsed = errors.New("the attested connection was closed")

// established hands gRPC a connection on which the aTLS handshake is done.
type established struct{ peer *atls.Peer }

func (e established) ClientHandshake(_ context.Context, _ string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return raw, atls.AuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, Peer: e.peer}, nil
}

func (established) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("client-side credentials only")
}

func (established) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "atls"}
}

func (e established) Clone() credentials.TransportCredentials { return e }

func (established) OverrideServerName(string) error { return nil }

// classify maps the error of an attempt to what the Initializer does next.
func classify(err error) outcome {
	if errors.Is(err, errDevice) {
		return outcome{code: ExitDevice, msg: sanitize(err.Error())}
	}
	if check, ok := attest.FailedCheck(err); ok {
		if errors.Is(err, atls.ErrRejectedByPeer) {
			return outcome{code: ExitRefused, check: check, msg: fmt.Sprintf("the Coordinator refused the pod's evidence: check %q failed", check)}
		}
		// Our validation of the Coordinator's evidence: the details are
		// ours (not a secret), and they say what to fix.
		return outcome{code: ExitCoordinatorRejected, check: check,
			msg: sanitize(fmt.Sprintf("the Coordinator's evidence was rejected: %v", err))}
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.OK && st.Code() != codes.Unknown {
		reason := sanitize(st.Message())
		switch st.Code() {
		case codes.PermissionDenied, codes.Unauthenticated:
			return outcome{code: ExitRefused, msg: "the Coordinator refused the pod: " + reason}
		case codes.FailedPrecondition:
			return outcome{code: ExitNotReady, retry: true, msg: "the Coordinator is not ready: " + reason}
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			return outcome{code: ExitUnreachable, retry: true, msg: "the Coordinator is unreachable: " + reason}
		default:
			return outcome{code: ExitUnreachable, retry: true, msg: fmt.Sprintf("the Coordinator answered %s: %s", st.Code(), reason)}
		}
	}
	var ne net.Error
	switch {
	case errors.Is(err, atls.ErrProtocol):
		return outcome{code: ExitUnreachable, retry: true, msg: sanitize("the peer does not speak the Coordinator's aTLS protocol: " + err.Error())}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return outcome{code: ExitUnreachable, retry: true, msg: "the Coordinator is unreachable: timed out"}
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return outcome{code: ExitUnreachable, retry: true, msg: sanitize("the Coordinator is unreachable: " + err.Error())}
	}
	return outcome{code: ExitUnreachable, retry: true, msg: sanitize("the Coordinator is unreachable: " + err.Error())}
}
