// Package server is the webhook's HTTP side: the admission handler (built on
// slok/kubewebhook), metrics, probes and the HTTPS and probe servers.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	kwhhttp "github.com/slok/kubewebhook/v2/pkg/http"
	kwhmodel "github.com/slok/kubewebhook/v2/pkg/model"
	kwhwebhook "github.com/slok/kubewebhook/v2/pkg/webhook"
	kwhvalidating "github.com/slok/kubewebhook/v2/pkg/webhook/validating"
	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// KeychainFunc returns the registry credentials of a pod (its pull secrets
// and its service account's). It may return nil for anonymous access.
type KeychainFunc func(ctx context.Context, namespace string, pod *corev1.Pod) (authn.Keychain, error)

// AdmissionConfig configures the admission handler.
type AdmissionConfig struct {
	// Mutator mutates pods. Required.
	Mutator *inject.Mutator
	// Metrics records admissions. Required.
	Metrics *Metrics
	// Logger logs admissions (default slog.Default()).
	Logger *slog.Logger
	// ExcludedNamespaces are never mutated, whatever the webhook
	// configuration's selectors say (the webhook's own namespace,
	// kube-system).
	ExcludedNamespaces []string
	// CoordinatorNamespace is the webhook's own namespace, where the
	// Coordinator of its Helm release runs: pods there annotated
	// contrast.cc/pod-role: coordinator are admitted although the namespace
	// is excluded (the webhook configuration selects only them), so the
	// Coordinator gets its policy like any confidential pod. Empty: none.
	CoordinatorNamespace string
	// Keychain returns a pod's registry credentials (optional).
	Keychain KeychainFunc
	// Patches caches the JSON patches of mutated pods (optional; see
	// PatchCache).
	Patches *PatchCache
}

// NewAdmissionHandler returns the HTTP handler of the admission webhook:
// POST ValidatePath is the validating webhook (see validate),
// MutateStatefulSetPath the mutating webhook of StatefulSets (see
// mutateStatefulSet), every other path the mutating webhook of pods
// (MutatePath).
func NewAdmissionHandler(cfg AdmissionConfig) (http.Handler, error) {
	if cfg.Mutator == nil || cfg.Metrics == nil {
		return nil, errors.New("mutator and metrics are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &admitter{cfg: cfg}
	mwh := newMutatingWebhook("contrast-pods", a.mutate, cfg.Patches)
	mutating, err := kwhhttp.HandlerFor(kwhhttp.HandlerConfig{
		Webhook: denyingWebhook{podsOnly{mwh, cfg.Metrics.observeAdmission}},
		Logger:  kubewebhookLogger{cfg.Logger},
	})
	if err != nil {
		return nil, fmt.Errorf("creating handler: %w", err)
	}
	vwh, err := kwhvalidating.NewWebhook(kwhvalidating.WebhookConfig{
		ID:        "contrast-pods-validate",
		Obj:       &corev1.Pod{},
		Validator: kwhvalidating.ValidatorFunc(a.validate),
		Logger:    kubewebhookLogger{cfg.Logger},
	})
	if err != nil {
		return nil, fmt.Errorf("creating validating webhook: %w", err)
	}
	validating, err := kwhhttp.HandlerFor(kwhhttp.HandlerConfig{
		Webhook: podsOnly{vwh, cfg.Metrics.observeValidation},
		Logger:  kubewebhookLogger{cfg.Logger},
	})
	if err != nil {
		return nil, fmt.Errorf("creating validating handler: %w", err)
	}
	statefulSets, err := newStatefulSetHandler(a)
	if err != nil {
		return nil, err
	}
	mutating, validating = requireRequest(mutating), requireRequest(validating)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case ValidatePath:
			validating.ServeHTTP(w, r)
		case MutateStatefulSetPath:
			statefulSets.ServeHTTP(w, r)
		default:
			mutating.ServeHTTP(w, r)
		}
	}), nil
}

// requireRequest rejects reviews without a request before they reach
// kubewebhook v2.7.0, which dereferences the missing request and panics
// (found by FuzzAdmissionReview).
//
// kubewebhook decodes the review with the Kubernetes JSON decoder: keys
// match case-sensitively and the last of duplicate keys wins. hasRequest
// reads the body the same way, in one pass: encoding/json's case-insensitive
// matching took {"Request": {...}} for a request, which kubewebhook does not
// see (TestAdmissionReviewWithoutRequest).
func requireRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, kwhhttp.MaxRequestBodyBytes+1))
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if int64(len(body)) > kwhhttp.MaxRequestBodyBytes {
			http.Error(w, "admission review too large", http.StatusRequestEntityTooLarge)
			return
		}
		if !hasRequest(body) {
			http.Error(w, "not an admission review with a request", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// hasRequest reports whether body, if it is valid JSON, is an object whose
// last member named exactly "request" (after unescaping) is an object. It
// scans the structure in one pass without validating values: kubewebhook's
// decoder rejects invalid JSON itself, with an error rather than a panic,
// so only valid bodies need the exact answer.
func hasRequest(body []byte) bool {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	depth, found := 0, false
	expectKey := false
	for ; i < len(body); i++ {
		switch c := body[i]; c {
		case '"':
			end := stringEnd(body, i)
			if end < 0 {
				return false
			}
			if depth == 1 && expectKey {
				var key string
				if json.Unmarshal(body[i:end+1], &key) != nil {
					return false
				}
				j := skipSpace(body, end+1)
				if j >= len(body) || body[j] != ':' {
					return false
				}
				j = skipSpace(body, j+1)
				if key == "request" {
					found = j < len(body) && body[j] == '{'
				}
				expectKey = false
				i = j - 1
				continue
			}
			i = end
		case '{', '[':
			depth++
			expectKey = c == '{' && depth == 1
		case '}', ']':
			depth--
			if depth == 0 {
				return found && skipSpace(body, i+1) == len(body)
			}
		case ',':
			expectKey = depth == 1
		}
	}
	return false
}

// stringEnd returns the index of the quote that ends the JSON string
// starting at b[start], or -1: the first quote after start preceded by an
// even number of backslashes (pairs of them are escaped backslashes).
func stringEnd(b []byte, start int) int {
	i := start + 1
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		q := i + j
		n := 0
		for k := q - 1; k > start && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return q
		}
		i = q + 1
	}
	return -1
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

type admitter struct {
	cfg AdmissionConfig
}

// Skip reasons of requests for other objects than pods.
const (
	reasonNotAPod     = "not-a-pod"
	reasonSubresource = "subresource"
)

// notAPod returns why a request is not one for a pod (core/v1 Pod, not a
// subresource such as pods/binding or pods/ephemeralcontainers), or "" if
// it is.
func notAPod(ar *kwhmodel.AdmissionReview) string {
	return notKind(ar, metav1.GroupVersionKind{Group: "", Version: "v1", Kind: "Pod"}, reasonNotAPod)
}

// notKind returns why a request is not one for an object of kind want
// (notWant, or reasonSubresource for a subresource of it), or "" if it is.
func notKind(ar *kwhmodel.AdmissionReview, want metav1.GroupVersionKind, notWant string) string {
	var kind metav1.GroupVersionKind
	var subresource string
	switch r := ar.OriginalAdmissionReview.(type) {
	case *admissionv1.AdmissionReview:
		kind, subresource = r.Request.Kind, r.Request.SubResource
	case *admissionv1beta1.AdmissionReview:
		kind, subresource = r.Request.Kind, r.Request.SubResource
	default:
		return notWant
	}
	switch {
	case kind != want:
		return notWant
	case subresource != "":
		return reasonSubresource
	}
	return ""
}

// skipReason returns the pod of a request and why both webhooks leave the
// request alone (not a pod, not a create, an excluded namespace), or "".
func (a *admitter) skipReason(ar *kwhmodel.AdmissionReview, obj metav1.Object) (*corev1.Pod, string) {
	pod, ok := obj.(*corev1.Pod)
	switch {
	case !ok:
		return nil, reasonNotAPod
	case ar.Operation != kwhmodel.OperationCreate:
		return pod, "operation"
	case slices.Contains(a.cfg.ExcludedNamespaces, ar.Namespace) && !a.admitsCoordinator(ar.Namespace, pod):
		return pod, "excluded-namespace"
	}
	return pod, ""
}

// admitsCoordinator reports whether pod is a Coordinator pod in
// CoordinatorNamespace, admitted although that namespace is excluded.
func (a *admitter) admitsCoordinator(namespace string, pod *corev1.Pod) bool {
	return a.cfg.CoordinatorNamespace != "" && namespace == a.cfg.CoordinatorNamespace &&
		pod.Annotations[inject.AnnotationPodRole] == inject.RoleCoordinator
}

// mutatePod runs the mutator over pod, in the request's namespace, with the
// pod's registry credentials.
// A denial is returned as an *inject.DenyError for the caller to answer;
// other failures are observed (ResultError, reason pull-secrets or
// internal) and logged here.
func (a *admitter) mutatePod(ctx context.Context, ar *kwhmodel.AdmissionReview, pod *corev1.Pod,
	log *slog.Logger, observe func(result, reason string),
) (*corev1.Pod, *policy.Result, error) {
	if ar.Namespace != "" {
		// the policy binds the namespace the pod is admitted in; the API
		// server sets it on the object as well, a review may leave it out
		pod.Namespace = ar.Namespace
	}
	var kc authn.Keychain
	if a.cfg.Keychain != nil {
		var err error
		if kc, err = a.cfg.Keychain(ctx, ar.Namespace, pod); err != nil {
			observe(ResultError, "pull-secrets")
			log.Error("reading pull secrets", "error", err)
			return nil, nil, fmt.Errorf("reading pull secrets: %w", err)
		}
	}
	out, res, err := a.cfg.Mutator.MutatePod(ctx, pod, kc)
	if err != nil {
		if _, ok := errors.AsType[*inject.DenyError](err); !ok {
			observe(ResultError, "internal")
			log.Error("mutating pod", "error", err)
		}
		return nil, nil, err
	}
	return out, res, nil
}

// mutate mutates the pod in place and reports whether it did; the
// mutating webhook derives the JSON patch from the difference to the
// admitted object.
func (a *admitter) mutate(ctx context.Context, ar *kwhmodel.AdmissionReview, obj *corev1.Pod) (bool, error) {
	start := time.Now()
	log := a.cfg.Logger.With("namespace", ar.Namespace, "operation", string(ar.Operation), "dryRun", ar.DryRun)
	observe := func(result, reason string) {
		a.cfg.Metrics.observeAdmission(result, reason, time.Since(start))
	}
	skip := func(reason string) (bool, error) {
		observe(ResultSkipped, reason)
		log.Debug("admission skipped", "reason", reason)
		return false, nil
	}
	pod, reason := a.skipReason(ar, obj)
	switch {
	case reason != "":
		return skip(reason)
	case pod.Labels[inject.LabelInject] == "disabled":
		return skip("opted-out")
	}
	log = log.With("generateName", pod.GenerateName, "name", pod.Name)

	out, res, err := a.mutatePod(ctx, ar, pod, log, observe)
	if err != nil {
		if de, ok := errors.AsType[*inject.DenyError](err); ok {
			observe(ResultDenied, string(de.Code))
			log.Info("pod denied", "reason", string(de.Code), "field", de.Field)
		}
		return false, err
	}
	*pod = *out
	observe(ResultMutated, "ok")
	log.Info("pod mutated", "policyHash", res.Annotations[policy.AnnotationPolicyHash], "kind", res.Kind)
	return true, nil
}

// podsOnly answers requests for other objects than pods (see notAPod)
// itself, with allowed and no patch: kubewebhook would decode them into a
// Pod all the same, and the mutating webhook would answer with a patch that
// turns the object into what a Pod keeps of it.
type podsOnly struct {
	next    kwhwebhook.Webhook
	observe func(result, reason string, d time.Duration)
}

func (w podsOnly) ID() string                 { return w.next.ID() }
func (w podsOnly) Kind() kwhmodel.WebhookKind { return w.next.Kind() }

func (w podsOnly) Review(ctx context.Context, ar kwhmodel.AdmissionReview) (kwhmodel.AdmissionResponse, error) {
	reason := notAPod(&ar)
	if reason == "" {
		return w.next.Review(ctx, ar)
	}
	w.observe(ResultSkipped, reason, 0)
	if w.next.Kind() == kwhmodel.WebhookKindMutating {
		return &kwhmodel.MutatingAdmissionResponse{ID: ar.ID}, nil
	}
	return &kwhmodel.ValidatingAdmissionResponse{ID: ar.ID, Allowed: true}, nil
}

// denyingWebhook turns denials of the mutator into a response with
// allowed: false and the denial as message (kubewebhook's mutating webhook
// only knows errors, which the API server reports as webhook failures).
type denyingWebhook struct {
	next kwhwebhook.Webhook
}

func (w denyingWebhook) ID() string                 { return w.next.ID() }
func (w denyingWebhook) Kind() kwhmodel.WebhookKind { return w.next.Kind() }

func (w denyingWebhook) Review(ctx context.Context, ar kwhmodel.AdmissionReview) (kwhmodel.AdmissionResponse, error) {
	resp, err := w.next.Review(ctx, ar)
	var de *inject.DenyError
	if errors.As(err, &de) {
		return &kwhmodel.ValidatingAdmissionResponse{ID: ar.ID, Allowed: false, Message: "contrast: " + de.Error()}, nil
	}
	return resp, err
}
