package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	kwhhttp "github.com/slok/kubewebhook/v2/pkg/http"
	kwhmodel "github.com/slok/kubewebhook/v2/pkg/model"
	kwhwebhook "github.com/slok/kubewebhook/v2/pkg/webhook"
	kwhmutating "github.com/slok/kubewebhook/v2/pkg/webhook/mutating"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/webhook/inject"
)

// MutateStatefulSetPath is the path of the mutating webhook of StatefulSets
// (CREATE and UPDATE of apps/v1 StatefulSets in opted-in namespaces).
const MutateStatefulSetPath = "/mutate-statefulsets"

// Skip reasons of the StatefulSet admission (label reason of
// contrast_webhook_statefulset_admissions_total) besides those shared with
// pods (not-a-statefulset instead of not-a-pod).
const (
	reasonNotAStatefulSet = "not-a-statefulset"
	// reasonNoEncryptedClaims: no claim template is mounted encrypted, or
	// all already ask for volumeMode Block.
	reasonNoEncryptedClaims = "unchanged"
	// reasonPodDenied: the pod template would be denied at the pods'
	// admission; the StatefulSet is admitted unchanged and its pods are
	// denied, naming the field, when the controller creates them.
	reasonPodDenied = "pod-denied"
)

// newStatefulSetHandler returns the handler of MutateStatefulSetPath.
//
// The StatefulSet controller creates each pod's claims from the
// StatefulSet's volumeClaimTemplates, and a claim's volumeMode cannot
// change once it exists, so the webhook sets volumeMode Block where the
// claims must be provisioned as block devices: on the templates, when the
// StatefulSet is admitted (inject.BlockClaimTemplates), not on the claims
// the controller creates. See docs/design.md, "Persistent volumes, as
// built", for why.
func newStatefulSetHandler(a *admitter) (http.Handler, error) {
	wh, err := kwhmutating.NewWebhook(kwhmutating.WebhookConfig{
		ID:      "contrast-statefulsets",
		Obj:     &appsv1.StatefulSet{},
		Mutator: kwhmutating.MutatorFunc(a.mutateStatefulSet),
		Logger:  kubewebhookLogger{a.cfg.Logger},
	})
	if err != nil {
		return nil, fmt.Errorf("creating StatefulSet webhook: %w", err)
	}
	h, err := kwhhttp.HandlerFor(kwhhttp.HandlerConfig{
		Webhook: statefulSetsOnly{next: wh, observe: a.cfg.Metrics.observeStatefulSet},
		Logger:  kubewebhookLogger{a.cfg.Logger},
	})
	if err != nil {
		return nil, fmt.Errorf("creating StatefulSet handler: %w", err)
	}
	return requireRequest(h), nil
}

// mutateStatefulSet sets volumeMode Block on the claim templates whose
// claims the pods mount as encrypted volumes. It never denies: a pod
// template Contrast cannot run is denied at the pods' admission, the one
// place that decides (and computes the policy).
//
// UPDATE is handled as CREATE: the API server defaults a missing volumeMode
// to Filesystem before admission, and the claim templates of a StatefulSet
// are immutable, so a kubectl replace or server-side apply of the
// unmodified YAML would otherwise be refused as a change of them.
func (a *admitter) mutateStatefulSet(_ context.Context, ar *kwhmodel.AdmissionReview, obj metav1.Object) (*kwhmutating.MutatorResult, error) {
	log := a.cfg.Logger.With("namespace", ar.Namespace, "operation", string(ar.Operation), "dryRun", ar.DryRun, "statefulSet", obj.GetName())
	observe := a.cfg.Metrics.observeStatefulSet
	skip := func(reason string) (*kwhmutating.MutatorResult, error) {
		observe(ResultSkipped, reason)
		log.Debug("StatefulSet admission skipped", "reason", reason)
		return &kwhmutating.MutatorResult{}, nil
	}
	st, ok := obj.(*appsv1.StatefulSet)
	switch {
	case !ok:
		return skip(reasonNotAStatefulSet)
	case ar.Operation != kwhmodel.OperationCreate && ar.Operation != kwhmodel.OperationUpdate:
		return skip("operation")
	case slices.Contains(a.cfg.ExcludedNamespaces, ar.Namespace):
		return skip("excluded-namespace")
	case st.Spec.Template.Labels[inject.LabelInject] == "disabled":
		// its pods are not injected: they mount the claims themselves
		return skip("opted-out")
	}
	changed, err := inject.BlockClaimTemplates(st, a.cfg.Mutator.Config)
	if err != nil {
		if de, ok := errors.AsType[*inject.DenyError](err); ok {
			log.Info("StatefulSet admitted unchanged: its pods will be denied", "reason", string(de.Code), "field", de.Field)
			return skip(reasonPodDenied)
		}
		observe(ResultError, "internal")
		log.Error("mutating StatefulSet", "error", err)
		return nil, fmt.Errorf("mutating StatefulSet: %w", err)
	}
	if len(changed) == 0 {
		return skip(reasonNoEncryptedClaims)
	}
	observe(ResultMutated, "ok")
	log.Info("StatefulSet claim templates set to volumeMode Block", "claimTemplates", changed)
	return &kwhmutating.MutatorResult{}, nil
}

// notAStatefulSet returns why a request is not one for an apps/v1
// StatefulSet (without subresource), or "".
func notAStatefulSet(ar *kwhmodel.AdmissionReview) string {
	return notKind(ar, metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "StatefulSet"}, reasonNotAStatefulSet)
}

// statefulSetsOnly answers requests for other objects than StatefulSets
// itself, allowed and without a patch (as podsOnly does for pods).
type statefulSetsOnly struct {
	next    kwhwebhook.Webhook
	observe func(result, reason string)
}

func (w statefulSetsOnly) ID() string                 { return w.next.ID() }
func (w statefulSetsOnly) Kind() kwhmodel.WebhookKind { return w.next.Kind() }

func (w statefulSetsOnly) Review(ctx context.Context, ar kwhmodel.AdmissionReview) (kwhmodel.AdmissionResponse, error) {
	if reason := notAStatefulSet(&ar); reason != "" {
		w.observe(ResultSkipped, reason)
		return &kwhmodel.MutatingAdmissionResponse{ID: ar.ID}, nil
	}
	return w.next.Review(ctx, ar)
}
