package policy

import (
	"regexp"
	"slices"
)

// Data is the policy data appended to the rules as `policy_data`. Field order
// and JSON names are part of the policy hash: change them only with a rules
// change.
type Data struct {
	Pod        PodData         `json:"pod"`
	Containers []ContainerData `json:"containers"`
	Common     CommonData      `json:"common"`
}

// PodData holds expectations shared by all containers of the pod.
type PodData struct {
	// NameRegex matches the pod (sandbox) name.
	NameRegex string `json:"name_regex"`
	// NamespaceRegex matches the namespace.
	NamespaceRegex string `json:"namespace_regex"`
	// Hostname is spec.hostname; empty means the pod name.
	Hostname          string            `json:"hostname"`
	ShareProcessNS    bool              `json:"share_pid_namespace"`
	Sysctls           map[string]string `json:"sysctls"`
	AllowLogs         bool              `json:"allow_logs"`
	ServiceAccountTok bool              `json:"service_account_token"`
	// ServiceEnv selects the service-link patterns in CommonData.ServiceEnv:
	// "all" (enableServiceLinks) or "kubernetes".
	ServiceEnv string `json:"service_env"`
	// KataAnnotations are the io.katacontainers.config.* annotation keys
	// of the pod template (other than the policy annotations, which
	// CommonData.AnnotationKeys allows): containerd passes them through
	// to every container's OCI annotations.
	KataAnnotations []string `json:"kata_annotations"`
}

// ContainerData is the expected shape of one container's CreateContainerRequest.
type ContainerData struct {
	Name string `json:"name"`
	// Kind is sandbox (pause), init, sidecar (restartable init) or app.
	Kind      string   `json:"kind"`
	ImageRefs []string `json:"image_refs"`
	Args      []string `json:"args"`
	// ArgTemplates are the arguments that refer to variables known only at
	// run time (their Args entry keeps the references).
	ArgTemplates   []ArgTemplate `json:"arg_templates,omitempty"`
	Env            []EnvSpec     `json:"env"`
	Cwd            string        `json:"cwd"`
	User           UserData      `json:"user"`
	Capabilities   []string      `json:"capabilities"`
	NoNewPrivs     bool          `json:"no_new_privileges"`
	Privileged     bool          `json:"privileged"`
	ReadOnlyRoot   bool          `json:"read_only_root"`
	TTY            bool          `json:"tty"`
	Mounts         []MountSpec   `json:"mounts"`
	VolumeStorages []StorageSpec `json:"volume_storages"`
	// Devices are the block devices of the container's volumeDevices
	// (omitted when there are none, so policies without them keep their
	// hashes).
	Devices      []DeviceSpec `json:"devices,omitempty"`
	ExecCommands [][]string   `json:"exec_commands"`
	// Seccomp is the profile the container asks for: unconfined or
	// runtime_default.
	Seccomp string `json:"seccomp"`
}

// ArgTemplate is the argument at Index as the kubelet expands it: Parts
// joined, each a literal Text or the run-time value of the variable Var.
type ArgTemplate struct {
	Index int       `json:"index"`
	Parts []ArgPart `json:"parts"`
}

// ArgPart is a literal (Var empty) or a reference to a variable.
type ArgPart struct {
	Text string `json:"text,omitempty"`
	Var  string `json:"var,omitempty"`
}

// EnvSpec is one expected environment variable.
type EnvSpec struct {
	Name string `json:"name"`
	// Kind is exact, regex, pod_name, pod_namespace, pod_uid, hostname or
	// template (Parts expanded with the request's variables; Value keeps the
	// references as written).
	Kind     string    `json:"kind"`
	Value    string    `json:"value"`
	Required bool      `json:"required"`
	Parts    []ArgPart `json:"parts,omitempty"`
}

// Equal reports whether s and o expect the same variable.
func (s EnvSpec) Equal(o EnvSpec) bool {
	return s.Name == o.Name && s.Kind == o.Kind && s.Value == o.Value && s.Required == o.Required && slices.Equal(s.Parts, o.Parts)
}

// UserData is the expected process user.
type UserData struct {
	UID            int64   `json:"uid"`
	GID            int64   `json:"gid"`
	AdditionalGIDs []int64 `json:"additional_gids"`
}

// MountSpec is one allowed OCI mount. Source is a regex in which $(cid) stands
// for the container ID.
type MountSpec struct {
	Destination     string   `json:"destination"`
	Type            string   `json:"type"`
	Source          string   `json:"source"`
	Options         []string `json:"options"`
	OptionalOptions []string `json:"optional_options"`
}

// StorageSpec is one allowed volume storage of a CreateContainerRequest.
type StorageSpec struct {
	Driver        string   `json:"driver"`
	DriverOptions []string `json:"driver_options"`
	FSType        string   `json:"fstype"`
	Source        string   `json:"source"`
	MountPoint    string   `json:"mount_point"`
	Options       []string `json:"options"`
	FSGroup       *int64   `json:"fs_group"`
}

// DeviceSpec is one allowed block device of a CreateContainerRequest: the
// agent's device and the OCI Linux device at ContainerPath.
type DeviceSpec struct {
	ContainerPath string `json:"container_path"`
}

// CommonData holds constants of the rules that are data rather than code.
type CommonData struct {
	AnnotationKeys       []string               `json:"annotation_keys"`
	ApparmorProfiles     []string               `json:"apparmor_profiles"`
	MaskedPaths          []string               `json:"masked_paths"`
	ReadonlyPaths        []string               `json:"readonly_paths"`
	Mounts               map[string][]MountSpec `json:"mounts"`
	ServiceEnv           map[string][]string    `json:"service_env"`
	CopyFileRegex        string                 `json:"copy_file_regex"`
	CopyFileSymlinkRegex string                 `json:"copy_file_symlink_regex"`
	Network              NetworkData            `json:"network"`
	Seccomp              SeccompData            `json:"seccomp"`
}

// SeccompData constrains a RuntimeDefault seccomp profile.
type SeccompData struct {
	// DenyActions are the actions that deny a syscall.
	DenyActions []string `json:"deny_actions"`
	// Guarded maps the syscalls containerd's default profile allows only
	// to containers with a capability to that capability.
	Guarded map[string]string `json:"guarded"`
	// CloneNamespaceFlags are the CLONE_NEW* flags clone may not be
	// allowed with, unless the container has CAP_SYS_ADMIN.
	CloneNamespaceFlags int64 `json:"clone_namespace_flags"`
}

// NetworkData constrains the network requests.
type NetworkData struct {
	ForbiddenDevices      []string `json:"forbidden_devices"`
	ForbiddenHWAddrs      []string `json:"forbidden_hw_addrs"`
	AllowedInterfaceFlags int64    `json:"allowed_interface_flags"`
	AllowedNeighborStates []int64  `json:"allowed_neighbor_states"`
	AllowedNeighborFlags  int64    `json:"allowed_neighbor_flags"`
	LoopbackRegex         []string `json:"loopback_regex"`
}

const (
	sharedDir = "/run/kata-containers/shared/containers"
	// sharedPrefix is the regex prefix of files the runtime shares with the
	// guest for container $(cid).
	sharedPrefix = "^" + sharedDir + "/(watchable/)?$(cid)-[a-z0-9]{16}-"
	// blockStorageDir holds the block-device emptyDir volumes.
	blockStorageDir = "/run/kata-containers/sandbox/storage"
	ephemeralDir    = "/run/kata-containers/sandbox/ephemeral"
)

var defaultCapabilities = []string{
	"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
	"CAP_SETUID", "CAP_SYS_CHROOT",
}

var allCapabilities = []string{
	"CAP_AUDIT_CONTROL", "CAP_AUDIT_READ", "CAP_AUDIT_WRITE", "CAP_BLOCK_SUSPEND", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_KILL", "CAP_LEASE", "CAP_LINUX_IMMUTABLE",
	"CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_MKNOD", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_RAW", "CAP_PERFMON", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
	"CAP_SETUID", "CAP_SYSLOG", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_CHROOT", "CAP_SYS_MODULE",
	"CAP_SYS_NICE", "CAP_SYS_PACCT", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_WAKE_ALARM",
}

func commonData() CommonData {
	procMounts := []MountSpec{
		{Destination: "/proc", Type: "proc", Source: "^proc$", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "^tmpfs$", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "^devpts$", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "^mqueue$", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "^sysfs$", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/dev/shm", Type: "bind", Source: "^/run/kata-containers/sandbox/shm$", Options: []string{"rbind"}},
	}
	sandbox := append(clone(procMounts),
		MountSpec{Destination: "/etc/resolv.conf", Type: "bind", Source: sharedPrefix + "resolv\\.conf$", Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}},
	)
	container := append(clone(procMounts),
		MountSpec{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "^cgroup$", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}, OptionalOptions: []string{"nsdelegate", "memory_recursiveprot"}},
		MountSpec{Destination: "/etc/hosts", Type: "bind", Source: sharedPrefix + "hosts$", Options: []string{"rbind", "rprivate"}, OptionalOptions: []string{"rw", "ro"}},
		MountSpec{Destination: "/etc/hostname", Type: "bind", Source: sharedPrefix + "hostname$", Options: []string{"rbind", "rprivate"}, OptionalOptions: []string{"rw", "ro"}},
		MountSpec{Destination: "/etc/resolv.conf", Type: "bind", Source: sharedPrefix + "resolv\\.conf$", Options: []string{"rbind", "rprivate"}, OptionalOptions: []string{"rw", "ro"}},
	)
	for _, m := range [][]MountSpec{sandbox, container} {
		for i := range m {
			if m[i].OptionalOptions == nil {
				m[i].OptionalOptions = []string{}
			}
		}
	}
	return CommonData{
		AnnotationKeys: []string{
			`^io\.kubernetes\.cri\.(container-name|container-type|image-name|sandbox-id|sandbox-name|sandbox-namespace|sandbox-uid|sandbox-log-directory|sandbox-cpu-period|sandbox-cpu-quota|sandbox-cpu-shares|sandbox-memory|podsandbox\.image-name|runtimehandler)$`,
			`^io\.katacontainers\.pkg\.oci\.(bundle_path|container_type)$`,
			// the policy annotations of the pod, passed through by containerd
			"^" + regexp.QuoteMeta(AnnotationInitData) + "$",
			"^" + regexp.QuoteMeta(AnnotationLegacyPolicy) + "$",
			`^nerdctl/network-namespace$`,
		},
		ApparmorProfiles: []string{"", "cri-containerd.apparmor.d"},
		MaskedPaths: []string{
			"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
			"/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats", "/sys/firmware",
		},
		ReadonlyPaths:        []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		Mounts:               map[string][]MountSpec{"sandbox": sandbox, "container": container},
		ServiceEnv:           map[string][]string{"all": serviceLinkPatterns, "kubernetes": kubernetesServicePatterns},
		CopyFileRegex:        "^" + sharedDir + "/(watchable/)?[A-Za-z0-9_-]+-[a-z0-9]{16}-[^/]+(/[^/]+)*$",
		CopyFileSymlinkRegex: "^" + sharedDir + "/(watchable/)?[A-Za-z0-9_-]+-[a-z0-9]{16}-[^/]+/[^/]+(/[^/]+)*$",
		Seccomp: SeccompData{
			DenyActions: []string{"SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"},
			Guarded:     seccompGuarded(),
			// CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
			CloneNamespaceFlags: 0x7e020000,
		},
		Network: NetworkData{
			ForbiddenDevices:      []string{"lo"},
			ForbiddenHWAddrs:      []string{"00:00:00:00:00:00"},
			AllowedInterfaceFlags: 128,             // IFF_NOARP
			AllowedNeighborStates: []int64{2, 128}, // NUD_REACHABLE, NUD_PERMANENT
			AllowedNeighborFlags:  8 | 128,         // NTF_PROXY, NTF_ROUTER
			LoopbackRegex:         []string{`^127\.`, `^[0:]*:0*1$`},
		},
	}
}

// seccompGuarded lists the syscalls containerd's default seccomp profile
// (contrib/seccomp) allows only when the container's bounding set has a
// capability, with that capability.
func seccompGuarded() map[string]string {
	byCap := map[string][]string{
		"CAP_DAC_READ_SEARCH": {"open_by_handle_at"},
		// and the mount API of newer kernels and clone3, which newer
		// containerd versions gate on CAP_SYS_ADMIN as well
		"CAP_SYS_ADMIN": {"bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
			"lookup_dcookie", "mount", "mount_setattr", "move_mount", "name_to_handle_at", "open_tree",
			"perf_event_open", "setdomainname", "sethostname", "setns", "umount", "umount2", "unshare"},
		"CAP_SYS_BOOT":       {"reboot"},
		"CAP_SYS_CHROOT":     {"chroot"},
		"CAP_SYS_MODULE":     {"delete_module", "init_module", "finit_module", "query_module"},
		"CAP_SYS_PACCT":      {"acct"},
		"CAP_SYS_PTRACE":     {"kcmp", "process_vm_readv", "process_vm_writev", "ptrace"},
		"CAP_SYS_RAWIO":      {"iopl", "ioperm"},
		"CAP_SYS_TIME":       {"settimeofday", "stime"},
		"CAP_SYS_TTY_CONFIG": {"vhangup"},
	}
	out := map[string]string{}
	for c, names := range byCap {
		for _, n := range names {
			out[n] = c
		}
	}
	return out
}

func clone[T any](s []T) []T { return append([]T(nil), s...) }
