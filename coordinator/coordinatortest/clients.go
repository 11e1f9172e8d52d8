package coordinatortest

import (
	"context"
	"crypto"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/atls"
	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
)

// DialUser returns a user API client that validates the Coordinator's
// evidence with validators and authenticates with key (nil: a fresh key,
// i.e. no owner).
func DialUser(addr string, key crypto.Signer, validators []attest.Validator) (userpb.UserAPIServiceClient, *grpc.ClientConn, error) {
	creds, err := atls.NewCredentials(atls.Config{Key: key, Validators: validators})
	if err != nil {
		return nil, nil, fmt.Errorf("user API credentials: %w", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, fmt.Errorf("user API client: %w", err)
	}
	return userpb.NewUserAPIServiceClient(conn), conn, nil
}

// DialMesh returns a mesh API client that attests with issuer over a
// connection whose TLS key is key (the key the mesh certificate is for).
func DialMesh(addr string, issuer attest.Issuer, key crypto.Signer) (meshpb.MeshAPIServiceClient, *grpc.ClientConn, error) {
	creds, err := atls.NewCredentials(atls.Config{Issuer: issuer, Key: key})
	if err != nil {
		return nil, nil, fmt.Errorf("mesh API credentials: %w", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		// Like an Initializer: give a loaded Coordinator time to handshake.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: time.Minute}),
		// One small call per connection: fixed windows, no BDP probing.
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		return nil, nil, fmt.Errorf("mesh API client: %w", err)
	}
	return meshpb.NewMeshAPIServiceClient(conn), conn, nil
}

// NewMeshCert dials, requests one mesh certificate and closes the
// connection. Like an Initializer, it waits (up to two minutes) for the
// connection instead of failing on the first transient error.
func NewMeshCert(ctx context.Context, addr string, issuer attest.Issuer, key crypto.Signer) (*meshpb.NewMeshCertResponse, error) {
	c, conn, err := DialMesh(addr, issuer, key)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return c.NewMeshCert(ctx, &meshpb.NewMeshCertRequest{}, grpc.WaitForReady(true))
}
