package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/contrast-cc/contrast/initializer/initenv"
	"github.com/contrast-cc/contrast/initializer/meshcert"
	"github.com/contrast-cc/contrast/initializer/pv"
)

type options struct {
	outDir         string
	timeout        time.Duration
	terminationLog string
	logLevel       string
}

// Execute runs the Initializer with args and the environment of lookup,
// logging to stderr, and returns its exit code.
func Execute(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) meshcert.ExitCode {
	code := meshcert.ExitOK
	cmd := newCommand(lookup, stderr, &code)
	cmd.SetArgs(args)
	cmd.SetOut(stderr)
	cmd.SetErr(stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "initializer:", err)
		code = meshcert.ExitConfig
	}
	return code
}

func newCommand(lookup func(string) (string, bool), stderr io.Writer, code *meshcert.ExitCode) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "initializer",
		Short: "Attest this pod to the Contrast Coordinator and write its mesh certificate, key and workload secret",
		Long: "Attest this pod to the Contrast Coordinator and write its mesh certificate, key and workload secret.\n\n" +
			"The webhook injects the configuration as environment variables: " + fmt.Sprint(initenv.Names()) + ".\n" +
			"Exit codes: 0 done, 1 internal error, 2 invalid configuration, 3 Coordinator unreachable, " +
			"4 refused by the Coordinator, 5 the Coordinator's evidence was rejected, 6 the pod's TEE device failed, " +
			"7 the Coordinator had no manifest (or was in recovery mode) until the deadline, " +
			"8 an encrypted persistent volume could not be opened.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: %w", o.logLevel, err)
			}
			log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})).With("component", "initializer")
			env, _ := lookup(pv.EnvVolumes)
			vols, err := pv.Parse(env)
			if err != nil {
				return err // before attesting: the environment is invalid
			}
			opts := meshcert.Options{OutDir: o.outDir, Timeout: o.timeout, TerminationLog: o.terminationLog, Logger: log}
			fsEnv, _ := lookup(pv.EnvFSGroup)
			fsGroup, err := pv.ParseFSGroup(fsEnv)
			if err != nil {
				return err
			}
			if len(vols) > 0 {
				opener := &pv.Opener{Logger: log, FSGroup: fsGroup}
				opts.AfterSecrets = func(ctx context.Context, secret []byte) error {
					return opener.OpenAll(ctx, vols, secret)
				}
			}
			*code = meshcert.Main(cmd.Context(), opts, lookup)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.outDir, "out-dir", "/contrast", "directory of the files written (tls-config/, secrets/)")
	f.DurationVar(&o.timeout, "timeout", meshcert.DefaultTimeout, "give up after this long (the kubelet restarts the container)")
	f.StringVar(&o.terminationLog, "termination-log", "/dev/termination-log", "file receiving the reason of a failure (the container's termination message); empty: none")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
