package meshcert

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/attest/tdx"
	"github.com/contrast-cc/contrast/initializer/initenv"
)

// Options are the Initializer binary's settings besides the injected
// environment.
type Options struct {
	// OutDir is the root of the files written (default /contrast).
	OutDir string
	// Timeout bounds the run (default DefaultTimeout).
	Timeout time.Duration
	// TerminationLog receives the reason of a failure (the container's
	// termination message); empty: none.
	TerminationLog string
	// Logger receives the log; Main adds the platform and, for simulated
	// platforms, "simulated": true to every line.
	Logger *slog.Logger
	// InitialBackoff and MaxBackoff override the retry schedule (tests).
	InitialBackoff, MaxBackoff time.Duration
	// AfterSecrets, if set, runs once the files are written, with the
	// workload secret (nil if the manifest entry has none); the
	// Initializer opens the pod's encrypted volumes there. Its error
	// fails the run with ExitVolume.
	AfterSecrets func(ctx context.Context, workloadSecret []byte) error
}

// Main is the Initializer: it reads the injected environment through
// lookup (os.LookupEnv), builds the pod's issuer and the validators of the
// Coordinator's evidence, runs, and returns the exit code. A failure is
// logged and written to the termination log.
func Main(ctx context.Context, o Options, lookup func(string) (string, bool)) ExitCode {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fail := func(e *Error) ExitCode {
		log.Error("initializer failed", "exitCode", int(e.Code), "error", e.Error())
		if o.TerminationLog != "" {
			if err := os.WriteFile(o.TerminationLog, []byte(e.Error()+"\n"), 0o644); err != nil { //nolint:gosec // the kubelet reads it
				log.Warn("writing the termination message", "error", err)
			}
		}
		return e.Code
	}
	env, err := initenv.Parse(lookup)
	if err != nil {
		return fail(&Error{Code: ExitConfig, Msg: "invalid environment", Err: err})
	}
	log = log.With("platform", string(env.Platform))
	if env.Platform.Simulated() {
		// every line says so: simulated evidence proves nothing
		log = log.With("simulated", true)
		log.Warn("using a SIMULATED TEE device: its evidence proves nothing about this host")
	}
	issuer, err := NewIssuer(env, log)
	if err != nil {
		return fail(&Error{Code: ExitDevice, Msg: "the pod's TEE device", Err: err})
	}
	validators, err := env.CoordinatorReferenceValues.Validators(snp.Config{Logger: log}, tdx.Config{Logger: log})
	if err != nil {
		return fail(&Error{Code: ExitConfig, Msg: "the Coordinator's reference values", Err: err})
	}
	log.Info("attesting to the Coordinator", "coordinator", env.CoordinatorAddress, "coordinatorPolicyHashes", len(env.CoordinatorPolicyHashes))
	err = Run(ctx, Config{
		CoordinatorAddress:      env.CoordinatorAddress,
		Issuer:                  issuer,
		Validators:              validators,
		CoordinatorPolicyHashes: env.CoordinatorPolicyHashes,
		OutDir:                  o.OutDir,
		Timeout:                 o.Timeout,
		InitialBackoff:          o.InitialBackoff,
		MaxBackoff:              o.MaxBackoff,
		Logger:                  log,
	})
	var e *Error
	switch {
	case err == nil && o.AfterSecrets != nil:
		secret, rerr := os.ReadFile(filepath.Join(o.OutDir, WorkloadSecretFile))
		if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return fail(&Error{Code: ExitInternal, Msg: "reading the workload secret", Err: rerr})
		}
		if verr := o.AfterSecrets(ctx, secret); verr != nil {
			return fail(&Error{Code: ExitVolume, Msg: "opening the encrypted volumes", Err: verr})
		}
		return ExitOK
	case err == nil:
		return ExitOK
	case errors.As(err, &e):
		return fail(e)
	default:
		return fail(&Error{Code: ExitInternal, Msg: fmt.Sprintf("unexpected failure: %v", err)})
	}
}
