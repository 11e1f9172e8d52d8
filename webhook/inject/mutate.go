package inject

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// Annotation size limits.
const (
	// MaxAnnotationBytes is the API server's limit for all annotations of
	// an object together, keys and values (256 KiB).
	MaxAnnotationBytes = apivalidation.TotalAnnotationSizeLimitB
	// MaxPolicyBudget is the largest budget for the policy annotation: the
	// API server's limit less 4 KiB for the annotations' keys and
	// Contrast's other annotations. Every pod is also checked against
	// MaxAnnotationBytes with all its annotations.
	MaxPolicyBudget = MaxAnnotationBytes - 4<<10
	// DefaultMaxPolicyBytes is the default budget for the policy
	// annotation; the rest is left to the pod's own annotations.
	DefaultMaxPolicyBytes = 192 << 10
)

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
	// Logger receives warnings about a pod's pull secrets (default none).
	Logger *slog.Logger
	// EnvSources reads the ConfigMaps an admitted pod references with
	// envFrom (webhook: through the API server). Without it, a pod with
	// envFrom is denied naming the field. MutateWorkload uses the
	// workload's EnvSources instead.
	EnvSources EnvSourceFunc
	// Policies caches generated policies (optional): the pods of one
	// controller, and the validating webhook's recomputation of a pod the
	// mutating webhook produced, then cost one generation. It is consulted
	// after the images were pinned with the pod's credentials.
	Policies *policy.Cache
}

// EnvSourceFunc returns the ConfigMaps of namespace with the given names
// (missing ones are left out). Errors must not contain the values.
type EnvSourceFunc func(ctx context.Context, namespace string, names []string) (*policy.EnvSources, error)

// envFromConfigMaps are the names of the ConfigMaps spec references with
// envFrom, sorted.
func envFromConfigMaps(spec *corev1.PodSpec) []string {
	var names []string
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil && !slices.Contains(names, ef.ConfigMapRef.Name) {
					names = append(names, ef.ConfigMapRef.Name)
				}
			}
		}
	}
	slices.Sort(names)
	return names
}

// MutatePod returns the Contrast pod for an admitted pod, with the policy
// computed over it. Errors wrapping ErrDenied are reasons to deny the pod.
//
// kc is the pod's pull secrets (nil if it has none). The pod's images are
// resolved with them and then the Source's own credentials
// (images.NewPodKeychain), the injected Initializer and proxy with the
// Source's own credentials only.
func (m *Mutator) MutatePod(ctx context.Context, pod *corev1.Pod, kc authn.Keychain) (*corev1.Pod, *policy.Result, error) {
	m.warnMalformed(pod.Namespace, kc)
	out, err := Inject(pod, m.Config)
	if err != nil {
		return nil, nil, err
	}
	in := policy.GenerateInput{Pod: out}
	if names := envFromConfigMaps(&out.Spec); len(names) > 0 && m.EnvSources != nil {
		if in.EnvSources, err = m.EnvSources(ctx, out.Namespace, names); err != nil {
			return nil, nil, fmt.Errorf("reading the ConfigMaps of envFrom: %w", err)
		}
	}
	res, err := m.pinAndSetPolicy(ctx, in, &out.ObjectMeta, &out.Spec, &pod.Spec, kc)
	if err != nil {
		return nil, nil, err
	}
	return out, res, nil
}

// MutateWorkload applies the same mutation to the pod template of a
// workload decoded from YAML (contrast generate), in place. kc is used as
// by MutatePod.
func (m *Mutator) MutateWorkload(ctx context.Context, w *policy.Workload, kc authn.Keychain) (*policy.Result, error) {
	m.warnMalformed(w.Namespace, kc)
	t := &w.Template
	orig := t.Spec.DeepCopy()
	if err := strip(&t.ObjectMeta, &t.Spec); err != nil {
		return nil, err
	}
	var tmpls claimTemplates
	st, isSet := w.Object.(*appsv1.StatefulSet)
	if isSet {
		for _, c := range st.Spec.VolumeClaimTemplates {
			tmpls = append(tmpls, c.Name)
		}
	}
	if err := template(&t.ObjectMeta, &t.Spec, m.Config, tmpls); err != nil {
		return nil, err
	}
	if isSet {
		if err := mutateClaimTemplates(t, st.Spec.VolumeClaimTemplates); err != nil {
			return nil, err
		}
	}
	return m.pinAndSetPolicy(ctx, policy.GenerateInput{Workload: w}, &t.ObjectMeta, &t.Spec, orig, kc)
}

// pinAndSetPolicy pins the images of spec, the injected pod (or template)
// of in, generates its policy and sets it on meta. orig is the spec as
// submitted, kc the pod's pull secrets (see MutatePod).
func (m *Mutator) pinAndSetPolicy(ctx context.Context, in policy.GenerateInput, meta *metav1.ObjectMeta, spec, orig *corev1.PodSpec, kc authn.Keychain) (*policy.Result, error) {
	podKC := images.NewPodKeychain(kc)
	pinned, err := PinImages(ctx, spec, m.Images, podKC)
	if err != nil {
		var de *DenyError
		if errors.As(err, &de) {
			// PinImages names fields of the injected spec
			de.Field = submittedField(de.Field, spec, orig)
		}
		return nil, withMalformed(err, kc)
	}
	in.Images = pinnedSource{Source: injectedOwnCredentials(m.Images, spec), imgs: pinned}
	in.Keychain = podKC
	in.Legacy = m.Legacy
	generate := policy.Generate
	if m.Policies != nil {
		generate = m.Policies.Generate
	}
	res, err := generate(ctx, in)
	if err != nil {
		return nil, withMalformed(policyError(ctx, err, spec, orig), kc)
	}
	if err := m.setPolicy(meta, res); err != nil {
		return nil, err
	}
	return res, nil
}

// malformed returns the pull secrets of kc that were skipped as malformed
// (see images.PullSecretKeychain).
func malformed(kc authn.Keychain) []string {
	if m, ok := kc.(interface{ Malformed() []string }); ok {
		return m.Malformed()
	}
	return nil
}

func (m *Mutator) warnMalformed(namespace string, kc authn.Keychain) {
	if names := malformed(kc); len(names) > 0 && m.Logger != nil {
		m.Logger.Warn("skipping malformed pull secrets", "namespace", namespace, "secrets", names)
	}
}

// withMalformed adds the names of skipped pull secrets to an image denial:
// they may be why the image cannot be pulled.
func withMalformed(err error, kc authn.Keychain) error {
	var de *DenyError
	names := malformed(kc)
	if len(names) == 0 || !errors.As(err, &de) || de.Code != DenyImage {
		return err
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = strconv.Quote(n)
	}
	de.Reason += fmt.Sprintf(" (malformed pull secrets were skipped: %s)", strings.Join(quoted, ", "))
	return err
}

// isInjected reports whether c is a container Contrast injects (check
// reserves the names).
func isInjected(c *corev1.Container) bool {
	return c.Name == InitializerName || c.Name == ProxyName
}

// ownCredentials resolves the images in refs, the pinned images of the
// injected containers, with the Source's own credentials: they are
// Contrast's images, which the pod's pull secrets have nothing to do with.
type ownCredentials struct {
	images.Source
	refs map[string]bool
}

func injectedOwnCredentials(src images.Source, spec *corev1.PodSpec) images.Source {
	refs := map[string]bool{}
	for i := range spec.InitContainers {
		if c := &spec.InitContainers[i]; isInjected(c) {
			refs[c.Image] = true
		}
	}
	if len(refs) == 0 {
		return src
	}
	return ownCredentials{Source: src, refs: refs}
}

// Resolve implements images.Source.
func (s ownCredentials) Resolve(ctx context.Context, image string, kc authn.Keychain) (*images.Image, error) {
	if s.refs[image] {
		kc = nil
	}
	return s.Source.Resolve(ctx, image, kc)
}

// Accounts implements images.Source.
func (s ownCredentials) Accounts(ctx context.Context, img *images.Image, kc authn.Keychain) (*images.Accounts, error) {
	if s.refs[img.Reference()] {
		kc = nil
	}
	return s.Source.Accounts(ctx, img, kc)
}

// pinnedSource answers the lookups of the references PinImages pinned with
// the images it resolved, so that each image of a pod is resolved once per
// request, and passes every other lookup on.
type pinnedSource struct {
	images.Source
	imgs map[string]*images.Image
}

// Resolve implements images.Source.
func (s pinnedSource) Resolve(ctx context.Context, image string, kc authn.Keychain) (*images.Image, error) {
	if img, ok := s.imgs[image]; ok {
		return img, nil
	}
	return s.Source.Resolve(ctx, image, kc)
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
	if err := checkAnnotationsSize(meta.Annotations, res.Annotations); err != nil {
		return err
	}
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	for k, v := range res.Annotations {
		meta.Annotations[k] = v
	}
	return nil
}

// checkAnnotationsSize denies a pod whose annotations, own merged with
// added, would exceed the API server's limit (which would refuse the pod
// with a less helpful message). The denial names annotations and their
// sizes, never values.
func checkAnnotationsSize(own, added map[string]string) error {
	size := func(k, v string) int { return len(k) + len(v) }
	total, addedTotal := 0, 0
	type entry struct {
		key  string
		size int
	}
	var others []entry
	for k, v := range added {
		total += size(k, v)
		addedTotal += size(k, v)
	}
	for k, v := range own {
		if _, replaced := added[k]; !replaced {
			total += size(k, v)
			others = append(others, entry{k, size(k, v)})
		}
	}
	if total <= MaxAnnotationBytes {
		return nil
	}
	slices.SortFunc(others, func(a, b entry) int {
		if a.size != b.size {
			return b.size - a.size
		}
		return strings.Compare(a.key, b.key)
	})
	var largest []string
	for _, e := range others[:min(3, len(others))] {
		largest = append(largest, fmt.Sprintf("%q (%d bytes)", e.key, e.size))
	}
	return deny(DenyPolicySize, "metadata.annotations",
		"the annotations would total %d bytes with the policy, over the API server's limit of %d bytes: the policy annotations take %d bytes, the pod's other annotations %d (largest: %s)",
		total, MaxAnnotationBytes, addedTotal, total-addedTotal, strings.Join(largest, ", "))
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
// The images of the containers Contrast injects (named InitializerName and
// ProxyName) are resolved with the Source's own credentials (no keychain),
// all others with kc. It returns the resolved images by pinned reference.
func PinImages(ctx context.Context, spec *corev1.PodSpec, src images.Source, kc authn.Keychain) (map[string]*images.Image, error) {
	type target struct {
		field string
		image *string
		kc    authn.Keychain
	}
	var targets []target
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		t := target{fmt.Sprintf("spec.initContainers[%d].image", i), &c.Image, kc}
		if isInjected(c) {
			t.kc = nil
		}
		targets = append(targets, t)
	}
	for i := range spec.Containers {
		targets = append(targets, target{fmt.Sprintf("spec.containers[%d].image", i), &spec.Containers[i].Image, kc})
	}
	// Every image is resolved (bounded by the source) and the first failure
	// by position is reported, so the denial does not depend on which
	// resolution failed first.
	resolved := make([]*images.Image, len(targets))
	errs := make([]error, len(targets))
	var g errgroup.Group
	for i, t := range targets {
		g.Go(func() error {
			if *t.image == "" {
				errs[i] = deny(DenyImage, t.field, "no image")
				return nil
			}
			img, err := src.Resolve(ctx, *t.image, t.kc)
			if err != nil {
				if ctx.Err() != nil {
					// the request was canceled or timed out: not the pod's fault
					errs[i] = fmt.Errorf("resolving %s: %w", t.field, ctx.Err())
					return nil
				}
				errs[i] = imageDenial(t.field, *t.image, err)
				return nil
			}
			resolved[i] = img
			return nil
		})
	}
	_ = g.Wait() // the goroutines report through errs
	if ctx.Err() != nil {
		return nil, fmt.Errorf("resolving images: %w", ctx.Err())
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	pinned := make(map[string]*images.Image, len(targets))
	for i, t := range targets {
		*t.image = resolved[i].Reference()
		pinned[*t.image] = resolved[i]
	}
	return pinned, nil
}
