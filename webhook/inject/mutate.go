package inject

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

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
		return nil, nil, policyError(ctx, err, &out.Spec, &pod.Spec)
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
	orig := t.Spec.DeepCopy()
	if err := Template(&t.ObjectMeta, &t.Spec, m.Config); err != nil {
		return nil, err
	}
	if err := PinImages(ctx, &t.Spec, m.Images, kc); err != nil {
		return nil, err
	}
	res, err := policy.Generate(ctx, policy.GenerateInput{Workload: w, Images: m.Images, Keychain: kc, Legacy: m.Legacy})
	if err != nil {
		return nil, policyError(ctx, err, &t.Spec, orig)
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
// fault (unsupported feature, malformed pod, unresolvable image). The
// generator names fields of the final pod; the denial names them in the
// pod as submitted (orig), which has neither the injected containers nor
// the injected volume.
func policyError(ctx context.Context, err error, final, orig *corev1.PodSpec) error {
	field := "spec"
	var fe *policy.FieldError
	if errors.As(err, &fe) {
		field = submittedField(fe.Field, final, orig)
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("generating policy: %w", ctx.Err())
	case fe != nil && strings.HasSuffix(fe.Field, ".image") && !errors.Is(err, policy.ErrUnsupported) && !errors.Is(err, policy.ErrInvalidInput):
		return imageDenial(field, "", err)
	case errors.Is(err, policy.ErrUnsupported), errors.Is(err, policy.ErrInvalidInput):
		return &DenyError{Code: DenyPolicy, Field: field, Reason: "no policy can be generated", Err: err}
	}
	return fmt.Errorf("generating policy: %w", err)
}

// imageDenial denies a pod whose image at field cannot be resolved. The
// message quotes only an *images.Error, whose text is classified and never
// contains what a registry answered (a registry named in a pod may be an
// internal service); the text of any other error is withheld.
func imageDenial(field, image string, err error) *DenyError {
	var ie *images.Error
	if errors.As(err, &ie) {
		return &DenyError{Code: DenyImage, Field: field, Reason: "cannot be resolved", Err: ie}
	}
	reason := "cannot be resolved"
	if image != "" {
		reason = fmt.Sprintf("image %q cannot be resolved", image)
	}
	return &DenyError{Code: DenyImage, Field: field, Reason: reason, Err: withheld{err}}
}

// withheld keeps an error for errors.Is and errors.As without printing it.
type withheld struct{ err error }

func (withheld) Error() string   { return "the image source failed" }
func (w withheld) Unwrap() error { return w.err }

var (
	containerFieldRe = regexp.MustCompile(`^spec\.(initContainers|containers)\[([0-9]+)\](.*)$`)
	mountFieldRe     = regexp.MustCompile(`^\.volumeMounts\[([0-9]+)\](.*)$`)
	volumeFieldRe    = regexp.MustCompile(`^spec\.volumes\[([0-9]+)\](.*)$`)
)

// submittedField maps a field path of the final pod to the same field of the
// submitted pod: containers, volumes and volume mounts are found by name
// (injection prepends init containers, appends a volume and mounts, and
// strips those of an earlier injection). A field of an injected container is
// kept as it is.
func submittedField(field string, final, orig *corev1.PodSpec) string {
	if m := volumeFieldRe.FindStringSubmatch(field); m != nil {
		i, _ := strconv.Atoi(m[1])
		if i >= len(final.Volumes) {
			return field
		}
		j := slices.IndexFunc(orig.Volumes, func(v corev1.Volume) bool { return v.Name == final.Volumes[i].Name })
		if j < 0 {
			return field
		}
		return fmt.Sprintf("spec.volumes[%d]%s", j, m[2])
	}
	m := containerFieldRe.FindStringSubmatch(field)
	if m == nil {
		return field
	}
	list, origList := final.Containers, orig.Containers
	if m[1] == "initContainers" {
		list, origList = final.InitContainers, orig.InitContainers
	}
	i, _ := strconv.Atoi(m[2])
	if i >= len(list) {
		return field
	}
	j := slices.IndexFunc(origList, func(c corev1.Container) bool { return c.Name == list[i].Name })
	if j < 0 {
		return field
	}
	rest := m[3]
	if mm := mountFieldRe.FindStringSubmatch(rest); mm != nil {
		k, _ := strconv.Atoi(mm[1])
		if k < len(list[i].VolumeMounts) {
			fm := list[i].VolumeMounts[k]
			if l := slices.IndexFunc(origList[j].VolumeMounts, func(v corev1.VolumeMount) bool {
				return v.Name == fm.Name && v.MountPath == fm.MountPath
			}); l >= 0 {
				rest = fmt.Sprintf(".volumeMounts[%d]%s", l, mm[2])
			}
		}
	}
	return fmt.Sprintf("spec.%s[%d]%s", m[1], j, rest)
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
				return imageDenial(t.field, *t.image, err)
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
