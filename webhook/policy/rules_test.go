package policy_test

import (
	"bufio"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/policy/agentsim"
)

// agentRequests reads testdata/agent-requests.txt: the request messages of
// the Kata agent's AgentService (see the file for its source).
func agentRequests(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("testdata/agent-requests.txt")
	require.NoError(t, err)
	defer f.Close()
	var names []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line, _, _ := strings.Cut(s.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			names = append(names, line)
		}
	}
	require.NoError(t, s.Err())
	return names
}

// requestRules are the names of the rules in rules.rego that the agent
// queries: the rules whose names start with an upper-case letter.
func requestRules(t *testing.T) []string {
	t.Helper()
	mod, err := ast.ParseModuleWithOpts("rules.rego", policy.Rules, ast.ParserOptions{RegoVersion: ast.RegoV1})
	require.NoError(t, err)
	var names []string
	for _, r := range mod.Rules {
		n := r.Head.Name.String()
		if n == "" {
			n = r.Head.Ref().String()
		}
		if unicode.IsUpper(rune(n[0])) && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// TestRuleNamesMatchAgentProto checks that every request rule is named after
// a message the agent really evaluates (a misspelled rule is never queried:
// the agent denies the request, and a real sandbox fails to start), and that
// every request the agent knows has an explicit decision.
func TestRuleNamesMatchAgentProto(t *testing.T) {
	want := agentRequests(t)
	require.Len(t, want, 37)
	slices.Sort(want)
	got := requestRules(t)
	for _, n := range got {
		assert.Contains(t, want, n, "rule %s is not a request message of agent.proto: the agent never queries it", n)
	}
	for _, n := range want {
		assert.Contains(t, got, n, "request %s of agent.proto has no rule (no explicit decision)", n)
	}
}

// copyJSON deep-copies a JSON-compatible value.
func copyJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// requireDeniedBy asserts that regoText denies req at endpoint, after setup
// ran on a fresh agent, and that the named checks are why: with them
// switched off (agentsim.WithoutChecks) the same sequence allows req, and
// each of them is needed (switching off all the others still denies). A
// malformed request or a broken rule therefore fails the assertion.
func requireDeniedBy(t *testing.T, regoText string, setup func(*testing.T, *agentsim.Agent), endpoint string, req any, checks ...string) {
	t.Helper()
	require.NotEmpty(t, checks, "name the check that denies the request")
	decide := func(text string) bool {
		t.Helper()
		a, err := agentsim.New(text)
		require.NoError(t, err)
		if setup != nil {
			setup(t, a)
		}
		d, err := a.Allow(t.Context(), endpoint, copyJSON(t, req))
		if err != nil {
			require.ErrorIs(t, err, agentsim.ErrEvaluation)
			return false
		}
		return d.Allowed
	}
	require.False(t, decide(regoText), "%s allowed", endpoint)
	without, err := agentsim.WithoutChecks(regoText, checks...)
	require.NoError(t, err)
	require.True(t, decide(without), "%s still denied without %v: another check denies it", endpoint, checks)
	if len(checks) > 1 {
		for i, c := range checks {
			others, err := agentsim.WithoutChecks(regoText, slices.Delete(slices.Clone(checks), i, i+1)...)
			require.NoError(t, err)
			require.False(t, decide(others), "%s allowed without %v: %s is not needed", endpoint, checks, c)
		}
	}
}

// TestRequestDecisions pins the decision for every request the agent knows
// that is not checked against the pod (those have their own tests): the
// requests the shim sends to run any pod are allowed, the others are denied
// by their rule's default, as Kata genpolicy's default rules deny them.
func TestRequestDecisions(t *testing.T) {
	src, _ := testRegistry(t)
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: simplePod(), Images: src})
	require.NoError(t, err)
	const cid = "88941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"
	allowed := map[string]map[string]any{
		"DestroySandboxRequest":                 {},
		"GuestDetailsRequest":                   {"mem_block_size": true, "mem_hotplug_probe": false},
		"GetOOMEventRequest":                    {},
		"OnlineCPUMemRequest":                   {"wait": false, "nb_cpus": 2, "cpu_only": false},
		"RemoveStaleVirtiofsShareMountsRequest": {},
		"SignalProcessRequest":                  {"container_id": cid, "exec_id": cid, "signal": 15},
		"StartContainerRequest":                 {"container_id": cid},
		"StatsContainerRequest":                 {"container_id": cid},
		"TtyWinResizeRequest":                   {"container_id": cid, "exec_id": cid, "row": 24, "column": 80},
		"WaitProcessRequest":                    {"container_id": cid, "exec_id": cid},
	}
	denied := map[string]map[string]any{
		"AddSwapRequest":               {"PCIPath": []any{1}},
		"CloseStdinRequest":            {"container_id": cid, "exec_id": cid},
		"GetIPTablesRequest":           {"is_ipv6": false},
		"GetMetricsRequest":            {},
		"ListInterfacesRequest":        {},
		"ListRoutesRequest":            {},
		"MemHotplugByProbeRequest":     {"memHotplugProbeAddr": []any{4294967296}},
		"PauseContainerRequest":        {"container_id": cid},
		"ReseedRandomDevRequest":       {"data": "AAAA"},
		"ResizeVolumeRequest":          {"volume_guest_path": "/x", "size": 1},
		"ResumeContainerRequest":       {"container_id": cid},
		"SetGuestDateTimeRequest":      {"Sec": 0, "Usec": 0},
		"SetIPTablesRequest":           {"is_ipv6": false, "data": ""},
		"SetPolicyRequest":             {"policy": "package agent_policy\ndefault CreateContainerRequest := true\n"},
		"UpdateContainerRequest":       {"container_id": cid, "resources": map[string]any{"CPU": map[string]any{"Shares": 2}}},
		"UpdateEphemeralMountsRequest": {"storages": []any{}},
		"VolumeStatsRequest":           {"volume_guest_path": "/x"},
		"WriteStreamRequest":           {"container_id": cid, "exec_id": cid, "data": "AAAA"},
	}
	checked := []string{
		"CreateSandboxRequest", "CreateContainerRequest", "RemoveContainerRequest", "ExecProcessRequest",
		"CopyFileRequest", "ReadStreamRequest", "UpdateInterfaceRequest", "UpdateRoutesRequest", "AddARPNeighborsRequest",
	}
	var all []string
	for n := range allowed {
		all = append(all, n)
	}
	for n := range denied {
		all = append(all, n)
	}
	all = append(all, checked...)
	slices.Sort(all)
	want := agentRequests(t)
	slices.Sort(want)
	require.Equal(t, want, all, "every request of agent.proto has a decision in this test")

	for name, input := range allowed {
		t.Run("allowed/"+name, func(t *testing.T) {
			a, err := agentsim.New(res.Rego)
			require.NoError(t, err)
			d, err := a.Allow(t.Context(), name, input)
			require.NoError(t, err)
			assert.True(t, d.Allowed)
		})
	}
	for name, input := range denied {
		t.Run("denied/"+name, func(t *testing.T) {
			requireDeniedBy(t, res.Rego, nil, name, input, name)
		})
	}
}

// webPolicy generates the policy of emojivoto's web Deployment and returns
// it with the web container's image reference.
func webPolicy(t *testing.T) (*policy.Result, string) {
	t.Helper()
	src, _ := testRegistry(t)
	for _, w := range emojivotoWorkloads(t) {
		if w.Name != "web" {
			continue
		}
		res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
		require.NoError(t, err)
		img, err := src.Resolve(t.Context(), "docker.l5d.io/buoyantio/emojivoto-web:v11", nil)
		require.NoError(t, err)
		return res, img.Reference()
	}
	t.Fatal("no web workload")
	return nil, ""
}

// withSandbox creates the web pod's pause container.
func withSandbox(t *testing.T, a *agentsim.Agent) {
	t.Helper()
	d, err := a.Allow(t.Context(), "CreateContainerRequest", sandboxRequest(t))
	require.NoError(t, err)
	require.True(t, d.Allowed, "pause container denied")
}

// TestKataAnnotations checks the io.katacontainers.config.* annotations of
// a CreateContainerRequest: only the policy annotations containerd passes
// through from the pod (pod_annotations of Kata's runtime configuration)
// and the ones the pod template itself carries are allowed.
func TestKataAnnotations(t *testing.T) {
	res, good := webPolicy(t)
	withAnno := func(k, v string) map[string]any {
		r := webRequest(t, good)
		oci(r)["Annotations"].(map[string]any)[k] = v
		return r
	}
	for _, k := range []string{policy.AnnotationInitData, policy.AnnotationLegacyPolicy} {
		t.Run("allowed/"+k, func(t *testing.T) {
			a, err := agentsim.New(res.Rego)
			require.NoError(t, err)
			withSandbox(t, a)
			d, err := a.Allow(t.Context(), "CreateContainerRequest", withAnno(k, "H4sIAAAAAAAA"))
			require.NoError(t, err)
			assert.True(t, d.Allowed)
		})
	}
	for _, k := range []string{
		"io.katacontainers.config.agent.debug_console",
		"io.katacontainers.config.hypervisor.kernel_params",
		"io.katacontainers.config.runtime.disable_guest_seccomp",
		"io.katacontainers.evil",
	} {
		t.Run("denied/"+k, func(t *testing.T) {
			requireDeniedBy(t, res.Rego, withSandbox, "CreateContainerRequest", withAnno(k, "true"), "annotations_ok")
		})
	}
	t.Run("allowed/the template's own key", func(t *testing.T) {
		src, _ := testRegistry(t)
		var web policy.Workload
		for _, w := range emojivotoWorkloads(t) {
			if w.Name == "web" {
				web = w
			}
		}
		const key = "io.katacontainers.config.hypervisor.default_memory"
		web.Template.Annotations = map[string]string{key: "4096"}
		res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &web, Images: src})
		require.NoError(t, err)
		assert.Equal(t, []string{key}, res.Data.Pod.KataAnnotations)
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		withSandbox(t, a)
		d, err := a.Allow(t.Context(), "CreateContainerRequest", withAnno(key, "4096"))
		require.NoError(t, err)
		assert.True(t, d.Allowed)
	})
}

const cloneNamespaceFlags = 0x7e020000 // CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

// runtimeDefaultProfile is the shape of containerd's default seccomp profile
// for a container with the default capabilities (CAP_SYS_CHROOT gives
// chroot; without CAP_SYS_ADMIN clone may not create namespaces), as the
// Kata agent receives it (oci.proto field names).
func runtimeDefaultProfile() map[string]any {
	allow := func(names ...any) map[string]any {
		return map[string]any{"Names": names, "Action": "SCMP_ACT_ALLOW", "Args": []any{}}
	}
	return map[string]any{
		"DefaultAction": "SCMP_ACT_ERRNO",
		"Architectures": []any{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"},
		"Flags":         []any{},
		"Syscalls": []any{
			allow("accept", "read", "write", "openat", "execve", "exit_group", "mmap", "futex"),
			map[string]any{"Names": []any{"personality"}, "Action": "SCMP_ACT_ALLOW", "Args": []any{
				map[string]any{"Index": 0, "Value": 0, "ValueTwo": 0, "Op": "SCMP_CMP_EQ"},
			}},
			allow("arch_prctl", "modify_ldt"),
			allow("chroot"),
			map[string]any{"Names": []any{"clone"}, "Action": "SCMP_ACT_ALLOW", "Args": []any{
				map[string]any{"Index": 0, "Value": cloneNamespaceFlags, "ValueTwo": 0, "Op": "SCMP_CMP_MASKED_EQ"},
			}},
			map[string]any{"Names": []any{"clone3"}, "Action": "SCMP_ACT_ERRNO", "ErrnoRet": 38, "Args": []any{}},
		},
	}
}

// TestResourcesAndSeccomp checks OCI.Linux.Resources.Devices and
// OCI.Linux.Seccomp of a CreateContainerRequest: device cgroup rules may
// only be the default deny-all (or absent: the Kata shim clears them), and
// the seccomp profile is what the pod asks for.
func TestResourcesAndSeccomp(t *testing.T) {
	res, good := webPolicy(t)
	linux := func(r map[string]any) map[string]any { return oci(r)["Linux"].(map[string]any) }
	request := func(mod func(r map[string]any)) map[string]any {
		r := webRequest(t, good)
		mod(r)
		return r
	}
	devices := func(rules ...any) func(r map[string]any) {
		return func(r map[string]any) { linux(r)["Resources"].(map[string]any)["Devices"] = rules }
	}
	denyAll := map[string]any{"Allow": false, "Type": "", "Major": nil, "Minor": nil, "Access": "rwm"}

	t.Run("allowed/devices cleared by the shim", func(t *testing.T) {
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		withSandbox(t, a)
		d, err := a.Allow(t.Context(), "CreateContainerRequest", request(devices()))
		require.NoError(t, err)
		assert.True(t, d.Allowed)
	})
	t.Run("allowed/containerd's default deny-all", func(t *testing.T) {
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		withSandbox(t, a)
		d, err := a.Allow(t.Context(), "CreateContainerRequest", request(devices(denyAll)))
		require.NoError(t, err)
		assert.True(t, d.Allowed)
	})
	deviceTamper := map[string]func(r map[string]any){
		"allow a rwm":            devices(denyAll, map[string]any{"Allow": true, "Type": "a", "Major": nil, "Minor": nil, "Access": "rwm"}),
		"allow one block device": devices(denyAll, map[string]any{"Allow": true, "Type": "b", "Major": 8, "Minor": 0, "Access": "rw"}),
		"allow without deny-all": devices(map[string]any{"Allow": true, "Type": "c", "Major": 1, "Minor": 3, "Access": "rwm"}),
	}
	for name, f := range deviceTamper {
		t.Run("denied/"+name, func(t *testing.T) {
			requireDeniedBy(t, res.Rego, withSandbox, "CreateContainerRequest", request(f), "device_cgroup_ok")
		})
	}
	// The web pod does not ask for a profile: the kubelet's default is
	// Unconfined, and containerd gives the container none.
	t.Run("denied/unconfined pod given a profile", func(t *testing.T) {
		r := request(func(r map[string]any) {
			p := runtimeDefaultProfile()
			p["DefaultAction"] = "SCMP_ACT_NOTIFY"
			linux(r)["Seccomp"] = p
		})
		requireDeniedBy(t, res.Rego, withSandbox, "CreateContainerRequest", r, "seccomp_ok")
	})

	// The same pod asking for RuntimeDefault.
	src, _ := testRegistry(t)
	var web policy.Workload
	for _, w := range emojivotoWorkloads(t) {
		if w.Name == "web" {
			web = w
		}
	}
	web.Template.Spec.SecurityContext = &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	rd, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &web, Images: src})
	require.NoError(t, err)
	withProfile := func(mod func(p map[string]any)) map[string]any {
		return request(func(r map[string]any) {
			p := runtimeDefaultProfile()
			if mod != nil {
				mod(p)
			}
			linux(r)["Seccomp"] = p
		})
	}
	// containerd gives the pause container the pod's profile too
	rdSandbox := func(t *testing.T, a *agentsim.Agent) {
		t.Helper()
		r := sandboxRequest(t)
		linux(r)["Seccomp"] = runtimeDefaultProfile()
		d, err := a.Allow(t.Context(), "CreateContainerRequest", r)
		require.NoError(t, err)
		require.True(t, d.Allowed, "pause container denied")
	}
	t.Run("denied/runtime default: pause container without profile", func(t *testing.T) {
		requireDeniedBy(t, rd.Rego, nil, "CreateContainerRequest", sandboxRequest(t), "seccomp_ok")
	})
	t.Run("allowed/runtime default", func(t *testing.T) {
		a, err := agentsim.New(rd.Rego)
		require.NoError(t, err)
		rdSandbox(t, a)
		d, err := a.Allow(t.Context(), "CreateContainerRequest", withProfile(nil))
		require.NoError(t, err)
		assert.True(t, d.Allowed)
	})
	syscalls := func(p map[string]any) []any { return p["Syscalls"].([]any) }
	seccompTamper := map[string]map[string]any{
		"profile dropped":  request(func(r map[string]any) { linux(r)["Seccomp"] = nil }),
		"allow by default": withProfile(func(p map[string]any) { p["DefaultAction"] = "SCMP_ACT_ALLOW" }),
		"log by default":   withProfile(func(p map[string]any) { p["DefaultAction"] = "SCMP_ACT_LOG" }),
		"mount without CAP_SYS_ADMIN": withProfile(func(p map[string]any) {
			p["Syscalls"] = append(syscalls(p), map[string]any{"Names": []any{"mount", "umount2"}, "Action": "SCMP_ACT_ALLOW", "Args": []any{}})
		}),
		"ptrace without CAP_SYS_PTRACE": withProfile(func(p map[string]any) {
			p["Syscalls"] = append(syscalls(p), map[string]any{"Names": []any{"ptrace"}, "Action": "SCMP_ACT_LOG", "Args": []any{}})
		}),
		"clone of namespaces": withProfile(func(p map[string]any) {
			p["Syscalls"] = append(syscalls(p), map[string]any{"Names": []any{"clone"}, "Action": "SCMP_ACT_ALLOW", "Args": []any{}})
		}),
		"unshare": withProfile(func(p map[string]any) {
			p["Syscalls"] = append(syscalls(p), map[string]any{"Names": []any{"unshare"}, "Action": "SCMP_ACT_ALLOW", "Args": []any{}})
		}),
		"user notification": withProfile(func(p map[string]any) {
			p["Syscalls"] = append(syscalls(p), map[string]any{"Names": []any{"openat"}, "Action": "SCMP_ACT_NOTIFY", "Args": []any{}})
		}),
		"flags": withProfile(func(p map[string]any) { p["Flags"] = []any{"SECCOMP_FILTER_FLAG_SPEC_ALLOW"} }),
	}
	for name, r := range seccompTamper {
		t.Run("denied/runtime default: "+name, func(t *testing.T) {
			requireDeniedBy(t, rd.Rego, rdSandbox, "CreateContainerRequest", r, "seccomp_ok")
		})
	}
}

// TestNamespaceBinding checks that the policy binds the namespace: the
// emojivoto web pod replayed into kube-system is denied and has another
// policy hash; only a workload without any namespace keeps a pattern.
func TestNamespaceBinding(t *testing.T) {
	res, good := webPolicy(t)
	assert.Equal(t, "^emojivoto$", res.Data.Pod.NamespaceRegex)
	t.Run("denied/pause container in another namespace", func(t *testing.T) {
		requireDeniedBy(t, res.Rego, nil, "CreateContainerRequest", sandboxRequestFor(t, podName, "kube-system"), "namespace_ok")
	})
	t.Run("denied/container in another namespace", func(t *testing.T) {
		// without a sandbox in the state the container is checked alone
		r := containerRequest(t, webID, "web-svc", podName, "kube-system", good)
		orig := webRequest(t, good)
		oci(r)["Process"] = oci(orig)["Process"]
		requireDeniedBy(t, res.Rego, nil, "CreateContainerRequest", r, "namespace_ok")
	})

	src, _ := testRegistry(t)
	var web policy.Workload
	for _, w := range emojivotoWorkloads(t) {
		if w.Name == "web" {
			web = w
		}
	}
	pod := &corev1.Pod{ObjectMeta: *web.Template.ObjectMeta.DeepCopy(), Spec: *web.Template.Spec.DeepCopy()}
	pod.GenerateName = "web-5f8d7c9b4d-"
	pod.Labels = map[string]string{"app": "web-svc", "version": "v11", "pod-template-hash": "5f8d7c9b4d"}
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5f8d7c9b4d", Controller: ptrTo(true)}}
	hash := func(ns string) string {
		p := pod.DeepCopy()
		p.Namespace = ns
		r, err := policy.Generate(t.Context(), policy.GenerateInput{Pod: p, Images: src})
		require.NoError(t, err)
		return r.Annotations[policy.AnnotationPolicyHash]
	}
	assert.Equal(t, res.Annotations[policy.AnnotationPolicyHash], hash("emojivoto"), "the admitted pod has the hash of its YAML")
	assert.NotEqual(t, hash("emojivoto"), hash("kube-system"), "a pod replayed into kube-system has the same policy hash")

	noNS := web
	noNS.Namespace = ""
	r, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &noNS, Images: src})
	require.NoError(t, err)
	assert.Equal(t, "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", r.Data.Pod.NamespaceRegex, "YAML without a namespace keeps the pattern")
}

// envFromPod is a pod whose container takes variables from a ConfigMap and
// has one literal variable.
func envFromPod(ef ...corev1.EnvFromSource) *policy.Workload {
	w := simplePod()
	w.Namespace = "demo"
	w.Template.Name = "p"
	w.Template.Spec.Containers[0].Command = []string{"/agent"}
	w.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "MODE", Value: "prod"}}
	w.Template.Spec.Containers[0].EnvFrom = ef
	return w
}

// TestEnvFrom checks that envFrom brings exactly the keys and values of the
// referenced ConfigMap as it is at generation, never an open name pattern.
func TestEnvFrom(t *testing.T) {
	src, _ := testRegistry(t)
	cfg := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "demo"},
		Data: map[string]string{"LEVEL": "debug", "URL": "https://db.demo:5432"}}
	w := envFromPod(corev1.EnvFromSource{Prefix: "APP_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}})
	w.EnvSources = &policy.EnvSources{ConfigMaps: map[string]*corev1.ConfigMap{"cfg": cfg}}
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
	require.NoError(t, err)
	img, err := src.Resolve(t.Context(), "registry.example/acme/agent:2", nil)
	require.NoError(t, err)

	const cid = "44941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"
	sandbox := func(t *testing.T, a *agentsim.Agent) {
		t.Helper()
		d, err := a.Allow(t.Context(), "CreateContainerRequest", sandboxRequestFor(t, "p", "demo"))
		require.NoError(t, err)
		require.True(t, d.Allowed, "pause container denied")
	}
	request := func(env ...any) map[string]any {
		r := containerRequest(t, cid, "c", "p", "demo", img.Reference())
		p := proc(r)
		p["Args"] = []any{"/agent"}
		p["Cwd"] = "/"
		p["User"] = map[string]any{"UID": 0, "GID": 0, "AdditionalGids": []any{0}, "Username": ""}
		p["Env"] = append([]any{"PATH=/", "HOSTNAME=p", "MODE=prod", "KUBERNETES_SERVICE_HOST=10.0.0.1"}, env...)
		return r
	}
	t.Run("allowed/the ConfigMap's variables", func(t *testing.T) {
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		sandbox(t, a)
		d, err := a.Allow(t.Context(), "CreateContainerRequest", request("APP_LEVEL=debug", "APP_URL=https://db.demo:5432"))
		require.NoError(t, err)
		assert.True(t, d.Allowed)
	})
	for name, env := range map[string][]any{
		"LD_PRELOAD added":                  {"APP_LEVEL=debug", "APP_URL=https://db.demo:5432", "LD_PRELOAD=/tmp/evil.so"},
		"prefixed variable added":           {"APP_LEVEL=debug", "APP_URL=https://db.demo:5432", "APP_EXTRA=1"},
		"value changed":                     {"APP_LEVEL=debug", "APP_URL=https://evil.example:5432"},
		"variable of the ConfigMap missing": {"APP_LEVEL=debug"},
	} {
		t.Run("denied/"+name, func(t *testing.T) {
			requireDeniedBy(t, res.Rego, sandbox, "CreateContainerRequest", request(env...), "env_ok")
		})
	}
	assert.NotContains(t, res.Rego, `[-._a-zA-Z][-._a-zA-Z0-9]*=(?s:.*)`, "no open name pattern")
}

// TestEnvFromUnavailable checks that envFrom sources that cannot be pinned
// are refused at generation, naming the field.
func TestEnvFromUnavailable(t *testing.T) {
	src, _ := testRegistry(t)
	optional := true
	cases := map[string]struct {
		ef        corev1.EnvFromSource
		sources   *policy.EnvSources
		wantField string
	}{
		"ConfigMap not given": {
			ef:        corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
			wantField: "spec.containers[0].envFrom[0].configMapRef.name",
		},
		"ConfigMap missing": {
			ef:        corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
			sources:   &policy.EnvSources{ConfigMaps: map[string]*corev1.ConfigMap{}},
			wantField: "spec.containers[0].envFrom[0].configMapRef.name",
		},
		"Secret": {
			ef:        corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}}},
			wantField: "spec.containers[0].envFrom[0].secretRef",
		},
		"optional Secret": {
			ef:        corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Optional: &optional}},
			wantField: "spec.containers[0].envFrom[0].secretRef",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := envFromPod(tc.ef)
			w.EnvSources = tc.sources
			_, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
			var fe *policy.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tc.wantField, fe.Field)
			require.ErrorIs(t, err, policy.ErrUnsupported)
		})
	}
	// An optional ConfigMap that does not exist brings no variables.
	w := envFromPod(corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Optional: &optional}})
	w.EnvSources = &policy.EnvSources{}
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: w, Images: src})
	require.NoError(t, err)
	for _, e := range res.Data.Containers[1].Env {
		assert.NotContains(t, []string{"LEVEL", "URL"}, e.Name)
	}
}

// kataRegorusBuiltins are the builtins the rules may call: registered by
// regorus (src/builtins/mod.rs) without optional features or under the
// features Kata builds its agent with (src/agent/policy/Cargo.toml: arc,
// base64, base64url, regex, std). crypto.* is not among them.
var kataRegorusBuiltins = []string{
	"array.concat", "bits.and", "bits.negate", "concat", "count", "endswith", "indexof", "json.unmarshal",
	"object.get", "regex.match", "replace", "split", "startswith", "substring", "trim_right",
	// operators
	"eq", "equal", "neq", "gt", "gte", "lt", "lte", "plus", "minus", "internal.member_2", "internal.member_3",
	"assign",
}

// TestRulesUseKataBuiltins checks that rules.rego calls only builtins the
// Kata agent's regorus has: an unknown builtin fails every request in the
// guest although OPA (our tests) evaluates it.
func TestRulesUseKataBuiltins(t *testing.T) {
	mod, err := ast.ParseModuleWithOpts("rules.rego", policy.Rules, ast.ParserOptions{RegoVersion: ast.RegoV1})
	require.NoError(t, err)
	rules := map[string]bool{}
	for _, r := range mod.Rules {
		rules[r.Head.Name.String()] = true
	}
	var used []string
	ast.WalkExprs(mod, func(e *ast.Expr) bool {
		if !e.IsCall() {
			return false
		}
		op := e.Operator().String()
		if !rules[op] && !slices.Contains(used, op) {
			used = append(used, op)
		}
		return false
	})
	ast.WalkTerms(mod, func(term *ast.Term) bool {
		if call, ok := term.Value.(ast.Call); ok {
			op := call[0].String()
			if !rules[op] && !slices.Contains(used, op) {
				used = append(used, op)
			}
		}
		return false
	})
	require.NotEmpty(t, used)
	for _, op := range used {
		assert.Contains(t, kataRegorusBuiltins, op, "rules.rego calls %s, which Kata's regorus does not have", op)
	}
}
