// Package peer recovers the seed of a Coordinator replica in recovery mode
// from a ready replica: the requester side of the mesh API's RecoverPeer
// (the responder is package meshapi, the checks of both sides are in
// package state, the reasoning in coordinator/README.md "High
// availability").
//
// Peers are given as host:port of their mesh API; every round resolves each
// host to all its addresses (a headless Service gives every ready replica,
// a ClusterIP Service one of them) and tries them in random order until one
// hands over a seed that verifies the signed history.
package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/atls"
	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
	"github.com/contrast-cc/contrast/coordinator/internal/history"
	"github.com/contrast-cc/contrast/coordinator/internal/metrics"
	"github.com/contrast-cc/contrast/coordinator/internal/state"
)

// Config configures a Recoverer.
type Config struct {
	// Authority is the local state (required).
	Authority *state.Authority
	// Issuer produces this replica's evidence (required).
	Issuer attest.Issuer
	// Peers are host:port addresses of the replicas' mesh API (required).
	Peers []string
	// Resolver defaults to net.DefaultResolver.
	Resolver *net.Resolver
	// Interval is the pause between rounds while in recovery mode; zero
	// means 2 s.
	Interval time.Duration
	// AttemptTimeout bounds one attempt against one address; zero means 10 s.
	AttemptTimeout time.Duration
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
}

// Recoverer runs peer recovery.
type Recoverer struct{ cfg Config }

// ErrPeerRejected wraps the reason this replica refused a peer: its
// evidence (a *attest.CheckError naming the check; a policy hash without
// Role coordinator is CheckPolicyDigest) or the history it handed over.
var ErrPeerRejected = errors.New("peer Coordinator rejected")

// ErrRefusedByPeer reports that the peer refused this replica (its
// evidence, or a policy hash without Role coordinator): PermissionDenied.
var ErrRefusedByPeer = errors.New("the peer Coordinator refused this replica")

// ErrNoPeers reports that no peer address resolved.
var ErrNoPeers = errors.New("no peer Coordinator address")

// New returns a Recoverer.
func New(cfg Config) (*Recoverer, error) {
	if cfg.Authority == nil || cfg.Issuer == nil || len(cfg.Peers) == 0 {
		return nil, errors.New("peer: Authority, Issuer and Peers are required")
	}
	for _, p := range cfg.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return nil, fmt.Errorf("peer address %q: %w", p, err)
		}
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Interval == 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Recoverer{cfg: cfg}, nil
}

// Run tries a round whenever the Authority is in recovery mode, at most
// every Interval, until ctx is done. The mode is polled every 100 ms, so a
// replica that enters recovery mode (at start, or when another replica set
// the first manifest) starts within that.
func (r *Recoverer) Run(ctx context.Context) error {
	var last time.Time
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if r.cfg.Authority.Mode() == state.ModeRecovery && time.Since(last) >= r.cfg.Interval {
			last = time.Now()
			if err := r.Round(ctx); err != nil && ctx.Err() == nil {
				r.cfg.Logger.Warn("peer recovery round failed; retrying", "error", err, "retryIn", r.cfg.Interval.String())
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Round resolves the peers and tries each address once, in random order,
// until one recovery succeeds. It returns nil once the Authority is no
// longer in recovery mode.
func (r *Recoverer) Round(ctx context.Context) error {
	trust, err := r.cfg.Authority.PeerTrust(ctx)
	if err != nil {
		return fmt.Errorf("reading the stored history to validate peers with: %w", err)
	}
	addrs, err := r.resolve(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, addr := range addrs {
		err := r.Attempt(ctx, trust, addr)
		if err == nil || errors.Is(err, state.ErrNotInRecovery) {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return errors.Join(errs...)
}

func (r *Recoverer) resolve(ctx context.Context) ([]string, error) {
	var out []string
	var errs []error
	for _, p := range r.cfg.Peers {
		host, port, _ := net.SplitHostPort(p)
		ips, err := r.cfg.Resolver.LookupHost(ctx, host)
		if err != nil {
			errs = append(errs, fmt.Errorf("resolving peer %s: %w", host, err))
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	if len(out) == 0 {
		return nil, errors.Join(append([]error{ErrNoPeers}, errs...)...)
	}
	// Load spreading only, not a secret.
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] }) //nolint:gosec // G404: order of peers, not a secret
	return out, nil
}

// Attempt asks the peer at addr for the seed: it attests itself, validates
// the peer with trust (the stored manifest's reference values, Role
// coordinator), and restores the seed only if the signed history verifies
// with it (state.RecoverFromPeer).
func (r *Recoverer) Attempt(ctx context.Context, trust *state.PeerTrust, addr string) error {
	err := r.attempt(ctx, trust, addr)
	result := metrics.PeerOK
	switch {
	case err == nil:
	case errors.Is(err, ErrPeerRejected):
		result = metrics.PeerRejected
	case errors.Is(err, ErrRefusedByPeer):
		result = metrics.PeerRefused
	default:
		result = metrics.PeerFailed
	}
	r.cfg.Metrics.PeerRecovery(metrics.PeerRequested, result)
	return err
}

func (r *Recoverer) attempt(ctx context.Context, trust *state.PeerTrust, addr string) error {
	v := &recordingValidator{trust: trust}
	creds, err := atls.NewCredentials(atls.Config{
		Issuer: r.cfg.Issuer, Validators: []attest.Validator{v},
		Logger: r.cfg.Logger.With("component", "peer-atls"),
	})
	if err != nil {
		return fmt.Errorf("peer credentials: %w", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("peer client: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AttemptTimeout)
	defer cancel()
	resp, err := meshpb.NewMeshAPIServiceClient(conn).RecoverPeer(ctx, &meshpb.RecoverPeerRequest{})
	if rej := v.rejection(); rej != nil {
		return fmt.Errorf("%w: %w", ErrPeerRejected, rej)
	}
	if err != nil {
		if status.Code(err) == codes.PermissionDenied {
			// The peer refused this replica's evidence or role.
			return fmt.Errorf("%w: %w", ErrRefusedByPeer, err)
		}
		return fmt.Errorf("RecoverPeer: %w", err)
	}
	th, err := history.ParseHash(resp.GetLatestTransition())
	if err != nil || th.IsZero() {
		return fmt.Errorf("%w: malformed latest_transition", ErrPeerRejected)
	}
	_, err = r.cfg.Authority.RecoverFromPeer(ctx, trust, &state.Handover{
		Seed: resp.GetSeed(), Salt: resp.GetSalt(), Transition: th, Generation: resp.GetGeneration(),
	})
	switch {
	case errors.Is(err, state.ErrWrongSeed), errors.Is(err, state.ErrUnexpectedLatest), errors.Is(err, state.ErrInvalidSeed):
		return fmt.Errorf("%w: %w", ErrPeerRejected, err)
	case err != nil:
		return err
	}
	r.cfg.Logger.Info("recovered from a peer Coordinator", "peer", addr)
	return nil
}

// recordingValidator validates the peer with the stored manifest and
// remembers why it refused, so that the attempt can say so instead of
// gRPC's generic transport error.
type recordingValidator struct {
	trust *state.PeerTrust
	mu    sync.Mutex
	err   error
}

func (v *recordingValidator) Validate(ctx context.Context, evidence []byte, reportData [64]byte) (*attest.Result, error) {
	res, err := v.trust.ValidatePeer(ctx, evidence, reportData)
	if err != nil {
		v.mu.Lock()
		v.err = err
		v.mu.Unlock()
	}
	return res, err
}

func (v *recordingValidator) rejection() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}
