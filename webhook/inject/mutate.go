package inject

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// DefaultMaxPolicyBytes is the default budget for the policy annotation.
// The API server refuses objects whose annotations exceed 256 KiB in total;
// the rest is left to the pod's own annotations.
const DefaultMaxPolicyBytes = 192 << 10

// Mutator injects, pins images and computes the policy over the final pod.
type Mutator struct {
	// Config is the injection configuration.
	Config Config
	// Images resolves images. Required.
	Images images.Source
	// Legacy selects the legacy policy annotation instead of initdata.
	Legacy bool
	// MaxPolicyBytes is the budget of the policy annotation (default
	// DefaultMaxPolicyBytes).
	MaxPolicyBytes int
}

// MutatePod returns the Contrast pod for an admitted pod, with the policy
// computed over it. Errors wrapping ErrDenied are reasons to deny the pod.
func (m *Mutator) MutatePod(ctx context.Context, pod *corev1.Pod, kc authn.Keychain) (*corev1.Pod, *policy.Result, error) {
	out, err := Inject(pod, m.Config)
	if err != nil {
		return nil, nil, err
	}
	if err := PinImages(ctx, &out.Spec, m.Images, kc); err != nil {
		return nil, nil, err
	}
	res, err := policy.Generate(ctx, policy.GenerateInput{Pod: out, Images: m.Images, Keychain: kc, Legacy: m.Legacy})
	if err != nil {
		return nil, nil, policyError(ctx, err)
	}
	if err := m.setPolicy(&out.ObjectMeta, res); err != nil {
		return nil, nil, err
	}
	return out, res, nil
}

// MutateWorkload applies the same mutation to the pod template of a
// workload decoded from YAML (contrast generate), in place.
func (m *Mutator) MutateWorkload(ctx context.Context, w *policy.Workload, kc authn.Keychain) (*policy.Result, error) {
	t := &w.Template
	if err := Template(&t.ObjectMeta, &t.Spec, m.Config); err != nil {
		return nil, err
	}
	if err := PinImages(ctx, &t.Spec, m.Images, kc); err != nil {
		return nil, err
	}
	res, err := policy.Generate(ctx, policy.GenerateInput{Workload: w, Images: m.Images, Keychain: kc, Legacy: m.Legacy})
	if err != nil {
		return nil, policyError(ctx, err)
	}
	if err := m.setPolicy(&t.ObjectMeta, res); err != nil {
		return nil, err
	}
	return res, nil
}

func (m *Mutator) setPolicy(meta *metav1.ObjectMeta, res *policy.Result) error {
	budget := m.MaxPolicyBytes
	if budget <= 0 {
		budget = DefaultMaxPolicyBytes
	}
	for _, k := range []string{policy.AnnotationInitData, policy.AnnotationLegacyPolicy} {
		if v, ok := res.Annotations[k]; ok && len(v) > budget {
			return deny(DenyPolicySize, "metadata.annotations["+k+"]", "policy annotation of %d bytes exceeds the budget of %d bytes", len(v), budget)
		}
	}
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	for k, v := range res.Annotations {
		meta.Annotations[k] = v
	}
	return nil
}

// policyError turns a generator error into a denial where the pod is at
// fault (unsupported feature, malformed pod, unresolvable image).
func policyError(ctx context.Context, err error) error {
	var ie *images.Error
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("generating policy: %w", ctx.Err())
	case errors.As(err, &ie):
		return &DenyError{Code: DenyImage, Field: "spec", Reason: "image cannot be resolved", Err: err}
	case errors.Is(err, policy.ErrUnsupported), errors.Is(err, policy.ErrInvalidInput):
		return &DenyError{Code: DenyPolicy, Field: "spec", Reason: "no policy can be generated", Err: err}
	}
	return fmt.Errorf("generating policy: %w", err)
}

// PinImages resolves every image of spec and rewrites it to name@digest.
func PinImages(ctx context.Context, spec *corev1.PodSpec, src images.Source, kc authn.Keychain) error {
	type target struct {
		field string
		image *string
	}
	var targets []target
	for i := range spec.InitContainers {
		targets = append(targets, target{fmt.Sprintf("spec.initContainers[%d].image", i), &spec.InitContainers[i].Image})
	}
	for i := range spec.Containers {
		targets = append(targets, target{fmt.Sprintf("spec.containers[%d].image", i), &spec.Containers[i].Image})
	}
	resolved := make([]string, len(targets))
	g, gctx := errgroup.WithContext(ctx)
	for i, t := range targets {
		g.Go(func() error {
			if *t.image == "" {
				return deny(DenyImage, t.field, "no image")
			}
			img, err := src.Resolve(gctx, *t.image, kc)
			if err != nil {
				if ctx.Err() != nil {
					// the request was canceled or timed out: not the pod's fault
					return fmt.Errorf("resolving %s: %w", t.field, ctx.Err())
				}
				var ie *images.Error
				if errors.As(err, &ie) {
					return &DenyError{Code: DenyImage, Field: t.field, Reason: "cannot be resolved", Err: err}
				}
				return &DenyError{Code: DenyImage, Field: t.field, Reason: fmt.Sprintf("image %q cannot be resolved", *t.image), Err: err}
			}
			resolved[i] = img.Reference()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, t := range targets {
		*t.image = resolved[i]
	}
	return nil
}
