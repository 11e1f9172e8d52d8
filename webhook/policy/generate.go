// Package policy computes the Kata agent policy of a pod: the Rego rules of
// this project with the pod's policy data, wrapped in initdata, and the
// digest Kata puts into HOST_DATA (SNP) or MRCONFIGID (TDX).
//
// Generation is a pure function of the pod template, its namespace, the
// image configurations and the ConfigMaps it references with envFrom: the
// same workload yields byte-identical output whether it is read from YAML or
// from the pod the API server admitted. The YAML side passes the ConfigMaps
// found in the input documents (Workload.EnvSources, filled by
// DecodeWorkloads from the same stream, or DecodeEnvSources for other
// files) and the namespace of the document or a default (Workload.Namespace);
// the webhook passes the admission request's namespace (Pod.Namespace) and
// the ConfigMaps as the API server has them (GenerateInput.EnvSources).
package policy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	pathpkg "path"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/contrast-cc/contrast/webhook/images"
)

// Annotations read by the generator on the pod template.
const (
	// AnnotationDenyLogs, set to "true", denies ReadStreamRequest (container
	// logs through the runtime).
	AnnotationDenyLogs = "contrast.cc/deny-logs"
)

// GenerateInput is the input of Generate. Exactly one of Workload and Pod is set.
type GenerateInput struct {
	// Workload is a decoded workload (YAML side, contrast generate).
	Workload *Workload
	// Pod is a pod as admitted by the API server (webhook side). It must be
	// the final pod, after any injection.
	Pod *corev1.Pod
	// Images resolves the images of the pod. Required.
	Images images.Source
	// Keychain authenticates to registries (pull secrets of the pod and its
	// service account). Optional.
	Keychain authn.Keychain
	// Legacy selects the io.katacontainers.config.agent.policy annotation
	// instead of initdata.
	Legacy bool
	// EnvSources are the ConfigMaps the pod references with envFrom
	// (webhook: read through the API server at admission). For a Workload
	// it replaces Workload.EnvSources if set. envFrom of a ConfigMap that is
	// not here is refused (optional ones bring no variables).
	EnvSources *EnvSources
}

// Result is the generated policy.
type Result struct {
	// Rego is the complete policy text (rules and policy_data).
	Rego string
	// Data is the policy data in the Rego text.
	Data *Data
	// InitData is the initdata TOML (empty in legacy mode).
	InitData []byte
	// Annotations are the pod annotations that carry the policy.
	Annotations map[string]string
	// Digest is the SHA-256 digest Kata measures (32 bytes).
	Digest []byte
	// HostData is the SNP HOST_DATA value (32 bytes).
	HostData []byte
	// MRConfigID is the TDX MRCONFIGID value (48 bytes, zero-padded).
	MRConfigID []byte
	// Kind is the workload kind the pod name pattern was derived from (for
	// an admitted pod: of its controller, e.g. CronJob for a scheduled Job's pod).
	Kind string
}

// Generate computes the policy of a workload or an admitted pod.
func Generate(ctx context.Context, in GenerateInput) (*Result, error) {
	if in.Images == nil {
		return nil, fmt.Errorf("%w: no image source", ErrInvalidInput)
	}
	p, err := prepare(in)
	if err != nil {
		return nil, err
	}
	return p.generate(ctx, in.Images, in.Keychain, in.Legacy)
}

// prepared is the input of a generation after canonicalisation: everything
// the policy is computed from except the images (see Cache for the key
// derived from it).
type prepared struct {
	// pod: the input was an admitted pod, not a workload.
	pod       bool
	tmpl      corev1.PodTemplateSpec
	orig      origins
	ident     podIdentity
	kind      string
	namespace string
	sources   *EnvSources
}

// prepare copies the pod template of in, derives the pod's identity and
// canonicalises the template.
func prepare(in GenerateInput) (*prepared, error) {
	p := &prepared{}
	switch {
	case in.Workload != nil && in.Pod == nil:
		p.tmpl = *in.Workload.Template.DeepCopy()
		if st, ok := in.Workload.Object.(*appsv1.StatefulSet); ok {
			addClaimVolumes(&p.tmpl.Spec, st)
		}
		p.namespace = in.Workload.Namespace
		p.sources = in.Workload.EnvSources
		meta := &podMeta{name: p.tmpl.Name, generateName: p.tmpl.GenerateName}
		p.ident = identityForWorkload(in.Workload.Kind, in.Workload.Name, meta)
		p.kind = effectiveKind(in.Workload.Kind, in.Workload.Name)
	case in.Pod != nil && in.Workload == nil:
		pod := in.Pod.DeepCopy()
		p.pod = true
		p.tmpl = corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}
		p.namespace = pod.Namespace
		p.ident, p.kind = identityForPod(pod)
		if p.kind == KindStatefulSet && p.tmpl.Spec.Hostname == pod.Name {
			// the StatefulSet controller sets hostname to the pod name,
			// which is what an empty hostname means
			p.tmpl.Spec.Hostname = ""
		}
	default:
		return nil, fmt.Errorf("%w: exactly one of Workload and Pod must be set", ErrInvalidInput)
	}
	if in.EnvSources != nil {
		p.sources = in.EnvSources
	}
	p.orig = canonicalize(&p.tmpl)
	return p, nil
}

// generate computes the policy of p with the images of src.
func (p *prepared) generate(ctx context.Context, src images.Source, kc authn.Keychain, legacy bool) (*Result, error) {
	b := &builder{t: &p.tmpl, orig: p.orig, namespace: p.namespace, sources: p.sources}
	data, err := b.build(ctx, p.ident, src, kc)
	if err != nil {
		return nil, err
	}
	res, err := render(data, legacy)
	var long *longLineError
	if errors.As(err, &long) {
		return nil, fieldErr(b.locate(long.value), ErrUnsupported,
			"the value is too long: line %d of the policy would be %d characters long (limit %d)", long.line, long.length, MaxLineLength)
	}
	if err != nil {
		return nil, err
	}
	res.Kind = p.kind
	return res, nil
}

// addClaimVolumes adds the volumes of a StatefulSet's claim templates to its
// pod template as the StatefulSet controller does for every pod it creates:
// one persistentVolumeClaim volume per template, named after it, in front of
// the template's own volumes, replacing one of the same name. The YAML side
// thus sees the volumes the webhook sees on the admitted pod, and both give
// the same reason for them.
func addClaimVolumes(spec *corev1.PodSpec, st *appsv1.StatefulSet) {
	if len(st.Spec.VolumeClaimTemplates) == 0 {
		return
	}
	var volumes []corev1.Volume
	claims := map[string]bool{}
	for _, c := range st.Spec.VolumeClaimTemplates {
		claims[c.Name] = true
		volumes = append(volumes, corev1.Volume{Name: c.Name, VolumeSource: corev1.VolumeSource{
			// the controller names the claim <template>-<set>-<ordinal>;
			// the ordinal of a pod is not known here, and the name reaches
			// no agent request
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name + "-" + st.Name},
		}})
	}
	for _, v := range spec.Volumes {
		if !claims[v.Name] {
			volumes = append(volumes, v)
		}
	}
	spec.Volumes = volumes
}

// origins maps the indices of the canonical pod back to the input pod, so
// errors name the input's fields.
type origins struct {
	// volumes[i] is the input index of canonical volume i.
	volumes []int
	// mounts[path][j] is the input index of canonical volume mount j of
	// the container at path (spec.containers[0], ...).
	mounts map[string][]int
}

// canonicalize removes what the API server and controllers add to a pod and
// applies the defaults the generator relies on, so both sides agree.
func canonicalize(t *corev1.PodTemplateSpec) origins {
	for _, l := range controllerLabels {
		delete(t.Labels, l)
	}
	spec := &t.Spec
	// The ServiceAccount admission plugin adds a projected token volume
	// kube-api-access-<random> and mounts it in every container. The policy
	// allows the token mount unless automounting is disabled in the pod spec.
	var tokenVolumes []string
	orig := origins{mounts: map[string][]int{}}
	var volumes []corev1.Volume
	for i, v := range spec.Volumes {
		if isServiceAccountTokenVolume(v) {
			tokenVolumes = append(tokenVolumes, v.Name)
			continue
		}
		volumes = append(volumes, v)
		orig.volumes = append(orig.volumes, i)
	}
	spec.Volumes = volumes
	stripMounts := func(field string, cs []corev1.Container) {
		for i := range cs {
			var mounts []corev1.VolumeMount
			var idx []int
			for j, m := range cs[i].VolumeMounts {
				if !slices.Contains(tokenVolumes, m.Name) {
					mounts = append(mounts, m)
					idx = append(idx, j)
				}
			}
			cs[i].VolumeMounts = mounts
			orig.mounts[index(field, i)] = idx
		}
	}
	stripMounts("spec.containers", spec.Containers)
	stripMounts("spec.initContainers", spec.InitContainers)
	if spec.ServiceAccountName == "" {
		spec.ServiceAccountName = spec.DeprecatedServiceAccount
	}
	if spec.ServiceAccountName == "" {
		spec.ServiceAccountName = "default"
	}
	return orig
}

func isServiceAccountTokenVolume(v corev1.Volume) bool {
	if !strings.HasPrefix(v.Name, "kube-api-access-") || v.Projected == nil {
		return false
	}
	for _, s := range v.Projected.Sources {
		if s.ServiceAccountToken != nil && s.ServiceAccountToken.Path == "token" {
			return true
		}
	}
	return false
}

// container is a container of the pod with its kind.
type container struct {
	c    *corev1.Container
	kind string
	// path is the container's field path in the input pod, e.g.
	// spec.initContainers[1].
	path string
	// mounts maps the indices of c.VolumeMounts to the input's.
	mounts []int
}

// builder builds the policy data of one canonical pod template.
type builder struct {
	t *corev1.PodTemplateSpec
	// namespace is the pod's namespace, "" if unknown.
	namespace string
	// nameRegex matches the pod's name.
	nameRegex string
	// sources are the ConfigMaps available to envFrom (nil: none).
	sources *EnvSources
	orig    origins
	cs      []container
	imgs    []*images.Image
}

func (b *builder) build(ctx context.Context, ident podIdentity, src images.Source, kc authn.Keychain) (*Data, error) {
	t := b.t
	spec := &t.Spec
	b.nameRegex = ident.nameRegex
	if err := checkPodFeatures(spec, b.orig); err != nil {
		return nil, err
	}
	var cs []container
	for i := range spec.InitContainers {
		k := "init"
		if p := spec.InitContainers[i].RestartPolicy; p != nil && *p == corev1.ContainerRestartPolicyAlways {
			k = "sidecar"
		}
		path := index("spec.initContainers", i)
		cs = append(cs, container{&spec.InitContainers[i], k, path, b.orig.mounts[path]})
	}
	for i := range spec.Containers {
		path := index("spec.containers", i)
		cs = append(cs, container{&spec.Containers[i], "app", path, b.orig.mounts[path]})
	}
	b.cs = cs
	if len(spec.Containers) == 0 {
		return nil, fieldErr("spec.containers", ErrInvalidInput, "pod has no containers")
	}
	seen := map[string]bool{}
	for _, c := range cs {
		if seen[c.c.Name] {
			return nil, fieldErr(c.path+".name", ErrInvalidInput, "duplicate container name %q", c.c.Name)
		}
		seen[c.c.Name] = true
	}

	// Resolve the images concurrently (the source bounds concurrency). Every
	// image is resolved and the first failure by position is reported, so
	// the error does not depend on which resolution failed first.
	imgs := make([]*images.Image, len(cs))
	accts := make([]*images.Accounts, len(cs))
	errs := make([]error, len(cs))
	var g errgroup.Group
	for i, c := range cs {
		g.Go(func() error {
			img, err := src.Resolve(ctx, c.c.Image, kc)
			if err != nil {
				errs[i] = &FieldError{Field: c.path + ".image", Err: err}
				return nil
			}
			imgs[i] = img
			if needsAccounts(c.c, spec, img) {
				a, err := src.Accounts(ctx, img, kc)
				if err != nil {
					errs[i] = &FieldError{Field: c.path + ".image", Err: err}
					return nil
				}
				accts[i] = a
			}
			return nil
		})
	}
	_ = g.Wait() // the goroutines report through errs
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	b.imgs = imgs

	sysctls := map[string]string{
		"net.ipv4.ip_unprivileged_port_start": "0",
		"net.ipv4.ping_group_range":           "0 2147483647",
	}
	if sc := spec.SecurityContext; sc != nil {
		for _, s := range sc.Sysctls {
			sysctls[s.Name] = s.Value
		}
	}
	shareProcessNS := spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace
	data := &Data{
		Pod: PodData{
			NameRegex:         ident.nameRegex,
			NamespaceRegex:    namespaceRegex(b.namespace),
			Hostname:          spec.Hostname,
			ShareProcessNS:    shareProcessNS,
			Sysctls:           sysctls,
			AllowLogs:         t.Annotations[AnnotationDenyLogs] != "true",
			ServiceEnv:        serviceEnv(spec),
			ServiceAccountTok: automount(spec),
			KataAnnotations:   kataAnnotations(t.Annotations),
		},
		Common: commonData(),
	}
	pause, err := pauseContainer(spec)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(cs, func(c container) bool { return IsPrivileged(c.c) }) {
		// The kubelet marks the sandbox privileged when any container is;
		// containerd 2 then mounts the sandbox's sysfs read-write
		// (containerd PR #11271), older versions keep it read-only.
		pause.Mounts = []MountSpec{writableSysfs()}
	}
	data.Containers = append(data.Containers, pause)
	for i, c := range cs {
		cd, err := b.containerData(c, imgs[i], accts[i])
		if err != nil {
			return nil, err
		}
		data.Containers = append(data.Containers, cd)
	}
	return data, nil
}

// namespaceRegex binds the namespace; a workload whose YAML names none (and
// no default was given) may run in any namespace.
func namespaceRegex(ns string) string {
	if ns == "" {
		return "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
	}
	return "^" + regexp.QuoteMeta(ns) + "$"
}

// kataAnnotations are the io.katacontainers.config.* keys of a pod
// template, without the policy annotations (the webhook may see them on a
// pod it admits again; the rules allow them for every pod).
func kataAnnotations(anno map[string]string) []string {
	keys := []string{}
	for k := range anno {
		if strings.HasPrefix(k, "io.katacontainers.config.") && k != AnnotationInitData && k != AnnotationLegacyPolicy {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func serviceEnv(spec *corev1.PodSpec) string {
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		return "all"
	}
	return "kubernetes"
}

func automount(spec *corev1.PodSpec) bool {
	return spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken
}

func checkPodFeatures(spec *corev1.PodSpec, orig origins) error {
	switch {
	case spec.HostNetwork:
		return fieldErr("spec.hostNetwork", ErrUnsupported, "the host's network namespace cannot be confidential")
	case spec.HostPID:
		return fieldErr("spec.hostPID", ErrUnsupported, "the host's PID namespace cannot be confidential")
	case spec.HostIPC:
		return fieldErr("spec.hostIPC", ErrUnsupported, "the host's IPC namespace cannot be confidential")
	case spec.HostUsers != nil && !*spec.HostUsers:
		return fieldErr("spec.hostUsers", ErrUnsupported, "user namespaces (hostUsers: false)")
	case len(spec.EphemeralContainers) > 0:
		return fieldErr("spec.ephemeralContainers", ErrUnsupported, "ephemeral containers")
	case spec.SetHostnameAsFQDN != nil && *spec.SetHostnameAsFQDN:
		return fieldErr("spec.setHostnameAsFQDN", ErrUnsupported, "the cluster domain is not known before the pod runs")
	}
	for i, v := range spec.Volumes {
		field := index("spec.volumes", orig.volumes[i])
		switch {
		case v.EmptyDir != nil, v.ConfigMap != nil, v.Secret != nil, v.Projected != nil, v.DownwardAPI != nil:
		case v.PersistentVolumeClaim != nil, v.Ephemeral != nil:
			// a block device (volumeDevices) or, named in
			// AnnotationHostSharedVolumes, a host-shared mount
		case v.HostPath != nil:
			return fieldErr(field+".hostPath", ErrUnsupported, "volume %q: hostPath volumes are refused (host-controlled content)", v.Name)
		default:
			if src := volumeSourceField(&v.VolumeSource); src != "" {
				field += "." + src
			}
			return fieldErr(field, ErrUnsupported, "volume %q: only emptyDir, configMap, secret, projected, downwardAPI, persistentVolumeClaim and ephemeral volumes are supported", v.Name)
		}
	}
	return nil
}

// volumeSourceField is the JSON name of the source set in v (e.g.
// persistentVolumeClaim), or "" if none is.
func volumeSourceField(v *corev1.VolumeSource) string {
	rv := reflect.ValueOf(v).Elem()
	for i := range rv.NumField() {
		if f := rv.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			name, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("json"), ",")
			return name
		}
	}
	return ""
}

const pausePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// pauseContainer is the sandbox container. Its user is the pod's
// runAsUser/runAsGroup, else the pause image's 65535:65535. With only
// runAsUser the group is 0: the runtime finds no /etc/passwd entry in the
// pause image.
func pauseContainer(spec *corev1.PodSpec) (ContainerData, error) {
	uid, gid := int64(65535), int64(65535)
	var supplemental []int64
	if sc := spec.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid, gid = *sc.RunAsUser, 0
		}
		if sc.RunAsGroup != nil {
			gid = *sc.RunAsGroup
		}
		supplemental = append(supplemental, sc.SupplementalGroups...)
		if sc.FSGroup != nil {
			supplemental = append(supplemental, *sc.FSGroup)
		}
	}
	var profile *corev1.SeccompProfile
	if sc := spec.SecurityContext; sc != nil {
		profile = sc.SeccompProfile
	}
	seccomp, err := podSeccomp(profile, "spec.securityContext.seccompProfile.type", false)
	if err != nil {
		return ContainerData{}, err
	}
	return ContainerData{
		Name:           "",
		Kind:           "sandbox",
		ImageRefs:      []string{},
		Args:           []string{"/pause"},
		Env:            []EnvSpec{{Name: "PATH", Kind: "exact", Value: pausePath, Required: false}},
		Cwd:            "/",
		User:           UserData{UID: uid, GID: gid, AdditionalGIDs: sortedGIDs(append(supplemental, gid))},
		Capabilities:   defaultCapabilities,
		NoNewPrivs:     true,
		ReadOnlyRoot:   true,
		Mounts:         []MountSpec{},
		VolumeStorages: []StorageSpec{},
		ExecCommands:   [][]string{},
		Seccomp:        seccomp,
	}, nil
}

func sortedGIDs(g []int64) []int64 {
	g = slices.Clone(g)
	slices.Sort(g)
	return slices.Compact(g)
}

func needsAccounts(c *corev1.Container, spec *corev1.PodSpec, img *images.Image) bool {
	runAsUser, _ := effectiveRunAs(c, spec)
	if runAsUser != nil {
		return false
	}
	user, group, _ := strings.Cut(img.Config.User, ":")
	return (user != "" && !isNumeric(user)) || (group != "" && !isNumeric(group))
}

func isNumeric(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

func effectiveRunAs(c *corev1.Container, spec *corev1.PodSpec) (user, group *int64) {
	if sc := spec.SecurityContext; sc != nil {
		user, group = sc.RunAsUser, sc.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			user = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			group = sc.RunAsGroup
		}
	}
	return user, group
}

func resolveUser(ct container, spec *corev1.PodSpec, img *images.Image, acct *images.Accounts) (UserData, error) {
	c, field := ct.c, ct.path+".image"
	runUser, runGroup := effectiveRunAs(c, spec)
	var uid, gid int64
	var userName string
	var extra []int64
	if runUser != nil {
		uid = *runUser
	} else if img.Config.User != "" {
		u, g, hasGroup := strings.Cut(img.Config.User, ":")
		if isNumeric(u) {
			uid, _ = strconv.ParseInt(u, 10, 64)
		} else {
			if acct == nil {
				return UserData{}, fieldErr(field, ErrInvalidInput, "image user %q needs the image's /etc/passwd", u)
			}
			pw, ok := acct.LookupUser(u)
			if !ok {
				return UserData{}, fieldErr(field, ErrInvalidInput, "image user %q not found in the image's /etc/passwd", u)
			}
			uid, gid, userName = pw.UID, pw.GID, u
		}
		if hasGroup {
			if isNumeric(g) {
				gid, _ = strconv.ParseInt(g, 10, 64)
			} else {
				if acct == nil {
					return UserData{}, fieldErr(field, ErrInvalidInput, "image group %q needs the image's /etc/group", g)
				}
				gr, ok := acct.LookupGroup(g)
				if !ok {
					return UserData{}, fieldErr(field, ErrInvalidInput, "image group %q not found in the image's /etc/group", g)
				}
				gid = gr.GID
			}
		}
		if userName != "" {
			extra = acct.GroupsOf(userName)
		}
	}
	if runGroup != nil {
		gid = *runGroup
	}
	gids := append([]int64{gid}, extra...)
	if sc := spec.SecurityContext; sc != nil {
		gids = append(gids, sc.SupplementalGroups...)
		if sc.FSGroup != nil {
			gids = append(gids, *sc.FSGroup)
		}
	}
	return UserData{UID: uid, GID: gid, AdditionalGIDs: sortedGIDs(gids)}, nil
}

func (b *builder) containerData(ct container, img *images.Image, acct *images.Accounts) (ContainerData, error) {
	t := b.t
	c, spec := ct.c, &t.Spec
	user, err := resolveUser(ct, spec, img, acct)
	if err != nil {
		return ContainerData{}, err
	}
	env, vars, err := b.buildEnv(ct, img)
	if err != nil {
		return ContainerData{}, err
	}
	args, templates := buildArgs(c, img, serviceLinkVars{vars: vars, mode: serviceEnv(spec)})
	if len(args) == 0 {
		return ContainerData{}, fieldErr(ct.path+".command", ErrInvalidInput, "no command: neither the pod nor the image defines one")
	}
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = img.Config.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	sc := c.SecurityContext
	privileged := IsPrivileged(c)
	if privileged && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		// the API server rejects this combination too
		return ContainerData{}, fieldErr(ct.path+".securityContext.allowPrivilegeEscalation", ErrInvalidInput, "false contradicts privileged: true")
	}
	mounts, storages, err := b.buildMounts(ct, img, vars)
	if err != nil {
		return ContainerData{}, err
	}
	devices, err := b.buildDevices(ct)
	if err != nil {
		return ContainerData{}, err
	}
	caps := capabilities(sc)
	if privileged {
		caps, mounts = privilegedContainer(mounts)
	}
	seccomp, err := seccompProfile(ct, spec, privileged)
	if err != nil {
		return ContainerData{}, err
	}
	var execs [][]string
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		if p != nil && p.Exec != nil && len(p.Exec.Command) > 0 {
			execs = append(execs, slices.Clone(p.Exec.Command))
		}
	}
	// lifecycle hooks run through the same exec path as probes
	if l := c.Lifecycle; l != nil {
		for _, h := range []*corev1.LifecycleHandler{l.PostStart, l.PreStop} {
			if h != nil && h.Exec != nil && len(h.Exec.Command) > 0 {
				execs = append(execs, slices.Clone(h.Exec.Command))
			}
		}
	}
	if execs == nil {
		execs = [][]string{}
	}
	refs, err := imageRefs(c.Image, img)
	if err != nil {
		return ContainerData{}, fieldErr(ct.path+".image", ErrInvalidInput, "image %q: %v", c.Image, err)
	}
	return ContainerData{
		Name:           c.Name,
		Kind:           ct.kind,
		ImageRefs:      refs,
		Args:           args,
		ArgTemplates:   templates,
		Env:            env,
		Cwd:            cwd,
		User:           user,
		Capabilities:   caps,
		NoNewPrivs:     sc != nil && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation,
		Privileged:     privileged,
		ReadOnlyRoot:   sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem,
		TTY:            c.TTY,
		Mounts:         mounts,
		VolumeStorages: storages,
		Devices:        devices,
		ExecCommands:   execs,
		Seccomp:        seccomp,
	}, nil
}

// Seccomp profiles of ContainerData.
const (
	seccompUnconfined     = "unconfined"
	seccompRuntimeDefault = "runtime_default"
)

// seccompProfile is the profile containerd gives a container: the
// container's seccompProfile, else the pod's, else Unconfined (the kubelet's
// default); none for privileged containers. Localhost profiles are files on
// the host, unknown at generation.
func seccompProfile(ct container, spec *corev1.PodSpec, privileged bool) (string, error) {
	var p *corev1.SeccompProfile
	field := ""
	if sc := spec.SecurityContext; sc != nil && sc.SeccompProfile != nil {
		p, field = sc.SeccompProfile, "spec.securityContext.seccompProfile.type"
	}
	if sc := ct.c.SecurityContext; sc != nil && sc.SeccompProfile != nil {
		p, field = sc.SeccompProfile, ct.path+".securityContext.seccompProfile.type"
	}
	return podSeccomp(p, field, privileged)
}

func podSeccomp(p *corev1.SeccompProfile, field string, privileged bool) (string, error) {
	switch {
	case privileged, p == nil, p.Type == corev1.SeccompProfileTypeUnconfined:
		return seccompUnconfined, nil
	case p.Type == corev1.SeccompProfileTypeRuntimeDefault:
		return seccompRuntimeDefault, nil
	default:
		return "", fieldErr(field, ErrUnsupported, "seccomp profile type %q: only RuntimeDefault and Unconfined are known before the pod runs", p.Type)
	}
}

// IsPrivileged reports whether c asks to run as a privileged container.
func IsPrivileged(c *corev1.Container) bool {
	sc := c.SecurityContext
	return sc != nil && sc.Privileged != nil && *sc.Privileged
}

// privilegedContainer returns the capabilities and mounts of a privileged
// container as containerd's CRI plugin creates it for a runtime with
// privileged_without_host_devices (Kata with confidential guests):
// oci.WithPrivileged gives all capabilities of the (host) process in the
// bounding, effective and permitted sets, regardless of add/drop; it clears
// the masked and read-only paths (the rules skip that check for privileged
// containers) and turns the "ro" of the sysfs and cgroup mounts into "rw".
// No host devices are added. Seccomp, AppArmor and SELinux are unconfined,
// which the rules do not restrict anyway.
func privilegedContainer(mounts []MountSpec) ([]string, []MountSpec) {
	mounts = append(slices.Clone(mounts), writableSysfs(), MountSpec{
		Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "^cgroup$",
		Options:         []string{"nosuid", "noexec", "nodev", "relatime"},
		OptionalOptions: []string{"rw", "nsdelegate", "memory_recursiveprot"},
	})
	sort.SliceStable(mounts, func(i, j int) bool { return mounts[i].Destination < mounts[j].Destination })
	return slices.Clone(allCapabilities), mounts
}

// writableSysfs is the sysfs mount of a privileged container (and of the
// sandbox of a pod with one) in addition to the read-only one every
// container may have: containerd replaces "ro" with "rw" (or, in old
// versions, drops "ro").
func writableSysfs() MountSpec {
	return MountSpec{
		Destination: "/sys", Type: "sysfs", Source: "^sysfs$",
		Options: []string{"nosuid", "noexec", "nodev"}, OptionalOptions: []string{"rw"},
	}
}

// imageRefs are the storage sources the guest may pull: repository@digest in
// the spellings containerd may use.
func imageRefs(podImage string, img *images.Image) ([]string, error) {
	ref, err := name.ParseReference(podImage)
	if err != nil {
		return nil, err
	}
	repo := ref.Context()
	set := map[string]bool{img.Reference(): true}
	full := repo.RegistryStr() + "/" + repo.RepositoryStr()
	if repo.RegistryStr() == name.DefaultRegistry {
		full = "docker.io/" + repo.RepositoryStr()
	}
	set[full+"@"+img.Digest] = true
	return slices.Sorted(maps.Keys(set)), nil
}

func capabilities(sc *corev1.SecurityContext) []string {
	caps := map[string]bool{}
	for _, c := range defaultCapabilities {
		caps[c] = true
	}
	if sc != nil && sc.Capabilities != nil {
		for _, d := range sc.Capabilities.Drop {
			if strings.EqualFold(string(d), "ALL") {
				clear(caps)
				continue
			}
			delete(caps, capName(d))
		}
		for _, a := range sc.Capabilities.Add {
			if strings.EqualFold(string(a), "ALL") {
				for _, c := range allCapabilities {
					caps[c] = true
				}
				continue
			}
			caps[capName(a)] = true
		}
	}
	return slices.Sorted(maps.Keys(caps))
}

func capName(c corev1.Capability) string {
	s := strings.ToUpper(string(c))
	if !strings.HasPrefix(s, "CAP_") {
		s = "CAP_" + s
	}
	return s
}

// ---------------------------------------------------------------- args

var varRefRe = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// podVar is a variable the pod defines for a container (env, envFrom), as
// the kubelet's $(VAR) expansion sees it. Image variables are not among
// them: the kubelet expands with the pod's variables and, in command and
// args, the service links (serviceLinkVars), never with the image's.
type podVar struct {
	// value is the value fixed at generation; nil if it is known only at
	// run time.
	value *string
	// spec is the variable's expected value (kind and pattern).
	spec EnvSpec
}

// expandRef is one piece of a string in which $(VAR) references were
// expanded: a literal, or a reference to a pod variable known only at run
// time.
type expandRef struct {
	text string
	// runtime is the name of the referenced variable, "" for a literal.
	runtime string
}

// expandParts implements the kubelet's $(VAR) expansion: "$$" is "$", a
// reference to a variable the pod defines with a fixed value is replaced by
// it, one to a variable known only at run time is returned as a reference,
// anything else is kept as written. Adjacent literals are joined.
func expandParts(s string, vars map[string]podVar) []expandRef {
	return expandPartsWith(s, func(n string) (podVar, bool) {
		v, ok := vars[n]
		return v, ok
	})
}

// expandPartsWith is expandParts with a lookup of the variables.
func expandPartsWith(s string, lookup func(string) (podVar, bool)) []expandRef {
	var out []expandRef
	lit := func(t string) {
		if t == "" {
			return
		}
		if n := len(out); n > 0 && out[n-1].runtime == "" {
			out[n-1].text += t
			return
		}
		out = append(out, expandRef{text: t})
	}
	last := 0
	for _, m := range varRefRe.FindAllStringSubmatchIndex(s, -1) {
		lit(s[last:m[0]])
		last = m[1]
		if m[2] < 0 { // "$$"
			lit("$")
			continue
		}
		n := s[m[2]:m[3]]
		v, ok := lookup(n)
		switch {
		case !ok:
			lit(s[m[0]:m[1]])
		case v.value != nil:
			lit(*v.value)
		default:
			out = append(out, expandRef{text: s[m[0]:m[1]], runtime: n})
		}
	}
	lit(s[last:])
	return out
}

// serviceLinkRe matches the names of the variables the kubelet derives from
// Services (enableServiceLinks), kubernetesLinkRe those of the master
// service, which it always adds.
var (
	serviceLinkRe    = regexp.MustCompile(`^` + svcRegex + `_(SERVICE_HOST|SERVICE_PORT(_` + svcRegex + `)?|PORT(_` + portRegex + `_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)$`)
	kubernetesLinkRe = regexp.MustCompile(`^KUBERNETES_(SERVICE_HOST|SERVICE_PORT(_HTTPS)?|PORT(_` + portRegex + `_TCP(_PROTO|_PORT|_ADDR)?)?)$`)
)

// serviceLinkVars extends vars for expanding command and args: the kubelet
// expands references to service-link variables too, with values only known
// at run time (the rules hold them to the service-link patterns). Names the
// pod defines itself keep their definition.
type serviceLinkVars struct {
	vars map[string]podVar
	mode string // serviceEnv: "all" or "kubernetes"
}

func (s serviceLinkVars) lookup(n string) (podVar, bool) {
	if v, ok := s.vars[n]; ok {
		return v, true
	}
	if kubernetesLinkRe.MatchString(n) || (s.mode == "all" && serviceLinkRe.MatchString(n)) {
		return podVar{}, true
	}
	return podVar{}, false
}

// buildArgs combines the image's ENTRYPOINT/CMD with the pod's command and
// args like the kubelet and expands the pod's $(VAR) references (not the
// image's). An argument that refers to a variable known only at run time
// keeps the reference and gets a template: the rules expand it with the
// variable's value in the request, which is held to the variable's own
// expected value, so the argument cannot take a value the variable could
// not.
func buildArgs(c *corev1.Container, img *images.Image, vars serviceLinkVars) ([]string, []ArgTemplate) {
	var args []string
	nPod := 0
	switch {
	case len(c.Command) > 0:
		args = append(slices.Clone(c.Command), c.Args...)
		nPod = len(args)
	case len(c.Args) > 0:
		args = append(slices.Clone(img.Config.Entrypoint), c.Args...)
		nPod = len(c.Args)
	default:
		args = append(slices.Clone(img.Config.Entrypoint), img.Config.Cmd...)
	}
	var templates []ArgTemplate
	for i := len(args) - nPod; i < len(args); i++ {
		var parts []ArgPart
		args[i], parts = expandTemplate(args[i], vars.lookup)
		if parts != nil {
			templates = append(templates, ArgTemplate{Index: i, Parts: parts})
		}
	}
	return args, templates
}

// expandTemplate expands the references of s known at generation; it
// returns the text (references to run-time values kept as written) and, if
// there are such references, the parts of the template the rules expand.
func expandTemplate(s string, lookup func(string) (podVar, bool)) (string, []ArgPart) {
	refs := expandPartsWith(s, lookup)
	var b strings.Builder
	runtime := false
	for _, r := range refs {
		b.WriteString(r.text)
		runtime = runtime || r.runtime != ""
	}
	if !runtime {
		return b.String(), nil
	}
	parts := make([]ArgPart, 0, len(refs))
	for _, r := range refs {
		if r.runtime != "" {
			parts = append(parts, ArgPart{Var: r.runtime})
		} else {
			parts = append(parts, ArgPart{Text: r.text})
		}
	}
	return b.String(), parts
}

// ---------------------------------------------------------------- env

const (
	ipv4Regex = `(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}`
	ipv6Regex = `[0-9a-fA-F:.]*:[0-9a-fA-F:.]*`
	ipRegex   = "(" + ipv4Regex + "|" + ipv6Regex + ")"
	portRegex = `[0-9]{1,5}`
	// service names in environment variables: upper-cased DNS labels with
	// '-' replaced by '_'.
	svcRegex = `[A-Z_][A-Z0-9_]{0,62}`
)

// serviceLinkPatterns match the variables the kubelet derives from Services.
var serviceLinkPatterns = []string{
	"^" + svcRegex + "_SERVICE_HOST=" + ipRegex + "$",
	"^" + svcRegex + "_SERVICE_PORT=" + portRegex + "$",
	"^" + svcRegex + "_SERVICE_PORT_" + svcRegex + "=" + portRegex + "$",
	"^" + svcRegex + "_PORT=(tcp|udp|sctp)://" + ipRegex + ":" + portRegex + "$",
	"^" + svcRegex + "_PORT_" + portRegex + "_(TCP|UDP|SCTP)=(tcp|udp|sctp)://" + ipRegex + ":" + portRegex + "$",
	"^" + svcRegex + "_PORT_" + portRegex + "_(TCP|UDP|SCTP)_PROTO=(tcp|udp|sctp)$",
	"^" + svcRegex + "_PORT_" + portRegex + "_(TCP|UDP|SCTP)_PORT=" + portRegex + "$",
	"^" + svcRegex + "_PORT_" + portRegex + "_(TCP|UDP|SCTP)_ADDR=" + ipRegex + "$",
}

// kubernetesServicePatterns are the variables of the master service, which
// the kubelet adds even with enableServiceLinks: false.
var kubernetesServicePatterns = []string{
	"^KUBERNETES_SERVICE_HOST=" + ipRegex + "$",
	"^KUBERNETES_SERVICE_PORT=" + portRegex + "$",
	"^KUBERNETES_SERVICE_PORT_HTTPS=" + portRegex + "$",
	"^KUBERNETES_PORT=tcp://" + ipRegex + ":" + portRegex + "$",
	"^KUBERNETES_PORT_" + portRegex + "_TCP=tcp://" + ipRegex + ":" + portRegex + "$",
	"^KUBERNETES_PORT_" + portRegex + "_TCP_PROTO=tcp$",
	"^KUBERNETES_PORT_" + portRegex + "_TCP_PORT=" + portRegex + "$",
	"^KUBERNETES_PORT_" + portRegex + "_TCP_ADDR=" + ipRegex + "$",
}

var envNameRe = regexp.MustCompile(`^[-._a-zA-Z][-._a-zA-Z0-9]*$`)

// buildEnv returns the expected variables (image env overridden by envFrom,
// then by pod env, plus HOSTNAME) and the map of variables usable in $(VAR)
// expansion (nil value: not fixed). envFrom brings exactly the keys and
// values of the referenced ConfigMaps in sources; a Secret's values cannot
// be pinned without putting them in the policy (the agent's engine has no
// hash builtin), so envFrom of a Secret is refused.
func (b *builder) buildEnv(ct container, img *images.Image) ([]EnvSpec, map[string]podVar, error) {
	t, c, sources := b.t, ct.c, b.sources
	byName := map[string]EnvSpec{}
	var order []string
	set := func(s EnvSpec) {
		if _, ok := byName[s.Name]; !ok {
			order = append(order, s.Name)
		}
		byName[s.Name] = s
	}
	for _, e := range img.Config.Env {
		n, v, _ := strings.Cut(e, "=")
		if n == "" {
			continue
		}
		set(EnvSpec{Name: n, Kind: "exact", Value: v, Required: true})
	}
	set(EnvSpec{Name: "HOSTNAME", Kind: "hostname", Required: true})
	if c.TTY {
		set(EnvSpec{Name: "TERM", Kind: "exact", Value: "xterm", Required: false})
	}
	// the variables $(VAR) references may use: envFrom and pod env (in
	// order)
	vars := map[string]podVar{}
	for i, ef := range c.EnvFrom {
		if ef.Prefix != "" && !envNameRe.MatchString(ef.Prefix) {
			return nil, nil, fieldErr(index(ct.path+".envFrom", i)+".prefix", ErrInvalidInput, "not a valid environment variable name prefix")
		}
	}
	for i, ef := range c.EnvFrom {
		cmVars, err := envFromVars(index(ct.path+".envFrom", i), ef, sources)
		if err != nil {
			return nil, nil, err
		}
		for _, k := range slices.Sorted(maps.Keys(cmVars)) {
			name := ef.Prefix + k
			if !envNameRe.MatchString(name) {
				continue // the kubelet skips invalid names
			}
			v := cmVars[k]
			s := EnvSpec{Name: name, Kind: "exact", Value: v, Required: true}
			set(s)
			vars[name] = podVar{value: &v, spec: s}
		}
	}
	for i, e := range c.Env {
		field := index(ct.path+".env", i)
		if !envNameRe.MatchString(e.Name) {
			return nil, nil, fieldErr(field+".name", ErrInvalidInput, "not a valid environment variable name")
		}
		s, err := envSpec(t, field, e, vars)
		if err != nil {
			return nil, nil, err
		}
		set(s)
		switch {
		case s.Kind == "exact":
			v := s.Value
			vars[e.Name] = podVar{value: &v, spec: s}
		case s.Kind == "pod_namespace" && b.namespace != "":
			// the namespace is known at admission, and the policy binds it
			v := b.namespace
			vars[e.Name] = podVar{value: &v, spec: s}
		default:
			vars[e.Name] = podVar{spec: s}
		}
	}
	out := make([]EnvSpec, 0, len(order))
	for _, n := range order {
		out = append(out, byName[n])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, vars, nil
}

// envFromVars returns the variables one envFrom entry brings, before the
// prefix. Errors name the field, never a value.
func envFromVars(field string, ef corev1.EnvFromSource, sources *EnvSources) (map[string]string, error) {
	switch {
	case ef.SecretRef != nil:
		return nil, fieldErr(field+".secretRef", ErrUnsupported,
			"secret %q: envFrom of a Secret cannot be pinned without its values in the policy (readable by anyone who can read the pod); use env with secretKeyRef or a secret volume", ef.SecretRef.Name)
	case ef.ConfigMapRef != nil:
		name := ef.ConfigMapRef.Name
		var cm *corev1.ConfigMap
		if sources != nil {
			cm = sources.ConfigMaps[name]
		}
		switch {
		case cm != nil:
			return cm.Data, nil
		case sources != nil && ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional:
			return nil, nil // the kubelet adds nothing for a missing optional ConfigMap
		default:
			return nil, fieldErr(field+".configMapRef.name", ErrUnsupported,
				"configMap %q is not available: its keys and values are pinned in the policy (the webhook reads it through the API server, contrast generate from its input files)", name)
		}
	default:
		return nil, fieldErr(field, ErrInvalidInput, "neither configMapRef nor secretRef")
	}
}

var labelRefRe = regexp.MustCompile(`^metadata\.(labels|annotations)\['([^']+)'\]$`)

func envSpec(t *corev1.PodTemplateSpec, field string, e corev1.EnvVar, vars map[string]podVar) (EnvSpec, error) {
	s := EnvSpec{Name: e.Name, Required: true}
	if e.ValueFrom == nil {
		// references to values known only at run time make a template,
		// as in arguments
		text, parts := expandTemplate(e.Value, func(n string) (podVar, bool) {
			v, ok := vars[n]
			return v, ok
		})
		s.Kind, s.Value, s.Parts = "exact", text, parts
		if parts != nil {
			s.Kind = "template"
		}
		return s, nil
	}
	vf := e.ValueFrom
	switch {
	case vf.FieldRef != nil:
		switch p := vf.FieldRef.FieldPath; p {
		case "metadata.name":
			s.Kind = "pod_name"
		case "metadata.namespace":
			s.Kind = "pod_namespace"
		case "metadata.uid":
			s.Kind = "pod_uid"
		case "spec.serviceAccountName":
			s.Kind, s.Value = "exact", t.Spec.ServiceAccountName
		case "spec.nodeName":
			s.Kind, s.Value = "regex", `^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`
		case "status.podIP", "status.hostIP":
			s.Kind, s.Value = "regex", "^"+ipRegex+"$"
		case "status.podIPs", "status.hostIPs":
			s.Kind, s.Value = "regex", "^"+ipRegex+"(,"+ipRegex+")?$"
		case "metadata.labels", "metadata.annotations":
			s.Kind, s.Value = "regex", "(?s)^.*$"
		default:
			m := labelRefRe.FindStringSubmatch(p)
			if m == nil {
				return s, fieldErr(field+".valueFrom.fieldRef.fieldPath", ErrUnsupported, "variable %q: field %q", e.Name, p)
			}
			if v, ok := t.Labels[m[2]]; ok && m[1] == "labels" {
				s.Kind, s.Value = "exact", v
			} else {
				// annotations are set by admission controllers, including
				// the webhook that carries this policy
				s.Kind, s.Value = "regex", "(?s)^.*$"
			}
		}
	case vf.ResourceFieldRef != nil:
		s.Kind, s.Value = "regex", `^[0-9]+$`
	case vf.ConfigMapKeyRef != nil:
		s.Kind, s.Value = "regex", "(?s)^.*$"
		s.Required = vf.ConfigMapKeyRef.Optional == nil || !*vf.ConfigMapKeyRef.Optional
	case vf.SecretKeyRef != nil:
		s.Kind, s.Value = "regex", "(?s)^.*$"
		s.Required = vf.SecretKeyRef.Optional == nil || !*vf.SecretKeyRef.Optional
	default:
		return s, fieldErr(field+".valueFrom", ErrUnsupported, "variable %q: no supported source (fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef)", e.Name)
	}
	return s, nil
}

// ---------------------------------------------------------------- mounts

var storageMountPointRe = "^" + regexp.QuoteMeta(blockStorageDir) + "/[A-Za-z0-9+/_-]+=*$"

func (b *builder) buildMounts(ct container, img *images.Image, vars map[string]podVar) ([]MountSpec, []StorageSpec, error) {
	c, spec := ct.c, &b.t.Spec
	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		volumes[spec.Volumes[i].Name] = &spec.Volumes[i]
	}
	var mounts []MountSpec
	dests := map[string]bool{}
	add := func(m MountSpec) {
		if m.OptionalOptions == nil {
			m.OptionalOptions = []string{}
		}
		mounts = append(mounts, m)
		dests[m.Destination] = true
	}
	var storages []StorageSpec
	var fsGroup *int64
	if spec.SecurityContext != nil {
		fsGroup = spec.SecurityContext.FSGroup
	}
	hasBlock, hasMemory := false, false
	for j, vm := range c.VolumeMounts {
		field := index(ct.path+".volumeMounts", ct.mounts[j])
		v, ok := volumes[vm.Name]
		if !ok {
			return nil, nil, fieldErr(field+".name", ErrInvalidInput, "no volume %q", vm.Name)
		}
		sub, err := b.subPathRegex(field, vm, vars)
		if err != nil {
			return nil, nil, err
		}
		if !strings.HasPrefix(vm.MountPath, "/") {
			return nil, nil, fieldErr(field+".mountPath", ErrInvalidInput, "volume %q: relative mount path", vm.Name)
		}
		access := []string{"rw", "ro"}
		if vm.ReadOnly {
			access = []string{"ro"}
		}
		base := []string{"rbind", "rprivate"}
		// containerd's CRI plugin turns a mount propagation into the bind
		// mount's propagation option, which upstream Kata replaces with
		// rprivate; the mount stays inside the guest either way
		if p := vm.MountPropagation; p != nil && *p == corev1.MountPropagationHostToContainer {
			base, access = []string{"rbind"}, append(access, "rprivate", "rslave")
		} else if p != nil && *p == corev1.MountPropagationBidirectional {
			base, access = []string{"rbind"}, append(access, "rprivate", "rshared")
		}
		// A subPath mount of an emptyDir is a folder of the volume the
		// guest already holds (the runtime maps the kubelet's bind mount
		// back to it and sends no storage for it); one of any other volume
		// is the kubelet's bind mount of that file or folder
		// (.../volume-subpaths/<volume>/<container>/<index>), which the
		// runtime shares like a file of its own, never as a watchable
		// volume.
		switch {
		case v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumMemory:
			hasMemory = hasMemory || sub == ""
			src := "^" + regexp.QuoteMeta(ephemeralDir+"/"+v.Name)
			if sub != "" {
				src += "/" + sub
			}
			add(MountSpec{Destination: vm.MountPath, Type: "bind", Source: src + "$",
				Options: base, OptionalOptions: access})
		case v.EmptyDir != nil:
			hasBlock = hasBlock || sub == ""
			src := storageMountPointRe
			if sub != "" {
				src = strings.TrimSuffix(storageMountPointRe, "$") + "/" + sub + "$"
			}
			add(MountSpec{Destination: vm.MountPath, Type: "bind", Source: src,
				Options: base, OptionalOptions: access})
		case v.PersistentVolumeClaim != nil || v.Ephemeral != nil:
			if !slices.Contains(HostSharedVolumes(b.t.Annotations), v.Name) {
				return nil, nil, fieldErr(field+".name", ErrUnsupported,
					"volume %q: a persistent volume is mounted from the host only if %s names it (not confidential); otherwise the Initializer opens it encrypted", v.Name, AnnotationHostSharedVolumes)
			}
			// the kubelet's mount of the volume, shared by the runtime
			// like a non-watchable configMap (Kata genpolicy's rule for
			// shared-filesystem claims)
			src := sharedPrefix + regexp.QuoteMeta(pathBase(vm.MountPath)) + "$"
			if sub != "" {
				src = "^" + sharedDir + "/$(cid)-[a-z0-9]{16}-" + regexp.QuoteMeta(pathBase(vm.MountPath)) + "$"
			}
			add(MountSpec{Destination: vm.MountPath, Type: "bind", Source: src, Options: base, OptionalOptions: access})
		case sub != "": // configMap, secret, projected, downwardAPI
			add(MountSpec{Destination: vm.MountPath, Type: "bind",
				Source:  "^" + sharedDir + "/$(cid)-[a-z0-9]{16}-" + regexp.QuoteMeta(pathBase(vm.MountPath)) + "$",
				Options: base, OptionalOptions: access})
		default: // configMap, secret, projected, downwardAPI: shared by the runtime
			add(MountSpec{Destination: vm.MountPath, Type: "bind",
				Source:  sharedPrefix + regexp.QuoteMeta(pathBase(vm.MountPath)) + "$",
				Options: base, OptionalOptions: access})
		}
	}
	if hasBlock {
		storages = append(storages, StorageSpec{
			Driver: "blk", DriverOptions: []string{"encryption_key=ephemeral", "create_filesystem"},
			FSType: "ext4", Source: `^[0-9a-f]{2}(/[0-9a-f]{2})*$`, MountPoint: storageMountPointRe,
			Options: []string{}, FSGroup: fsGroup,
		})
	}
	if hasMemory {
		storages = append(storages, StorageSpec{
			Driver: "ephemeral", DriverOptions: []string{}, FSType: "tmpfs", Source: "^tmpfs$",
			MountPoint: "^" + regexp.QuoteMeta(ephemeralDir) + "/[^/]+$",
			Options:    []string{`^size=[0-9]+[kKmMgG]?$`}, FSGroup: fsGroup,
		})
	}
	// termination message
	tmp := c.TerminationMessagePath
	if tmp == "" {
		tmp = corev1.TerminationMessagePathDefault
	}
	if !dests[tmp] {
		add(MountSpec{Destination: tmp, Type: "bind", Source: sharedPrefix + regexp.QuoteMeta(pathBase(tmp)) + "$",
			Options: []string{"rbind", "rprivate"}, OptionalOptions: []string{"rw", "ro"}})
	}
	// service account token
	const saPath = "/var/run/secrets/kubernetes.io/serviceaccount"
	if automount(spec) && !dests[saPath] {
		add(MountSpec{Destination: saPath, Type: "bind", Source: sharedPrefix + "serviceaccount$",
			Options: []string{"rbind", "rprivate", "ro"}})
	}
	// image volumes not covered by a pod volume
	for _, v := range img.Config.Volumes {
		if dests[v] || !strings.HasPrefix(v, "/") {
			continue
		}
		add(MountSpec{Destination: v, Type: "bind", Source: sharedPrefix + regexp.QuoteMeta(pathBase(v)) + "$",
			Options: []string{"rbind", "rprivate", "rw"}})
	}
	sort.SliceStable(mounts, func(i, j int) bool { return mounts[i].Destination < mounts[j].Destination })
	if mounts == nil {
		mounts = []MountSpec{}
	}
	if storages == nil {
		storages = []StorageSpec{}
	}
	return mounts, storages, nil
}

// buildDevices pins the block devices of the container's volumeDevices:
// the runtime hot-plugs each claim's device into the VM and the agent
// creates its node at the device path.
func (b *builder) buildDevices(ct container) ([]DeviceSpec, error) {
	if len(ct.c.VolumeDevices) == 0 {
		return nil, nil
	}
	var devices []DeviceSpec
	for j, d := range ct.c.VolumeDevices {
		field := fmt.Sprintf("%s.volumeDevices[%d]", ct.path, j)
		i := slices.IndexFunc(b.t.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == d.Name })
		if i < 0 {
			return nil, fieldErr(field+".name", ErrInvalidInput, "no volume %q", d.Name)
		}
		if v := &b.t.Spec.Volumes[i]; v.PersistentVolumeClaim == nil && v.Ephemeral == nil {
			return nil, fieldErr(field+".name", ErrInvalidInput, "volume %q: only persistentVolumeClaim and ephemeral volumes are block devices", d.Name)
		}
		if !strings.HasPrefix(d.DevicePath, "/") || strings.Contains(d.DevicePath, "..") {
			return nil, fieldErr(field+".devicePath", ErrInvalidInput, "volume %q: device path %q is not absolute and clean", d.Name, d.DevicePath)
		}
		if slices.ContainsFunc(devices, func(x DeviceSpec) bool { return x.ContainerPath == d.DevicePath }) {
			return nil, fieldErr(field+".devicePath", ErrInvalidInput, "device path %q used twice", d.DevicePath)
		}
		devices = append(devices, DeviceSpec{ContainerPath: d.DevicePath})
	}
	return devices, nil
}

// subPathRegex is the regex of the path below the volume that a volume
// mount's subPath or subPathExpr names, "" for the volume itself. The
// kubelet expands subPathExpr with the container's variables like
// command and args; a variable known only at run time stands for the
// pattern its own value has (the pod's name pattern, the namespace, a UID,
// the node name, an IP address). Paths the kubelet refuses (absolute, with
// "..") are refused.
func (b *builder) subPathRegex(field string, vm corev1.VolumeMount, vars map[string]podVar) (string, error) {
	var path, re string
	switch {
	case vm.SubPath != "" && vm.SubPathExpr != "":
		return "", fieldErr(field+".subPathExpr", ErrInvalidInput, "volume %q: subPath and subPathExpr are mutually exclusive", vm.Name)
	case vm.SubPath != "":
		field += ".subPath"
		// the kubelet joins (and so cleans) the path
		path = vm.SubPath
		re = regexp.QuoteMeta(pathpkg.Clean(vm.SubPath))
	case vm.SubPathExpr != "":
		field += ".subPathExpr"
		var sb, rb strings.Builder
		for _, p := range expandParts(vm.SubPathExpr, vars) {
			sb.WriteString(p.text)
			if p.runtime == "" {
				rb.WriteString(regexp.QuoteMeta(p.text))
				continue
			}
			pat, ok := b.valuePattern(vars[p.runtime].spec)
			if !ok {
				return "", fieldErr(field, ErrUnsupported, "volume %q: refers to $(%s), whose value is not known before the pod runs and has no bounded pattern", vm.Name, p.runtime)
			}
			rb.WriteString("(" + pat + ")")
		}
		path, re = sb.String(), rb.String()
	default:
		return "", nil
	}
	if strings.HasPrefix(path, "/") || slices.Contains(strings.Split(path, "/"), "..") {
		return "", fieldErr(field, ErrInvalidInput, "volume %q: the sub path must be relative and must not contain '..'", vm.Name)
	}
	if re == "" || re == "\\." {
		return "", nil // the volume itself
	}
	return re, nil
}

// valuePattern is the unanchored regex of the value a variable known only
// at run time may take, if it is bounded and has no "/": the pod's name,
// namespace and UID, the node name, IP addresses, resource values.
func (b *builder) valuePattern(s EnvSpec) (string, bool) {
	anchored := ""
	switch s.Kind {
	case "pod_name":
		anchored = b.nameRegex
	case "pod_namespace":
		anchored = namespaceRegex(b.namespace)
	case "pod_uid":
		anchored = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
	case "regex":
		anchored = s.Value
	}
	inner, ok := strings.CutPrefix(anchored, "^")
	if !ok {
		return "", false
	}
	inner, ok = strings.CutSuffix(inner, "$")
	if !ok || strings.Contains(inner, ".*") || strings.Contains(inner, "(?s)") || strings.Contains(inner, "/") {
		return "", false
	}
	return inner, true
}

func pathBase(p string) string {
	p = strings.TrimRight(p, "/")
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[i+1:]
	}
	return p
}

// locate returns the field of the input pod that a policy value v comes
// from (the value that made a policy line too long): a field whose value is
// v, else the longest one v contains (v may be an argument with $(VAR)
// references expanded), else "spec". Values from the image config are
// attributed to the container's image.
func (b *builder) locate(v string) string {
	const minPart = 64
	best, bestLen := "spec", 0
	found := ""
	consider := func(field, s string) {
		switch {
		case found != "":
		case s == v:
			found = field
		case len(s) >= minPart && len(s) > bestLen && strings.Contains(v, s):
			best, bestLen = field, len(s)
		}
	}
	list := func(field string, ss []string) {
		for k, s := range ss {
			consider(index(field, k), s)
		}
	}
	for i, ct := range b.cs {
		c, p := ct.c, ct.path
		consider(p+".name", c.Name)
		consider(p+".image", c.Image)
		list(p+".command", c.Command)
		list(p+".args", c.Args)
		consider(p+".workingDir", c.WorkingDir)
		for j, e := range c.Env {
			consider(index(p+".env", j)+".name", e.Name)
			consider(index(p+".env", j)+".value", e.Value)
		}
		for j, ef := range c.EnvFrom {
			consider(index(p+".envFrom", j)+".prefix", ef.Prefix)
		}
		for j, m := range c.VolumeMounts {
			consider(index(p+".volumeMounts", ct.mounts[j])+".mountPath", m.MountPath)
		}
		consider(p+".terminationMessagePath", c.TerminationMessagePath)
		for _, pr := range []struct {
			field string
			probe *corev1.Probe
		}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}, {"startupProbe", c.StartupProbe}} {
			if pr.probe != nil && pr.probe.Exec != nil {
				list(p+"."+pr.field+".exec.command", pr.probe.Exec.Command)
			}
		}
		if l := c.Lifecycle; l != nil {
			for _, h := range []struct {
				field   string
				handler *corev1.LifecycleHandler
			}{{"postStart", l.PostStart}, {"preStop", l.PreStop}} {
				if h.handler != nil && h.handler.Exec != nil {
					list(p+".lifecycle."+h.field+".exec.command", h.handler.Exec.Command)
				}
			}
		}
		if i < len(b.imgs) && b.imgs[i] != nil {
			cfg := b.imgs[i].Config
			for _, e := range cfg.Env {
				_, val, _ := strings.Cut(e, "=")
				consider(p+".image", val)
			}
			for _, s := range slices.Concat(cfg.Entrypoint, cfg.Cmd, []string{cfg.WorkingDir, cfg.User}, cfg.Volumes) {
				consider(p+".image", s)
			}
		}
	}
	if found != "" {
		return found
	}
	return best
}
