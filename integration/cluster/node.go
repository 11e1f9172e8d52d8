package cluster

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/contrast-cc/contrast/integration/images"
)

// Address plan of the node. Traffic stays on this host: the pod network is a
// Linux bridge the node creates (its address is the node's and the API
// server's address), the Service network exists only in kube-proxy's NAT
// rules. Only one real node runs per machine at a time (a file lock), so the
// ranges are fixed; the node refuses to start when the host already routes
// them.
const (
	podCIDR       = "10.217.0.0/24"
	nodeAddress   = "10.217.0.1"
	serviceCIDR   = "10.217.1.0/24"
	kubernetesSvc = "10.217.1.1"
	// NodeName is the name of the real node.
	NodeName = "contrast-node"
	// lockFile serializes real nodes on one machine.
	lockFile = "contrast-real-node.lock"
)

// nodeBinaries are the extra programs of the real-node mode, built by
// `make k8s-bins`.
var nodeBinaries = []string{"kubelet", "kube-scheduler", "kube-proxy", "containerd", "containerd-shim-runc-v2"}

// hostTools are the Debian packages the real node needs, by the file that
// proves each is installed.
var hostTools = []struct{ file, pkg string }{
	{"runc", "runc"},
	{"/usr/lib/cni/bridge", "containernetworking-plugins"},
	{"/usr/lib/cni/host-local", "containernetworking-plugins"},
	{"/usr/lib/cni/portmap", "containernetworking-plugins"},
	{"/usr/lib/cni/loopback", "containernetworking-plugins"},
	{"iptables", "iptables"},
	{"iptables-save", "iptables"},
	{"ip6tables-save", "iptables"},
	{"conntrack", "conntrack"},
	{"docker-registry", "docker-registry"},
	{"ip", "iproute2"},
}

// MissingPrerequisitesError reports what the real node lacks on this host.
type MissingPrerequisitesError struct {
	Packages []string
	Other    []string
}

func (e *MissingPrerequisitesError) Error() string {
	var parts []string
	if len(e.Packages) > 0 {
		parts = append(parts, fmt.Sprintf("install the Debian packages %s (`apt-get install %s`; .ci/run installs them in CI)",
			strings.Join(e.Packages, ", "), strings.Join(e.Packages, " ")))
	}
	parts = append(parts, e.Other...)
	return "the real node cannot start on this host: " + strings.Join(parts, "; ")
}

// lookTool finds a host program, also in the sbin folders a test's PATH may lack.
func lookTool(name string) (string, error) {
	if filepath.IsAbs(name) {
		if _, err := os.Stat(name); err != nil {
			return "", err
		}
		return name, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if st, err := os.Stat(filepath.Join(d, name)); err == nil && st.Mode()&0o111 != 0 {
			return filepath.Join(d, name), nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func checkNodePrerequisites(binDir string) error {
	var missingBins []string
	for _, b := range nodeBinaries {
		if st, err := os.Stat(filepath.Join(binDir, b)); err != nil || st.Mode()&0o111 == 0 {
			missingBins = append(missingBins, b)
		}
	}
	if len(missingBins) > 0 {
		return &MissingBinariesError{Dir: binDir, Missing: missingBins}
	}
	e := &MissingPrerequisitesError{}
	for _, t := range hostTools {
		if _, err := lookTool(t.file); err != nil && !slices.Contains(e.Packages, t.pkg) {
			e.Packages = append(e.Packages, t.pkg)
		}
	}
	if os.Geteuid() != 0 {
		e.Other = append(e.Other, "run as root (the kubelet, containerd and runc manage cgroups, mounts and network namespaces)")
	}
	if _, err := exec.LookPath("go"); err != nil {
		e.Other = append(e.Other, "put the go command on PATH (the node builds its pause image)")
	}
	if len(e.Packages) > 0 || len(e.Other) > 0 {
		return e
	}
	return nil
}

// node is the real-node part of a cluster.
type node struct {
	log     *slog.Logger
	dir     string // <cluster>/node
	sockDir string // short folder for unix sockets (path length limits)
	id      string
	bridge  string
	cgroup  string // cgroup root of the kubelet, e.g. /contrast-1a2b3c
	mirrors []string

	lock            *os.File
	before          *HostState
	cgroupDirs      []string
	bridgeMade      bool
	registry        string // 127.0.0.1:port
	pauseRef        string
	pauseDone       chan error
	kubeletPort     int
	kubeProxyConfig string // kube-proxy.yaml, reused by --cleanup at shutdown
	procs           []*proc
	events          []string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan error
	log  string
}

// prepareNode checks prerequisites, takes the machine-wide lock, records the
// host state and creates what the control plane needs before it starts: the
// bridge (the API server listens on its address) and the local registry.
func prepareNode(ctx context.Context, c *Cluster, opts Options) (*node, error) {
	if err := checkNodePrerequisites(c.BinDir); err != nil {
		return nil, err
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	n := &node{
		log:     c.log,
		dir:     filepath.Join(c.Dir, "node"),
		id:      hex.EncodeToString(b),
		mirrors: opts.Mirrors,
	}
	n.bridge = "ctrst" + n.id
	n.cgroup = "/contrast-" + n.id
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating node folder: %w", err)
	}
	if err := n.takeLock(ctx); err != nil {
		return n, err
	}
	n.sweepStale(ctx)
	var err error
	if n.before, err = SnapshotHost(ctx); err != nil {
		return n, err
	}
	// Keep the snapshot on disk until the node has cleaned up, so that the
	// next node can restore the host if this process is killed.
	if b, err := json.Marshal(n.before); err == nil {
		_ = os.WriteFile(stateFile(), b, 0o600)
	}
	if n.sockDir, err = os.MkdirTemp("/tmp", "ctrst-"); err != nil {
		return n, fmt.Errorf("creating socket folder: %w", err)
	}
	if err := checkAddressPlan(); err != nil {
		return n, err
	}
	// Pods reach Services and each other through the host: forward IPv4
	// (restored when the node stops).
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil { //nolint:gosec // a sysctl.
		return n, fmt.Errorf("enabling IPv4 forwarding: %w", err)
	}
	if err := n.createBridge(ctx); err != nil {
		return n, err
	}
	if err := n.createCgroupRoot(); err != nil {
		return n, err
	}
	if err := n.startRegistry(ctx, c); err != nil {
		return n, err
	}
	// The pause image builds while the control plane starts.
	n.pauseDone = make(chan error, 1)
	go func() {
		img, err := images.Build(ctx, images.Spec{Binaries: map[string]string{"/pause": images.PausePackage}})
		if err == nil {
			n.pauseRef, err = images.Push(ctx, n.registry, "contrast/pause", "latest", img)
		}
		n.pauseDone <- err
	}()
	return n, nil
}

func (n *node) takeLock(ctx context.Context) error {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("opening node lock: %w", err)
	}
	logged := false
	for {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			n.lock = f
			return nil
		}
		if !logged {
			n.log.Info("waiting for another real node on this machine to stop", "lock", f.Name())
			logged = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return fmt.Errorf("waiting for the real-node lock %s: %w", f.Name(), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// staleName matches the host-global names of a node: the bridge
// ("ctrst" + 6 hex digits) and the cgroup root ("contrast-" + 6 hex digits).
func staleName(name, prefix string) bool {
	id, ok := strings.CutPrefix(name, prefix)
	if !ok || len(id) != 6 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// sweepStale removes what a node of an earlier test process left behind when
// that process was killed before it could stop its node (its direct children
// die with it; shims, pods, mounts, cgroups, the bridge and kube-proxy's
// rules do not). It runs under the machine-wide lock, so no other node is
// running, and it only touches names only a node uses.
func (n *node) sweepStale(ctx context.Context) {
	var found []string
	// The folders of killed clusters with a node, found by the kubelet's
	// mount of its root folder. Their etcd and API server die with the test
	// process through dieWithTest's setpriv wrapper; only without setpriv
	// (dieWithTest then starts the binaries bare) do they still run.
	var clusterDirs []string
	if _, err := exec.LookPath("setpriv"); err != nil {
		for _, mp := range mountsUnder("/tmp") {
			if d, _, ok := strings.Cut(mp, "/node/kubelet"); ok && strings.HasSuffix(d, "/cluster") && !slices.Contains(clusterDirs, d) {
				clusterDirs = append(clusterDirs, d)
			}
		}
	}
	for _, d := range clusterDirs {
		if pids := processesMatching(d + "/"); len(pids) > 0 {
			killAndWait(pids)
			found = append(found, fmt.Sprintf("%d processes of %s", len(pids), d))
		}
	}
	if pids := processesMatching("-address /tmp/ctrst-"); len(pids) > 0 {
		killAndWait(pids)
		found = append(found, fmt.Sprintf("%d shim processes", len(pids)))
	}
	for _, h := range cgroupHierarchies() {
		ents, _ := os.ReadDir(h)
		for _, e := range ents {
			if !e.IsDir() || !staleName(e.Name(), "contrast-") {
				continue
			}
			d := filepath.Join(h, e.Name())
			killAndWait(cgroupProcs(d))
			if err := removeCgroupTree(d); err != nil {
				n.log.Warn("removing a stale cgroup", "err", err)
			}
			found = append(found, "cgroup "+d)
		}
	}
	stale, _ := filepath.Glob("/tmp/ctrst-*")
	var mounts []string
	for _, mp := range mountsUnder("/tmp") {
		if strings.Contains(mp, "/cluster/node/containerd/") || strings.HasSuffix(mp, "/cluster/node/kubelet") || strings.Contains(mp, "/cluster/node/kubelet/") {
			mounts = append(mounts, mp)
		}
	}
	for _, mp := range append(mounts, mountsUnder(stale...)...) {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err == nil {
			found = append(found, "mount "+mp)
		}
	}
	for _, d := range stale {
		if err := os.RemoveAll(d); err == nil {
			found = append(found, d)
		}
	}
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		if staleName(i.Name, "ctrst") {
			if err := n.ip(ctx, "link", "del", i.Name); err == nil {
				found = append(found, "bridge "+i.Name)
			}
		}
	}
	// The killed node's snapshot of the host from before it started: put
	// back its kernel settings and remove the iptables rules added since.
	if b, err := os.ReadFile(stateFile()); err == nil {
		var before HostState
		if err := json.Unmarshal(b, &before); err == nil {
			if now, err := SnapshotHost(ctx); err == nil {
				for _, e := range before.restore(ctx, now) {
					n.log.Warn("restoring the host after a killed node", "err", e)
				}
				if d := before.Diff(now); len(d) > 0 {
					found = append(found, fmt.Sprintf("%d iptables rules, kernel settings and paths", len(d)))
				}
				sweepCNICache()
				for _, p := range wellKnownPaths {
					if before.Paths[p] {
						continue
					}
					if removed, err := removeIfOwn(p, clusterDirs...); err != nil {
						n.log.Warn("removing a killed node's folder", "err", err)
					} else if removed {
						found = append(found, p)
					}
				}
			}
		}
		_ = os.Remove(stateFile())
	}
	if len(found) == 0 {
		return
	}
	n.log.Warn("removed the leftovers of a node whose test process was killed", "removed", strings.Join(found, "; "))
}

// sweepCNICache removes libcni's cached results of a killed node's pods
// (/var/lib/cni/results, a fixed path): the network's entries are named after
// the node ("contrast-<id>-<sandbox>-eth0"), the loopback entries after the
// same sandboxes.
func sweepCNICache() {
	const dir = "/var/lib/cni/results"
	ents, _ := os.ReadDir(dir)
	sandboxes := map[string]bool{}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "contrast-")
		if !ok || len(rest) < 8 || !staleName("contrast-"+rest[:6], "contrast-") {
			continue
		}
		sandbox := strings.TrimSuffix(rest[7:], "-eth0")
		sandboxes[sandbox] = true
		_ = os.Remove(filepath.Join(dir, e.Name()))
	}
	for sb := range sandboxes {
		_ = os.Remove(filepath.Join(dir, "cni-loopback-"+sb+"-lo"))
	}
}

// stateFile holds the host snapshot of the running node.
func stateFile() string { return filepath.Join(os.TempDir(), "contrast-real-node.state.json") }

// checkAddressPlan refuses to start when the host already has addresses or
// routes in the node's ranges.
func checkAddressPlan() error {
	_, pods, _ := net.ParseCIDR(podCIDR)
	_, svcs, _ := net.ParseCIDR(serviceCIDR)
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("listing host addresses: %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && (pods.Contains(ipn.IP) || svcs.Contains(ipn.IP) || ipn.Contains(pods.IP) || ipn.Contains(svcs.IP)) {
			return fmt.Errorf("the host already has address %s, inside the real node's ranges %s and %s", ipn, podCIDR, serviceCIDR)
		}
	}
	return nil
}

// ip runs the ip command of iproute2.
func (n *node) ip(ctx context.Context, args ...string) error {
	path, err := lookTool("ip")
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput() //nolint:gosec // iproute2 with the node's own arguments.
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// createBridge creates the pod bridge with the node address, so the API
// server can listen there before the first pod exists; the bridge CNI plugin
// adopts it.
func (n *node) createBridge(ctx context.Context) error {
	if err := n.ip(ctx, "link", "add", "name", n.bridge, "type", "bridge"); err != nil {
		return fmt.Errorf("creating bridge: %w", err)
	}
	n.bridgeMade = true
	if err := n.ip(ctx, "addr", "add", nodeAddress+"/24", "dev", n.bridge); err != nil {
		return fmt.Errorf("addressing bridge: %w", err)
	}
	if err := n.ip(ctx, "link", "set", n.bridge, "up"); err != nil {
		return fmt.Errorf("starting bridge: %w", err)
	}
	return nil
}

// createCgroupRoot creates the kubelet's cgroup root in every hierarchy.
func (n *node) createCgroupRoot() error {
	for _, h := range cgroupHierarchies() {
		d := filepath.Join(h, n.cgroup)
		if err := os.Mkdir(d, 0o755); err != nil { //nolint:gosec // cgroup folders are world-readable.
			return fmt.Errorf("creating cgroup %s: %w", d, err)
		}
		n.cgroupDirs = append(n.cgroupDirs, d)
		if filepath.Base(h) == "cpuset" {
			// A new cpuset cgroup starts with no CPUs and no memory nodes.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f)) //nolint:gosec // a cgroup file.
				if err != nil {
					return fmt.Errorf("reading %s: %w", f, err)
				}
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil { //nolint:gosec // a cgroup file.
					return fmt.Errorf("writing %s: %w", f, err)
				}
			}
		}
	}
	return nil
}

func freePort(host string) (int, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (n *node) startRegistry(ctx context.Context, c *Cluster) error {
	port, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	n.registry = fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(n.dir, "registry"), n.registry)
	cfgPath := filepath.Join(n.dir, "registry.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("writing registry config: %w", err)
	}
	bin, _ := lookTool("docker-registry")
	if err := n.start(c, "registry", bin, nil, "serve", cfgPath); err != nil {
		return err
	}
	return n.waitFor(ctx, "registry", 30*time.Second, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.registry+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil //nolint:nilerr // not listening yet.
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// start runs a node component with its output in <cluster>/<name>.log.
func (n *node) start(c *Cluster, name, bin string, env []string, args ...string) error {
	logf, err := c.logFile(name)
	if err != nil {
		return err
	}
	// Not bound to a context: the node stops its components itself, in order.
	cmd := exec.CommandContext(context.Background(), bin, args...) //nolint:gosec // the harness's own binaries and arguments.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1), log: logf.Name()}
	go func() { p.done <- cmd.Wait() }()
	n.procs = append(n.procs, p)
	return nil
}

func (n *node) proc(name string) *proc {
	for _, p := range n.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// waitFor polls cond until it holds, failing early when the component exits.
func (n *node) waitFor(ctx context.Context, name string, timeout time.Duration, cond wait.ConditionWithContextFunc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p := n.proc(name)
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if p != nil {
			select {
			case err := <-p.done:
				p.done <- err
				return false, fmt.Errorf("%s exited: %w; last log lines:\n%s", name, err, tail(p.log, 30))
			default:
			}
		}
		return cond(ctx)
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", name, err)
	}
	return nil
}

// stopProc stops a component: SIGTERM to its process group, SIGKILL after
// the grace period.
func (n *node) stopProc(name string, grace time.Duration) {
	p := n.proc(name)
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		err := <-p.done
		p.done <- err
	}
}

// apiServerSetup prepares the API server for the node: it listens and
// advertises on the node address (pods reach it through the `kubernetes`
// Service), serves a certificate that names that Service, authorizes the
// kubelet with the Node authorizer, and presents a client certificate to the
// kubelet for logs, exec and port-forward.
func (n *node) apiServerSetup(certDir string) (servingCA []byte, flags map[string]string, port int, err error) {
	ca, err := newCertAuthority("contrast-node-apiserver-ca")
	if err != nil {
		return nil, nil, 0, err
	}
	ips := []net.IP{net.ParseIP(nodeAddress), net.ParseIP(kubernetesSvc), net.ParseIP("127.0.0.1")}
	names := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if err := ca.issue(certDir, "apiserver", pkix.Name{CommonName: "kube-apiserver"}, names, ips, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, nil, 0, err
	}
	// envtest writes the service-account signer only with its own serving
	// certificate; write one too.
	saCA, err := newCertAuthority("contrast-node-service-accounts")
	if err != nil {
		return nil, nil, 0, err
	}
	saKey, err := x509.MarshalECPrivateKey(saCA.key)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("encoding service-account key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "sa-signer.crt"), saCA.certPEM, 0o600); err != nil {
		return nil, nil, 0, fmt.Errorf("writing service-account signer: %w", err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "sa-signer.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saKey}), 0o600); err != nil {
		return nil, nil, 0, fmt.Errorf("writing service-account signer: %w", err)
	}
	kubeletCA, err := newCertAuthority("contrast-node-kubelet-client-ca")
	if err != nil {
		return nil, nil, 0, err
	}
	if err := os.WriteFile(filepath.Join(certDir, "kubelet-client-ca.crt"), kubeletCA.certPEM, 0o600); err != nil {
		return nil, nil, 0, fmt.Errorf("writing kubelet client CA: %w", err)
	}
	if err := kubeletCA.issue(certDir, "apiserver-kubelet-client", pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}}, nil, nil, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, nil, 0, err
	}
	if port, err = freePort(nodeAddress); err != nil {
		return nil, nil, 0, err
	}
	flags = map[string]string{
		"advertise-address":          nodeAddress,
		"service-cluster-ip-range":   serviceCIDR,
		"authorization-mode":         "Node,RBAC",
		"enable-admission-plugins":   "NodeRestriction",
		"kubelet-client-certificate": filepath.Join(certDir, "apiserver-kubelet-client.crt"),
		"kubelet-client-key":         filepath.Join(certDir, "apiserver-kubelet-client.key"),
		"endpoint-reconciler-type":   "lease",
		// The node's host name resolves nowhere; reach the kubelet by address.
		"kubelet-preferred-address-types": "InternalIP",
	}
	return ca.certPEM, flags, port, nil
}

// startComponents starts containerd, the kubelet, kube-proxy and
// kube-scheduler once the control plane runs, and waits for the node to be
// Ready and schedulable.
func (n *node) startComponents(ctx context.Context, c *Cluster, timeout time.Duration) error {
	select {
	case err := <-n.pauseDone:
		if err != nil {
			return fmt.Errorf("building the pause image: %w", err)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	n.log.Info("pause image pushed", "ref", n.pauseRef)

	if err := n.startContainerd(ctx, c, timeout); err != nil {
		return err
	}
	if err := n.startKubelet(c); err != nil {
		return err
	}
	if err := n.startKubeProxy(c); err != nil {
		return err
	}
	schedKC, err := c.writeKubeconfigFor("kube-scheduler", "system:kube-scheduler", nil)
	if err != nil {
		return err
	}
	if err := n.start(c, "kube-scheduler", filepath.Join(c.BinDir, "kube-scheduler"), nil,
		"--kubeconfig="+schedKC, "--authentication-kubeconfig="+schedKC, "--authorization-kubeconfig="+schedKC,
		"--leader-elect=false", "--secure-port=0", "--v=1"); err != nil {
		return err
	}
	return n.waitFor(ctx, "kubelet", timeout, func(ctx context.Context) (bool, error) {
		node, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		for _, t := range node.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				return false, nil
			}
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
}

func (n *node) containerdSocket() string { return filepath.Join(n.sockDir, "containerd.sock") }

func (n *node) startContainerd(ctx context.Context, c *Cluster, timeout time.Duration) error {
	runc, _ := lookTool("runc")
	d := filepath.Join(n.dir, "containerd")
	certsD := filepath.Join(d, "certs.d")
	cniConf := filepath.Join(n.dir, "cni", "net.d")
	for _, p := range []string{d, certsD, cniConf} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", p, err)
		}
	}
	if err := writeHostsConfig(certsD, n.registry, n.mirrors); err != nil {
		return err
	}
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "contrast-%s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, n.id, n.bridge, podCIDR, nodeAddress, filepath.Join(n.dir, "cni", "ipam"))
	if err := os.WriteFile(filepath.Join(cniConf, "10-contrast.conflist"), []byte(conflist), 0o600); err != nil {
		return fmt.Errorf("writing CNI config: %w", err)
	}
	cfg := fmt.Sprintf(`version = 4
root = %[1]q
state = %[2]q
temp = %[3]q
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[plugins.'io.containerd.server.v1.grpc']
  address = %[4]q
[plugins.'io.containerd.server.v1.ttrpc']
  address = %[5]q
[plugins.'io.containerd.internal.v1.opt']
  path = %[6]q
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = %[7]q

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[8]q
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %[9]q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = [%[10]q]
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = %[11]q
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %[12]q
        Root = %[13]q
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, filepath.Join(d, "root"), filepath.Join(d, "state"), filepath.Join(d, "tmp"),
		n.containerdSocket(), n.containerdSocket()+".ttrpc", filepath.Join(d, "opt"),
		filepath.Join(n.sockDir, "s"), n.pauseRef, certsD, filepath.Join(d, "cdi"), cniConf,
		runc, filepath.Join(d, "runc"))
	cfgPath := filepath.Join(d, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("writing containerd config: %w", err)
	}
	// containerd finds its shim on PATH.
	env := []string{"PATH=" + c.BinDir + ":" + os.Getenv("PATH") + ":/usr/sbin:/sbin"}
	if err := n.start(c, "containerd", filepath.Join(c.BinDir, "containerd"), env, "--config", cfgPath, "--log-level", "info"); err != nil {
		return err
	}
	return n.waitFor(ctx, "containerd", timeout, func(ctx context.Context) (bool, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", n.containerdSocket())
		if err != nil {
			return false, nil //nolint:nilerr // not listening yet.
		}
		_ = conn.Close()
		return true, nil
	})
}

// writeHostsConfig writes containerd's registry host configuration: the
// local registry over plain HTTP, and each mirrored upstream registry
// ("*" for every one) resolved through it.
func writeHostsConfig(certsD, registry string, mirrors []string) error {
	local := fmt.Sprintf("[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+registry)
	files := map[string]string{registry: fmt.Sprintf("server = %q\n\n%s", "http://"+registry, local)}
	for _, m := range mirrors {
		switch {
		case m == "*":
			files["_default"] = local
		case strings.ContainsAny(m, "/ ") || m == "":
			return fmt.Errorf("mirror %q is not a registry host", m)
		default:
			files[m] = fmt.Sprintf("server = %q\n\n%s", "https://"+m, local)
		}
	}
	for host, content := range files {
		d := filepath.Join(certsD, host)
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(content), 0o600); err != nil {
			return fmt.Errorf("writing hosts.toml for %s: %w", host, err)
		}
	}
	return nil
}

func (n *node) startKubelet(c *Cluster) error {
	kc, err := c.writeKubeconfigFor("kubelet", "system:node:"+NodeName, []string{"system:nodes"})
	if err != nil {
		return err
	}
	if n.kubeletPort, err = freePort(nodeAddress); err != nil {
		return err
	}
	root := filepath.Join(n.dir, "kubelet")
	logs := filepath.Join(n.dir, "pod-logs")
	for _, p := range []string{root, logs} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", p, err)
		}
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[3]s
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupRoot: %[4]s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[5]s
podLogsDir: %[6]s
volumePluginDir: %[7]s
resolvConf: ""
clusterDNS: [%[8]q]
clusterDomain: %[9]s
oomScoreAdj: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
  imagefs.inodesFree: 1%%
evictionPressureTransitionPeriod: 5s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 10s
shutdownGracePeriod: 0s
`, nodeAddress, n.kubeletPort, filepath.Join(c.Dir, "pki", "kubelet-client-ca.crt"), n.cgroup,
		n.containerdSocket(), logs, filepath.Join(n.dir, "volume-plugins"), nodeAddress, ClusterDomain)
	cfgPath := filepath.Join(n.dir, "kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("writing kubelet config: %w", err)
	}
	env := []string{"PATH=" + os.Getenv("PATH") + ":/usr/sbin:/sbin"}
	return n.start(c, "kubelet", filepath.Join(c.BinDir, "kubelet"), env,
		"--config="+cfgPath, "--kubeconfig="+kc, "--root-dir="+root, "--cert-dir="+filepath.Join(root, "pki"),
		"--hostname-override="+NodeName, "--node-ip="+nodeAddress, "--v=1")
}

func (n *node) writeKubeProxyConfig(c *Cluster) (string, error) {
	kc, err := c.writeKubeconfigFor("kube-proxy", "system:kube-proxy", nil)
	if err != nil {
		return "", err
	}
	healthz, err := freePort("127.0.0.1")
	if err != nil {
		return "", err
	}
	metrics, err := freePort("127.0.0.1")
	if err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: iptables
hostnameOverride: %s
bindAddress: %s
clusterCIDR: %s
healthzBindAddress: 127.0.0.1:%d
metricsBindAddress: 127.0.0.1:%d
nodePortAddresses: ["%s/32"]
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  masqueradeAll: true
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 0s
`, kc, NodeName, nodeAddress, podCIDR, healthz, metrics, nodeAddress)
	p := filepath.Join(n.dir, "kube-proxy.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		return "", fmt.Errorf("writing kube-proxy config: %w", err)
	}
	return p, nil
}

func (n *node) startKubeProxy(c *Cluster) error {
	cfg, err := n.writeKubeProxyConfig(c)
	if err != nil {
		return err
	}
	n.kubeProxyConfig = cfg
	env := []string{"PATH=" + os.Getenv("PATH") + ":/usr/sbin:/sbin"}
	return n.start(c, "kube-proxy", filepath.Join(c.BinDir, "kube-proxy"), env, "--config="+cfg, "--v=1")
}

// drain removes every pod while the kubelet still runs, so that it tears
// down their sandboxes, network namespaces and cgroups properly; the
// controllers and the scheduler stop first so nothing replaces them.
func (n *node) drain(ctx context.Context, c *Cluster) error {
	n.stopProc("kube-scheduler", 10*time.Second)
	c.stopControllerManager()
	if c.Client == nil || n.proc("kubelet") == nil {
		return nil
	}
	var errs []error
	grace := int64(2)
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing pods to drain: %w", err)
	}
	for _, p := range pods.Items {
		err := c.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting pod %s/%s: %w", p.Namespace, p.Name, err))
		}
	}
	state := filepath.Join(n.dir, "containerd", "state")
	err = n.waitFor(ctx, "kubelet", 60*time.Second, func(ctx context.Context) (bool, error) {
		l, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) > 0 {
			return false, err
		}
		// The kubelet stops a deleted pod's sandbox (network namespace and
		// pause process) before it confirms the deletion; wait for the
		// network namespaces and the shims to go too.
		for _, mp := range mountsUnder(state) {
			if strings.Contains(mp, "/netns/") {
				return false, nil
			}
		}
		return len(processesMatching(n.containerdSocket())) == 0, nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("draining the node: %w", err))
	}
	return errors.Join(errs...)
}

// shutdown stops the node components and removes everything the node
// created on the host. Components that are already gone are skipped; the
// final host snapshot must equal the one taken before the node started.
func (n *node) shutdown(ctx context.Context, c *Cluster) error {
	var errs []error
	if n.proc("kube-proxy") != nil {
		n.stopProc("kube-proxy", 10*time.Second)
		// The config startKubeProxy wrote: the same client cert and ports.
		cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kube-proxy"), "--config="+n.kubeProxyConfig, "--cleanup") //nolint:gosec // the harness's own binary.
		cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
		if out, err := cmd.CombinedOutput(); err != nil {
			n.log.Warn("kube-proxy --cleanup failed", "err", err, "output", string(out))
		}
	}
	n.stopProc("kubelet", 15*time.Second)
	n.stopProc("containerd", 15*time.Second)
	return errors.Join(errs...)
}

// cleanup runs after the API server and etcd are stopped: it stops the
// registry, sweeps what the components left (processes, mounts, cgroups),
// deletes the bridge, restores the host's iptables rules and kernel
// settings, checks the host against the snapshot and releases the lock.
func (n *node) cleanup(ctx context.Context) error {
	var errs []error
	for _, p := range n.procs {
		n.stopProc(p.name, 10*time.Second)
	}
	if n.sockDir != "" {
		if pids := processesMatching(n.containerdSocket()); len(pids) > 0 {
			n.events = append(n.events, fmt.Sprintf("killed %d leftover shim processes", len(pids)))
			killAndWait(pids)
		}
	}
	for _, d := range n.cgroupDirs {
		if pids := cgroupProcs(d); len(pids) > 0 {
			n.events = append(n.events, fmt.Sprintf("killed %d leftover processes in %s", len(pids), d))
			killAndWait(pids)
		}
	}
	// The kubelet bind-mounts its root folder onto itself (for mount
	// propagation) and leaves that mount; anything else here is a leftover.
	if mps := unmountAll(n.dir, n.sockDir); len(mps) > 0 {
		n.events = append(n.events, "unmounted leftover "+strings.Join(mps, ", "))
	}
	if left := mountsUnder(n.dir, n.sockDir); len(left) > 0 {
		errs = append(errs, fmt.Errorf("mounts left under the node folder: %s", strings.Join(left, ", ")))
	}
	for _, d := range n.cgroupDirs {
		if err := removeCgroupTree(d); err != nil {
			errs = append(errs, err)
		}
	}
	if n.bridgeMade {
		if err := n.ip(ctx, "link", "del", n.bridge); err != nil {
			errs = append(errs, err)
		}
	}
	// A few paths are fixed in the components: the kubelet's device-plugin
	// socket (/var/lib/kubelet/device-plugins) and its container-log links
	// (/var/log/containers), libcni's result cache (/var/lib/cni). Remove them
	// when they did not exist before and hold nothing but folders, sockets and
	// links into this node's folder.
	if n.before != nil {
		for _, p := range wellKnownPaths {
			if n.before.Paths[p] {
				continue
			}
			if removed, err := removeIfOwn(p, n.dir); err != nil {
				errs = append(errs, err)
			} else if removed {
				n.events = append(n.events, "removed "+p)
			}
		}
		now, err := SnapshotHost(ctx)
		if err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, n.before.restore(ctx, now)...)
			if after, err := SnapshotHost(ctx); err != nil {
				errs = append(errs, err)
			} else if d := n.before.Diff(after); len(d) > 0 {
				errs = append(errs, fmt.Errorf("the host differs from before the node started:\n  %s", strings.Join(d, "\n  ")))
			}
		}
	}
	if n.sockDir != "" {
		if err := os.RemoveAll(n.sockDir); err != nil {
			errs = append(errs, err)
		}
	}
	if n.before != nil {
		_ = os.Remove(stateFile())
	}
	if len(n.events) > 0 {
		n.log.Info("node cleanup", "events", strings.Join(n.events, "; "))
	}
	if n.lock != nil {
		_ = syscall.Flock(int(n.lock.Fd()), syscall.LOCK_UN)
		_ = n.lock.Close()
	}
	return errors.Join(errs...)
}

// removeIfOwn removes path if it holds only folders, sockets, empty files
// and links (the kubelet's links into its pod-log folder); it reports whether
// it removed anything and refuses, with an error, when path holds anything
// else.
func removeIfOwn(path string, ownDirs ...string) (bool, error) {
	if _, err := os.Lstat(path); os.IsNotExist(err) {
		return false, nil
	}
	var foreign []string
	_ = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil //nolint:nilerr // vanished while walking.
		}
		switch t := d.Type(); {
		case t.IsDir(), t&os.ModeSocket != 0:
		case t&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			own := false
			for _, d := range ownDirs {
				own = own || (err == nil && strings.HasPrefix(target, d+"/"))
			}
			if !own {
				foreign = append(foreign, p)
			}
		default:
			if info, err := d.Info(); err != nil || info.Size() > 0 {
				foreign = append(foreign, p)
			}
		}
		return nil
	})
	if len(foreign) > 0 {
		return false, fmt.Errorf("%s did not exist before the node started and now holds files the node did not create: %s", path, strings.Join(foreign, ", "))
	}
	return true, os.RemoveAll(path)
}

// Registry returns the address (127.0.0.1:port) of the node's local image
// registry, or "" without a real node. Push images there with
// images.Push or images.PushAs.
func (c *Cluster) Registry() string {
	if c.node == nil {
		return ""
	}
	return c.node.registry
}

// PauseImage returns the reference of the node's sandbox image.
func (c *Cluster) PauseImage() string {
	if c.node == nil {
		return ""
	}
	return c.node.pauseRef
}

// ServiceCIDR returns the Service IP range of the cluster.
func (c *Cluster) ServiceCIDR() string {
	if c.node == nil {
		return "10.0.0.0/24"
	}
	return serviceCIDR
}

// NodeAddress returns the address of the real node (the API server listens
// there too), or "" without one.
func (c *Cluster) NodeAddress() string {
	if c.node == nil {
		return ""
	}
	return nodeAddress
}

// Cgroup returns the cgroup root of the node's pods ("/contrast-<id>"),
// below every cgroup hierarchy.
func (c *Cluster) Cgroup() string {
	if c.node == nil {
		return ""
	}
	return c.node.cgroup
}

// HostBefore returns the snapshot of the host the node took before it
// started (after removing the leftovers of killed nodes), or nil.
func (c *Cluster) HostBefore() *HostState {
	if c.node == nil {
		return nil
	}
	return c.node.before
}

// RuntimeSocket returns the path of containerd's socket (for ctr or
// crictl), or "" without a real node.
func (c *Cluster) RuntimeSocket() string {
	if c.node == nil || c.node.sockDir == "" {
		return ""
	}
	return c.node.containerdSocket()
}

// Bridge returns the name of the node's pod bridge.
func (c *Cluster) Bridge() string {
	if c.node == nil {
		return ""
	}
	return c.node.bridge
}
