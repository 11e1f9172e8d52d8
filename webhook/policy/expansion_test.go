package policy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/policy/agentsim"
	"github.com/contrast-cc/contrast/webhook/shareddata"
)

const expansionCID = "5a1b7c2e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"

// demoSandbox creates the pause container of pod "p" in namespace "demo".
func demoSandbox(t *testing.T, a *agentsim.Agent) {
	t.Helper()
	d, err := a.Allow(t.Context(), "CreateContainerRequest", sandboxRequestFor(t, "p", "demo"))
	require.NoError(t, err)
	require.True(t, d.Allowed, "pause container denied")
}

// agentRequest is the CreateContainerRequest of container "c" of pod "p" in
// "demo" running imageRef (registry.example/acme/agent:2: /agent as root),
// with the variables env besides PATH and HOSTNAME and the arguments args.
func agentRequest(t *testing.T, imageRef string, env []any, args ...string) map[string]any {
	t.Helper()
	r := containerRequest(t, expansionCID, "c", "p", "demo", imageRef)
	p := proc(r)
	a := []any{"/agent"}
	for _, s := range args {
		a = append(a, s)
	}
	p["Args"] = a
	p["Cwd"] = "/"
	p["User"] = map[string]any{"UID": 0, "GID": 0, "AdditionalGids": []any{0}, "Username": ""}
	p["Env"] = append([]any{"PATH=/", "HOSTNAME=p"}, env...)
	return r
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

// expansionPod is the pod "p" of namespace "demo" (namespace "" leaves it
// open) whose arguments refer to variables of every kind.
func expansionPod(namespace string) *policy.Workload {
	w := simplePod()
	w.Namespace = namespace
	w.Template.Name = "p"
	c := &w.Template.Spec.Containers[0]
	c.Env = []corev1.EnvVar{
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_IP", "status.podIP"),
		{Name: "OPT", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "opt", Optional: ptr.To(true)}}},
		{Name: "MODE", Value: "prod"},
	}
	c.Args = []string{
		"--publish-service=$(POD_NAMESPACE)/ingress", // known at admission
		"--name=$(POD_NAME)", "--listen=$(POD_IP):80", "$(OPT)",
		"--mode=$(MODE)", "$$(POD_NAME)", "$(UNDEFINED)", "$(seq 1 $MAX)",
	}
	return w
}

// TestArgExpansion checks $(VAR) expansion in arguments: values known at
// admission (literals, the namespace) are expanded into the policy; an
// argument that refers to a value known only at run time must be its
// template expanded with that variable's value in the request, which the
// policy holds to the variable's own expected value. The Kata request corpus
// has no such case; the requests are derived from its "gid" request.
func TestArgExpansion(t *testing.T) {
	src, _ := testRegistry(t)
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: expansionPod("demo"), Images: src})
	require.NoError(t, err)
	c := res.Data.Containers[1]
	assert.Equal(t, []string{
		"/agent", "--publish-service=demo/ingress", "--name=$(POD_NAME)", "--listen=$(POD_IP):80", "$(OPT)",
		"--mode=prod", "$(POD_NAME)", "$(UNDEFINED)", "$(seq 1 $MAX)",
	}, c.Args)
	assert.Equal(t, []policy.ArgTemplate{
		{Index: 2, Parts: []policy.ArgPart{{Text: "--name="}, {Var: "POD_NAME"}}},
		{Index: 3, Parts: []policy.ArgPart{{Text: "--listen="}, {Var: "POD_IP"}, {Text: ":80"}}},
		{Index: 4, Parts: []policy.ArgPart{{Var: "OPT"}}},
	}, c.ArgTemplates)

	img, err := src.Resolve(t.Context(), "registry.example/acme/agent:2", nil)
	require.NoError(t, err)
	type vals struct{ name, ip, opt string }
	request := func(v vals, args ...string) map[string]any {
		env := []any{"POD_NAMESPACE=demo", "POD_NAME=" + v.name, "POD_IP=" + v.ip, "MODE=prod"}
		if v.opt != "" {
			env = append(env, "OPT="+v.opt)
		}
		return agentRequest(t, img.Reference(), env, args...)
	}
	good := vals{name: "p", ip: "10.1.2.3", opt: "--verbose"}
	args := func(name, ip, opt string) []string {
		return []string{"--publish-service=demo/ingress", "--name=" + name, "--listen=" + ip + ":80", opt, "--mode=prod", "$(POD_NAME)", "$(UNDEFINED)", "$(seq 1 $MAX)"}
	}
	allowed := map[string]map[string]any{
		"run-time values":                      request(good, args("p", "10.1.2.3", "--verbose")...),
		"optional variable absent: kept as is": request(vals{name: "p", ip: "10.1.2.3"}, args("p", "10.1.2.3", "$(OPT)")...),
		"another pod IP":                       request(vals{name: "p", ip: "10.9.9.9", opt: "--verbose"}, args("p", "10.9.9.9", "--verbose")...),
	}
	for name, req := range allowed {
		t.Run("allowed/"+name, func(t *testing.T) {
			a, err := agentsim.New(res.Rego)
			require.NoError(t, err)
			demoSandbox(t, a)
			d, err := a.Allow(t.Context(), "CreateContainerRequest", req)
			require.NoError(t, err)
			assert.True(t, d.Allowed)
		})
	}
	denied := map[string]struct {
		req    map[string]any
		checks []string
	}{
		"argument differs from its variable":          {request(good, args("q", "10.1.2.3", "--verbose")...), []string{"args_ok"}},
		"IP argument differs from POD_IP":             {request(good, args("p", "10.6.6.6", "--verbose")...), []string{"args_ok"}},
		"optional variable's argument differs":        {request(good, args("p", "10.1.2.3", "--quiet")...), []string{"args_ok"}},
		"argument set where the variable is absent":   {request(vals{name: "p", ip: "10.1.2.3"}, args("p", "10.1.2.3", "--verbose")...), []string{"args_ok"}},
		"namespace expanded at admission is pinned":   {request(good, append([]string{"--publish-service=kube-system/ingress"}, args("p", "10.1.2.3", "--verbose")[1:]...)...), []string{"args_ok"}},
		"extra argument":                              {request(good, append(args("p", "10.1.2.3", "--verbose"), "--debug")...), []string{"args_ok"}},
		"escaped reference expanded":                  {request(good, append(args("p", "10.1.2.3", "--verbose")[:5], "p", "$(UNDEFINED)", "$(seq 1 $MAX)")...), []string{"args_ok"}},
		"variable and argument agree on a wrong name": {request(vals{name: "q", ip: "10.1.2.3", opt: "--verbose"}, args("q", "10.1.2.3", "--verbose")...), []string{"env_ok"}},
		"variable and argument agree on a non-IP":     {request(vals{name: "p", ip: "evil.example", opt: "--verbose"}, args("p", "evil.example", "--verbose")...), []string{"env_ok"}},
	}
	for name, tc := range denied {
		t.Run("denied/"+name, func(t *testing.T) {
			requireDeniedBy(t, res.Rego, demoSandbox, "CreateContainerRequest", tc.req, tc.checks...)
		})
	}

	t.Run("namespace unknown: a template, and the webhook's pod binds it", func(t *testing.T) {
		open, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: expansionPod(""), Images: src})
		require.NoError(t, err)
		oc := open.Data.Containers[1]
		assert.Equal(t, "--publish-service=$(POD_NAMESPACE)/ingress", oc.Args[1])
		require.NotEmpty(t, oc.ArgTemplates)
		assert.Equal(t, policy.ArgTemplate{Index: 1, Parts: []policy.ArgPart{{Text: "--publish-service="}, {Var: "POD_NAMESPACE"}, {Text: "/ingress"}}}, oc.ArgTemplates[0])

		w := expansionPod("demo")
		pod := &corev1.Pod{ObjectMeta: w.Template.ObjectMeta, Spec: w.Template.Spec}
		pod.Namespace = "demo"
		fromPod, err := policy.Generate(t.Context(), policy.GenerateInput{Pod: pod, Images: src})
		require.NoError(t, err)
		assert.Equal(t, res.Annotations, fromPod.Annotations, "YAML with the namespace and the admitted pod agree")
	})
}

// subPathPod mounts one ConfigMap key as a file (subPath), a folder of an
// emptyDir named after the pod (subPathExpr), a folder of a memory emptyDir,
// and a ConfigMap key under a subPathExpr.
func subPathPod() *policy.Workload {
	w := simplePod()
	w.Namespace = "demo"
	w.Template.Name = "p"
	spec := &w.Template.Spec
	spec.Volumes = []corev1.Volume{
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
	}
	c := &spec.Containers[0]
	c.Env = []corev1.EnvVar{fieldEnv("POD_NAME", "metadata.name")}
	c.VolumeMounts = []corev1.VolumeMount{
		{Name: "cfg", MountPath: "/etc/app/app.yml", SubPath: "app.yml", ReadOnly: true},
		{Name: "scratch", MountPath: "/logs", SubPathExpr: "logs/$(POD_NAME)"},
		{Name: "mem", MountPath: "/cache", SubPath: "./c/"},
		{Name: "cfg", MountPath: "/etc/other/x.conf", SubPathExpr: "$(POD_NAME).conf"},
	}
	return w
}

// TestSubPathMounts checks the layout of subPath and subPathExpr mounts: a
// ConfigMap (Secret, projected, downwardAPI) key is the kubelet's bind mount
// of that file, which the runtime shares under the mount's base name, never
// from the watchable folder; a folder of an emptyDir is below the volume the
// guest holds (no storage is sent for it); subPathExpr takes the value the
// variable has (here the pod's name). Source and destination are pinned.
// The Kata request corpus has no subPath case; the requests are derived
// from its "gid" request.
func TestSubPathMounts(t *testing.T) {
	src, _ := testRegistry(t)
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: subPathPod(), Images: src})
	require.NoError(t, err)
	c := res.Data.Containers[1]
	sources := map[string]string{}
	for _, m := range c.Mounts {
		sources[m.Destination] = m.Source
	}
	assert.Equal(t, `^/run/kata-containers/shared/containers/$(cid)-[a-z0-9]{16}-app\.yml$`, sources["/etc/app/app.yml"])
	assert.Equal(t, `^/run/kata-containers/shared/containers/$(cid)-[a-z0-9]{16}-x\.conf$`, sources["/etc/other/x.conf"])
	assert.Equal(t, `^/run/kata-containers/sandbox/storage/[A-Za-z0-9+/_-]+=*/logs/(p)$`, sources["/logs"])
	assert.Equal(t, `^/run/kata-containers/sandbox/ephemeral/mem/c$`, sources["/cache"])
	assert.Empty(t, c.VolumeStorages, "no storage for a volume mounted only by subPath")

	img, err := src.Resolve(t.Context(), "registry.example/acme/agent:2", nil)
	require.NoError(t, err)
	shared := "/run/kata-containers/shared/containers/" + expansionCID + "-0123456789abcdef-"
	mount := func(dest, source string, opts ...string) map[string]any {
		o := []any{"rbind", "rprivate"}
		for _, s := range opts {
			o = append(o, s)
		}
		return map[string]any{"destination": dest, "source": source, "type_": "bind", "options": o}
	}
	goodMounts := func() map[string]map[string]any {
		return map[string]map[string]any{
			"/etc/app/app.yml":  mount("/etc/app/app.yml", shared+"app.yml", "ro"),
			"/logs":             mount("/logs", "/run/kata-containers/sandbox/storage/YWJj/logs/p", "rw"),
			"/cache":            mount("/cache", "/run/kata-containers/sandbox/ephemeral/mem/c", "rw"),
			"/etc/other/x.conf": mount("/etc/other/x.conf", shared+"x.conf", "rw"),
		}
	}
	request := func(mounts map[string]map[string]any) map[string]any {
		r := agentRequest(t, img.Reference(), []any{"POD_NAME=p"})
		o := oci(r)
		for _, m := range mounts {
			o["Mounts"] = append(o["Mounts"].([]any), m)
		}
		return r
	}
	t.Run("allowed/the kubelet's and the runtime's layout", func(t *testing.T) {
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		demoSandbox(t, a)
		d, err := a.Allow(t.Context(), "CreateContainerRequest", request(goodMounts()))
		require.NoError(t, err)
		assert.True(t, d.Allowed)
	})
	tamper := map[string]func(m map[string]map[string]any){
		"ConfigMap key from the watchable folder": func(m map[string]map[string]any) {
			m["/etc/app/app.yml"]["source"] = "/run/kata-containers/shared/containers/watchable/" + expansionCID + "-0123456789abcdef-app.yml"
		},
		"another shared file at the ConfigMap key": func(m map[string]map[string]any) {
			m["/etc/app/app.yml"]["source"] = shared + "passwd"
		},
		"another folder of the emptyDir": func(m map[string]map[string]any) {
			m["/logs"]["source"] = "/run/kata-containers/sandbox/storage/YWJj/logs/q"
		},
		"the whole emptyDir": func(m map[string]map[string]any) {
			m["/logs"]["source"] = "/run/kata-containers/sandbox/storage/YWJj"
		},
		"emptyDir folder shared from the host": func(m map[string]map[string]any) {
			m["/logs"]["source"] = shared + "logs"
		},
		"memory emptyDir: another folder": func(m map[string]map[string]any) {
			m["/cache"]["source"] = "/run/kata-containers/sandbox/ephemeral/mem/d"
		},
		"mounted elsewhere": func(m map[string]map[string]any) {
			m["/cache"]["destination"] = "/usr/bin"
		},
		"read-only ConfigMap key mounted read-write": func(m map[string]map[string]any) {
			m["/etc/app/app.yml"]["options"] = []any{"rbind", "rprivate", "rw"}
		},
	}
	for name, mod := range tamper {
		t.Run("denied/"+name, func(t *testing.T) {
			m := goodMounts()
			mod(m)
			requireDeniedBy(t, res.Rego, demoSandbox, "CreateContainerRequest", request(m), "mounts_ok")
		})
	}
}

// TestStatefulSetClaimVolumes checks that the YAML side sees the volumes of
// a StatefulSet's claim templates as the StatefulSet controller adds them to
// its pods, so a workload is refused with the same field and reason as the
// webhook gives for the admitted pod: a claim mounted from the host without
// contrast.cc/host-shared-volumes naming it.
func TestStatefulSetClaimVolumes(t *testing.T) {
	src, _ := testRegistry(t)
	tmpl := corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "db", Image: "registry.example/acme/agent:2",
		VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
	}}}}
	st := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "demo"}, Spec: appsv1.StatefulSetSpec{
		Template:             tmpl,
		VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}}},
	}}
	w := policy.Workload{Kind: policy.KindStatefulSet, Name: "db", Namespace: "demo", Template: tmpl, Object: st}
	_, yamlErr := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "demo", OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", Controller: ptr.To(true)},
	}}, Spec: *tmpl.Spec.DeepCopy()}
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-db-0"},
	}}}
	_, podErr := policy.Generate(t.Context(), policy.GenerateInput{Pod: pod, Images: src})

	for name, err := range map[string]error{"workload": yamlErr, "admitted pod": podErr} {
		var fe *policy.FieldError
		require.ErrorAs(t, err, &fe, name)
		assert.Equal(t, "spec.containers[0].volumeMounts[0].name", fe.Field, name)
		require.ErrorIs(t, err, policy.ErrUnsupported, name)
		assert.Contains(t, fe.Detail(), `volume "data"`, name)
	}
	assert.Equal(t, podErr.Error(), yamlErr.Error(), "the same reason on both sides")
}

// slowFirst fails every image, the first container's last.
type slowFirst struct{ images.Source }

func (slowFirst) Resolve(ctx context.Context, image string, _ authn.Keychain) (*images.Image, error) {
	if image == "registry.example/acme/first:1" {
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	return nil, &images.Error{Image: image, Err: fmt.Errorf("%w: test", images.ErrNotFound)}
}

// TestFirstImageErrorByPosition checks that when several images fail, the
// error names the first by position in the pod (init containers first),
// whichever resolution fails first.
func TestFirstImageErrorByPosition(t *testing.T) {
	w := simplePod()
	spec := &w.Template.Spec
	spec.InitContainers = []corev1.Container{{Name: "init", Image: "registry.example/acme/first:1"}}
	spec.Containers[0].Image = "registry.example/acme/second:1"
	for range 5 {
		_, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: slowFirst{}})
		var fe *policy.FieldError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, "spec.initContainers[0].image", fe.Field)
		var ie *images.Error
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, "registry.example/acme/first:1", ie.Image)
		require.ErrorIs(t, err, images.ErrNotFound)
	}
}

// TestIngressNginxFromSharedManifest generates the policies of the
// ingress-nginx manifest of ../shared/workloads-real, whose images are pinned
// by digest (the corpus test cannot serve stand-ins under those digests):
// the images are given by their pinned digests. The controller's and the
// admission Jobs' $(POD_NAMESPACE) arguments are expanded at generation,
// the same from the YAML and from the admitted pod.
func TestIngressNginxFromSharedManifest(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(shareddata.Dir(t, shareddata.RealWorld), "ingress-nginx", "deploy.yaml"))
	require.NoError(t, err)
	ws, err := policy.DecodeWorkloads(b)
	require.NoError(t, err)
	src := &images.Static{Images: map[string]*images.Image{}}
	for _, w := range ws {
		for _, c := range append(slices.Clone(w.Template.Spec.InitContainers), w.Template.Spec.Containers...) {
			repo, digest, ok := strings.Cut(c.Image, "@")
			require.True(t, ok, "%s is pinned by digest", c.Image)
			repo = repo[:strings.LastIndex(repo, ":")]
			src.Images[c.Image] = &images.Image{Repository: repo, Digest: digest, Config: images.Config{
				Entrypoint: []string{"/usr/bin/dumb-init", "--"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			}}
		}
	}
	want := map[string][]string{
		"ingress-nginx-controller":       {"--publish-service=ingress-nginx/ingress-nginx-controller", "--configmap=ingress-nginx/ingress-nginx-controller"},
		"ingress-nginx-admission-create": {"--host=ingress-nginx-controller-admission,ingress-nginx-controller-admission.ingress-nginx.svc", "--namespace=ingress-nginx"},
		"ingress-nginx-admission-patch":  {"--namespace=ingress-nginx"},
	}
	require.Len(t, ws, len(want))
	for _, w := range ws {
		t.Run(w.Kind+"/"+w.Name, func(t *testing.T) {
			res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
			require.NoError(t, err)
			c := res.Data.Containers[len(res.Data.Containers)-1]
			for _, a := range want[w.Name] {
				assert.Contains(t, c.Args, a)
			}
			assert.Empty(t, c.ArgTemplates, "every reference is known at admission")
			pod := &corev1.Pod{ObjectMeta: *w.Template.ObjectMeta.DeepCopy(), Spec: *w.Template.Spec.DeepCopy()}
			pod.Namespace = w.Namespace
			pod.Name = w.Name
			if w.Kind == policy.KindJob {
				pod.GenerateName = w.Name + "-"
				pod.Name = w.Name + "-x2k9z"
				pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: w.Name, Controller: ptr.To(true)}}
			} else {
				pod.GenerateName = w.Name + "-5f8d7c9b4d-"
				pod.Name = pod.GenerateName + "x2k9z"
				pod.Labels["pod-template-hash"] = "5f8d7c9b4d"
				pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: w.Name + "-5f8d7c9b4d", Controller: ptr.To(true)}}
			}
			fromPod, err := policy.Generate(t.Context(), policy.GenerateInput{Pod: pod, Images: src})
			require.NoError(t, err)
			assert.Equal(t, res.Annotations, fromPod.Annotations)
		})
	}
}

// TestArgServiceLinks checks that references to service-link variables in
// arguments are expanded like the kubelet does, with the value the
// variable has in the request (held to the service-link patterns), and kept
// as written when the request has no such variable (no such Service).
func TestArgServiceLinks(t *testing.T) {
	src, _ := testRegistry(t)
	w := simplePod()
	w.Namespace = "demo"
	w.Template.Name = "p"
	w.Template.Spec.Containers[0].Args = []string{"--redis=$(REDIS_MASTER_SERVICE_HOST):$(REDIS_MASTER_SERVICE_PORT)", "--api=$(KUBERNETES_SERVICE_HOST)"}
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
	require.NoError(t, err)
	assert.Equal(t, []policy.ArgTemplate{
		{Index: 1, Parts: []policy.ArgPart{{Text: "--redis="}, {Var: "REDIS_MASTER_SERVICE_HOST"}, {Text: ":"}, {Var: "REDIS_MASTER_SERVICE_PORT"}}},
		{Index: 2, Parts: []policy.ArgPart{{Text: "--api="}, {Var: "KUBERNETES_SERVICE_HOST"}}},
	}, res.Data.Containers[1].ArgTemplates)

	img, err := src.Resolve(t.Context(), "registry.example/acme/agent:2", nil)
	require.NoError(t, err)
	links := []any{"REDIS_MASTER_SERVICE_HOST=10.0.0.9", "REDIS_MASTER_SERVICE_PORT=6379", "KUBERNETES_SERVICE_HOST=10.0.0.1"}
	for name, req := range map[string]map[string]any{
		"service links expanded":      agentRequest(t, img.Reference(), links, "--redis=10.0.0.9:6379", "--api=10.0.0.1"),
		"no such Service: as written": agentRequest(t, img.Reference(), links[2:], "--redis=$(REDIS_MASTER_SERVICE_HOST):$(REDIS_MASTER_SERVICE_PORT)", "--api=10.0.0.1"),
	} {
		t.Run("allowed/"+name, func(t *testing.T) {
			a, err := agentsim.New(res.Rego)
			require.NoError(t, err)
			demoSandbox(t, a)
			d, err := a.Allow(t.Context(), "CreateContainerRequest", req)
			require.NoError(t, err)
			assert.True(t, d.Allowed)
		})
	}
	t.Run("denied/argument differs from the service link", func(t *testing.T) {
		requireDeniedBy(t, res.Rego, demoSandbox, "CreateContainerRequest", agentRequest(t, img.Reference(), links, "--redis=evil.example:6379", "--api=10.0.0.1"), "args_ok")
	})
	t.Run("denied/service link that is no address", func(t *testing.T) {
		bad := []any{"REDIS_MASTER_SERVICE_HOST=evil.example", "REDIS_MASTER_SERVICE_PORT=6379", "KUBERNETES_SERVICE_HOST=10.0.0.1"}
		requireDeniedBy(t, res.Rego, demoSandbox, "CreateContainerRequest", agentRequest(t, img.Reference(), bad, "--redis=evil.example:6379", "--api=10.0.0.1"), "env_ok")
	})

	off := simplePod()
	off.Template.Spec.EnableServiceLinks = ptr.To(false)
	off.Template.Spec.Containers[0].Args = []string{"$(REDIS_MASTER_SERVICE_HOST)", "$(KUBERNETES_SERVICE_HOST)"}
	r, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: off, Images: src})
	require.NoError(t, err)
	assert.Equal(t, []policy.ArgTemplate{{Index: 2, Parts: []policy.ArgPart{{Var: "KUBERNETES_SERVICE_HOST"}}}}, r.Data.Containers[1].ArgTemplates,
		"without service links only the master service's variables exist")
}

// TestEnvTemplates checks literal env values that refer to variables known
// only at run time: the value must be its template expanded with those
// variables' values in the request, and an argument may refer to such a
// variable in turn. A reference to a variable defined later stays as
// written, as the kubelet leaves it.
func TestEnvTemplates(t *testing.T) {
	src, _ := testRegistry(t)
	w := simplePod()
	w.Namespace = "demo"
	w.Template.Name = "p"
	c := &w.Template.Spec.Containers[0]
	c.Env = []corev1.EnvVar{
		fieldEnv("POD_IP", "status.podIP"),
		{Name: "URL", Value: "https://$(POD_IP):8443/$(LATER)"},
		{Name: "LATER", Value: "x"},
	}
	c.Args = []string{"--advertise=$(URL)"}
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
	require.NoError(t, err)
	ct := res.Data.Containers[1]
	var url policy.EnvSpec
	for _, e := range ct.Env {
		if e.Name == "URL" {
			url = e
		}
	}
	assert.Equal(t, policy.EnvSpec{Name: "URL", Kind: "template", Value: "https://$(POD_IP):8443/$(LATER)", Required: true,
		Parts: []policy.ArgPart{{Text: "https://"}, {Var: "POD_IP"}, {Text: ":8443/$(LATER)"}}}, url)
	assert.Equal(t, []policy.ArgTemplate{{Index: 1, Parts: []policy.ArgPart{{Text: "--advertise="}, {Var: "URL"}}}}, ct.ArgTemplates)

	img, err := src.Resolve(t.Context(), "registry.example/acme/agent:2", nil)
	require.NoError(t, err)
	request := func(ip, url, arg string) map[string]any {
		return agentRequest(t, img.Reference(), []any{"POD_IP=" + ip, "URL=" + url, "LATER=x"}, arg)
	}
	t.Run("allowed/the request's values", func(t *testing.T) {
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		demoSandbox(t, a)
		d, err := a.Allow(t.Context(), "CreateContainerRequest", request("10.1.2.3", "https://10.1.2.3:8443/$(LATER)", "--advertise=https://10.1.2.3:8443/$(LATER)"))
		require.NoError(t, err)
		assert.True(t, d.Allowed)
	})
	denied := map[string]struct {
		req    map[string]any
		checks []string
	}{
		"value differs from its template": {request("10.1.2.3", "https://evil.example:8443/$(LATER)", "--advertise=https://evil.example:8443/$(LATER)"), []string{"env_ok"}},
		"later variable expanded":         {request("10.1.2.3", "https://10.1.2.3:8443/x", "--advertise=https://10.1.2.3:8443/x"), []string{"env_ok"}},
		"argument differs from the value": {request("10.1.2.3", "https://10.1.2.3:8443/$(LATER)", "--advertise=https://evil.example"), []string{"args_ok"}},
		"template filled with a non-IP":   {request("evil.example", "https://evil.example:8443/$(LATER)", "--advertise=https://evil.example:8443/$(LATER)"), []string{"env_ok"}},
	}
	for name, tc := range denied {
		t.Run("denied/"+name, func(t *testing.T) {
			requireDeniedBy(t, res.Rego, demoSandbox, "CreateContainerRequest", tc.req, tc.checks...)
		})
	}
}
