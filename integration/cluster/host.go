package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// HostState is what a real node may change on the host outside its own
// folder: iptables chains and rules, kernel settings, network links, global
// network namespaces and a few well-known folders. Two snapshots taken before
// a node starts and after it stops must be equal.
type HostState struct {
	// Iptables holds the chains and rules of every table, IPv4 and IPv6,
	// without counters ("ip4 nat -A KUBE-SERVICES ...").
	Iptables []string
	// Sysctls holds the kernel settings the kubelet, kube-proxy and the CNI
	// plugins set.
	Sysctls map[string]string
	// Links holds the names of the network interfaces.
	Links []string
	// Netns holds the names of the network namespaces under /run/netns.
	Netns []string
	// Paths records which well-known host folders exist.
	Paths map[string]bool
}

// sysctlsTouched are the kernel settings the node's components change: the
// kubelet's "kernel tunables", IP forwarding (bridge CNI plugin) and
// kube-proxy's settings. The node restores them when it stops.
var sysctlsTouched = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
	"net/netfilter/nf_conntrack_max",
	"net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
	"net/netfilter/nf_conntrack_tcp_be_liberal",
}

// wellKnownPaths are host folders that node components create when they are
// not told otherwise; the node configures them all away, and the snapshot
// proves it.
var wellKnownPaths = []string{
	"/run/containerd", "/var/lib/containerd", "/opt/containerd", "/etc/containerd",
	"/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/etc/kubernetes",
	"/var/lib/cni", "/etc/cni", "/run/netns", "/var/run/netns", "/run/runc", "/run/nri", "/var/lib/kube-proxy",
	"/usr/libexec/kubernetes",
}

// SnapshotHost records the host state a real node may touch.
func SnapshotHost(ctx context.Context) (*HostState, error) {
	s := &HostState{Sysctls: map[string]string{}, Paths: map[string]bool{}}
	for _, fam := range []struct{ name, cmd string }{{"ip4", "iptables-save"}, {"ip6", "ip6tables-save"}} {
		rules, err := iptablesRules(ctx, fam.cmd)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			s.Iptables = append(s.Iptables, fam.name+" "+r)
		}
	}
	for _, k := range sysctlsTouched {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil { //nolint:gosec // a fixed list of sysctls.
			s.Sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	ifaces, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	for _, i := range ifaces {
		s.Links = append(s.Links, i.Name())
	}
	if ns, err := os.ReadDir("/run/netns"); err == nil {
		for _, n := range ns {
			s.Netns = append(s.Netns, n.Name())
		}
	}
	for _, p := range wellKnownPaths {
		_, err := os.Lstat(p)
		s.Paths[p] = err == nil
	}
	return s, nil
}

// iptablesRules returns "table rule" lines of iptables-save without counters.
func iptablesRules(ctx context.Context, cmd string) ([]string, error) {
	out, err := exec.CommandContext(ctx, cmd).Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w (install Debian package iptables; see .ci/run)", cmd, err)
	}
	var rules []string
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case strings.HasPrefix(l, ":"):
			// ":CHAIN POLICY [packets:bytes]". A built-in chain with policy
			// ACCEPT and no rules is what a table that was never used
			// amounts to: iptables-nft creates such tables on first use and
			// iptables cannot delete them, so they are not recorded.
			f := strings.Fields(l)
			if len(f) >= 2 && f[1] == "ACCEPT" {
				continue
			}
			rules = append(rules, table+" "+strings.Join(f[:min(2, len(f))], " "))
		case strings.HasPrefix(l, "-A"):
			rules = append(rules, table+" "+l)
		}
	}
	sort.Strings(rules)
	return rules, nil
}

// Diff lists what differs between s (before) and after, one line each.
func (s *HostState) Diff(after *HostState) []string {
	var d []string
	d = append(d, diffLists("iptables", s.Iptables, after.Iptables)...)
	d = append(d, diffLists("network interface", s.Links, after.Links)...)
	d = append(d, diffLists("network namespace", s.Netns, after.Netns)...)
	for k, v := range s.Sysctls {
		if after.Sysctls[k] != v {
			d = append(d, fmt.Sprintf("sysctl %s: %q before, %q after", k, v, after.Sysctls[k]))
		}
	}
	for p, v := range s.Paths {
		if after.Paths[p] != v {
			d = append(d, fmt.Sprintf("path %s: exists=%t before, %t after", p, v, after.Paths[p]))
		}
	}
	sort.Strings(d)
	return d
}

// Added lists what after has and s (before) had not: iptables chains and
// rules, network interfaces and namespaces, well-known folders. Unlike Diff
// it ignores what was removed meanwhile and kernel settings, which a node
// may put back to the values of before a killed node changed them.
func (s *HostState) Added(after *HostState) []string {
	var d []string
	for _, l := range s.Diff(after) {
		if !strings.Contains(l, " removed: ") && !strings.HasSuffix(l, "exists=true before, false after") && !strings.HasPrefix(l, "sysctl ") {
			d = append(d, l)
		}
	}
	return d
}

func diffLists(what string, before, after []string) []string {
	var d []string
	for _, a := range after {
		if !slices.Contains(before, a) {
			d = append(d, fmt.Sprintf("%s added: %s", what, a))
		}
	}
	for _, b := range before {
		if !slices.Contains(after, b) {
			d = append(d, fmt.Sprintf("%s removed: %s", what, b))
		}
	}
	return d
}

// restore puts back the kernel settings and removes the iptables chains and
// rules that appeared since s was taken. It only removes what is new, so a
// rule the host had before is never touched.
func (s *HostState) restore(ctx context.Context, now *HostState) []error {
	var errs []error
	for k, v := range s.Sysctls {
		if now.Sysctls[k] != v {
			if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil { //nolint:gosec // restoring a value read from the same file.
				errs = append(errs, fmt.Errorf("restoring sysctl %s: %w", k, err))
			}
		}
	}
	for _, fam := range []struct{ name, cmd string }{{"ip4", "iptables"}, {"ip6", "ip6tables"}} {
		var newRules, newChains [][2]string
		for _, r := range now.Iptables {
			if slices.Contains(s.Iptables, r) || !strings.HasPrefix(r, fam.name+" ") {
				continue
			}
			table, rule, _ := strings.Cut(strings.TrimPrefix(r, fam.name+" "), " ")
			if !strings.HasPrefix(rule, "-A ") {
				newChains = append(newChains, [2]string{table, strings.Fields(rule)[0][1:]})
			}
		}
		isNew := func(table, chain string) bool { return slices.Contains(newChains, [2]string{table, chain}) }
		for _, r := range now.Iptables {
			if slices.Contains(s.Iptables, r) || !strings.HasPrefix(r, fam.name+" ") {
				continue
			}
			table, rule, _ := strings.Cut(strings.TrimPrefix(r, fam.name+" "), " ")
			if f := strings.Fields(rule); len(f) > 1 && f[0] == "-A" && !isNew(table, f[1]) {
				newRules = append(newRules, [2]string{table, rule})
			}
		}
		run := func(args ...string) {
			args = append([]string{"-w"}, args...)
			if out, err := exec.CommandContext(ctx, fam.cmd, args...).CombinedOutput(); err != nil { //nolint:gosec // iptables with rules read from iptables-save.
				errs = append(errs, fmt.Errorf("%s %s: %w: %s", fam.cmd, strings.Join(args, " "), err, bytes.TrimSpace(out)))
			}
		}
		// Rules the node added to the host's chains jump to its own chains:
		// remove them first, then empty and delete the node's chains.
		for _, r := range newRules {
			run(append([]string{"-t", r[0], "-D"}, splitRule(strings.TrimPrefix(r[1], "-A "))...)...)
		}
		for _, c := range newChains {
			run("-t", c[0], "-F", c[1])
		}
		for _, c := range newChains {
			run("-t", c[0], "-X", c[1])
		}
	}
	return errs
}

// splitRule splits an iptables-save rule into arguments, honoring the
// double quotes iptables-save puts around comments.
func splitRule(rule string) []string {
	var args []string
	var cur strings.Builder
	inQuote, escaped, have := false, false, false
	for _, r := range rule {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\':
			escaped = true
		case r == '"':
			inQuote = !inQuote
			have = true
		case r == ' ' && !inQuote:
			if have || cur.Len() > 0 {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
		}
	}
	if have || cur.Len() > 0 {
		args = append(args, cur.String())
	}
	return args
}

// cgroupHierarchies returns the mounted cgroup v1 hierarchies
// (/sys/fs/cgroup/<controller>) and, on a unified host, /sys/fs/cgroup.
func cgroupHierarchies() []string {
	var dirs []string
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		i := slices.Index(f, "-")
		if i < 0 || i+1 >= len(f) || len(f) < 5 {
			continue
		}
		if fs := f[i+1]; fs == "cgroup" || fs == "cgroup2" {
			dirs = append(dirs, unescapeMount(f[4]))
		}
	}
	return dirs
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder returns the mount points below (or at) the given folders,
// deepest first.
func mountsUnder(dirs ...string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var mps []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		for _, d := range dirs {
			if d != "" && (mp == d || strings.HasPrefix(mp, d+"/")) {
				mps = append(mps, mp)
				break
			}
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	return slices.Compact(mps)
}

// unmountAll lazily unmounts everything below the folders.
func unmountAll(dirs ...string) []string {
	var done []string
	for range 5 {
		mps := mountsUnder(dirs...)
		if len(mps) == 0 {
			return done
		}
		for _, mp := range mps {
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err == nil {
				done = append(done, mp)
			}
		}
	}
	return done
}

// cgroupProcs returns the PIDs in a cgroup folder and its descendants.
func cgroupProcs(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil //nolint:nilerr // a cgroup that vanished while walking has no processes.
		}
		b, _ := os.ReadFile(p) //nolint:gosec // a cgroup file below the node's own cgroup.
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	slices.Sort(pids)
	return slices.Compact(pids)
}

// removeCgroupTree removes a cgroup folder and its descendants, deepest
// first. A cgroup that still has processes cannot be removed.
func removeCgroupTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		var rmErr error
		for range 20 {
			if rmErr = syscall.Rmdir(dirs[i]); rmErr == nil || errors.Is(rmErr, syscall.ENOENT) {
				rmErr = nil
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if rmErr != nil {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], rmErr))
		}
	}
	return errors.Join(errs...)
}

// processesMatching returns the PIDs whose command line contains s.
func processesMatching(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killAndWait sends SIGKILL to the PIDs and waits (bounded) until they are gone.
func killAndWait(pids []int) {
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range pids {
		for time.Now().Before(deadline) {
			if err := syscall.Kill(p, 0); errors.Is(err, syscall.ESRCH) {
				break
			}
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); err == nil && strings.Contains(string(st), ") Z ") {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
