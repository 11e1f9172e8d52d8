package policy_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/policy/agentsim"
)

const (
	privPod    = "privileged-5f8d7c9b4d-x2k9z"
	privNS     = "demo"
	privTuneID = "31941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"
	privToolID = "32941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"
	privAppID  = "33941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"
)

// privilegedCaps is what containerd's oci.WithAllCurrentCapabilities gives
// on a current kernel (every capability up to CAP_CHECKPOINT_RESTORE), in
// the order of capability numbers.
var privilegedCaps = []any{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

func privilegedWorkload(t *testing.T) policy.Workload {
	t.Helper()
	ws := readWorkloads(t, "testdata/privileged.yaml")
	require.Len(t, ws, 1)
	return ws[0]
}

// setMountOption replaces the options of the mount at dest.
func setMountOptions(r map[string]any, dest string, opts ...any) {
	for _, m := range oci(r)["Mounts"].([]any) {
		if m := m.(map[string]any); m["destination"] == dest {
			m["options"] = opts
		}
	}
}

// privSandbox is the pause container of the privileged pod as containerd 2
// creates it: the sandbox is privileged, so its sysfs is read-write.
func privSandbox(t *testing.T) map[string]any {
	r := sandboxRequestFor(t, privPod, privNS)
	setMountOptions(r, "/sys", "nosuid", "noexec", "nodev", "rw")
	return r
}

// plainRequest is the CreateContainerRequest of an ordinary container of
// the privileged pod (image registry.example/acme/agent:2, no user).
func plainRequest(t *testing.T, cid, name, imageRef string, args []any, env ...any) map[string]any {
	r := containerRequest(t, cid, name, privPod, privNS, imageRef)
	p := proc(r)
	p["Args"] = args
	p["Cwd"] = "/"
	p["User"] = map[string]any{"UID": 0, "GID": 0, "AdditionalGids": []any{0}, "Username": ""}
	p["Env"] = append([]any{"PATH=/", "HOSTNAME=" + privPod, "KUBERNETES_SERVICE_HOST=10.0.0.1"}, env...)
	return r
}

// makePrivileged turns a request into the shape containerd's CRI plugin
// gives a privileged container with privileged_without_host_devices: all
// capabilities in the bounding, effective and permitted sets, no masked or
// read-only paths, sysfs and cgroup read-write, unconfined AppArmor and
// seccomp, no devices.
func makePrivileged(r map[string]any) {
	p := proc(r)
	p["Capabilities"] = map[string]any{
		"Ambient": []any{}, "Inheritable": []any{},
		"Bounding": privilegedCaps, "Effective": privilegedCaps, "Permitted": privilegedCaps,
	}
	p["ApparmorProfile"] = ""
	l := oci(r)["Linux"].(map[string]any)
	l["MaskedPaths"], l["ReadonlyPaths"], l["Seccomp"] = []any{}, []any{}, nil
	setMountOptions(r, "/sys", "nosuid", "noexec", "nodev", "rw")
	setMountOptions(r, "/sys/fs/cgroup", "nosuid", "noexec", "nodev", "relatime", "rw")
}

func privilegedRequest(t *testing.T, cid, name, imageRef string, args []any, env ...any) map[string]any {
	r := plainRequest(t, cid, name, imageRef, args, env...)
	makePrivileged(r)
	return r
}

// TestPrivilegedRequests drives the policy of testdata/privileged.yaml with
// Kata-format requests: the privileged containers may be created as
// containerd creates them, with everything else still pinned; the ordinary
// container next to them may not become privileged.
func TestPrivilegedRequests(t *testing.T) {
	src, _ := testRegistry(t)
	w := privilegedWorkload(t)
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
	require.NoError(t, err)
	img, err := src.Resolve(t.Context(), "registry.example/acme/agent:2", nil)
	require.NoError(t, err)
	good := img.Reference()

	tune := func(t *testing.T) map[string]any {
		return privilegedRequest(t, privTuneID, "tune", good, []any{"/agent", "tune", "--sysfs", "/sys/kernel/mm/transparent_hugepage/enabled=never"})
	}
	tool := func(t *testing.T) map[string]any {
		return privilegedRequest(t, privToolID, "tool", good, []any{"/agent", "watch"}, "MODE=guest")
	}
	app := func(t *testing.T) map[string]any {
		return plainRequest(t, privAppID, "app", good, []any{"/agent", "serve"})
	}
	allow := func(t *testing.T, a *agentsim.Agent, kind string, req any) bool {
		d, err := a.Allow(t.Context(), kind, req)
		return err == nil && d.Allowed
	}
	fresh := func(t *testing.T) *agentsim.Agent {
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		require.True(t, allow(t, a, "CreateContainerRequest", privSandbox(t)), "pause container denied")
		return a
	}
	sandbox := func(t *testing.T, a *agentsim.Agent) {
		t.Helper()
		require.True(t, allow(t, a, "CreateContainerRequest", privSandbox(t)), "pause container denied")
	}
	mustAllow := func(t *testing.T, a *agentsim.Agent, req map[string]any) {
		t.Helper()
		if !allow(t, a, "CreateContainerRequest", req) {
			explainCreate(t, res.Rego, a.State(), req)
			t.FailNow()
		}
	}

	t.Run("good", func(t *testing.T) {
		a := fresh(t)
		mustAllow(t, a, tune(t))
		require.True(t, allow(t, a, "RemoveContainerRequest", map[string]any{"container_id": privTuneID}))
		mustAllow(t, a, tool(t))
		mustAllow(t, a, app(t))
	})

	// what different containerd versions produce for the same pod
	variants := map[string]func(t *testing.T) (sandbox, tool map[string]any){
		"sandbox sysfs read-only (containerd 1.x)": func(t *testing.T) (map[string]any, map[string]any) {
			return sandboxRequestFor(t, privPod, privNS), tool(t)
		},
		"sysfs without ro/rw (old CRI plugin dropped ro)": func(t *testing.T) (map[string]any, map[string]any) {
			r := tool(t)
			setMountOptions(r, "/sys", "nosuid", "noexec", "nodev")
			return privSandbox(t), r
		},
		"sysfs read-only in a privileged container": func(t *testing.T) (map[string]any, map[string]any) {
			r := tool(t)
			setMountOptions(r, "/sys", "nosuid", "noexec", "nodev", "ro")
			return privSandbox(t), r
		},
		"fewer capabilities (older kernel)": func(t *testing.T) (map[string]any, map[string]any) {
			r := tool(t)
			caps := privilegedCaps[:38]
			c := proc(r)["Capabilities"].(map[string]any)
			c["Bounding"], c["Effective"], c["Permitted"] = caps, caps, caps
			return privSandbox(t), r
		},
		"cgroup2 mount extras": func(t *testing.T) (map[string]any, map[string]any) {
			r := tool(t)
			setMountOptions(r, "/sys/fs/cgroup", "nosuid", "noexec", "nodev", "relatime", "rw", "nsdelegate", "memory_recursiveprot")
			return privSandbox(t), r
		},
		"AppArmor profile kept": func(t *testing.T) (map[string]any, map[string]any) {
			r := tool(t)
			proc(r)["ApparmorProfile"] = "cri-containerd.apparmor.d"
			return privSandbox(t), r
		},
	}
	for name, v := range variants {
		t.Run("allowed/"+name, func(t *testing.T) {
			sb, r := v(t)
			a, err := agentsim.New(res.Rego)
			require.NoError(t, err)
			require.True(t, allow(t, a, "CreateContainerRequest", sb), "pause container denied")
			mustAllow(t, a, r)
		})
	}

	// The privileged container is still pinned: every change is denied.
	tamper := map[string]struct {
		mod    func(r map[string]any)
		checks []string
	}{
		"other digest": {func(r map[string]any) {
			r["storages"].([]any)[0].(map[string]any)["source"] = "registry.example/acme/agent@sha256:" + strings.Repeat("0", 64)
		}, []string{"storages_ok"}},
		"tag instead of digest": {func(r map[string]any) {
			r["storages"].([]any)[0].(map[string]any)["source"] = "registry.example/acme/agent:2"
		}, []string{"storages_ok"}},
		"args":          {func(r map[string]any) { proc(r)["Args"] = []any{"/bin/sh", "-c", "evil"} }, []string{"args_ok"}},
		"env added":     {func(r map[string]any) { proc(r)["Env"] = append(proc(r)["Env"].([]any), "LD_PRELOAD=/tmp/evil.so") }, []string{"env_ok"}},
		"env changed":   {func(r map[string]any) { proc(r)["Env"].([]any)[3] = "MODE=host" }, []string{"env_ok"}},
		"cwd":           {func(r map[string]any) { proc(r)["Cwd"] = "/tmp" }, []string{"cwd_ok"}},
		"other user":    {func(r map[string]any) { proc(r)["User"].(map[string]any)["UID"] = 1000 }, []string{"user_ok"}},
		"terminal":      {func(r map[string]any) { proc(r)["Terminal"] = true }, []string{"terminal_ok"}},
		"no-new-privs":  {func(r map[string]any) { proc(r)["NoNewPrivileges"] = true }, []string{"no_new_privileges_ok"}},
		"SELinux label": {func(r map[string]any) { proc(r)["SelinuxLabel"] = "system_u:system_r:spc_t:s0" }, []string{"no_selinux_label"}},
		"inheritable capabilities": {func(r map[string]any) {
			proc(r)["Capabilities"].(map[string]any)["Inheritable"] = privilegedCaps
		}, []string{"caps_ok"}},
		"ambient capabilities": {func(r map[string]any) {
			proc(r)["Capabilities"].(map[string]any)["Ambient"] = []any{"CAP_SYS_ADMIN"}
		}, []string{"caps_ok"}},
		"unknown capability": {func(r map[string]any) {
			c := proc(r)["Capabilities"].(map[string]any)
			c["Bounding"] = append(append([]any{}, privilegedCaps...), "CAP_FUTURE")
		}, []string{"caps_ok"}},
		"host device (privileged_without_host_devices=false)": {func(r map[string]any) {
			oci(r)["Linux"].(map[string]any)["Devices"] = []any{map[string]any{"Path": "/dev/sda", "Type": "b", "Major": 8, "Minor": 0}}
		}, []string{"linux_devices_ok"}},
		"agent device": {func(r map[string]any) {
			r["devices"] = []any{map[string]any{"id": "vfio1", "type_": "vfio-pci-gk"}}
		}, []string{"agent_devices_ok"}},
		"host mount": {func(r map[string]any) {
			oci(r)["Mounts"] = append(oci(r)["Mounts"].([]any), map[string]any{"destination": "/host", "source": "/", "type_": "bind", "options": []any{"rbind"}})
		}, []string{"mounts_ok"}},
		"/sys bound from elsewhere": {func(r map[string]any) {
			for _, m := range oci(r)["Mounts"].([]any) {
				if m := m.(map[string]any); m["destination"] == "/sys" {
					m["type_"], m["source"], m["options"] = "bind", "/run/kata-containers/shared/containers/evil", []any{"rbind", "rw"}
				}
			}
		}, []string{"mounts_ok"}},
		"sysfs with suid": {func(r map[string]any) {
			setMountOptions(r, "/sys", "noexec", "nodev", "rw")
		}, []string{"mounts_ok"}},
		"sysfs shared propagation": {func(r map[string]any) {
			setMountOptions(r, "/sys", "nosuid", "noexec", "nodev", "rw", "rshared")
		}, []string{"mounts_ok"}},
		"cgroup with exec": {func(r map[string]any) {
			setMountOptions(r, "/sys/fs/cgroup", "nosuid", "nodev", "relatime", "rw")
		}, []string{"mounts_ok"}},
		"shared rootfs": {func(r map[string]any) {
			oci(r)["Root"].(map[string]any)["Path"] = "/run/kata-containers/shared/containers/" + privToolID + "/rootfs"
		}, []string{"root_ok"}},
		"hook": {func(r map[string]any) {
			oci(r)["Hooks"] = map[string]any{"Prestart": []any{map[string]any{"Path": "/bin/evil"}}}
		}, []string{"hooks_ok"}},
		"user namespace mapping": {func(r map[string]any) {
			oci(r)["Linux"].(map[string]any)["UIDMappings"] = []any{map[string]any{"ContainerID": 0, "HostID": 0, "Size": 65536}}
		}, []string{"no_id_mappings"}},
		"pid namespace of the sandbox": {func(r map[string]any) {
			l := oci(r)["Linux"].(map[string]any)
			l["Namespaces"] = append(l["Namespaces"].([]any), map[string]any{"Type": "pid", "Path": "/proc/1/ns/pid"})
		}, []string{"namespaces_ok"}},
		"sysctl": {func(r map[string]any) {
			oci(r)["Linux"].(map[string]any)["Sysctl"] = map[string]any{"kernel.modules_disabled": "0"}
		}, []string{"sysctls_ok"}},
		"shared mount": {func(r map[string]any) {
			r["shared_mounts"] = []any{map[string]any{"name": "x", "src_ctr": "tool", "src_path": "/", "dst_ctr": "app", "dst_path": "/host"}}
		}, []string{"no_shared_mounts"}},
	}
	for name, tc := range tamper {
		t.Run("tampered/"+name, func(t *testing.T) {
			r := tool(t)
			tc.mod(r)
			requireDeniedBy(t, res.Rego, sandbox, "CreateContainerRequest", r, tc.checks...)
		})
	}

	// The ordinary container of the same pod cannot become privileged,
	// neither as a whole nor in any single aspect.
	escalate := map[string]struct {
		mod    func(r map[string]any)
		checks []string
	}{
		"privileged shape": {makePrivileged, []string{"caps_ok", "paths_ok", "mounts_ok"}},
		"all capabilities": {func(r map[string]any) {
			c := proc(r)["Capabilities"].(map[string]any)
			c["Bounding"], c["Effective"], c["Permitted"] = privilegedCaps, privilegedCaps, privilegedCaps
		}, []string{"caps_ok"}},
		"CAP_SYS_ADMIN": {func(r map[string]any) {
			c := proc(r)["Capabilities"].(map[string]any)
			c["Bounding"] = append(c["Bounding"].([]any), "CAP_SYS_ADMIN")
		}, []string{"caps_ok"}},
		"no masked paths":    {func(r map[string]any) { oci(r)["Linux"].(map[string]any)["MaskedPaths"] = []any{} }, []string{"paths_ok"}},
		"no read-only paths": {func(r map[string]any) { oci(r)["Linux"].(map[string]any)["ReadonlyPaths"] = []any{} }, []string{"paths_ok"}},
		"writable sysfs":     {func(r map[string]any) { setMountOptions(r, "/sys", "nosuid", "noexec", "nodev", "rw") }, []string{"mounts_ok"}},
		"sysfs without ro":   {func(r map[string]any) { setMountOptions(r, "/sys", "nosuid", "noexec", "nodev") }, []string{"mounts_ok"}},
		"writable cgroupfs": {func(r map[string]any) {
			setMountOptions(r, "/sys/fs/cgroup", "nosuid", "noexec", "nodev", "relatime", "rw")
		}, []string{"mounts_ok"}},
		"named as the privileged container": {func(r map[string]any) {
			makePrivileged(r)
			oci(r)["Annotations"].(map[string]any)["io.kubernetes.cri.container-name"] = "tool"
		}, []string{"args_ok", "env_ok"}},
	}
	for name, tc := range escalate {
		t.Run("escalated/"+name, func(t *testing.T) {
			r := app(t)
			tc.mod(r)
			requireDeniedBy(t, res.Rego, sandbox, "CreateContainerRequest", r, tc.checks...)
		})
	}
}

// TestPrivilegedOnlyWhereRequested checks that the privileged exceptions
// exist only for the privileged containers and only in pods that have one:
// without privileged containers the pod's sandbox keeps a read-only sysfs.
func TestPrivilegedOnlyWhereRequested(t *testing.T) {
	src, _ := testRegistry(t)
	w := privilegedWorkload(t)
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
	require.NoError(t, err)
	got := map[string]bool{}
	for _, c := range res.Data.Containers {
		got[c.Name] = c.Privileged
		if c.Privileged {
			assert.Len(t, c.Capabilities, 41, c.Name)
		}
	}
	assert.Equal(t, map[string]bool{"": false, "tune": true, "tool": true, "app": false}, got)

	plain := privilegedWorkload(t)
	for _, cs := range [][]corev1.Container{plain.Template.Spec.InitContainers, plain.Template.Spec.Containers} {
		for i := range cs {
			cs[i].SecurityContext = nil
		}
	}
	res, err = policy.Generate(t.Context(), policy.GenerateInput{Workload: &plain, Images: src})
	require.NoError(t, err)
	a, err := agentsim.New(res.Rego)
	require.NoError(t, err)
	// a sandbox with writable sysfs in a pod without privileged containers
	requireDeniedBy(t, res.Rego, nil, "CreateContainerRequest", privSandbox(t), "mounts_ok")
	d, err := a.Allow(t.Context(), "CreateContainerRequest", sandboxRequestFor(t, privPod, privNS))
	require.NoError(t, err)
	assert.True(t, d.Allowed)
}
