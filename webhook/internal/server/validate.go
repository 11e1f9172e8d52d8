package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	kwhmodel "github.com/slok/kubewebhook/v2/pkg/model"
	kwhvalidating "github.com/slok/kubewebhook/v2/pkg/webhook/validating"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// ResultAllowed is the result of a passed validation (label result of
// contrast_webhook_validations_total, besides ResultSkipped, ResultDenied
// and ResultError).
const ResultAllowed = "allowed"

// Denial reasons of the validating webhook besides the inject.DenyCode of a
// final pod the mutating webhook would deny.
const (
	// reasonNotMutated: a pod in an opted-in namespace without the
	// annotations of the mutating webhook (it was bypassed).
	reasonNotMutated = "not-mutated"
	// reasonPolicyMismatch: the pod changed after the mutating webhook
	// computed its policy.
	reasonPolicyMismatch = "policy-mismatch"
)

// validate is the validating webhook. The API server reinvokes the mutating
// webhook at most once (reinvocationPolicy IfNeeded), so a later webhook
// that mutates the pod again during its own reinvocation leaves a policy
// that does not describe the stored pod. Validating webhooks run after
// every mutation: validate recomputes the policy over the final pod exactly
// as the mutating webhook would (inject.Mutator: strip the injection,
// inject, pin, generate) and denies the pod if the result differs from the
// pod (its policy annotations, the runtime class or what was injected),
// naming the fields that changed, never their values. A pod without the
// annotations of the mutating webhook is denied too, unless it opted out:
// this webhook is registered for the same pods, so the mutating webhook was
// bypassed.
func (a *admitter) validate(ctx context.Context, ar *kwhmodel.AdmissionReview, obj metav1.Object) (*kwhvalidating.ValidatorResult, error) {
	start := time.Now()
	log := a.cfg.Logger.With("namespace", ar.Namespace, "operation", string(ar.Operation), "dryRun", ar.DryRun, "webhook", "validating")
	observe := func(result, reason string) {
		a.cfg.Metrics.observeValidation(result, reason, time.Since(start))
	}
	allow := func(result, reason string) (*kwhvalidating.ValidatorResult, error) {
		observe(result, reason)
		log.Debug("validation passed", "result", result, "reason", reason)
		return &kwhvalidating.ValidatorResult{Valid: true}, nil
	}
	deny := func(reason, msg string) (*kwhvalidating.ValidatorResult, error) {
		observe(ResultDenied, reason)
		log.Info("pod denied by validation", "reason", reason, "message", msg)
		return &kwhvalidating.ValidatorResult{Valid: false, Message: "contrast: " + msg}, nil
	}
	pod, reason := a.skipReason(ar, obj)
	if reason != "" {
		return allow(ResultSkipped, reason)
	}
	log = log.With("generateName", pod.GenerateName, "name", pod.Name)
	_, hashed := pod.Annotations[policy.AnnotationPolicyHash]
	_, injected := pod.Annotations[inject.AnnotationInjected]
	if !hashed && !injected {
		if pod.Labels[inject.LabelInject] == "disabled" {
			return allow(ResultSkipped, "opted-out")
		}
		return deny(reasonNotMutated, fmt.Sprintf("metadata.annotations[%s]: missing: the pod was not mutated by the Contrast webhook "+
			"(its MutatingWebhookConfiguration must select every pod the ValidatingWebhookConfiguration does)", policy.AnnotationPolicyHash))
	}

	want, res, err := a.mutatePod(ctx, ar, pod, log, observe)
	if err != nil {
		if de, ok := errors.AsType[*inject.DenyError](err); ok {
			return deny(string(de.Code), "the final pod, after every mutating webhook: "+de.Error())
		}
		return nil, err
	}
	if changed := changedFields(pod, want, res); len(changed) > 0 {
		return deny(reasonPolicyMismatch, "the pod changed after the Contrast webhook computed its policy (a webhook that mutates pods again when reinvoked?): "+
			strings.Join(changed, ", "))
	}
	return allow(ResultAllowed, "ok")
}

// changedFields compares the admitted pod with the pod the mutating webhook
// makes of it (want, with the policy res) and returns the paths of the
// fields in which they differ as far as Contrast is concerned: the fields
// the policy describes, the runtime class and the injection. Fields the
// policy does not cover (labels, most annotations, resources) may differ.
func changedFields(pod, want *corev1.Pod, res *policy.Result) []string {
	var out []string
	add := func(s ...string) {
		for _, f := range s {
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	annotationChanged := func(k string) bool {
		v, ok := pod.Annotations[k]
		w, wok := want.Annotations[k]
		return v != w || ok != wok
	}
	var policyAnnotations []string
	for _, k := range []string{policy.AnnotationPolicyHash, policy.AnnotationInitData, policy.AnnotationLegacyPolicy} {
		if annotationChanged(k) {
			policyAnnotations = append(policyAnnotations, "metadata.annotations["+k+"]")
		}
	}
	if len(policyAnnotations) > 0 {
		// name the pod fields the difference of the policy data comes from
		var fields []string
		if stored, err := policy.DataFromAnnotations(pod.Annotations); err == nil {
			fields = dataChanges(stored, res.Data, &pod.Spec)
		}
		if len(fields) == 0 {
			fields = policyAnnotations
		}
		add(fields...)
	}
	if annotationChanged(inject.AnnotationInjected) {
		add("metadata.annotations[" + inject.AnnotationInjected + "]")
	}
	if ptrString(pod.Spec.RuntimeClassName) != ptrString(want.Spec.RuntimeClassName) {
		add("spec.runtimeClassName")
	}
	names := func(cs []corev1.Container) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.Name
		}
		return out
	}
	if !slices.Equal(names(pod.Spec.InitContainers), names(want.Spec.InitContainers)) {
		add("spec.initContainers")
	}
	if !slices.Equal(names(pod.Spec.Containers), names(want.Spec.Containers)) {
		add("spec.containers")
	}
	volumes := func(vs []corev1.Volume) []string {
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = v.Name
		}
		return out
	}
	if !slices.Equal(volumes(pod.Spec.Volumes), volumes(want.Spec.Volumes)) {
		add("spec.volumes")
	}
	slices.Sort(out)
	return out
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// podDataFields maps the keys of policy.PodData to the pod fields they
// come from.
//
//nolint:gosec // G101: field names, no credentials.
var podDataFields = map[string]string{
	"name_regex":            "metadata.name",
	"namespace_regex":       "metadata.namespace",
	"hostname":              "spec.hostname",
	"share_pid_namespace":   "spec.shareProcessNamespace",
	"sysctls":               "spec.securityContext.sysctls",
	"allow_logs":            "metadata.annotations[" + policy.AnnotationDenyLogs + "]",
	"service_account_token": "spec.automountServiceAccountToken",
	"service_env":           "spec.enableServiceLinks",
}

// containerDataFields maps the keys of policy.ContainerData to the fields
// of a container they come from (env is named per variable).
var containerDataFields = map[string]string{
	"kind":              "restartPolicy",
	"image_refs":        "image",
	"args":              "{command,args}",
	"env_patterns":      "envFrom",
	"cwd":               "workingDir",
	"user":              "securityContext",
	"capabilities":      "securityContext.capabilities",
	"no_new_privileges": "securityContext.allowPrivilegeEscalation",
	"privileged":        "securityContext.privileged",
	"read_only_root":    "securityContext.readOnlyRootFilesystem",
	"tty":               "tty",
	"mounts":            "volumeMounts",
	"volume_storages":   "volumeMounts",
	"exec_commands":     "{livenessProbe,readinessProbe,startupProbe,lifecycle}",
}

// dataChanges returns the fields of spec (the admitted pod) from which the
// differences between the policy data stored and the data recomputed come.
func dataChanges(stored, recomputed *policy.Data, spec *corev1.PodSpec) []string {
	var out []string
	for _, k := range jsonKeyDiff(stored.Pod, recomputed.Pod) {
		f, ok := podDataFields[k]
		if !ok {
			f = "spec (policy " + k + ")"
		}
		out = append(out, f)
	}
	if k := jsonKeyDiff(stored.Common, recomputed.Common); len(k) > 0 {
		out = append(out, "the policy's common data (computed by another version of the webhook?)")
	}
	byName := func(cs []policy.ContainerData) map[string]policy.ContainerData {
		m := map[string]policy.ContainerData{}
		for _, c := range cs {
			m[c.Kind+"/"+c.Name] = c
		}
		return m
	}
	old, cur := byName(stored.Containers), byName(recomputed.Containers)
	for _, key := range slices.Sorted(maps.Keys(cur)) {
		c := cur[key]
		path, ctr := containerPath(c, spec)
		o, ok := old[key]
		if !ok {
			out = append(out, path+" (added)")
			continue
		}
		for _, k := range jsonKeyDiff(o, c) {
			switch k {
			case "env":
				out = append(out, envChanges(o.Env, c.Env, path, ctr)...)
			case "name":
			default:
				f, ok := containerDataFields[k]
				if !ok {
					f = "(policy " + k + ")"
				}
				out = append(out, path+"."+f)
			}
		}
	}
	for _, key := range slices.Sorted(maps.Keys(old)) {
		if _, ok := cur[key]; !ok {
			out = append(out, fmt.Sprintf("spec: container %q (removed)", old[key].Name))
		}
	}
	return out
}

// containerPath is the field path of the container of the policy data c in
// spec, and that container (the sandbox's data comes from the pod's
// security context: no container).
func containerPath(c policy.ContainerData, spec *corev1.PodSpec) (string, *corev1.Container) {
	if c.Kind == "sandbox" {
		return "spec.securityContext", nil
	}
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == c.Name {
			return fmt.Sprintf("spec.initContainers[%d]", i), &spec.InitContainers[i]
		}
	}
	for i := range spec.Containers {
		if spec.Containers[i].Name == c.Name {
			return fmt.Sprintf("spec.containers[%d]", i), &spec.Containers[i]
		}
	}
	return fmt.Sprintf("spec: container %q", c.Name), nil
}

// envChanges names the variables whose expectations differ: by their index
// in the container's env if it has them, else by name (from the image or
// removed).
func envChanges(old, cur []policy.EnvSpec, path string, ctr *corev1.Container) []string {
	o, c := map[string]policy.EnvSpec{}, map[string]policy.EnvSpec{}
	names := map[string]bool{}
	for _, e := range old {
		o[e.Name], names[e.Name] = e, true
	}
	for _, e := range cur {
		c[e.Name], names[e.Name] = e, true
	}
	var env []corev1.EnvVar
	if ctr != nil {
		env = ctr.Env
	}
	var out []string
	for _, n := range slices.Sorted(maps.Keys(names)) {
		if o[n].Equal(c[n]) {
			continue
		}
		if i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == n }); i >= 0 {
			out = append(out, fmt.Sprintf("%s.env[%d]", path, i))
		} else {
			out = append(out, fmt.Sprintf("%s.env (variable %s)", path, n))
		}
	}
	return out
}

// jsonKeyDiff returns the JSON keys of two values of one struct type whose
// values differ.
func jsonKeyDiff(a, b any) []string {
	am, bm := jsonFields(a), jsonFields(b)
	var out []string
	for _, k := range slices.Sorted(maps.Keys(am)) {
		if !bytes.Equal(am[k], bm[k]) {
			out = append(out, k)
		}
	}
	return out
}

func jsonFields(v any) map[string]json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil
	}
	return m
}
