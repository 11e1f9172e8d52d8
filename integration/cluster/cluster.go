// Package cluster starts a real Kubernetes control plane for integration tests
// and local tooling: etcd, kube-apiserver and kube-controller-manager, built
// from source by `make k8s-bins`.
//
// The API server runs with the ServiceAccount admission plugin enabled and the
// controller manager runs every default controller, so objects behave as on a
// real cluster: a Deployment produces a ReplicaSet and Pods, namespaces get a
// `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap, and admitted
// pods carry the projected service-account token volume. By default no node
// runs the pods; they stay Pending. With Options.Node a real node runs them
// (see node.go): kubelet, containerd and runc, no Docker, images from a local
// registry.
package cluster

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// BinDirEnv names the environment variable that points at the folder with the
// Kubernetes binaries. The Makefile exports it; without it the harness looks
// for bin/k8s at the root of the repository.
const BinDirEnv = "CONTRAST_K8S_BIN_DIR"

// requiredBinaries are the programs the control plane needs.
var requiredBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl"}

// Options configures a control plane.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and kubectl.
	// Empty means $CONTRAST_K8S_BIN_DIR, then <repository>/bin/k8s.
	BinDir string
	// Dir receives the kubeconfig, certificates and component logs. Empty means
	// a new temporary folder that Stop removes.
	Dir string
	// StartTimeout bounds the start of each component. Zero means 90 s, enough
	// for a loaded 2-core machine.
	StartTimeout time.Duration
	// Logger receives progress messages. Nil discards them.
	Logger *slog.Logger

	// Node adds a real node, so pods really run: containerd with runc, the
	// kubelet, kube-proxy (iptables) and kube-scheduler, a bridge CNI network
	// and a local image registry (see Registry). It needs root, the Debian
	// packages that .ci/run installs, and holds a machine-wide lock: one real
	// node runs per machine at a time. Without it pods stay Pending.
	Node bool
	// Mirrors lists upstream registry hosts ("docker.l5d.io", "docker.io")
	// whose images the node pulls from the local registry instead (push them
	// there with images.PushAs); "*" mirrors every host. Real node only.
	Mirrors []string
}

// Cluster is a running control plane.
type Cluster struct {
	// Config authenticates as a cluster administrator (group system:masters).
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file equivalent to Config.
	Kubeconfig string
	// Client is a typed client built from Config.
	Client kubernetes.Interface
	// BinDir is the folder the binaries were taken from.
	BinDir string
	// Dir holds the kubeconfig, certificates and the component logs.
	Dir string

	env     *envtest.Environment
	node    *node
	kcm     *exec.Cmd
	kcmDone chan error
	logs    []*os.File
	ownDir  bool
	log     *slog.Logger

	dns *clusterDNS

	stopOnce sync.Once
	stopErr  error
}

// MissingBinariesError reports Kubernetes binaries the harness could not find.
type MissingBinariesError struct {
	Dir     string
	Missing []string
}

func (e *MissingBinariesError) Error() string {
	return fmt.Sprintf("kubernetes binaries %s not found in %s: run `make k8s-bins` at the repository root (or set %s)",
		strings.Join(e.Missing, ", "), e.Dir, BinDirEnv)
}

// ResolveBinDir returns the folder with the Kubernetes binaries, or a
// *MissingBinariesError that says how to build them.
func ResolveBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(BinDirEnv)
	}
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return "", fmt.Errorf("locating bin/k8s: %w (set %s)", err, BinDirEnv)
		}
		dir = filepath.Join(root, "bin", "k8s")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", dir, err)
	}
	var missing []string
	for _, b := range requiredBinaries {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.IsDir() || st.Mode()&0o111 == 0 { //nolint:gosec // the harness's binary folder.
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return dir, &MissingBinariesError{Dir: dir, Missing: missing}
	}
	return dir, nil
}

// repoRoot walks up from the working directory to the folder holding go.work.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s", wd)
		}
	}
}

// New starts etcd, kube-apiserver and kube-controller-manager and waits until
// the controllers work (the `default` ServiceAccount exists). The caller must
// call Stop.
func New(ctx context.Context, opts Options) (_ *Cluster, retErr error) {
	binDir, err := ResolveBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{BinDir: binDir, Dir: opts.Dir, log: log}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "contrast-cluster-"); err != nil {
			return nil, fmt.Errorf("creating cluster folder: %w", err)
		}
		c.ownDir = true
	} else if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating cluster folder: %w", err)
	}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, c.Stop())
		}
	}()

	start := time.Now()
	if opts.Node {
		n, err := prepareNode(ctx, c, opts)
		c.node = n
		if err != nil {
			return nil, err
		}
		log.Info("node prepared", "bridge", n.bridge, "registry", n.registry, "cgroup", n.cgroup, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	log.Info("starting etcd and kube-apiserver", "binDir", binDir)
	if err := c.startAPIServer(opts.StartTimeout); err != nil {
		return nil, err
	}
	log.Info("kube-apiserver ready", "host", c.Config.Host, "elapsed", time.Since(start).Round(time.Millisecond))

	if err := c.startControllerManager(ctx, opts.StartTimeout); err != nil {
		return nil, err
	}
	log.Info("kube-controller-manager ready", "elapsed", time.Since(start).Round(time.Millisecond))
	if c.node != nil {
		if c.dns, err = startClusterDNS(nodeAddress, c.Client, log); err != nil {
			return nil, err
		}
		if err := c.node.startComponents(ctx, c, opts.StartTimeout); err != nil {
			return nil, err
		}
		log.Info("node ready", "node", NodeName, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	return c, nil
}

func (c *Cluster) logFile(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(c.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600) //nolint:gosec // a log file in the cluster folder.
	if err != nil {
		return nil, fmt.Errorf("creating log file: %w", err)
	}
	c.logs = append(c.logs, f)
	return f, nil
}

// dieWithTest returns the path envtest should start binary name from: a
// wrapper that makes the kernel kill the process when the test process dies
// (setpriv --pdeathsig; envtest has no hook for it), so etcd and
// kube-apiserver do not outlive a test binary killed by a timeout or
// kill -9. Without setpriv (util-linux) it returns the binary itself.
func (c *Cluster) dieWithTest(name string) (string, error) {
	bin := filepath.Join(c.BinDir, name)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return bin, nil //nolint:nilerr // best effort: run without the wrapper
	}
	wrapper := filepath.Join(c.Dir, name+".sh")
	script := fmt.Sprintf("#!/bin/sh\nexec %q --pdeathsig KILL -- %q \"$@\"\n", setpriv, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil { //nolint:gosec // an executable script in the test's own folder
		return "", fmt.Errorf("writing %s wrapper: %w", name, err)
	}
	return wrapper, nil
}

func (c *Cluster) startAPIServer(timeout time.Duration) error {
	etcdLog, err := c.logFile("etcd")
	if err != nil {
		return err
	}
	apiLog, err := c.logFile("kube-apiserver")
	if err != nil {
		return err
	}
	c.env = &envtest.Environment{
		BinaryAssetsDirectory:    c.BinDir,
		ControlPlaneStartTimeout: timeout,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	etcdPath, err := c.dieWithTest("etcd")
	if err != nil {
		return err
	}
	apiPath, err := c.dieWithTest("kube-apiserver")
	if err != nil {
		return err
	}
	c.env.ControlPlane.Etcd = &envtest.Etcd{Path: etcdPath, Out: etcdLog, Err: etcdLog, DataDir: filepath.Join(c.Dir, "etcd")}
	api := c.env.ControlPlane.GetAPIServer()
	api.Path = apiPath
	api.Out, api.Err = apiLog, apiLog
	api.CertDir = filepath.Join(c.Dir, "pki")
	if err := os.MkdirAll(api.CertDir, 0o700); err != nil {
		return fmt.Errorf("creating certificate folder: %w", err)
	}
	// envtest turns the ServiceAccount admission plugin off; a real cluster has
	// it on, and pods must look as they do there (projected token volume).
	api.Configure().Disable("disable-admission-plugins")
	if c.node != nil {
		ca, flags, port, err := c.node.apiServerSetup(api.CertDir)
		if err != nil {
			return err
		}
		api.Address = nodeAddress
		api.Port = strconv.Itoa(port)
		api.CA = ca
		for k, v := range flags {
			api.Configure().Set(k, v)
		}
	}

	cfg, err := c.env.Start()
	if err != nil {
		return fmt.Errorf("starting etcd and kube-apiserver (logs in %s): %w", c.Dir, err)
	}
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("creating client: %w", err)
	}
	if c.Kubeconfig, err = c.writeKubeconfig("admin", "contrast-admin"); err != nil {
		return err
	}
	return nil
}

// writeKubeconfig provisions a client-certificate user in group system:masters
// and writes a kubeconfig for it.
func (c *Cluster) writeKubeconfig(file, user string) (string, error) {
	return c.writeKubeconfigFor(file, user, []string{"system:masters"})
}

// writeKubeconfigFor provisions a client-certificate user with the given
// groups and writes a kubeconfig for it.
func (c *Cluster) writeKubeconfigFor(file, user string, groups []string) (string, error) {
	u, err := c.env.ControlPlane.AddUser(envtest.User{Name: user, Groups: groups}, nil)
	if err != nil {
		return "", fmt.Errorf("provisioning user %s: %w", user, err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("rendering kubeconfig for %s: %w", user, err)
	}
	path := filepath.Join(c.Dir, file+".kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		return "", fmt.Errorf("writing kubeconfig: %w", err)
	}
	return path, nil
}

func (c *Cluster) startControllerManager(ctx context.Context, timeout time.Duration) error {
	kubeconfig, err := c.writeKubeconfig("kube-controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	certDir := c.env.ControlPlane.APIServer.CertDir
	caFile := filepath.Join(certDir, "contrast-root-ca.crt")
	if err := os.WriteFile(caFile, c.Config.CAData, 0o600); err != nil {
		return fmt.Errorf("writing cluster CA: %w", err)
	}
	if blk, _ := pem.Decode(c.Config.CAData); blk == nil {
		return errors.New("cluster CA from envtest is not PEM")
	}
	kcmLog, err := c.logFile("kube-controller-manager")
	if err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--controllers=*",
		"--service-account-private-key-file=" + filepath.Join(certDir, "sa-signer.key"),
		"--root-ca-file=" + caFile,
		"--use-service-account-credentials=false",
		"--concurrent-deployment-syncs=10",
		"--concurrent-replicaset-syncs=10",
		"--v=1",
	}
	//nolint:gosec // the binary and its arguments come from this harness, not from input.
	// Not bound to ctx, which only bounds the start: Stop ends the process.
	cmd := exec.CommandContext(context.WithoutCancel(ctx), filepath.Join(c.BinDir, "kube-controller-manager"), args...)
	cmd.Stdout, cmd.Stderr = kcmLog, kcmLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting kube-controller-manager: %w", err)
	}
	c.kcm = cmd
	c.kcmDone = make(chan error, 1)
	go func() { c.kcmDone <- cmd.Wait() }()

	// The ServiceAccount controller creates `default` in every namespace: once it
	// exists, the controllers are running.
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = wait.PollUntilContextCancel(waitCtx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-c.kcmDone:
			c.kcmDone <- err
			return false, fmt.Errorf("kube-controller-manager exited: %w; last log lines:\n%s", err, tail(kcmLog.Name(), 20))
		default:
		}
		_, err := c.Client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("waiting for kube-controller-manager (log %s): %w", kcmLog.Name(), err)
	}
	return nil
}

// Stop stops the cluster and removes the cluster folder if New created it.
// With a real node it first deletes every pod and waits for the kubelet to
// tear their sandboxes down, then stops kube-proxy (removing its rules), the
// kubelet and containerd; then the controller manager, the API server and
// etcd (in that order); then it removes what the node created on the host
// and fails if the host differs from before. It is safe to call twice.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if c.node != nil {
			if err := c.node.drain(ctx, c); err != nil {
				errs = append(errs, err)
			}
			if err := c.node.shutdown(ctx, c); err != nil {
				errs = append(errs, err)
			}
		}
		if c.dns != nil {
			c.dns.close()
		}
		c.stopControllerManager()
		if c.env != nil {
			if err := c.env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stopping kube-apiserver and etcd: %w", err))
			}
		}
		if c.node != nil {
			if err := c.node.cleanup(ctx); err != nil {
				errs = append(errs, fmt.Errorf("cleaning up the node: %w", err))
			}
		}
		for _, f := range c.logs {
			_ = f.Close()
		}
		if c.ownDir && c.Dir != "" {
			if err := os.RemoveAll(c.Dir); err != nil {
				errs = append(errs, fmt.Errorf("removing %s: %w", c.Dir, err))
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// stopControllerManager stops kube-controller-manager; it is idempotent.
func (c *Cluster) stopControllerManager() {
	if c.kcm == nil || c.kcm.Process == nil {
		return
	}
	_ = syscall.Kill(-c.kcm.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-c.kcmDone:
		c.kcmDone <- err
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-c.kcm.Process.Pid, syscall.SIGKILL)
		err := <-c.kcmDone
		c.kcmDone <- err
	}
	c.kcm = nil
}

// KubectlCmd returns the real kubectl, bound to this cluster's kubeconfig.
func (c *Cluster) KubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	//nolint:gosec // kubectl is the harness's own binary; the arguments are the caller's.
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	return cmd
}

// RunKubectl runs kubectl and returns its standard output; the error carries
// standard error.
func (c *Cluster) RunKubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := c.KubectlCmd(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// WaitForNamespaceReady waits until the ServiceAccount controller has created
// the `default` ServiceAccount of namespace ns, which the ServiceAccount
// admission plugin needs before pods can be admitted there.
func (c *Cluster) WaitForNamespaceReady(ctx context.Context, ns string) error {
	return wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
}

// Pods lists the pods of a namespace that match a label selector.
func (c *Cluster) Pods(ctx context.Context, ns, selector string) ([]corev1.Pod, error) {
	l, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("listing pods in %s: %w", ns, err)
	}
	return l.Items, nil
}

// ComponentLog returns the last lines of a component's log ("etcd",
// "kube-apiserver", "kube-controller-manager"), for test failure messages.
func (c *Cluster) ComponentLog(component string, lines int) string {
	return tail(filepath.Join(c.Dir, component+".log"), lines)
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path) //nolint:gosec // a log file this harness wrote.
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
