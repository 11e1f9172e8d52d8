package cmd

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/atls"
	"github.com/contrast-cc/contrast/attest/certcache"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// coordinatorFlags are the flags of the commands that talk to the
// Coordinator.
type coordinatorFlags struct {
	address string
	timeout time.Duration
	offline bool
}

func (c *coordinatorFlags) add(fs *pflag.FlagSet) {
	fs.StringVarP(&c.address, "coordinator", "c", "", "host:port of the Coordinator's user API (port 1313)")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "deadline of the whole exchange with the Coordinator")
	fs.BoolVar(&c.offline, "offline", false, "never fetch AMD KDS / Intel PCS artifacts (certificates, CRLs, TCB info); fails if they are needed and not cached")
}

func (c *coordinatorFlags) validate() error {
	if c.address == "" {
		return usageErrorf("--coordinator (-c) is required: host:port of the Coordinator's user API")
	}
	if _, _, err := net.SplitHostPort(c.address); err != nil {
		return usageErrorf("--coordinator %q: want host:port", c.address)
	}
	if c.timeout <= 0 {
		return usageErrorf("--timeout %s: must be positive", c.timeout)
	}
	return nil
}

// attestation validates the Coordinator: its evidence against the
// manifest's reference values (with the validators the Coordinator itself
// builds from them, manifest.Validators), then its policy digest against the
// manifest's entry with Role coordinator. It records the last failure, which
// gRPC reports only as an unavailable transport.
type attestation struct {
	validators []attest.Validator
	policies   []manifest.HexString

	mu      sync.Mutex
	failure error
	result  *attest.Result
}

func newAttestation(m *manifest.Manifest, offline bool, log *slog.Logger) (*attestation, error) {
	policies := m.CoordinatorPolicyHashes()
	if len(policies) == 0 {
		return nil, usageErrorf("the manifest has no policy with Role %q: without it the Coordinator's policy cannot be checked (run contrast generate with the chart's Coordinator)", manifest.RoleCoordinator)
	}
	slices.Sort(policies)
	opts := manifest.ValidatorOptions{Logger: log}
	if offline {
		opts.Cache = certcache.New(certcache.Config{Offline: true})
	}
	vs, err := m.Validators(opts)
	if err != nil {
		return nil, usageErrorf("building validators from the manifest's reference values: %w", err)
	}
	if len(vs) == 0 {
		return nil, usageErrorf("the manifest has no reference values")
	}
	return &attestation{validators: vs, policies: policies}, nil
}

// Validate implements attest.Validator.
func (a *attestation) Validate(ctx context.Context, evidence []byte, reportData [64]byte) (*attest.Result, error) {
	res, err := attest.ValidateAny(ctx, a.validators, evidence, reportData)
	if err == nil {
		h, ok := manifest.PolicyHashFromDigest(res.PolicyDigest)
		switch {
		case !ok:
			err = attest.Errorf(attest.CheckPolicyDigest, "the Coordinator's policy digest %x is not a policy hash", res.PolicyDigest)
		case !slices.Contains(a.policies, h):
			err = attest.Errorf(attest.CheckPolicyDigest, "the Coordinator runs policy %s, the manifest's Coordinator policy is %s", h, joinHex(a.policies))
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.failure = err
		return nil, err
	}
	a.failure, a.result = nil, res
	return res, nil
}

func joinHex(hs []manifest.HexString) string {
	s := make([]string, len(hs))
	for i, h := range hs {
		s[i] = h.String()
	}
	return strings.Join(s, " or ")
}

// Result returns the accepted evidence of the last handshake (nil if none
// was accepted).
func (a *attestation) Result() *attest.Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.result
}

// classify gives err of a call the exit code: attestation failed (with the
// recorded check), refused by the Coordinator, or unreachable.
func (a *attestation) classify(what string, err error) error {
	if err == nil {
		return nil
	}
	a.mu.Lock()
	failure := a.failure
	a.mu.Unlock()
	st, _ := status.FromError(err)
	switch {
	case failure != nil && st.Code() == codes.Unavailable:
		check, _ := attest.FailedCheck(failure)
		return &exitError{code: ExitAttestation, err: fmt.Errorf("attesting the Coordinator failed at check %q: %w", check, failure)}
	case st.Code() == codes.Unavailable, st.Code() == codes.DeadlineExceeded, st.Code() == codes.Canceled:
		return &exitError{code: ExitFailure, err: fmt.Errorf("%s: the Coordinator cannot be reached: %s", what, st.Message())}
	default:
		return &exitError{code: ExitRefused, err: fmt.Errorf("%s: the Coordinator refused (%s): %s", what, st.Code(), st.Message())}
	}
}

// waitListening waits until the Coordinator's address accepts TCP
// connections, while it refuses them (a Coordinator that is restarting:
// its pod has an address, its server does not listen yet), until ctx ends.
// Any other dial error returns at once, so a wrong address fails fast; the
// call that follows reports it.
func waitListening(ctx context.Context, cmd *cobra.Command, address string) error {
	said := false
	for {
		c, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", address)
		if err == nil {
			return c.Close()
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		if !said {
			progress(cmd, "the Coordinator at %s refuses connections (not listening yet?): retrying until --timeout", address)
			said = true
		}
		select {
		case <-ctx.Done():
			return withCode(ExitFailure, fmt.Errorf("the Coordinator at %s cannot be reached: it refused connections until --timeout ended (%w)", address, err))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// dial connects to the Coordinator's user API, attesting it with a and
// authenticating with key (nil: anonymous).
func dial(address string, key crypto.Signer, a *attestation, log *slog.Logger) (userpb.UserAPIServiceClient, func(), error) {
	creds, err := atls.NewCredentials(atls.Config{Key: key, Validators: []attest.Validator{a}, Logger: log})
	if err != nil {
		return nil, nil, withCode(ExitFailure, fmt.Errorf("aTLS credentials: %w", err))
	}
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, usageErrorf("--coordinator %q: %w", address, err)
	}
	return userpb.NewUserAPIServiceClient(conn), func() { _ = conn.Close() }, nil
}
