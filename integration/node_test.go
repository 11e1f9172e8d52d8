package integration_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/integration/images"
)

// mirroredName is an upstream image name the node resolves through its local
// registry, as later tests do for emojivoto.
const mirroredName = "docker.l5d.io/buoyantio/emojivoto-web:v11"

// TestRealNode runs real pods on a real node (kubelet, containerd, runc) with
// a project-built image from the local registry, then stops the cluster and
// checks that the host is as it was. One node start serves every subtest.
func TestRealNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	before, err := cluster.SnapshotHost(ctx)
	require.NoError(t, err)

	start := time.Now()
	c := cluster.Start(t, cluster.Options{Node: true, Mirrors: []string{"docker.l5d.io"}})
	t.Logf("TIMING cluster with real node ready in %s", time.Since(start).Round(time.Millisecond))

	buildStart := time.Now()
	img, err := images.Build(ctx, images.Spec{Binaries: map[string]string{"/testserver": images.TestServerPackage}})
	require.NoError(t, err)
	ref, err := images.Push(ctx, c.Registry(), "contrast/testserver", "latest", img)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(ref, c.Registry()+"/contrast/testserver@sha256:"), ref)
	t.Logf("TIMING test server image built and pushed in %s: %s", time.Since(buildStart).Round(time.Millisecond), ref)

	ns := "node-test"
	c.Kubectl(t, "create", "namespace", ns)
	require.NoError(t, c.WaitForNamespaceReady(ctx, ns))

	t.Run("DeploymentBehindClusterIPService", func(t *testing.T) {
		testDeploymentBehindService(ctx, t, c, ns, ref)
	})
	t.Run("InitContainerAndNativeSidecarInOrder", func(t *testing.T) {
		testInitAndSidecar(ctx, t, c, ns, ref)
	})
	t.Run("MirroredUpstreamName", func(t *testing.T) {
		digestRef, err := images.PushAs(ctx, c.Registry(), mirroredName, img)
		require.NoError(t, err)
		require.Equal(t, "docker.l5d.io/buoyantio/emojivoto-web@"+must(img.Digest()).String(), digestRef)
		apply(ctx, t, c, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: mirrored
spec:
  containers:
  - name: web
    image: %s
    args: ["serve"]
`, mirroredName))
		c.Kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/mirrored", "--timeout=60s")
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "mirrored", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Contains(t, p.Status.ContainerStatuses[0].ImageID, must(img.Digest()).String())
	})

	stopStart := time.Now()
	require.NoError(t, c.Stop(), "stopping the cluster cleans the host")
	t.Logf("TIMING cluster stopped and host cleaned in %s", time.Since(stopStart).Round(time.Millisecond))

	t.Run("HostIsClean", func(t *testing.T) {
		after, err := cluster.SnapshotHost(ctx)
		require.NoError(t, err)
		assert.Empty(t, before.Added(after), "no iptables chain or rule, link, network namespace or well-known folder is left")
		// The node's own snapshot is taken after it swept the leftovers of a
		// killed node, if any: against it, nothing at all differs.
		assert.Empty(t, c.HostBefore().Diff(after), "kernel settings, iptables, links, namespaces and folders are as the node found them")
		assertNoLeftovers(t, c)
	})
}

func testDeploymentBehindService(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, ref string) {
	start := time.Now()
	apply(ctx, t, c, ns, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: %[1]s
        args: ["serve", "-port", "8080"]
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
`, ref))
	c.Kubectl(t, "-n", ns, "rollout", "status", "deployment/echo", "--timeout=90s")
	t.Logf("TIMING 2-replica Deployment Ready in %s", time.Since(start).Round(time.Millisecond))

	svc, err := c.Client.CoreV1().Services(ns).Get(ctx, "echo", metav1.GetOptions{})
	require.NoError(t, err)
	_, svcNet, err := net.ParseCIDR(c.ServiceCIDR())
	require.NoError(t, err)
	require.True(t, svcNet.Contains(net.ParseIP(svc.Spec.ClusterIP)), "ClusterIP %s in %s", svc.Spec.ClusterIP, c.ServiceCIDR())

	// The client pod starts after the Service, so the kubelet gives it the
	// Service's address in ECHO_SERVICE_HOST (there is no cluster DNS).
	apply(ctx, t, c, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: client
    image: %s
    args: ["serve", "-port", "9090"]
`, ref))
	c.Kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=60s")

	pods, err := c.Pods(ctx, ns, "app=echo")
	require.NoError(t, err)
	require.Len(t, pods, 2)
	want := map[string]bool{}
	for _, p := range pods {
		assert.Equal(t, cluster.NodeName, p.Spec.NodeName)
		want[p.Name] = true
	}
	seen := map[string]bool{}
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		out, err := c.RunKubectl(ctx, nil, "-n", ns, "exec", "client", "--", "/testserver", "get", "http://${ECHO_SERVICE_HOST}:${ECHO_SERVICE_PORT}/")
		if err != nil {
			if ctx.Err() == nil {
				lastErr = err
			}
			return false, nil
		}
		host := strings.TrimPrefix(strings.TrimSpace(out), "hello from ")
		require.True(t, want[host], "answer %q comes from a replica", out)
		seen[host] = true
		return len(seen) == len(want), nil
	})
	require.NoError(t, err, "both replicas answer on the ClusterIP Service from the client pod (last error: %v)", lastErr)

	t.Run("APIServerThroughKubernetesService", func(t *testing.T) {
		// The API server's certificate names the `kubernetes` Service
		// address, and pods trust it through the service-account CA.
		out := c.Kubectl(t, "-n", ns, "exec", "client", "--", "/testserver", "get",
			"-cacert", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
			"https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}/version")
		assert.Contains(t, out, `"gitVersion"`)
	})

	t.Run("KubectlLogsAndExec", func(t *testing.T) {
		out := c.Kubectl(t, "-n", ns, "logs", pods[0].Name)
		assert.Contains(t, out, "testserver serving")
		assert.Contains(t, out, "request", "the request through the Service is logged by one of the replicas, or the other")
		out = c.Kubectl(t, "-n", ns, "exec", pods[0].Name, "--", "/testserver", "echo", "hello", "from", "exec")
		assert.Equal(t, "hello from exec\n", out)
		_, err := c.RunKubectl(ctx, nil, "-n", ns, "exec", pods[0].Name, "--", "/testserver", "cat", "/nonexistent")
		require.Error(t, err, "a failing command fails kubectl exec")
	})
}

func testInitAndSidecar(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, ref string) {
	apply(ctx, t, c, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: order
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: init
    image: %[1]s
    args: ["append", "/shared/order", "init"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: sidecar
    image: %[1]s
    restartPolicy: Always
    args: ["serve", "-port", "8081", "-append", "/shared/order=sidecar"]
    volumeMounts: [{name: shared, mountPath: /shared}]
    startupProbe:
      httpGet: {path: /healthz, port: 8081}
      periodSeconds: 1
  containers:
  - name: main
    image: %[1]s
    args: ["serve", "-port", "8080", "-append", "/shared/order=main"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  volumes:
  - name: shared
    emptyDir: {}
`, ref))
	c.Kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/order", "--timeout=60s")
	out := c.Kubectl(t, "-n", ns, "exec", "order", "-c", "main", "--", "/testserver", "cat", "/shared/order")
	assert.Equal(t, "init\nsidecar\nmain\n", out, "the init container ran first, then the sidecar started, then the main container")

	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "order", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, p.Status.InitContainerStatuses, 2)
	for _, s := range p.Status.InitContainerStatuses {
		switch s.Name {
		case "init":
			require.NotNil(t, s.State.Terminated)
			assert.Equal(t, int32(0), s.State.Terminated.ExitCode)
		case "sidecar":
			assert.NotNil(t, s.State.Running, "the native sidecar keeps running")
			assert.True(t, s.Ready)
		}
	}
	assert.Contains(t, c.Kubectl(t, "-n", ns, "logs", "order", "-c", "sidecar"), "testserver serving")
}

// apply applies manifest, read from stdin, in namespace ns.
func apply(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, manifest string) {
	t.Helper()
	out, err := c.RunKubectl(ctx, strings.NewReader(manifest), "-n", ns, "apply", "-f", "-")
	require.NoError(t, err, out)
}

// assertNoLeftovers checks, independently of the harness's own checks, that
// no process, mount or cgroup of the stopped node remains.
func assertNoLeftovers(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	sockDir := filepath.Dir(c.RuntimeSocket())
	procs, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range procs {
		if _, err := fmt.Sscan(e.Name(), new(int)); err != nil || e.Name() == fmt.Sprint(os.Getpid()) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cg, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		cl := strings.ReplaceAll(string(cmdline), "\x00", " ")
		assert.False(t, strings.Contains(cl, c.Dir) || strings.Contains(cl, sockDir), "process %s of the node remains: %s", e.Name(), cl)
		assert.NotContains(t, string(cg), c.Cgroup()+"/", "process %s in the node's cgroup remains: %s", e.Name(), cl)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, l := range strings.Split(string(mounts), "\n") {
		assert.False(t, strings.Contains(l, c.Dir) || strings.Contains(l, sockDir), "mount remains: %s", l)
	}
	hierarchies, err := filepath.Glob("/sys/fs/cgroup/*")
	require.NoError(t, err)
	for _, h := range append(hierarchies, "/sys/fs/cgroup") {
		_, err := os.Stat(filepath.Join(h, c.Cgroup()))
		assert.True(t, os.IsNotExist(err), "cgroup %s remains", filepath.Join(h, c.Cgroup()))
	}
	_, err = net.InterfaceByName(c.Bridge())
	require.Error(t, err, "bridge %s remains", c.Bridge())
	_, err = os.Stat(sockDir)
	assert.True(t, os.IsNotExist(err), "socket folder %s remains", sockDir)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
