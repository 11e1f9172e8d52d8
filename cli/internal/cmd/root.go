// Package cmd implements the contrast commands: generate, set, verify and
// recover. Each command parses and validates its flags itself, so tests run
// it with arguments (NewRootCommand + Execute).
package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/spf13/cobra"
)

// Exit codes: scripts can tell the failures apart.
const (
	// ExitOK: the command did what it says.
	ExitOK = 0
	// ExitUsage: bad flags, arguments or input files (nothing was sent).
	ExitUsage = 1
	// ExitAttestation: the Coordinator's evidence was rejected (the error
	// names the failed check).
	ExitAttestation = 2
	// ExitRefused: the Coordinator refused the request (the error has its
	// gRPC code and message).
	ExitRefused = 3
	// ExitMismatch: verification found a difference (manifest, root CA).
	ExitMismatch = 4
	// ExitFailure: anything else (the Coordinator cannot be reached, a file
	// cannot be written).
	ExitFailure = 5
)

const exitCodesHelp = `Exit codes:
  0  success
  1  usage: bad flags, arguments or input files (nothing was sent)
  2  attestation failed: the Coordinator's evidence or policy was rejected (the check is named)
  3  refused by the Coordinator (gRPC code and message are printed)
  4  verification mismatch: the Coordinator's manifest or root CA differs from the local one
  5  other failure: Coordinator unreachable, files not writable, ...`

// exitError carries an exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: code, err: err}
}

func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// ExitCode returns the exit code for err (nil: ExitOK; an error without a
// code: ExitFailure).
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return ExitFailure
}

// Execute runs root with ctx, prints a failure to stderr and returns the
// exit code.
func Execute(ctx context.Context, root *cobra.Command, stderr io.Writer) int {
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var ee *exitError
	if !errors.As(err, &ee) {
		// cobra's own errors: unknown command or flag, wrong argument count
		if cmd != nil {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
		return ExitUsage
	}
	return ee.code
}

// globals are the flags of every command.
type globals struct {
	workspace string
	output    string
	logLevel  string
}

func (g *globals) path(name string) string { return filepath.Join(g.workspace, name) }

func (g *globals) logger(cmd *cobra.Command) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageErrorf("--log-level %q: %w", g.logLevel, err)
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl})), nil
}

func (g *globals) validate() error {
	switch g.output {
	case "text", "json":
		return nil
	default:
		return usageErrorf("-o %q: want text or json", g.output)
	}
}

// progress prints a step of a long operation to stderr (not in JSON mode's
// stdout, so scripts can parse it).
func progress(cmd *cobra.Command, format string, args ...any) {
	fmt.Fprintf(cmd.ErrOrStderr(), "» "+format+"\n", args...)
}

// printJSON writes v to stdout.
func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return withCode(ExitFailure, fmt.Errorf("writing JSON output: %w", err))
	}
	return nil
}

// NewRootCommand returns the contrast command with its subcommands.
func NewRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "contrast",
		Short: "Deploy and verify confidential Kubernetes workloads",
		Long: `contrast computes the Kata policies of your workloads, hands the resulting manifest to the
Coordinator after attesting it, and lets anyone verify a running deployment.

Typical flow:
  contrast generate --settings settings.yaml --coordinator-yaml coordinator.yaml --reference-values snp deployment/
  contrast set -c coordinator.example:1313
  kubectl apply -f deployment/
  contrast verify -c coordinator.example:1313

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return g.validate()
		},
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&g.workspace, "workspace-dir", "w", ".", "directory of manifest.json, the owner keys and the files the commands write")
	pf.StringVarP(&g.output, "output", "o", "text", "output format of the result on stdout: text or json")
	pf.StringVar(&g.logLevel, "log-level", "warn", "debug, info, warn or error (logs go to stderr)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.MarkPersistentFlagDirname("workspace-dir")
	root.AddCommand(newGenerateCommand(g), newSetCommand(g), newVerifyCommand(g), newRecoverCommand(g))
	return root
}
