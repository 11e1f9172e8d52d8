package cmd

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/settings"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// Annotations read by generate (on the workload or its pod template).
const (
	// annotationSANs adds SANs (comma-separated) to the entry's [name, "*"].
	annotationSANs = "contrast.cc/sans"
	// annotationWorkloadSecretID overrides the workload secret ID
	// (default <namespace>/<name>).
	annotationWorkloadSecretID = "contrast.cc/workload-secret-id"
)

type generateOptions struct {
	*globals
	settings        settings.Settings
	settingsFile    string
	coordinatorYAML []string
	refValues       string
	simAuthority    string
	simMeasurement  string
	inject          bool
	injectDir       string
	namespace       string

	// effective are the Initializer's expectations of the Coordinator
	// the workloads were computed with (nil when no workload needed them).
	effective *inject.Config
}

// newImageSource returns the image source for the registry settings
// (replaced in tests).
var newImageSource = func(cfg images.RegistryConfig) images.Source { return images.NewRegistry(cfg) }

func newGenerateCommand(g *globals) *cobra.Command {
	o := &generateOptions{globals: g}
	cmd := &cobra.Command{
		Use:   "generate [flags] PATH...",
		Short: "Compute the policy of every pod and write manifest.json",
		Long: `generate reads Kubernetes YAML (files or folders; multi-document, Lists) and computes, offline and
with the webhook's own code (webhook/inject), the Kata policy of every pod the YAML produces: the same
runtime class, injected Initializer and proxy, pinned images and policy as the installed webhook, given
the same settings (--settings with the chart's settings ConfigMap, or the same flags).

It writes to the workspace:
  manifest.json        policy hash → {SANs: [name, "*", <contrast.cc/sans>], WorkloadSecretID, Role},
                       the Coordinator's entry (Role coordinator, from the chart's rendered Coordinator),
                       the reference values of --reference-values, the owner keys
  policies/<hash>      every policy document (contrast set sends them to the Coordinator)
  chart-values.yaml    the chart values (coordinator.policyHash, coordinator.referenceValues) that make
                       the installed webhook give every Initializer what it requires of this
                       Coordinator: helm install/upgrade -f it. The Initializer's expectations that
                       --settings leaves out are derived from the Coordinator computed here and the
                       manifest's reference values
  workload-owner.pem   ECDSA P-256 key that may replace the manifest (created if missing, 0600)
  seedshare-owner.pem  RSA-3072 key the seed is encrypted to (created if missing, 0600)

The YAML is not modified; --inject writes the mutated YAML (for clusters without the webhook) to
--inject-dir. Re-running generate keeps the reference values and owner keys of an existing manifest.json
unless --reference-values is given.

Reference values (--reference-values):
  snp            bare-metal SEV-SNP (Metal-QEMU-SNP)     } fields you must fill in are written as
  tdx            bare-metal TDX (Metal-QEMU-TDX)         } "FILL-IN: <what>"; contrast set refuses
  aks-snp        AKS confidential containers (AKS-CLH-SNP) } the manifest until they are replaced
  snp-simulated  simulated SEV-SNP (development, no TEE protection; needs --sim-authority, and
                 --sim-measurement or the measurement filled in)
  tdx-simulated  simulated TDX (as snp-simulated; MRSEAM and RTMRs are left to fill in)

` + exitCodesHelp,
		Example: `  # the webhook's settings and the Coordinator from the chart, the app from deployment/
  helm template contrast charts/contrast -n contrast-system > chart.yaml
  contrast generate --settings chart.yaml --coordinator-yaml chart.yaml --reference-values snp deployment/

  # the settings of the installed webhook
  kubectl get configmap -n contrast-system contrast-settings -o yaml > settings.yaml
  contrast generate --settings settings.yaml --coordinator-yaml chart.yaml --reference-values snp deployment/

  # development with the simulated TEE
  contrast generate --settings settings.yaml --reference-values snp-simulated --sim-authority sim-snp.pem \
    --sim-measurement $(cat sim-measurement.hex) --coordinator-yaml chart.yaml deployment/

  # write the mutated YAML for a cluster without the webhook
  contrast generate --settings chart.yaml --coordinator-yaml chart.yaml --inject deployment/`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.settingsFile != "" {
				if err := o.settings.ApplyFile(cmd.Flags(), o.settingsFile); err != nil {
					return withCode(ExitUsage, err)
				}
			}
			return o.run(cmd, args)
		},
	}
	f := cmd.Flags()
	o.settings.AddFlags(f)
	f.StringVar(&o.settingsFile, "settings", "", "settings file of the webhook (YAML flag name → value, the chart's settings ConfigMap, or helm template output holding it); flags given here win")
	f.StringSliceVar(&o.coordinatorYAML, "coordinator-yaml", nil, "the chart's rendered output (helm template), of which only the Coordinator is used; repeatable")
	f.StringVar(&o.refValues, "reference-values", "", "reference-value preset: "+strings.Join(refPresets, ", ")+" (default: keep those of an existing manifest.json)")
	f.StringVar(&o.simAuthority, "sim-authority", "", "simulated TEE authority file of the Coordinator (created if missing), for the simulated presets")
	f.StringVar(&o.simMeasurement, "sim-measurement", "", "launch measurement (48 bytes hex) the simulated TEE reports (the Coordinator's --sim-measurement), for the simulated presets; without it the field is left to fill in")
	f.StringVarP(&o.namespace, "namespace", "n", "default", "namespace of the documents that name none, as with kubectl apply -n: the policy binds it, and the webhook's hash for a pod admitted elsewhere differs")
	f.BoolVar(&o.inject, "inject", false, "also write the mutated YAML (runtime class, Initializer, proxy, pinned images, policy annotation) to --inject-dir")
	f.StringVar(&o.injectDir, "inject-dir", "injected", "directory for --inject, relative to the workspace")
	_ = cmd.RegisterFlagCompletionFunc("reference-values", cobra.FixedCompletions(refPresets, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc(settings.FlagPolicyMode, cobra.FixedCompletions([]string{"initdata", "legacy"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.MarkFlagFilename("settings", "yaml", "yml")
	_ = cmd.MarkFlagFilename("coordinator-yaml", "yaml", "yml", "json")
	return cmd
}

// inputDoc is one YAML document of an input file.
type inputDoc struct {
	file      string // as found (path below an argument)
	rel       string // relative to its argument's folder, for --inject
	raw       []byte
	workloads []policy.Workload
	// coordinatorOnly: from --coordinator-yaml, of which only the
	// Coordinator is used (the chart also renders the webhook).
	coordinatorOnly bool
}

// generated is one workload with its policy.
type generated struct {
	doc        *inputDoc
	index      int // in doc.workloads
	w          *policy.Workload
	result     *policy.Result
	hash       manifest.HexString
	policyDoc  []byte
	entry      manifest.PolicyEntry
	skipReason string
}

type generateResult struct {
	Manifest string          `json:"manifest"`
	Policies []generateEntry `json:"policies"`
	Skipped  []generateSkip  `json:"skipped,omitempty"`
	Warnings []string        `json:"warnings,omitempty"`
	FillIn   []string        `json:"fillIn,omitempty"`
	Keys     map[string]bool `json:"keysCreated,omitempty"`
	Injected []string        `json:"injected,omitempty"`
	// ChartValues is the chart values file written (see fileChartValues).
	ChartValues string `json:"chartValues,omitempty"`
}

type generateEntry struct {
	File             string   `json:"file"`
	Kind             string   `json:"kind"`
	Namespace        string   `json:"namespace,omitempty"`
	Name             string   `json:"name"`
	PolicyHash       string   `json:"policyHash"`
	Role             string   `json:"role,omitempty"`
	SANs             []string `json:"sans"`
	WorkloadSecretID string   `json:"workloadSecretID,omitempty"`
}

type generateSkip struct {
	File   string `json:"file"`
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

func (o *generateOptions) run(cmd *cobra.Command, args []string) error {
	ctx := cmd.Context()
	log, err := o.logger(cmd)
	if err != nil {
		return err
	}
	var rv *manifest.ReferenceValues
	var fill []placeholder
	if o.refValues != "" {
		v, ph, err := referenceValues(o.refValues, o.simAuthority, o.simMeasurement)
		if err != nil {
			return err
		}
		rv, fill = &v, ph
	}
	// The Initializer's expectations of the Coordinator name the
	// Coordinator's policy hash: a first pass computes the Coordinators
	// (whose pods have no Initializer), then what the settings leave out
	// is derived from them (see workloadMutator).
	resolved, err := o.settings.ResolveCoordinatorOnly()
	if err != nil {
		return withCode(ExitUsage, err)
	}

	docs, err := readInputs(args)
	if err != nil {
		return err
	}
	coordDocs, err := readInputs(o.coordinatorYAML)
	if err != nil {
		return err
	}
	for _, d := range coordDocs {
		d.coordinatorOnly = true
	}
	docs = append(docs, coordDocs...)

	// Reference values: from --reference-values, else those of an
	// existing manifest.json.
	prev, err := previousManifest(o.path(fileManifest))
	if err != nil {
		return err
	}
	if rv == nil {
		if prev == nil {
			return usageErrorf("--reference-values is required (no manifest.json with reference values in %s): one of %s", o.workspace, strings.Join(refPresets, ", "))
		}
		rv = &prev.ReferenceValues
	}

	reg := resolved.Registry
	reg.Logger = log
	src := newImageSource(reg)
	mutator := resolved.Mutator(src, log)

	// envFrom: the policy pins the keys and values of the ConfigMaps the
	// workloads reference, taken from all input documents (the webhook
	// reads them through the API server)
	var all []byte
	for _, d := range docs {
		all = append(append(all, d.raw...), "\n---\n"...)
	}
	var gens []*generated
	for _, d := range docs {
		for i := range d.workloads {
			w := &d.workloads[i]
			if w.Namespace == "" && !d.coordinatorOnly {
				// kubectl apply puts it into its -n namespace (the Coordinator
				// of --coordinator-yaml into the chart's namespace)
				w.Namespace = o.namespace
			}
			if w.EnvSources, err = policy.DecodeEnvSources(all, w.Namespace); err != nil {
				return usageErrorf("%s: %w", d.file, err)
			}
			gens = append(gens, &generated{doc: d, index: i, w: w})
		}
	}
	if len(gens) == 0 {
		return usageErrorf("no workloads (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob) in %s", strings.Join(args, ", "))
	}
	progress(cmd, "computing the policies of %d workloads (resolving images)", len(gens))
	out := generateResult{Manifest: o.path(fileManifest), Keys: map[string]bool{}}
	for _, coordinatorPass := range []bool{true, false} {
		if !coordinatorPass {
			if mutator, err = o.workloadMutator(gens, rv, fill, src, log); err != nil {
				return err
			}
			if mutator == nil {
				break // only Coordinators: nothing else to compute
			}
		}
		for _, gn := range gens {
			if isCoordinator(gn.w) != coordinatorPass {
				continue
			}
			if err := o.generateOne(ctx, mutator, gn); err != nil {
				return err
			}
			if gn.skipReason != "" {
				continue
			}
			progress(cmd, "%s %s/%s: policy %s", gn.w.Kind, namespaceOf(gn.w), gn.w.Name, gn.hash)
		}
	}
	for _, gn := range gens {
		if gn.skipReason != "" {
			out.Skipped = append(out.Skipped, generateSkip{File: gn.doc.file, Kind: gn.w.Kind, Name: gn.w.Name, Reason: gn.skipReason})
		}
	}

	m := &manifest.Manifest{Policies: map[manifest.HexString]manifest.PolicyEntry{}}
	owner := map[manifest.HexString]string{}
	var coordinators int
	for _, gn := range gens {
		if gn.skipReason != "" {
			continue
		}
		who := fmt.Sprintf("%s %s/%s (%s)", gn.w.Kind, namespaceOf(gn.w), gn.w.Name, gn.doc.file)
		if prev, ok := m.Policies[gn.hash]; ok && !entriesEqual(prev, gn.entry) {
			return usageErrorf("%s and %s have the same policy %s but different identities (SANs, workload secret ID or role): give them different names or the same annotations", owner[gn.hash], who, gn.hash)
		}
		m.Policies[gn.hash] = gn.entry
		owner[gn.hash] = who
		if gn.entry.Role == manifest.RoleCoordinator {
			coordinators++
		}
		out.Policies = append(out.Policies, generateEntry{
			File: gn.doc.file, Kind: gn.w.Kind, Namespace: gn.w.Namespace, Name: gn.w.Name, PolicyHash: gn.hash.String(),
			Role: string(gn.entry.Role), SANs: gn.entry.SANs, WorkloadSecretID: gn.entry.WorkloadSecretID,
		})
	}
	if coordinators == 0 {
		return errNoCoordinator()
	}

	// Owner keys: from the key files, keeping those of an existing
	// manifest.json.
	m.ReferenceValues = *rv
	if prev != nil {
		m.WorkloadOwnerPubKeys = slices.Clone(prev.WorkloadOwnerPubKeys)
		m.WorkloadOwnerKeyDigests = slices.Clone(prev.WorkloadOwnerKeyDigests)
		m.SeedshareOwnerPubKeys = slices.Clone(prev.SeedshareOwnerPubKeys)
	}
	for _, k := range []struct {
		file string
		gen  func() (crypto.Signer, error)
		dst  *[]manifest.HexString
	}{
		{fileWorkloadOwnerKey, newOwnerKey, &m.WorkloadOwnerPubKeys},
		{fileSeedshareKey, newSeedShareKey, &m.SeedshareOwnerPubKeys},
	} {
		key, created, err := ensureKey(o.path(k.file), k.gen)
		if err != nil {
			return err
		}
		if created {
			progress(cmd, "created %s (keep it secret; 0600)", o.path(k.file))
			out.Keys[k.file] = true
		}
		h, err := pubHex(key.Public())
		if err != nil {
			return withCode(ExitFailure, err)
		}
		if !containsKey(*k.dst, h) {
			*k.dst = append(*k.dst, h)
		}
	}

	raw, err := m.Marshal()
	if err != nil {
		return withCode(ExitFailure, err)
	}
	if len(fill) > 0 {
		var paths []string
		raw, paths, err = markPlaceholders(raw, fill)
		if err != nil {
			return withCode(ExitFailure, err)
		}
		out.FillIn = paths
	} else if err := m.Validate(); err != nil {
		return usageErrorf("the generated manifest is invalid: %w", err)
	}
	out.Warnings = append(out.Warnings, warnings(m, gens)...)

	for _, gn := range gens {
		if gn.skipReason == "" {
			if err := writeFile(filepath.Join(o.path(dirPolicies), gn.hash.String()), gn.policyDoc, 0o644); err != nil {
				return err
			}
		}
	}
	if err := writeFile(o.path(fileManifest), append(raw, '\n'), 0o644); err != nil {
		return err
	}
	switch values, err := o.chartValues(); {
	case err != nil:
		return err
	case values != nil:
		if err := writeFile(o.path(fileChartValues), values, 0o644); err != nil {
			return err
		}
		out.ChartValues = o.path(fileChartValues)
	}
	if o.inject {
		files, err := o.writeInjected(docs, gens)
		if err != nil {
			return err
		}
		out.Injected = files
	}

	for _, w := range out.Warnings {
		fmt.Fprintf(cmd.ErrOrStderr(), "Warning: %s\n", w)
	}
	for _, p := range out.FillIn {
		fmt.Fprintf(cmd.ErrOrStderr(), "Fill in: %s in %s (contrast set refuses the manifest until then)\n", p, o.path(fileManifest))
	}
	if o.output == "json" {
		return printJSON(cmd, out)
	}
	w := cmd.OutOrStdout()
	for _, e := range out.Policies {
		role := ""
		if e.Role != "" {
			role = " (role " + e.Role + ")"
		}
		fmt.Fprintf(w, "%s  %s %s/%s%s\n", e.PolicyHash, e.Kind, orDefault(e.Namespace), e.Name, role)
	}
	for _, s := range out.Skipped {
		fmt.Fprintf(w, "skipped  %s %s: %s\n", s.Kind, s.Name, s.Reason)
	}
	fmt.Fprintf(w, "wrote %s (%d policies)\n", out.Manifest, len(m.Policies))
	return nil
}

func containsKey(keys []manifest.HexString, k manifest.HexString) bool {
	return slices.ContainsFunc(keys, func(x manifest.HexString) bool { return strings.EqualFold(x.String(), k.String()) })
}

func entriesEqual(a, b manifest.PolicyEntry) bool {
	return slices.Equal(a.SANs, b.SANs) && a.WorkloadSecretID == b.WorkloadSecretID && a.Role == b.Role
}

func namespaceOf(w *policy.Workload) string { return orDefault(w.Namespace) }

func orDefault(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}

func previousManifest(path string) (*manifest.Manifest, error) {
	raw, err := readPath(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("reading the existing manifest: %w", err))
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		return nil, usageErrorf("the existing %s is invalid (fix it, or pass --reference-values to replace its reference values): %w", path, err)
	}
	return m, nil
}

// generateOne computes the policy and manifest entry of one workload.
func (o *generateOptions) generateOne(ctx context.Context, m *inject.Mutator, gn *generated) error {
	w := gn.w
	ann := mergedAnnotations(w)
	coordinator := isCoordinator(w)
	if gn.doc.coordinatorOnly && !coordinator {
		gn.skipReason = "not the Coordinator (of --coordinator-yaml only the Coordinator is used)"
		return nil
	}
	if w.Template.Labels[inject.LabelInject] == "disabled" {
		gn.skipReason = fmt.Sprintf("opted out (label %s=disabled): runs without Contrast", inject.LabelInject)
		return nil
	}
	res, err := m.MutateWorkload(ctx, w, nil)
	if err != nil {
		return usageErrorf("%s: %s %s/%s: %w", gn.doc.file, w.Kind, namespaceOf(w), w.Name, err)
	}
	gn.result = res
	gn.hash = manifest.NewHexString(res.Digest)
	if len(res.InitData) > 0 {
		gn.policyDoc = res.InitData
	} else {
		gn.policyDoc = []byte(res.Rego)
	}
	entry := manifest.PolicyEntry{SANs: []string{w.Name, "*"}}
	if coordinator {
		entry.Role = manifest.RoleCoordinator
	} else {
		entry.WorkloadSecretID = namespaceOf(w) + "/" + w.Name
		if id := ann[annotationWorkloadSecretID]; id != "" {
			entry.WorkloadSecretID = id
		}
	}
	if extra := ann[annotationSANs]; extra != "" {
		for _, san := range strings.Split(extra, ",") {
			san = strings.TrimSpace(san)
			if san == "" {
				continue
			}
			if err := manifest.ValidateSAN(san); err != nil {
				return usageErrorf("%s: %s %s/%s: annotation %s: SAN %q: %w", gn.doc.file, w.Kind, namespaceOf(w), w.Name, annotationSANs, san, err)
			}
			if !slices.Contains(entry.SANs, san) {
				entry.SANs = append(entry.SANs, san)
			}
		}
	}
	gn.entry = entry
	return nil
}

// chartValues is the Helm values file of the Initializer's expectations
// the workloads were computed with, or nil when there are none or they do
// not fit the chart (which takes one Coordinator policy hash).
func (o *generateOptions) chartValues() ([]byte, error) {
	e := o.effective
	if e == nil || len(e.CoordinatorPolicyHashes) != 1 {
		return nil, nil
	}
	// the values as the webhook parsed them (no second read of a file)
	raw, err := json.Marshal(&e.CoordinatorReferenceValues)
	if err != nil {
		return nil, withCode(ExitFailure, err)
	}
	var rvValue any
	if err := json.Unmarshal(raw, &rvValue); err != nil {
		return nil, withCode(ExitFailure, fmt.Errorf("the Coordinator's reference values: %w", err))
	}
	body, err := yaml.Marshal(map[string]any{"coordinator": map[string]any{
		"policyHash":      hex.EncodeToString(e.CoordinatorPolicyHashes[0]),
		"referenceValues": rvValue,
	}})
	if err != nil {
		return nil, withCode(ExitFailure, err)
	}
	return append([]byte("# Written by contrast generate: the chart values that make the webhook give every Initializer\n"+
		"# the Coordinator policy hash and reference values the workloads of manifest.json were computed with.\n"+
		"# helm install/upgrade ... -f "+fileChartValues+"\n"), body...), nil
}

func isCoordinator(w *policy.Workload) bool {
	return w.Template.Annotations[inject.AnnotationPodRole] == inject.RoleCoordinator
}

// workloadMutator returns the mutator of the workloads, after the
// Coordinators were computed. The Initializer's expectations the settings
// give must accept every Coordinator computed here (they are what the
// installed webhook injects); those they leave out are derived: the
// Coordinators' policy hashes, the manifest's reference values (which
// must then be complete) and the platform they name.
func (o *generateOptions) workloadMutator(gens []*generated, rv *manifest.ReferenceValues, fill []placeholder, src images.Source, log *slog.Logger) (*inject.Mutator, error) {
	var hashes []string
	var others bool
	for _, gn := range gens {
		switch {
		case gn.skipReason != "":
		case isCoordinator(gn.w):
			if !slices.Contains(hashes, gn.hash.String()) {
				hashes = append(hashes, gn.hash.String())
			}
		default:
			others = true
		}
	}
	if len(hashes) == 0 {
		return nil, errNoCoordinator()
	}
	s := o.settings
	if len(s.CoordinatorPolicyHashes) == 0 {
		s.CoordinatorPolicyHashes = hashes
	}
	for _, h := range hashes {
		if !slices.ContainsFunc(s.CoordinatorPolicyHashes, func(g string) bool { return strings.EqualFold(g, h) }) {
			return nil, usageErrorf("the Coordinator computed here has policy %s, which --%s of the settings does not list (%s): the Initializers would refuse it (set coordinator.policyHash in the chart's values to it, or leave the hash out of the settings to derive it)", h, settings.FlagCoordinatorPolicyHash, strings.Join(s.CoordinatorPolicyHashes, ", "))
		}
	}
	if s.CoordinatorReferenceValues == "" {
		if len(fill) > 0 {
			if !others {
				return nil, nil
			}
			paths := make([]string, len(fill))
			for i, p := range fill {
				paths[i] = p.field
			}
			return nil, usageErrorf("the workloads' Initializers need the Coordinator's complete reference values, and --reference-values %s leaves fields to fill in (%s): run generate once with only the Coordinator (--coordinator-yaml), fill them in %s, then run it again without --reference-values; or give --%s", o.refValues, strings.Join(paths, ", "), o.path(fileManifest), settings.FlagCoordinatorReferenceValues)
		}
		raw, err := json.Marshal(rv)
		if err != nil {
			return nil, withCode(ExitFailure, err)
		}
		s.CoordinatorReferenceValues = string(raw)
	}
	if s.TEEPlatform == "" {
		p, err := platformOf(rv)
		if err != nil {
			return nil, err
		}
		s.TEEPlatform = string(p)
	}
	r, err := s.Resolve()
	if err != nil {
		return nil, usageErrorf("the Initializer's expectations of the Coordinator (what the settings left out is derived from the Coordinator and the reference values): %w", err)
	}
	o.effective = &r.Inject
	return r.Mutator(src, log), nil
}

func errNoCoordinator() error {
	return usageErrorf("no Coordinator among the inputs: the manifest needs the Coordinator's policy (a workload whose pod template is annotated %s: %s). Pass the chart's rendered Coordinator (helm template charts/contrast) among the PATHs or with --coordinator-yaml", inject.AnnotationPodRole, inject.RoleCoordinator)
}

// platformOf is the webhook's --platform for reference values of one
// platform.
func platformOf(rv *manifest.ReferenceValues) (attest.Platform, error) {
	var ps []attest.Platform
	for i := range rv.SNP {
		ps = append(ps, rv.SNP[i].Platform)
	}
	for i := range rv.TDX {
		ps = append(ps, rv.TDX[i].Platform)
	}
	slices.Sort(ps)
	ps = slices.Compact(ps)
	if len(ps) != 1 {
		return "", usageErrorf("the reference values name the platforms %v: give the pods' platform with --%s", ps, settings.FlagPlatform)
	}
	return ps[0], nil
}

// mergedAnnotations are the annotations of the workload object and of its
// pod template (the template's win).
func mergedAnnotations(w *policy.Workload) map[string]string {
	out := map[string]string{}
	if o, ok := w.Object.(interface{ GetAnnotations() map[string]string }); ok {
		for k, v := range o.GetAnnotations() {
			out[k] = v
		}
	}
	for k, v := range w.Template.Annotations {
		out[k] = v
	}
	return out
}

// warnings name, by field, what the Coordinator would not enforce.
func warnings(m *manifest.Manifest, gens []*generated) []string {
	var out []string
	if m.Simulated() {
		out = append(out, "ReferenceValues: simulated platform: the evidence is signed by a simulated authority, there is no TEE protection (development only)")
	}
	for _, fe := range m.Unenforced() {
		out = append(out, fmt.Sprintf("%s: %s", fe.Path, fe.Msg))
	}
	for _, gn := range gens {
		if gn.skipReason != "" {
			continue
		}
		who := fmt.Sprintf("%s %s/%s", gn.w.Kind, namespaceOf(gn.w), gn.w.Name)
		spec := &gn.w.Template.Spec
		for i := range spec.Containers {
			if policy.IsPrivileged(&spec.Containers[i]) {
				out = append(out, fmt.Sprintf("%s: spec.containers[%d] (%s).securityContext.privileged: a privileged container can reach the guest kernel and devices; the policy cannot confine it", who, i, spec.Containers[i].Name))
			}
		}
		if gn.w.Template.Annotations["contrast.cc/servicemesh"] == "disabled" {
			out = append(out, fmt.Sprintf("%s: metadata.annotations[contrast.cc/servicemesh]: disabled: the pod's traffic is not protected by the mesh", who))
		}
	}
	return out
}

// readInputs reads the YAML files of paths (folders recursively: *.yaml,
// *.yml, *.json).
func readInputs(paths []string) ([]*inputDoc, error) {
	var docs []*inputDoc
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, withCode(ExitUsage, fmt.Errorf("input: %w", err))
		}
		if !info.IsDir() {
			ds, err := readFile(p, filepath.Base(p))
			if err != nil {
				return nil, err
			}
			docs = append(docs, ds...)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			switch strings.ToLower(filepath.Ext(path)) {
			case ".yaml", ".yml", ".json":
			default:
				return nil
			}
			if filepath.Base(path) == "kustomization.yaml" || filepath.Base(path) == "kustomization.yml" {
				return nil
			}
			rel, err := filepath.Rel(p, path)
			if err != nil {
				return err
			}
			ds, err := readFile(path, filepath.Join(filepath.Base(filepath.Clean(p)), rel))
			if err != nil {
				return err
			}
			docs = append(docs, ds...)
			return nil
		})
		if err != nil {
			return nil, withCode(ExitUsage, fmt.Errorf("input %s: %w", p, err))
		}
	}
	return docs, nil
}

func readFile(path, rel string) ([]*inputDoc, error) {
	raw, err := readPath(path)
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("input: %w", err))
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReaderSize(bytes.NewReader(raw), 64<<10))
	var out []*inputDoc
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, usageErrorf("%s: document %d: %w", path, i, err)
		}
		ws, err := policy.DecodeWorkloads(doc)
		if err != nil {
			return nil, usageErrorf("%s: document %d: %w", path, i, err)
		}
		out = append(out, &inputDoc{file: path, rel: rel, raw: doc, workloads: ws})
	}
}

// writeInjected writes every input document to the inject directory, the
// workloads mutated, everything else unchanged.
func (o *generateOptions) writeInjected(docs []*inputDoc, gens []*generated) ([]string, error) {
	dir := o.injectDir
	if !filepath.IsAbs(dir) {
		dir = o.path(dir)
	}
	byDoc := map[*inputDoc][]*generated{}
	for _, gn := range gens {
		byDoc[gn.doc] = append(byDoc[gn.doc], gn)
	}
	files := map[string][][]byte{}
	var order []string
	for _, d := range docs {
		out := d.raw
		if gs := byDoc[d]; len(gs) > 0 {
			if len(d.workloads) != 1 {
				return nil, usageErrorf("--inject: %s: a List of workloads cannot be rewritten; split it into documents", d.file)
			}
			gn := gs[0]
			if gn.skipReason == "" {
				obj, err := withTemplate(gn.w)
				if err != nil {
					return nil, usageErrorf("--inject: %s: %w", d.file, err)
				}
				b, err := yaml.Marshal(obj)
				if err != nil {
					return nil, withCode(ExitFailure, fmt.Errorf("--inject: encoding %s %s: %w", gn.w.Kind, gn.w.Name, err))
				}
				out = b
			}
		}
		if _, ok := files[d.rel]; !ok {
			order = append(order, d.rel)
		}
		files[d.rel] = append(files[d.rel], out)
	}
	var written []string
	for _, rel := range order {
		var b bytes.Buffer
		for i, doc := range files[rel] {
			if i > 0 {
				b.WriteString("---\n")
			}
			b.Write(bytes.TrimLeft(doc, "\n"))
			if !bytes.HasSuffix(doc, []byte("\n")) {
				b.WriteByte('\n')
			}
		}
		path := filepath.Join(dir, rel)
		if err := writeFile(path, b.Bytes(), 0o644); err != nil {
			return nil, err
		}
		written = append(written, path)
	}
	return written, nil
}

// withTemplate returns the workload's object with its mutated pod template.
func withTemplate(w *policy.Workload) (any, error) {
	switch o := w.Object.(type) {
	case *corev1.Pod:
		o.ObjectMeta, o.Spec = w.Template.ObjectMeta, w.Template.Spec
	case *corev1.ReplicationController:
		o.Spec.Template = &w.Template
	case *appsv1.Deployment:
		o.Spec.Template = w.Template
	case *appsv1.ReplicaSet:
		o.Spec.Template = w.Template
	case *appsv1.StatefulSet:
		o.Spec.Template = w.Template
	case *appsv1.DaemonSet:
		o.Spec.Template = w.Template
	case *batchv1.Job:
		o.Spec.Template = w.Template
	case *batchv1.CronJob:
		o.Spec.JobTemplate.Spec.Template = w.Template
	default:
		return nil, fmt.Errorf("%s %s: cannot rewrite %T", w.Kind, w.Name, w.Object)
	}
	return w.Object, nil
}
