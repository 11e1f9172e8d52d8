package cmd

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

type setOptions struct {
	*globals
	coord    coordinatorFlags
	ownerKey string
}

func newSetCommand(g *globals) *cobra.Command {
	o := &setOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "set -c HOST:1313 [flags] [PATH...]",
		Short: "Attest the Coordinator and set manifest.json",
		Long: `set attests the Coordinator against the reference values and the Coordinator policy of the
workspace's manifest.json, then sets the manifest, authenticated by the workload owner key.

The update is a compare-and-swap on the latest transition recorded in the workspace (latest-transition,
written by every set, verify and recover): if someone else changed the manifest since, the Coordinator
refuses (Aborted) and nothing changes; run contrast verify to see the new state. Without a record, set
takes the Coordinator's current latest transition.

The policy documents are read from the workspace's policies/ (written by contrast generate) and from the
policy annotations of the YAML in PATHs, if given (e.g. written by generate --inject).

It writes coordinator-root-ca.pem, mesh-ca.pem, latest-transition and, on the first manifest,
seed-shares.json (0600): the seed encrypted to every seed-share owner key, needed by contrast recover.

` + exitCodesHelp,
		Example: `  contrast set -c coordinator.example:1313
  contrast set -c 127.0.0.1:1313 --workspace-dir demo/ -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.coord.validate(); err != nil {
				return err
			}
			return o.run(cmd, args)
		},
	}
	o.coord.add(cmd.Flags())
	cmd.Flags().StringVar(&o.ownerKey, "workload-owner-key", "", "workload owner key (PEM) (default <workspace>/workload-owner.pem); without it the request is anonymous, which the Coordinator accepts only for the first manifest")
	return cmd
}

type setResult struct {
	Coordinator string `json:"coordinator"`
	Generation  uint64 `json:"generation"`
	Transition  string `json:"transition"`
	RootCA      string `json:"rootCA"`
	MeshCA      string `json:"meshCA"`
	SeedShares  string `json:"seedShares,omitempty"`
	Policies    int    `json:"policies"`
	Attestation string `json:"attestation"`
}

func (o *setOptions) run(cmd *cobra.Command, args []string) error {
	log, err := o.logger(cmd)
	if err != nil {
		return err
	}
	m, raw, err := readManifest(o.path(fileManifest))
	if err != nil {
		return err
	}
	docs, err := collectPolicies(m, o.path(dirPolicies), args)
	if err != nil {
		return err
	}
	keyPath := o.ownerKey
	if keyPath == "" {
		keyPath = o.path(fileWorkloadOwnerKey)
	}
	var key crypto.Signer
	switch k, err := loadKey(keyPath); {
	case errors.Is(err, fs.ErrNotExist) && o.ownerKey == "":
		fmt.Fprintf(cmd.ErrOrStderr(), "Warning: no workload owner key at %s: the request is anonymous (accepted only for the first manifest)\n", keyPath)
	case err != nil:
		return err
	default:
		key = k
	}
	expected, err := readLatest(o.path(fileLatest))
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
	client, closeConn, err := dial(o.coord.address, key, att, log)
	if err != nil {
		return err
	}
	defer closeConn()

	progress(cmd, "attesting the Coordinator at %s", o.coord.address)
	if expected == nil {
		gm, err := client.GetManifests(ctx, &userpb.GetManifestsRequest{})
		switch {
		case err == nil:
			expected = gm.GetLatestTransition()
			fmt.Fprintf(cmd.ErrOrStderr(), "Warning: no %s in the workspace: replacing the Coordinator's current manifest (generation %d) without knowing it\n", fileLatest, gm.GetGeneration())
		case status.Code(err) == codes.FailedPrecondition:
			// no manifest yet (or recovery mode, which SetManifest reports)
		default:
			return att.classify("reading the Coordinator's state", err)
		}
	}
	progress(cmd, "setting the manifest (%d policies)", len(docs))
	resp, err := client.SetManifest(ctx, &userpb.SetManifestRequest{Manifest: raw, Policies: docs, ExpectedLatestTransition: expected})
	if err != nil {
		return att.classify("setting the manifest", err)
	}
	res := setResult{
		Coordinator: o.coord.address, Generation: resp.GetGeneration(), Transition: fmt.Sprintf("%x", resp.GetTransitionHash()),
		RootCA: o.path(fileRootCA), MeshCA: o.path(fileMeshCA), Policies: len(docs), Attestation: describeAttestation(att),
	}
	if err := writeFile(o.path(fileRootCA), resp.GetRootCa(), 0o644); err != nil {
		return err
	}
	if err := writeFile(o.path(fileMeshCA), resp.GetMeshCa(), 0o644); err != nil {
		return err
	}
	if err := writeLatest(o.path(fileLatest), resp.GetTransitionHash()); err != nil {
		return err
	}
	if len(resp.GetSeedShares()) > 0 {
		f := seedSharesFile{Salt: manifest.NewHexString(resp.GetSalt()), Generation: resp.GetGeneration(), Transition: manifest.NewHexString(resp.GetTransitionHash())}
		for _, s := range resp.GetSeedShares() {
			f.SeedShares = append(f.SeedShares, seedShare{PublicKeyHash: manifest.NewHexString(s.GetPublicKeyHash()), EncryptedSeed: manifest.NewHexString(s.GetEncryptedSeed())})
		}
		b, err := marshalJSON(f)
		if err != nil {
			return withCode(ExitFailure, err)
		}
		if err := writeFile(o.path(fileSeedShares), b, 0o600); err != nil {
			return err
		}
		res.SeedShares = o.path(fileSeedShares)
	}
	if o.output == "json" {
		return printJSON(cmd, res)
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "Attested the Coordinator at %s: %s.\n", o.coord.address, res.Attestation)
	fmt.Fprintf(w, "Manifest set: generation %d, transition %s.\n", res.Generation, res.Transition)
	fmt.Fprintf(w, "Wrote %s and %s.\n", res.RootCA, res.MeshCA)
	if res.SeedShares != "" {
		fmt.Fprintf(w, "Wrote %s: keep it with %s, contrast recover needs both.\n", res.SeedShares, o.path(fileSeedshareKey))
	}
	return nil
}

// describeAttestation says what the accepted evidence showed.
func describeAttestation(a *attestation) string {
	r := a.Result()
	if r == nil {
		return "evidence accepted"
	}
	h, _ := manifest.PolicyHashFromDigest(r.PolicyDigest)
	ref := ""
	if r.ReferenceName != "" {
		ref = fmt.Sprintf(" (reference values %q)", r.ReferenceName)
	}
	return fmt.Sprintf("%s evidence valid for the manifest's reference values%s, measurement %x, running the manifest's Coordinator policy %s", r.Platform, ref, r.Measurement, h)
}

// collectPolicies returns one policy document per policy hash of m, from
// the workspace's policies/ and the policy annotations of the YAML in
// paths. A missing document is an error naming the hash.
func collectPolicies(m *manifest.Manifest, dir string, paths []string) ([][]byte, error) {
	found := map[manifest.HexString][]byte{}
	add := func(doc []byte) {
		sum := sha256.Sum256(doc)
		h := manifest.NewHexString(sum[:])
		if _, ok := m.Policies[h]; ok {
			found[h] = doc
		}
	}
	for h := range m.Policies {
		doc, err := readPath(filepath.Join(dir, h.String()))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, withCode(ExitUsage, fmt.Errorf("reading policy: %w", err))
		default:
			add(doc)
		}
	}
	if len(paths) > 0 {
		docs, err := readInputs(paths)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			for _, w := range d.workloads {
				ann := w.Template.Annotations
				switch {
				case ann[policy.AnnotationInitData] != "":
					doc, err := policy.DecodeInitDataAnnotation(ann[policy.AnnotationInitData])
					if err != nil {
						return nil, usageErrorf("%s: %s %s: %w", d.file, w.Kind, w.Name, err)
					}
					add(doc)
				case ann[policy.AnnotationLegacyPolicy] != "":
					doc, err := base64.StdEncoding.DecodeString(ann[policy.AnnotationLegacyPolicy])
					if err != nil {
						return nil, usageErrorf("%s: %s %s: annotation %s: %w", d.file, w.Kind, w.Name, policy.AnnotationLegacyPolicy, err)
					}
					add(doc)
				}
			}
		}
	}
	var missing []string
	out := make([][]byte, 0, len(found))
	hashes := make([]manifest.HexString, 0, len(m.Policies))
	for h := range m.Policies {
		hashes = append(hashes, h)
	}
	slices.Sort(hashes)
	for _, h := range hashes {
		doc, ok := found[h]
		if !ok {
			missing = append(missing, h.String())
			continue
		}
		out = append(out, doc)
	}
	if len(missing) > 0 {
		return nil, usageErrorf("no policy document for %v: run contrast generate (it writes %s/<hash>) or pass the YAML with the policy annotations", missing, dir)
	}
	return out, nil
}
