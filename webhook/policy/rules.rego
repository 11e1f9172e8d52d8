# Contrast Kata agent policy rules.
#
# Written for the Contrast project. The generator appends `policy_data`
# (one pod's expectations) to this file; the Kata agent evaluates
# data.agent_policy.<RequestName> for every request it receives. A request
# rule yields either a boolean or {"allowed": bool, "ops": [JSON patch]}; the
# agent applies the ops to data.pstate after an allowed request.

package agent_policy

import rego.v1

# Requests that are always allowed: the Kata shim sends them to run any pod
# (sandbox set-up and teardown, container start, process control, resource
# statistics). None of them changes what runs in the guest or exposes its
# data.
default DestroySandboxRequest := true

default GetOOMEventRequest := true

default GuestDetailsRequest := true

default OnlineCPUMemRequest := true

default RemoveStaleVirtiofsShareMountsRequest := true

default SignalProcessRequest := true

default StartContainerRequest := true

default StatsContainerRequest := true

default TtyWinResizeRequest := true

default WaitProcessRequest := true

# Requests that are denied: they would let the host change the guest
# outside the pod specification, read or inject process streams, or serve
# only features a confidential pod does not use (VM templating, memory
# hotplug by probe, pausing, agent metrics, direct-assigned volumes, resource
# updates). Kata genpolicy's default rules deny them too. Every rule is named
# after the request message the agent evaluates (agent.proto); requests
# without a rule are denied as well.
default AddSwapRequest := false

default CloseStdinRequest := false

default GetIPTablesRequest := false

default GetMetricsRequest := false

default ListInterfacesRequest := false

default ListRoutesRequest := false

default MemHotplugByProbeRequest := false

default PauseContainerRequest := false

default ReseedRandomDevRequest := false

default ResizeVolumeRequest := false

default ResumeContainerRequest := false

default SetGuestDateTimeRequest := false

default SetIPTablesRequest := false

default SetPolicyRequest := false

default UpdateContainerRequest := false

default UpdateEphemeralMountsRequest := false

default VolumeStatsRequest := false

default WriteStreamRequest := false

# Requests checked below.
default CreateSandboxRequest := false

default CreateContainerRequest := {"allowed": false}

default RemoveContainerRequest := {"allowed": false}

default ExecProcessRequest := false

default CopyFileRequest := false

default ReadStreamRequest := false

default UpdateInterfaceRequest := false

default UpdateRoutesRequest := false

default AddARPNeighborsRequest := false

# ---------------------------------------------------------------- state

# The agent keeps the state in data.pstate.
state_sandbox := object.get(data.pstate, "sandbox", null)

state_containers := object.get(data.pstate, "containers", {})

# ---------------------------------------------------------------- sandbox

CreateSandboxRequest if {
	object.get(input, "sandbox_pidns", false) == policy_data.pod.share_pid_namespace
	count(object.get(input, "kernel_modules", [])) == 0
	object.get(input, "guest_hook_path", "") == ""
	every s in object.get(input, "storages", []) {
		sandbox_storage_ok(s)
	}
}

sandbox_storage_ok(s) if {
	s.driver == "ephemeral"
	s.source == "shm"
	s.fstype == "tmpfs"
	s.mount_point == "/run/kata-containers/sandbox/shm"
	count(object.get(s, "driver_options", [])) == 0
	every o in object.get(s, "options", []) {
		shm_option_ok(o)
	}
}

shm_option_ok(o) if o in {"noexec", "nosuid", "nodev", "mode=1777"}

shm_option_ok(o) if regex.match(`^size=[0-9]+$`, o)

# ---------------------------------------------------------------- containers

CreateContainerRequest := {"allowed": true, "ops": ops} if {
	oci := input.OCI
	anno := object.get(oci, "Annotations", {})
	cid := bundle_id(anno)
	ids_ok(input, cid)
	some i
	c := policy_data.containers[i]
	selects(c, anno)
	sb := sandbox_of(anno, oci)
	sandbox_consistent(sb)
	annotations_ok(anno)
	process_ok(c, object.get(oci, "Process", {}), sb)
	hostname_ok(c, oci, sb)
	root_ok(c, oci, cid)
	mounts_ok(c, object.get(oci, "Mounts", []), cid)
	storages_ok(c, object.get(input, "storages", []), cid)
	linux_ok(c, object.get(oci, "Linux", {}))
	hooks_ok(object.get(oci, "Hooks", null))
	agent_devices_ok(c, input)
	no_shared_mounts(input)
	sandbox_pidns_ok(input)
	no_string_user(input)
	ops := array.concat(sandbox_ops(sb), container_ops(cid, i))
}

ids_ok(r, cid) if {
	object.get(r, "container_id", cid) == cid
	object.get(r, "exec_id", cid) == cid
}

# Devices for the agent to attach: only the block devices of the
# container's volumeDevices, each at its pinned container path and once
# (no VFIO, GPUs or other devices). The request names the type "type_", as
# the Kata test corpus's requests (gpu_vfio_cdi) show.
agent_devices_ok(c, r) if {
	devs := object.get(r, "devices", [])
	paths := [p | some d in devs; p := object.get(d, "container_path", "")]
	count({p | some p in paths}) == count(paths)
	every d in devs {
		agent_device_allowed(c, d)
	}
}

agent_device_allowed(c, d) if {
	some p in object.get(c, "devices", [])
	object.get(d, "container_path", "") == p.container_path
	object.get(d, "type_", "") in {"blk", "mmioblk", "scsi", "nvdimm"}
}

no_shared_mounts(r) if count(object.get(r, "shared_mounts", [])) == 0

sandbox_pidns_ok(r) if object.get(r, "sandbox_pidns", false) == policy_data.pod.share_pid_namespace

no_string_user(r) if object.get(r, "string_user", null) == null

bundle_id(anno) := id if {
	path := anno["io.katacontainers.pkg.oci.bundle_path"]
	parts := split(path, "/")
	id := parts[count(parts) - 1]
	regex.match(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`, id)
	path == concat("/", ["/run/containerd/io.containerd.runtime.v2.task/k8s.io", id])
}

selects(c, anno) if {
	c.kind == "sandbox"
	anno["io.kubernetes.cri.container-type"] == "sandbox"
	anno["io.katacontainers.pkg.oci.container_type"] == "pod_sandbox"
	not anno["io.kubernetes.cri.container-name"]
}

selects(c, anno) if {
	c.kind != "sandbox"
	anno["io.kubernetes.cri.container-type"] == "container"
	anno["io.katacontainers.pkg.oci.container_type"] == "pod_container"
	anno["io.kubernetes.cri.container-name"] == c.name
}

sandbox_of(anno, oci) := sb if {
	name := anno["io.kubernetes.cri.sandbox-name"]
	name_ok(name)
	ns := anno["io.kubernetes.cri.sandbox-namespace"]
	namespace_ok(ns)
	sb := {
		"name": name,
		"namespace": ns,
		"uid": object.get(anno, "io.kubernetes.cri.sandbox-uid", ""),
		"netns": network_namespace(object.get(object.get(oci, "Linux", {}), "Namespaces", [])),
		"hostname": pod_hostname(name),
	}
}

# The pod's name, or the names its controller generates.
name_ok(name) if regex.match(policy_data.pod.name_regex, name)

# The namespace the pod was admitted in (a pattern only for a workload
# whose YAML names none).
namespace_ok(ns) if regex.match(policy_data.pod.namespace_regex, ns)

pod_hostname(name) := policy_data.pod.hostname if policy_data.pod.hostname != ""

# Without spec.hostname the kubelet uses the pod name, cut to 63 characters
# without trailing dashes or dots.
pod_hostname(name) := trim_right(substring(name, 0, 63), "-.") if policy_data.pod.hostname == ""

network_namespace(nss) := p if {
	some n in nss
	n.Type == "network"
	p := n.Path
}

network_namespace(nss) := "" if {
	not has_network_namespace(nss)
}

has_network_namespace(nss) if {
	some n in nss
	n.Type == "network"
}

sandbox_consistent(_) if state_sandbox == null

sandbox_consistent(sb) if {
	state_sandbox != null
	sb.name == state_sandbox.name
	sb.namespace == state_sandbox.namespace
	sb.uid == state_sandbox.uid
	netns_consistent(sb.netns, state_sandbox.netns)
}

netns_consistent(_, stored) if stored == ""

netns_consistent(p, stored) if {
	stored != ""
	p == stored
}

sandbox_ops(_) := [] if {
	state_sandbox != null
	state_sandbox.netns != ""
}

sandbox_ops(sb) := [] if {
	state_sandbox != null
	state_sandbox.netns == ""
	sb.netns == ""
}

sandbox_ops(sb) := [{"op": "add", "path": "/pstate/sandbox", "value": sb}] if {
	state_sandbox != null
	state_sandbox.netns == ""
	sb.netns != ""
}

sandbox_ops(sb) := [{"op": "add", "path": "/pstate/sandbox", "value": sb}] if state_sandbox == null

container_ops(cid, i) := [{"op": "add", "path": "/pstate/containers", "value": {cid: {"index": i}}}] if {
	count(state_containers) == 0
}

container_ops(cid, i) := [{"op": "add", "path": concat("/", ["/pstate/containers", cid]), "value": {"index": i}}] if {
	count(state_containers) > 0
}

# Annotation keys: the CRI's, the two the Kata shim sets, the pod's policy
# annotation and the pod template's own io.katacontainers.config.* keys
# (containerd passes pod annotations through). Other Kata configuration
# keys (e.g. agent.debug_console) are denied.
annotations_ok(anno) if {
	every k, _ in anno {
		annotation_key_ok(k)
	}
}

annotation_key_ok(k) if {
	some r in policy_data.common.annotation_keys
	regex.match(r, k)
}

annotation_key_ok(k) if k in policy_data.pod.kata_annotations

hooks_ok(h) if h == null

hooks_ok(h) if {
	h != null
	every _, v in h {
		count(v) == 0
	}
}

# ---------------------------------------------------------------- process

process_ok(c, p, sb) if {
	terminal_ok(c, p)
	args_ok(c, p, object.get(p, "Env", []))
	cwd_ok(c, p)
	no_new_privileges_ok(c, p)
	no_selinux_label(p)
	apparmor_ok(p)
	user_ok(c, object.get(p, "User", {}))
	caps_ok(c, object.get(p, "Capabilities", {}))
	env_ok(c, object.get(p, "Env", []), sb)
}

terminal_ok(c, p) if object.get(p, "Terminal", false) == c.tty

# Arguments are exact, except those that refer to variables known only at
# run time (arg_templates): such an argument must be its template expanded
# with the values the variables have in the request's Env, which env_ok pins
# to the variables' own values or patterns. A variable the request does not
# carry (an optional one) stays "$(NAME)", as the kubelet leaves it.
args_ok(c, p, _) if {
	not c.arg_templates
	object.get(p, "Args", []) == c.args
}

args_ok(c, p, env) if {
	c.arg_templates
	args := object.get(p, "Args", [])
	count(args) == count(c.args)
	every i, a in args {
		arg_ok(c, i, a, env)
	}
}

arg_ok(c, i, a, _) if {
	not has_arg_template(c, i)
	a == c.args[i]
}

arg_ok(c, i, a, env) if {
	some t in c.arg_templates
	t.index == i
	a == concat("", [s | some part in t.parts; s := arg_part(part, env)])
}

has_arg_template(c, i) if {
	some t in c.arg_templates
	t.index == i
}

arg_part(part, _) := part.text if not part.var

arg_part(part, env) := v if {
	part.var
	some e in env
	env_name(e) == part.var
	v := env_value(e)
}

arg_part(part, env) := concat("", ["$(", part.var, ")"]) if {
	part.var
	not env_has(env, part.var)
}

env_has(env, n) if {
	some e in env
	env_name(e) == n
}

cwd_ok(c, p) if object.get(p, "Cwd", "") == c.cwd

no_new_privileges_ok(c, p) if object.get(p, "NoNewPrivileges", false) == c.no_new_privileges

no_selinux_label(p) if object.get(p, "SelinuxLabel", "") == ""

apparmor_ok(p) if object.get(p, "ApparmorProfile", "") in policy_data.common.apparmor_profiles

user_ok(c, u) if {
	object.get(u, "UID", 0) == c.user.uid
	object.get(u, "GID", 0) == c.user.gid
	{g | some g in object.get(u, "AdditionalGids", [])} == {g | some g in c.user.additional_gids}
	object.get(u, "Username", "") == ""
}

# Fewer capabilities than expected are fine (some runtimes clear the
# effective set of non-root users); more are not.
caps_ok(c, caps) if {
	allowed := {x | some x in c.capabilities}
	every k in ["Bounding", "Effective", "Permitted"] {
		every x in object.get(caps, k, []) {
			x in allowed
		}
	}
	count(object.get(caps, "Inheritable", [])) == 0
	count(object.get(caps, "Ambient", [])) == 0
}

env_ok(c, env, sb) if {
	names := [n | some e in env; n := env_name(e)]
	count({n | some n in names}) == count(env)
	every e in env {
		env_allowed(c, e, sb, env)
	}
	every s in c.env {
		env_present(s, env, sb)
	}
}

env_name(e) := n if {
	i := indexof(e, "=")
	i > 0
	n := substring(e, 0, i)
}

env_value(e) := substring(e, indexof(e, "=") + 1, -1)

env_allowed(c, e, sb, env) if {
	some s in c.env
	env_name(e) == s.name
	env_value_ok(s, env_value(e), sb, env)
}

# Service links: all services with enableServiceLinks, else the master service.
env_allowed(c, e, _, _) if {
	c.kind != "sandbox"
	some r in policy_data.common.service_env[policy_data.pod.service_env]
	regex.match(r, e)
}

env_present(s, _, _) if not s.required

env_present(s, env, sb) if {
	s.required
	some e in env
	env_name(e) == s.name
	env_value_ok(s, env_value(e), sb, env)
}

env_value_ok(s, v, _, _) if {
	s.kind == "exact"
	v == s.value
}

env_value_ok(s, v, _, _) if {
	s.kind == "regex"
	regex.match(s.value, v)
}

env_value_ok(s, v, sb, _) if {
	s.kind == "pod_name"
	v == sb.name
}

env_value_ok(s, v, sb, _) if {
	s.kind == "pod_namespace"
	v == sb.namespace
}

env_value_ok(s, v, sb, _) if {
	s.kind == "pod_uid"
	v == sb.uid
}

env_value_ok(s, v, sb, _) if {
	s.kind == "hostname"
	v == sb.hostname
}

# A literal value with references to variables known only at run time: the
# references take the values the variables have in the request (each held to
# its own expected value), as for arguments.
env_value_ok(s, v, _, env) if {
	s.kind == "template"
	v == concat("", [x | some part in s.parts; x := arg_part(part, env)])
}

hostname_ok(c, oci, sb) if {
	c.kind == "sandbox"
	object.get(oci, "Hostname", sb.hostname) == sb.hostname
}

hostname_ok(c, oci, sb) if {
	c.kind != "sandbox"
	object.get(oci, "Hostname", "") in {"", sb.hostname}
}

# ---------------------------------------------------------------- root and mounts

root_ok(c, oci, cid) if {
	root := object.get(oci, "Root", {})
	object.get(root, "Path", "") == concat("", ["/run/kata-containers/", cid, "/rootfs"])
	object.get(root, "Readonly", false) == c.read_only_root
}

mounts_ok(c, mounts, cid) if {
	dests := [d | some m in mounts; d := m.destination]
	count({d | some d in dests}) == count(dests)
	every m in mounts {
		mount_allowed(c, m, cid)
	}
}

mount_allowed(c, m, cid) if {
	some s in array.concat(c.mounts, policy_data.common.mounts[mount_class(c)])
	m.destination == s.destination
	object.get(m, "type_", "") == s.type
	regex.match(replace(s.source, "$(cid)", cid), object.get(m, "source", ""))
	opts := {o | some o in object.get(m, "options", [])}
	count(opts) == count(object.get(m, "options", []))
	every o in s.options {
		o in opts
	}
	every o in opts {
		option_allowed(s, o)
	}
}

mount_class(c) := "sandbox" if c.kind == "sandbox"

mount_class(c) := "container" if c.kind != "sandbox"

option_allowed(s, o) if o in s.options

option_allowed(s, o) if o in s.optional_options

# ---------------------------------------------------------------- storages

storages_ok(c, storages, cid) if {
	c.kind == "sandbox"
	every s in storages {
		pause_storage_ok(s, cid)
	}
}

storages_ok(c, storages, cid) if {
	c.kind != "sandbox"
	images := [s | some s in storages; s.driver == "image_guest_pull"]
	count(images) == 1
	every s in storages {
		container_storage_ok(c, s, cid)
	}
}

pause_storage_ok(s, cid) if {
	s.driver == "image_guest_pull"
	s.source == "pause"
	guest_pull_storage_ok(s, cid, "pod_sandbox")
}

container_storage_ok(c, s, cid) if {
	s.driver == "image_guest_pull"
	s.source in c.image_refs
	guest_pull_storage_ok(s, cid, "pod_container")
}

container_storage_ok(c, s, _) if {
	s.driver != "image_guest_pull"
	some v in c.volume_storages
	s.driver == v.driver
	s.fstype == v.fstype
	object.get(s, "driver_options", []) == v.driver_options
	regex.match(v.source, object.get(s, "source", ""))
	regex.match(v.mount_point, object.get(s, "mount_point", ""))
	every o in object.get(s, "options", []) {
		some r in v.options
		regex.match(r, o)
	}
	fs_group_ok(object.get(s, "fs_group", null), v.fs_group)
}

fs_group_ok(g, _) if g == null

fs_group_ok(g, want) if {
	g != null
	g.group_id == want
}

guest_pull_storage_ok(s, cid, kind) if {
	s.fstype == "overlay"
	s.mount_point == concat("", ["/run/kata-containers/", cid, "/rootfs"])
	count(object.get(s, "options", [])) == 0
	opts := object.get(s, "driver_options", [])
	count(opts) == 1
	startswith(opts[0], "image_guest_pull=")
	meta := json.unmarshal(substring(opts[0], count("image_guest_pull="), -1))
	meta.metadata["io.katacontainers.pkg.oci.container_type"] == kind
}

# ---------------------------------------------------------------- linux

linux_ok(c, l) if {
	namespaces_ok(object.get(l, "Namespaces", []))
	sysctls_ok(object.get(l, "Sysctl", {}))
	linux_devices_ok(c, l)
	device_cgroup_ok(object.get(object.get(l, "Resources", {}), "Devices", []))
	seccomp_ok(c, object.get(l, "Seccomp", null))
	no_id_mappings(l)
	paths_ok(c, l)
}

sysctls_ok(sysctls) if {
	every k, v in sysctls {
		policy_data.pod.sysctls[k] == v
	}
}

# OCI devices: only the block devices of the container's volumeDevices.
linux_devices_ok(c, l) if {
	every d in object.get(l, "Devices", []) {
		some p in object.get(c, "devices", [])
		object.get(d, "Path", "") == p.container_path
		object.get(d, "Type", "") == "b"
	}
}

no_id_mappings(l) if {
	count(object.get(l, "UIDMappings", [])) == 0
	count(object.get(l, "GIDMappings", [])) == 0
}

# Device cgroup rules: none (the Kata shim clears them) or containerd's
# default deny-all. A rule that allows a device would let a container with
# CAP_MKNOD open guest block devices.
device_cgroup_ok(rules) if rules == null

device_cgroup_ok(rules) if count(rules) == 0

device_cgroup_ok(rules) if {
	count(rules) == 1
	r := rules[0]
	object.get(r, "Allow", true) == false
	object.get(r, "Access", "") == "rwm"
	object.get(r, "Type", "") in {"", "a"}
	object.get(r, "Major", null) == null
	object.get(r, "Minor", null) == null
}

# Seccomp: what containerd gives the container for the profile the pod asks
# for. Unconfined (the kubelet's default, and every privileged container):
# no profile. RuntimeDefault: a profile that denies by default and allows
# the syscalls that containerd's default profile gates on a capability only
# if the container has that capability (clone only without namespace flags
# unless CAP_SYS_ADMIN); no flags, no user notification or tracing.
seccomp_ok(c, s) if {
	c.seccomp == "unconfined"
	s == null
}

seccomp_ok(c, s) if {
	c.seccomp == "runtime_default"
	s != null
	object.get(s, "DefaultAction", "") in policy_data.common.seccomp.deny_actions
	count(object.get(s, "Flags", [])) == 0
	object.get(s, "ListenerPath", "") == ""
	every r in object.get(s, "Syscalls", []) {
		seccomp_rule_ok(c, r)
	}
}

seccomp_rule_ok(_, r) if object.get(r, "Action", "") in policy_data.common.seccomp.deny_actions

seccomp_rule_ok(c, r) if {
	object.get(r, "Action", "") in {"SCMP_ACT_ALLOW", "SCMP_ACT_LOG"}
	every n in object.get(r, "Names", []) {
		seccomp_syscall_ok(c, n, object.get(r, "Args", []))
	}
}

seccomp_syscall_ok(_, n, _) if not policy_data.common.seccomp.guarded[n]

seccomp_syscall_ok(c, n, _) if policy_data.common.seccomp.guarded[n] in c.capabilities

seccomp_syscall_ok(_, n, args) if {
	n == "clone"
	some a in args
	object.get(a, "Op", "") == "SCMP_CMP_MASKED_EQ"
	object.get(a, "ValueTwo", 1) == 0
	bits.and(object.get(a, "Value", 0), policy_data.common.seccomp.clone_namespace_flags) == policy_data.common.seccomp.clone_namespace_flags
}

paths_ok(c, _) if c.privileged

paths_ok(c, l) if {
	not c.privileged
	masked := {p | some p in object.get(l, "MaskedPaths", [])}
	every p in policy_data.common.masked_paths {
		p in masked
	}
	ro := {p | some p in object.get(l, "ReadonlyPaths", [])}
	every p in policy_data.common.readonly_paths {
		p in ro
	}
}

namespaces_ok(nss) if {
	every t in ["ipc", "uts", "mount"] {
		some n in nss
		n.Type == t
		object.get(n, "Path", "") == ""
	}
	every n in nss {
		namespace_allowed(n)
	}
	types := [n.Type | some n in nss]
	count({t | some t in types}) == count(types)
}

namespace_allowed(n) if {
	n.Type in {"ipc", "uts", "mount"}
	object.get(n, "Path", "") == ""
}

namespace_allowed(n) if {
	n.Type == "network"
	n.Path != ""
}

namespace_allowed(n) if {
	n.Type == "pid"
	policy_data.pod.share_pid_namespace
}

# ---------------------------------------------------------------- remove

RemoveContainerRequest := {"allowed": true, "ops": ops} if {
	cid := input.container_id
	ops := remove_ops(cid)
}

remove_ops(cid) := [{"op": "remove", "path": concat("/", ["/pstate/containers", cid])}] if {
	state_containers[cid]
}

remove_ops(cid) := [] if {
	not state_containers[cid]
}

# ---------------------------------------------------------------- exec

ExecProcessRequest if {
	st := state_containers[input.container_id]
	c := policy_data.containers[st.index]
	p := input.process
	exec_command_ok(c, p)
	exec_terminal_ok(p)
	object.get(p, "Capabilities", null) == null
	cwd_ok(c, p)
	no_new_privileges_ok(c, p)
	no_selinux_label(p)
	apparmor_ok(p)
	user_ok(c, object.get(p, "User", {}))
	no_string_user(input)
	sb := state_sandbox
	sb != null
	exec_env_ok(c, object.get(p, "Env", []), sb)
}

# Only the exec-probe and exec lifecycle-hook commands of the container.
exec_command_ok(c, p) if {
	some cmd in c.exec_commands
	object.get(p, "Args", []) == cmd
}

exec_terminal_ok(p) if object.get(p, "Terminal", false) == false

exec_env_ok(c, env, sb) if {
	every e in env {
		env_allowed(c, e, sb, env)
	}
}

# ---------------------------------------------------------------- streams

ReadStreamRequest if policy_data.pod.allow_logs

# ---------------------------------------------------------------- copy file

CopyFileRequest if {
	p := input.path
	regex.match(policy_data.common.copy_file_regex, p)
	not has_dot_segment(p)
	copy_file_type_ok(input)
}

has_dot_segment(p) if {
	some seg in split(p, "/")
	seg in {".", ".."}
}

copy_file_type_ok(r) if r.file_type in {"Regular", "Directory"}

copy_file_type_ok(r) if {
	r.file_type == "Symlink"
	# a symlink must live below a top-level entry of the shared directory
	regex.match(policy_data.common.copy_file_symlink_regex, r.path)
	t := r.symlink_target
	t != ""
	not startswith(t, "/")
	not has_dot_segment(t)
}

# ---------------------------------------------------------------- network

UpdateInterfaceRequest if {
	i := input.interface
	not i.name in policy_data.common.network.forbidden_devices
	not i.device in policy_data.common.network.forbidden_devices
	not i.hwAddr in policy_data.common.network.forbidden_hw_addrs
	bits.and(object.get(i, "raw_flags", 0), bits.negate(policy_data.common.network.allowed_interface_flags)) == 0
}

UpdateRoutesRequest if {
	every r in input.routes.Routes {
		not r.device in policy_data.common.network.forbidden_devices
		not loopback_address(object.get(r, "source", ""))
		not loopback_address(object.get(r, "dest", ""))
		not loopback_address(object.get(r, "gateway", ""))
	}
}

AddARPNeighborsRequest if {
	every n in input.neighbors.ARPNeighbors {
		not n.device in policy_data.common.network.forbidden_devices
		not loopback_address(n.toIPAddress.address)
		n.state in policy_data.common.network.allowed_neighbor_states
		bits.and(object.get(n, "flags", 0), bits.negate(policy_data.common.network.allowed_neighbor_flags)) == 0
	}
}

loopback_address(a) if {
	some r in policy_data.common.network.loopback_regex
	regex.match(r, a)
}
