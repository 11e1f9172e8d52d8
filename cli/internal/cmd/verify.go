package cmd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"

	"github.com/spf13/cobra"

	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

type verifyOptions struct {
	*globals
	coord coordinatorFlags
}

func newVerifyCommand(g *globals) *cobra.Command {
	o := &verifyOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "verify -c HOST:1313 [flags]",
		Short: "Attest the Coordinator and check that it enforces manifest.json",
		Long: `verify attests the Coordinator against the reference values and the Coordinator policy of the
workspace's manifest.json (the manifest you were given to check), fetches the manifest history, and fails
if the Coordinator's active manifest is not that manifest.

It writes verify/: mesh-ca.pem and coordinator-root-ca.pem (use mesh-ca.pem to connect to the workloads:
a certificate from it proves that the workload runs as the manifest says), manifests/<n>.json (every
manifest of the history, oldest first) and policies/<hash> (every policy). It also records the
Coordinator's latest transition (latest-transition) for contrast set and recover.

If the workspace holds coordinator-root-ca.pem (from an earlier set or verify), a different root CA fails
verification: the Coordinator's history was replaced (a new deployment, or a takeover).

` + exitCodesHelp,
		Example: `  contrast verify -c coordinator.example:1313
  contrast verify -c coordinator.example:1313 -w audit/ -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.coord.validate(); err != nil {
				return err
			}
			return o.run(cmd)
		},
	}
	o.coord.add(cmd.Flags())
	return cmd
}

type verifyResult struct {
	Coordinator string   `json:"coordinator"`
	Verified    bool     `json:"verified"`
	Generation  uint64   `json:"generation"`
	Transition  string   `json:"transition"`
	Manifests   int      `json:"manifests"`
	Policies    int      `json:"policies"`
	Directory   string   `json:"directory"`
	Checks      []string `json:"checks"`
	Mismatch    string   `json:"mismatch,omitempty"`
}

func (o *verifyOptions) run(cmd *cobra.Command) error {
	log, err := o.logger(cmd)
	if err != nil {
		return err
	}
	local, _, err := readManifest(o.path(fileManifest))
	if err != nil {
		return err
	}
	att, err := newAttestation(local, o.coord.offline, log)
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
	progress(cmd, "attesting the Coordinator at %s and fetching its manifest history", o.coord.address)
	resp, err := client.GetManifests(ctx, &userpb.GetManifestsRequest{})
	if err != nil {
		return att.classify("fetching the manifests", err)
	}
	res := verifyResult{
		Coordinator: o.coord.address, Generation: resp.GetGeneration(), Transition: fmt.Sprintf("%x", resp.GetLatestTransition()),
		Manifests: len(resp.GetManifests()), Policies: len(resp.GetPolicies()), Directory: o.path(dirVerify),
	}
	res.Checks = append(res.Checks,
		fmt.Sprintf("The Coordinator at %s proved with hardware-signed evidence that it runs in a TEE: %s.", o.coord.address, describeAttestation(att)),
		"The evidence is bound to this TLS session, so the answers below come from that Coordinator.")

	if err := o.writeVerifyDir(resp); err != nil {
		return err
	}
	mismatch := o.compare(local, resp)
	if mismatch == "" {
		res.Verified = true
		res.Checks = append(res.Checks,
			fmt.Sprintf("Its active manifest (generation %d of %d in the history) is exactly %s: the policies, reference values and owner keys you checked are the ones it enforces.", resp.GetGeneration(), len(resp.GetManifests()), o.path(fileManifest)),
			fmt.Sprintf("It issues workload certificates only from the mesh CA in %s, and only to pods whose policy hash is in that manifest.", filepath.Join(o.path(dirVerify), fileMeshCA)))
	} else {
		res.Mismatch = mismatch
	}
	if rootMismatch := o.checkRoot(resp.GetRootCa()); rootMismatch != "" && res.Mismatch == "" {
		res.Verified, res.Mismatch = false, rootMismatch
	}
	if res.Verified {
		if err := writeLatest(o.path(fileLatest), resp.GetLatestTransition()); err != nil {
			return err
		}
		if _, err := os.Stat(o.path(fileRootCA)); errors.Is(err, fs.ErrNotExist) {
			if err := writeFile(o.path(fileRootCA), resp.GetRootCa(), 0o644); err != nil {
				return err
			}
		}
	}
	if o.output == "json" {
		if err := printJSON(cmd, res); err != nil {
			return err
		}
	} else {
		w := cmd.OutOrStdout()
		for _, c := range res.Checks {
			fmt.Fprintf(w, "✓ %s\n", c)
		}
		fmt.Fprintf(w, "Wrote the history (%d manifests, %d policies) and the CA certificates to %s.\n", res.Manifests, res.Policies, res.Directory)
	}
	if !res.Verified {
		return &exitError{code: ExitMismatch, err: errors.New(res.Mismatch)}
	}
	return nil
}

// compare checks that the active manifest (the last of the history) is the
// local one, compared as parsed manifests.
func (o *verifyOptions) compare(local *manifest.Manifest, resp *userpb.GetManifestsResponse) string {
	ms := resp.GetManifests()
	if len(ms) == 0 {
		return "the Coordinator returned no manifest"
	}
	active, err := manifest.Parse(ms[len(ms)-1])
	if err != nil {
		return fmt.Sprintf("the Coordinator's active manifest does not parse: %v", err)
	}
	if reflect.DeepEqual(active, local) {
		return ""
	}
	var diffs []string
	if !reflect.DeepEqual(active.Policies, local.Policies) {
		diffs = append(diffs, "Policies")
	}
	if !reflect.DeepEqual(active.ReferenceValues, local.ReferenceValues) {
		diffs = append(diffs, "ReferenceValues")
	}
	if !reflect.DeepEqual(active.WorkloadOwnerPubKeys, local.WorkloadOwnerPubKeys) || !reflect.DeepEqual(active.WorkloadOwnerKeyDigests, local.WorkloadOwnerKeyDigests) {
		diffs = append(diffs, "WorkloadOwnerPubKeys")
	}
	if !reflect.DeepEqual(active.SeedshareOwnerPubKeys, local.SeedshareOwnerPubKeys) {
		diffs = append(diffs, "SeedshareOwnerPubKeys")
	}
	return fmt.Sprintf("the Coordinator's active manifest (generation %d, saved as %s) differs from %s in %v", resp.GetGeneration(),
		filepath.Join(o.path(dirVerify), "manifests", fmt.Sprintf("%d.json", len(ms))), o.path(fileManifest), diffs)
}

// checkRoot compares the root CA with the one recorded in the workspace.
func (o *verifyOptions) checkRoot(root []byte) string {
	known, err := readPath(o.path(fileRootCA))
	if err != nil || bytes.Equal(bytes.TrimSpace(known), bytes.TrimSpace(root)) {
		return ""
	}
	return fmt.Sprintf("the Coordinator's root CA differs from %s: its history was replaced (a new deployment, or a takeover); the new one is in %s", o.path(fileRootCA), filepath.Join(o.path(dirVerify), fileRootCA))
}

func (o *verifyOptions) writeVerifyDir(resp *userpb.GetManifestsResponse) error {
	dir := o.path(dirVerify)
	if err := writeFile(filepath.Join(dir, fileMeshCA), resp.GetMeshCa(), 0o644); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, fileRootCA), resp.GetRootCa(), 0o644); err != nil {
		return err
	}
	for i, m := range resp.GetManifests() {
		if err := writeFile(filepath.Join(dir, "manifests", fmt.Sprintf("%d.json", i+1)), m, 0o644); err != nil {
			return err
		}
	}
	for _, p := range resp.GetPolicies() {
		sum := sha256.Sum256(p)
		if err := writeFile(filepath.Join(dir, "policies", fmt.Sprintf("%x", sum)), p, 0o644); err != nil {
			return err
		}
	}
	return nil
}
