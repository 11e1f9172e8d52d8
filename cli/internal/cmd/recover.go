package cmd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

type recoverOptions struct {
	*globals
	coord         coordinatorFlags
	seedshareKey  string
	expected      string
	noExpectation bool
}

func newRecoverCommand(g *globals) *cobra.Command {
	o := &recoverOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "recover -c HOST:1313 [flags]",
		Short: "Recover a restarted Coordinator with your seed share",
		Long: `recover attests the Coordinator against manifest.json (as set and verify do), decrypts your seed
share (seed-shares.json, with seedshare-owner.pem) and sends the seed to a Coordinator that restarted
without its secrets (recovery mode). The Coordinator then serves the same root CA, mesh CA and workload
secrets as before.

The seed is sent with the latest transition you know (latest-transition in the workspace, or
--expected-transition): if the Coordinator's stored history ends at another transition, for example
because someone put back an older history, it refuses (FailedPrecondition) and restores nothing.

` + exitCodesHelp,
		Example: `  contrast recover -c coordinator.example:1313
  contrast recover -c coordinator.example:1313 --expected-transition 3f2a...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.coord.validate(); err != nil {
				return err
			}
			if o.expected != "" && o.noExpectation {
				return usageErrorf("--expected-transition and --no-rollback-check exclude each other")
			}
			return o.run(cmd)
		},
	}
	o.coord.add(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.seedshareKey, "seedshare-owner-key", "", "seed-share owner key (PEM) (default <workspace>/seedshare-owner.pem)")
	f.StringVar(&o.expected, "expected-transition", "", "latest transition (64 hex digits) the history must end at (default: <workspace>/latest-transition)")
	f.BoolVar(&o.noExpectation, "no-rollback-check", false, "recover without an expected transition (when you have no record); compare the generation printed with your own records")
	return cmd
}

type recoverResult struct {
	Coordinator string `json:"coordinator"`
	Generation  uint64 `json:"generation"`
	Transition  string `json:"transition"`
	Checked     bool   `json:"rollbackChecked"`
}

func (o *recoverOptions) run(cmd *cobra.Command) error {
	log, err := o.logger(cmd)
	if err != nil {
		return err
	}
	m, _, err := readManifest(o.path(fileManifest))
	if err != nil {
		return err
	}
	expected, err := o.expectedTransition()
	if err != nil {
		return err
	}
	seed, salt, err := o.decryptSeed()
	if err != nil {
		return err
	}
	att, err := newAttestation(m, o.coord.offline, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), o.coord.timeout)
	defer cancel()
	if err := waitListening(ctx, cmd, o.coord.address); err != nil {
		return err
	}
	client, closeConn, err := dial(o.coord.address, nil, att, log)
	if err != nil {
		return err
	}
	defer closeConn()
	progress(cmd, "attesting the Coordinator at %s and sending the seed", o.coord.address)
	resp, err := client.Recover(ctx, &userpb.RecoverRequest{Seed: seed, Salt: salt, ExpectedLatestTransition: expected})
	if err != nil {
		return att.classify("recovering", err)
	}
	res := recoverResult{Coordinator: o.coord.address, Generation: resp.GetGeneration(), Transition: hex.EncodeToString(resp.GetLatestTransition()), Checked: expected != nil}
	if err := writeLatest(o.path(fileLatest), resp.GetLatestTransition()); err != nil {
		return err
	}
	if err := writeFile(o.path(fileMeshCA), resp.GetMeshCa(), 0o644); err != nil {
		return err
	}
	if known, err := readPath(o.path(fileRootCA)); err == nil && !bytes.Equal(bytes.TrimSpace(known), bytes.TrimSpace(resp.GetRootCa())) {
		return &exitError{code: ExitMismatch, err: fmt.Errorf("the recovered Coordinator's root CA differs from %s", o.path(fileRootCA))}
	}
	if o.output == "json" {
		return printJSON(cmd, res)
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "Recovered the Coordinator at %s: generation %d, transition %s.\n", res.Coordinator, res.Generation, res.Transition)
	if !res.Checked {
		fmt.Fprintln(w, "No expected transition was given: compare the generation with your records; an older one means the history was rolled back.")
	}
	return nil
}

func (o *recoverOptions) expectedTransition() ([]byte, error) {
	switch {
	case o.expected != "":
		b, err := hex.DecodeString(o.expected)
		if err != nil || len(b) != sha256.Size {
			return nil, usageErrorf("--expected-transition %q: want 64 hex digits", o.expected)
		}
		return b, nil
	case o.noExpectation:
		return nil, nil
	}
	b, err := readLatest(o.path(fileLatest))
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, usageErrorf("no %s in the workspace: pass --expected-transition (the transition of your last set or verify), or --no-rollback-check", o.path(fileLatest))
	}
	return b, nil
}

// decryptSeed decrypts the share of seed-shares.json that belongs to the
// seed-share owner key.
func (o *recoverOptions) decryptSeed() (seed, salt []byte, err error) {
	keyPath := o.seedshareKey
	if keyPath == "" {
		keyPath = o.path(fileSeedshareKey)
	}
	key, err := loadKey(keyPath)
	if err != nil {
		return nil, nil, err
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, nil, usageErrorf("%s: a seed-share owner key is RSA, not %T", keyPath, key)
	}
	raw, err := readPath(o.path(fileSeedShares))
	if err != nil {
		return nil, nil, withCode(ExitUsage, fmt.Errorf("reading seed shares: %w", err))
	}
	var f seedSharesFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, nil, usageErrorf("%s: %w", o.path(fileSeedShares), err)
	}
	digest, err := manifest.KeyDigest(&rsaKey.PublicKey)
	if err != nil {
		return nil, nil, withCode(ExitFailure, err)
	}
	salt, err = f.Salt.Bytes()
	if err != nil {
		return nil, nil, usageErrorf("%s: Salt: %w", o.path(fileSeedShares), err)
	}
	for i, s := range f.SeedShares {
		h, err := s.PublicKeyHash.Bytes()
		if err != nil || !bytes.Equal(h, digest) {
			continue
		}
		enc, err := s.EncryptedSeed.Bytes()
		if err != nil {
			return nil, nil, usageErrorf("%s: SeedShares[%d].EncryptedSeed: %w", o.path(fileSeedShares), i, err)
		}
		seed, err := rsa.DecryptOAEP(sha256.New(), rand.Reader, rsaKey, enc, nil)
		if err != nil {
			return nil, nil, usageErrorf("%s: SeedShares[%d]: decrypting with %s failed", o.path(fileSeedShares), i, keyPath)
		}
		return seed, salt, nil
	}
	return nil, nil, usageErrorf("%s has no share for the key %s", o.path(fileSeedShares), keyPath)
}
