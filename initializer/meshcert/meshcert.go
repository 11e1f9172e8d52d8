// Package meshcert attests a confidential pod to the Coordinator and
// writes the pod's mesh identity (DESIGN.md §4).
//
// One attempt is: generate nothing new (the key is generated once, inside
// the pod), dial the mesh API over mutual aTLS, validate the Coordinator's
// evidence against the expected reference values and Coordinator policy
// hashes (before the Initializer's own evidence or any request is sent),
// present the pod's own evidence, call NewMeshCert. Transient failures
// (Coordinator unreachable, no manifest yet, recovery mode) are retried
// with capped exponential backoff until the deadline; a refusal by the
// Coordinator, a rejection of the Coordinator's evidence and a failure of
// the pod's own TEE device end the run at once with an exit code of their
// own, because retrying cannot change them (the kubelet restarts the init
// container with its own back-off).
package meshcert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"time"
	"unicode"

	"github.com/contrast-cc/contrast/attest"
	meshpb "github.com/contrast-cc/contrast/coordinator/api/meshapi"
)

// ExitCode is the Initializer's exit status; each failure a user can act on
// has its own.
type ExitCode int

// Exit codes (documented in initializer/README.md).
const (
	ExitOK ExitCode = 0
	// ExitInternal: an unexpected failure (e.g. the output volume is not
	// writable, or the Coordinator's response is inconsistent).
	ExitInternal ExitCode = 1
	// ExitConfig: the injected environment is invalid.
	ExitConfig ExitCode = 2
	// ExitUnreachable: the Coordinator could not be reached (or answered
	// with a transport error) until the deadline.
	ExitUnreachable ExitCode = 3
	// ExitRefused: the Coordinator refused the pod, naming the check
	// (e.g. its policy hash is not in the manifest, or a reference value).
	ExitRefused ExitCode = 4
	// ExitCoordinatorRejected: the Coordinator's own evidence did not meet
	// the expected reference values or policy hashes; nothing was sent.
	ExitCoordinatorRejected ExitCode = 5
	// ExitDevice: the pod's own TEE device produced no evidence.
	ExitDevice ExitCode = 6
	// ExitNotReady: the Coordinator was reachable but had no manifest (or
	// was in recovery mode) until the deadline.
	ExitNotReady ExitCode = 7
	// ExitVolume: an encrypted persistent volume could not be opened
	// (its key does not open it, or the device or dm-crypt failed).
	ExitVolume ExitCode = 8
)

// Error is a failed run: the exit code and a message for the user (also
// the container's termination message). It never contains a secret.
type Error struct {
	Code ExitCode
	// Check is the attestation check named by the Coordinator or by the
	// Initializer's validation, if any.
	Check attest.Check
	Msg   string
	Err   error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Defaults of Config.
const (
	DefaultTimeout        = 10 * time.Minute
	DefaultAttemptTimeout = 45 * time.Second
	DefaultInitialBackoff = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// Config configures a run.
type Config struct {
	// CoordinatorAddress is host:port of the mesh API.
	CoordinatorAddress string
	// Issuer produces the pod's own evidence. Required.
	Issuer attest.Issuer
	// Validators accept the Coordinator's evidence (built from the
	// expected reference values); required.
	Validators []attest.Validator
	// CoordinatorPolicyHashes are the accepted Coordinator policy hashes
	// (32 bytes each); required.
	CoordinatorPolicyHashes [][]byte
	// OutDir is the root of the files written (default /contrast).
	OutDir string
	// Key is the pod's key (default: a fresh ECDSA P-256 key).
	Key crypto.Signer
	// Timeout bounds the whole run (default DefaultTimeout).
	Timeout time.Duration
	// AttemptTimeout bounds one attempt (default DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	// InitialBackoff and MaxBackoff shape the retries: the wait doubles
	// from InitialBackoff up to MaxBackoff, with ±20 % jitter.
	InitialBackoff, MaxBackoff time.Duration
	// Logger defaults to a discarding logger.
	Logger *slog.Logger

	// request replaces one attempt in tests of the state machine.
	request func(ctx context.Context) (*meshpb.NewMeshCertResponse, error)
	// sleep waits d or until ctx is done (tests replace it).
	sleep func(ctx context.Context, d time.Duration) error
}

func (c *Config) defaults() error {
	if c.OutDir == "" {
		c.OutDir = "/contrast"
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	if c.InitialBackoff <= 0 {
		c.InitialBackoff = DefaultInitialBackoff
	}
	if c.MaxBackoff < c.InitialBackoff {
		c.MaxBackoff = max(DefaultMaxBackoff, c.InitialBackoff)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.sleep == nil {
		c.sleep = sleepCtx
	}
	if c.Key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return fmt.Errorf("generating the pod's key: %w", err)
		}
		c.Key = k
	}
	if c.request == nil {
		switch {
		case c.Issuer == nil:
			return errors.New("no issuer for the pod's evidence")
		case len(c.Validators) == 0:
			return errors.New("no validator for the Coordinator's evidence")
		case len(c.CoordinatorPolicyHashes) == 0:
			return errors.New("no expected Coordinator policy hash")
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run attests the pod, receives its mesh identity and writes the files. It
// returns nil or an *Error.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return &Error{Code: ExitConfig, Msg: "invalid configuration", Err: err}
	}
	log := cfg.Logger
	start := time.Now()
	resp, err := loop(ctx, &cfg)
	if err != nil {
		return err
	}
	id, err := newIdentity(resp, cfg.Key)
	if err != nil {
		return &Error{Code: ExitInternal, Msg: "the Coordinator's response is inconsistent", Err: err}
	}
	if err := id.write(cfg.OutDir); err != nil {
		return &Error{Code: ExitInternal, Msg: "writing the mesh identity", Err: err}
	}
	log.Info("mesh certificate written", "dir", cfg.OutDir, "subject", id.leaf.Subject.String(),
		"notAfter", id.leaf.NotAfter.UTC().Format(time.RFC3339), "elapsed", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// outcome classifies a failed attempt.
type outcome struct {
	code  ExitCode // the exit code if this ends the run
	retry bool
	check attest.Check
	msg   string // what happened, for the log line and the termination message
}

// loop runs attempts until one succeeds, one fails for good, or the
// deadline passes. One log line per failed attempt names the reason.
func loop(ctx context.Context, cfg *Config) (*meshpb.NewMeshCertResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	request := cfg.request
	if request == nil {
		request = cfg.dialAndRequest
	}
	log := cfg.Logger
	backoff := cfg.InitialBackoff
	var last outcome
	for attempt := 1; ; attempt++ {
		actx, acancel := context.WithTimeout(ctx, cfg.AttemptTimeout)
		resp, err := request(actx)
		acancel()
		if err == nil {
			log.Info("mesh certificate received", "attempt", attempt)
			return resp, nil
		}
		if ctx.Err() != nil && last.msg != "" {
			// the deadline cut this attempt short: report the last real reason
			break
		}
		last = classify(err)
		attrs := []any{"attempt", attempt, "reason", last.msg}
		if last.check != "" {
			attrs = append(attrs, "check", string(last.check))
		}
		if !last.retry {
			log.Error("attestation to the Coordinator failed", attrs...)
			return nil, &Error{Code: last.code, Check: last.check, Msg: last.msg}
		}
		wait := jitter(backoff)
		attrs = append(attrs, "retryIn", wait.Round(time.Millisecond).String())
		log.Warn("attestation to the Coordinator failed, retrying", attrs...)
		if err := cfg.sleep(ctx, wait); err != nil {
			break
		}
		backoff = min(2*backoff, cfg.MaxBackoff)
	}
	if parent := context.Cause(ctx); parent != nil && !errors.Is(parent, context.DeadlineExceeded) {
		return nil, &Error{Code: ExitInternal, Msg: "interrupted", Err: parent}
	}
	msg := fmt.Sprintf("gave up after %s: %s", cfg.Timeout, last.msg)
	log.Error("attestation to the Coordinator failed", "reason", msg)
	return nil, &Error{Code: last.code, Check: last.check, Msg: msg}
}

// jitter spreads d by ±20 %, so that pods restarted together do not retry
// in lockstep.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64())) //nolint:gosec // timing jitter, not a secret
}

// sanitize makes a message from the peer safe for one log line: printable
// characters only, at most 256 of them.
func sanitize(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if len(out) == 256 {
			out = append(out, '…')
			break
		}
		if !unicode.IsPrint(r) {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
