// Package userapi serves the user API (port 1313, aTLS in which the
// Coordinator attests): SetManifest for workload owners, GetManifests for
// auditors, Recover for seed-share owners.
//
// Workload owners authenticate with a TLS client certificate carrying their
// owner key (see coordinator/README.md); the aTLS layer exposes the peer's
// public key, whose possession TLS 1.3 CertificateVerify proves.
package userapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/contrast-cc/contrast/attest/atls"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/internal/history"
	"github.com/contrast-cc/contrast/coordinator/internal/state"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// Server implements the user API.
type Server struct {
	userpb.UnimplementedUserAPIServiceServer

	auth *state.Authority
	log  *slog.Logger
}

// New returns a user API server over auth.
func New(auth *state.Authority, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{auth: auth, log: log}
}

// toStatus maps the authority's errors to gRPC codes. Messages never hold
// secrets: they come from sentinel errors, manifest validation and hashes.
func (s *Server) toStatus(op string, err error) error {
	var ve *manifest.ValidationError
	switch {
	case errors.As(err, &ve), errors.Is(err, state.ErrInvalidPolicies), errors.Is(err, state.ErrInvalidSeed):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, state.ErrNotOwner), errors.Is(err, state.ErrWrongSeed):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, state.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, state.ErrRecoveryMode), errors.Is(err, state.ErrNoManifest), errors.Is(err, state.ErrNotInRecovery),
		errors.Is(err, state.ErrUnexpectedLatest), errors.Is(err, state.ErrLatestMissing):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	s.log.Error("user API call failed", "operation", op, "error", err)
	return status.Errorf(codes.Internal, "%s failed", op)
}

// SetManifest implements userapi.UserAPIServiceServer.
func (s *Server) SetManifest(ctx context.Context, req *userpb.SetManifestRequest) (*userpb.SetManifestResponse, error) {
	sr := state.SetRequest{Manifest: req.GetManifest(), Policies: req.GetPolicies()}
	if p, err := atls.PeerFromContext(ctx); err == nil {
		sr.Client = p.PublicKey
	}
	if len(req.GetExpectedLatestTransition()) > 0 {
		h, err := history.ParseHash(req.GetExpectedLatestTransition())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "expected_latest_transition: %v", err)
		}
		sr.Expected = &h
	}
	res, err := s.auth.SetManifest(ctx, sr)
	if err != nil {
		return nil, s.toStatus("SetManifest", err)
	}
	resp := &userpb.SetManifestResponse{
		RootCa:         res.Snapshot.Root.PEM,
		MeshCa:         res.Snapshot.Mesh.PEM,
		TransitionHash: res.Snapshot.Transition[:],
		Salt:           res.Salt,
		Generation:     res.Snapshot.Generation,
	}
	for _, sh := range res.SeedShares {
		resp.SeedShares = append(resp.SeedShares, &userpb.SeedShare{PublicKeyHash: sh.PublicKeyHash, EncryptedSeed: sh.EncryptedSeed})
	}
	return resp, nil
}

// GetManifests implements userapi.UserAPIServiceServer.
func (s *Server) GetManifests(ctx context.Context, _ *userpb.GetManifestsRequest) (*userpb.GetManifestsResponse, error) {
	v, err := s.auth.History(ctx)
	if err != nil {
		return nil, s.toStatus("GetManifests", err)
	}
	return &userpb.GetManifestsResponse{
		Manifests:        v.Manifests,
		Policies:         v.Policies,
		RootCa:           v.Snapshot.Root.PEM,
		MeshCa:           v.Snapshot.Mesh.PEM,
		LatestTransition: v.Snapshot.Transition[:],
		Generation:       v.Snapshot.Generation,
	}, nil
}

// Recover implements userapi.UserAPIServiceServer.
func (s *Server) Recover(ctx context.Context, req *userpb.RecoverRequest) (*userpb.RecoverResponse, error) {
	rr := state.RecoverRequest{Seed: req.GetSeed(), Salt: req.GetSalt()}
	if len(req.GetExpectedLatestTransition()) > 0 {
		h, err := history.ParseHash(req.GetExpectedLatestTransition())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "expected_latest_transition: %v", err)
		}
		rr.Expected = &h
	}
	snap, err := s.auth.Recover(ctx, rr)
	if err != nil {
		return nil, s.toStatus("Recover", err)
	}
	return &userpb.RecoverResponse{
		RootCa:           snap.Root.PEM,
		MeshCa:           snap.Mesh.PEM,
		LatestTransition: snap.Transition[:],
		Generation:       snap.Generation,
	}, nil
}
