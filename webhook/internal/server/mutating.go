package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"

	kwhmodel "github.com/slok/kubewebhook/v2/pkg/model"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	"github.com/contrast-cc/contrast/webhook/policy"
)

// mutatingWebhook is the mutating webhook: it decodes the admitted pod,
// lets mutate change it in place and answers with the JSON patch derived
// from the difference between the admitted and the mutated pod, as
// kubewebhook's mutating webhook does (same decoder, same patch library),
// with two additions for speed:
//
//   - the policy annotations pass the patch computation as stand-ins (see
//     standIn), and
//   - with a PatchCache, the patch of a mutated pod is looked up by the
//     digest of both documents (patchKeyOf) before it is derived: the pods
//     of one controller after the first reuse the first one's patch.
type mutatingWebhook struct {
	id      string
	decoder runtime.Decoder
	// mutate mutates pod in place and reports whether it did (false: the
	// pod was skipped).
	mutate  func(ctx context.Context, ar *kwhmodel.AdmissionReview, pod *corev1.Pod) (bool, error)
	patches *PatchCache
}

func newMutatingWebhook(id string, mutate func(context.Context, *kwhmodel.AdmissionReview, *corev1.Pod) (bool, error), patches *PatchCache) mutatingWebhook {
	// the decoder of kubewebhook's static object creator
	return mutatingWebhook{
		id:      id,
		decoder: serializer.NewCodecFactory(runtime.NewScheme()).UniversalDeserializer(),
		mutate:  mutate,
		patches: patches,
	}
}

func (w mutatingWebhook) ID() string                 { return w.id }
func (w mutatingWebhook) Kind() kwhmodel.WebhookKind { return kwhmodel.WebhookKindMutating }

// Review implements kwhwebhook.Webhook.
func (w mutatingWebhook) Review(ctx context.Context, ar kwhmodel.AdmissionReview) (kwhmodel.AdmissionResponse, error) {
	raw := ar.NewObjectRaw
	if ar.Operation == kwhmodel.OperationDelete {
		raw = ar.OldObjectRaw
	}
	pod := &corev1.Pod{}
	if _, _, err := w.decoder.Decode(raw, nil, pod); err != nil {
		return nil, fmt.Errorf("could not create object from raw: error deserializing request raw object: %w", err)
	}
	mutated, err := w.mutate(ctx, &ar, pod)
	if err != nil {
		return nil, fmt.Errorf("could not mutate object: %w", err)
	}
	var values []policyValue
	if mutated {
		values = standIn(pod)
	}
	mutatedJSON, err := json.Marshal(pod)
	if err != nil {
		return nil, fmt.Errorf("could not marshal into JSON mutated object: %w", err)
	}
	var key patchKey
	if mutated && w.patches != nil {
		key = patchKeyOf(raw, mutatedJSON, values)
		if patch, ok := w.patches.get(key); ok {
			return &kwhmodel.MutatingAdmissionResponse{ID: ar.ID, JSONPatchPatch: patch}, nil
		}
	}
	patch, err := derivePatch(raw, mutatedJSON, values)
	if err != nil {
		return nil, err
	}
	if mutated && w.patches != nil {
		w.patches.put(key, patch)
	}
	return &kwhmodel.MutatingAdmissionResponse{ID: ar.ID, JSONPatchPatch: patch}, nil
}

// derivePatch returns the JSON patch from raw to mutated, with the
// stand-ins in mutated replaced by values (see standIn).
func derivePatch(raw, mutated []byte, values []policyValue) ([]byte, error) {
	ops, err := jsonpatch.CreatePatch(raw, mutated)
	if err != nil {
		return nil, fmt.Errorf("could not create JSON patch: %w", err)
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("could not marshal into JSON, the JSON patch: %w", err)
	}
	for _, v := range values {
		stand, err := json.Marshal(standInPrefix + v.key)
		if err != nil {
			return nil, fmt.Errorf("encoding the policy annotation: %w", err)
		}
		if n := bytes.Count(patch, stand); n != 1 {
			return nil, fmt.Errorf("the JSON patch holds a policy annotation's stand-in %d times, not once", n)
		}
		quoted, err := json.Marshal(v.value)
		if err != nil {
			return nil, fmt.Errorf("encoding the policy annotation: %w", err)
		}
		patch = bytes.Replace(patch, stand, quoted, 1)
	}
	return patch, nil
}

// standInPrefix starts every stand-in: random per process, so an admitted
// pod cannot contain it.
var standInPrefix = func() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("reading random bytes: %v", err))
	}
	return "contrast-policy-stand-in-" + hex.EncodeToString(b) + "-"
}()

// policyAnnotations are replaced by stand-ins while the patch is computed.
var policyAnnotations = []string{policy.AnnotationInitData, policy.AnnotationLegacyPolicy}

// standIn replaces the policy annotations of the mutated pod by stand-ins
// and returns their values. The annotations carry the policy, 10 KiB and
// more: the JSON handling of the patch (marshal the pod, unmarshal it and
// the admitted pod, diff, marshal the patch) would pass over them four
// times, most of an admission's cost once the policy is cached. The patch
// is computed with the stand-ins, and the stand-ins in the marshaled patch
// are then replaced by the JSON strings of the real values; a patch that
// does not hold each stand-in exactly once is an error, never a partial
// patch.
func standIn(pod *corev1.Pod) (values []policyValue) {
	for _, k := range policyAnnotations {
		v, ok := pod.Annotations[k]
		if !ok {
			continue
		}
		if values == nil {
			pod.Annotations = maps.Clone(pod.Annotations)
		}
		values = append(values, policyValue{key: k, value: v})
		pod.Annotations[k] = standInPrefix + k
	}
	return values
}

// policyValue is a policy annotation whose value a stand-in replaced.
type policyValue struct{ key, value string }
