package integration_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/initializer/meshcert"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// meshNodeEnv is what the mesh tests share with TestChartOnRealNode: the
// installed control plane (simulated SNP), its Coordinator's policy and the
// simulated platform, and the test server image.
type meshNodeEnv struct {
	c           *cluster.Cluster
	ns          string // the control plane's namespace
	ref         snp.ReferenceValues
	coord       *policy.Result
	auth        *sim.SNPAuthority
	measurement []byte
	appRef      string
	// latest is the Coordinator's latest transition (compare-and-swap of
	// the next manifest).
	latest []byte
}

// meshApps is the namespace of the mesh workloads.
const meshApps = "mesh-apps"

// meshAdminPort is the proxies' admin port (metrics), reached from inside
// the pod.
const meshAdminPort = 9901

// Loopback listeners of the client's egress entries.
const (
	egressBackend   = "127.137.0.1:8080"
	egressWrongName = "127.137.0.2:8080"
	egressNonMesh   = "127.137.0.3:8443"
)

// testMeshOnRealNode runs injected pods as a user would: the webhook admits
// them, their Initializers attest to the Coordinator running as a real pod
// and write their certificates, and the mesh proxies carry their traffic
// with mTLS (issue: the Initializer, the proxy and the simulated TEE in real
// pods).
func testMeshOnRealNode(ctx context.Context, t *testing.T, e *meshNodeEnv) {
	c := e.c
	createOptedInNamespace(ctx, t, c, meshApps)

	// The simulated device of the pods' "hypervisor": the same authority
	// and launch measurement as the Coordinator's, its HOST_DATA derived in
	// the pod from the pod's own initdata annotation.
	cfg := sim.DefaultSNPDeviceConfig()
	copy(cfg.Measurement[:], e.measurement)
	dev, err := e.auth.NewDevice(cfg)
	require.NoError(t, err)
	devFile, err := dev.MarshalDeviceFile()
	require.NoError(t, err)
	_, err = c.Client.CoreV1().Secrets(meshApps).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: inject.DefaultSimDeviceSecret},
		Data:       map[string][]byte{inject.SimDeviceSecretKey: devFile},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	// The backend: a Deployment of two pods with three ports: 8080 requires
	// mTLS (the default), 8081 TLS without client certificate (#false),
	// 8082 plain and not redirected (#true).
	svc, err := c.Client.CoreV1().Services(meshApps).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "backend"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "backend"},
			Ports:    []corev1.ServicePort{{Name: "mtls", Port: 8080, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	backend := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "backend"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "backend"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels: map[string]string{"app": "backend"},
					Annotations: map[string]string{
						meshconfig.AnnotationIngress:   "public#8081#false##plain#8082#true",
						meshconfig.AnnotationAdminPort: fmt.Sprint(meshAdminPort),
					},
				},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{
						serveContainer("mtls", e.appRef, 8080),
						serveContainer("public", e.appRef, 8081),
						serveContainer("plain", e.appRef, 8082),
					},
				},
			},
		},
	}
	_, err = c.Client.AppsV1().Deployments(meshApps).Create(ctx, backend, metav1.CreateOptions{})
	require.NoError(t, err)

	// A server outside the mesh (opted out) with a self-signed certificate
	// for "nonmesh"; it is also the client without a mesh certificate.
	outside := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "outside", Labels: map[string]string{inject.LabelInject: "disabled"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "app", Image: e.appRef, Args: []string{"serve", "-port", "8443", "-tls-self-signed", "nonmesh"},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8443)}}, PeriodSeconds: 1},
			}},
		},
	}
	_, err = c.Client.CoreV1().Pods(meshApps).Create(ctx, outside, metav1.CreateOptions{})
	require.NoError(t, err)
	outsideIP := readyPods(ctx, t, c, meshApps, inject.LabelInject+"=disabled")[0].Status.PodIP

	// The client: egress to the backend by its Service name, to the backend
	// under a name its certificate does not have, and to the server outside
	// the mesh (the last two through /etc/hosts).
	client := clientPod(e.appRef, svc.Spec.ClusterIP, outsideIP)
	_, err = c.Client.CoreV1().Pods(meshApps).Create(ctx, client, metav1.CreateOptions{})
	require.NoError(t, err)

	// The workloads' policies are those the webhook computed at admission;
	// the owner sets them in the manifest (contrast generate computes the
	// same: see the CLI's tests). Until then the Initializers retry.
	backendPod := waitAdmitted(ctx, t, c, meshApps, "app=backend")
	clientAdmitted := waitAdmitted(ctx, t, c, meshApps, "app=client")
	workloads := map[string]*corev1.Pod{"backend": backendPod, "client": clientAdmitted}
	e.setWorkloads(ctx, t, workloads, nil)

	t.Run("InitializersGetCertificates", func(t *testing.T) {
		start := time.Now()
		pods := readyPods(ctx, t, c, meshApps, "app in (backend, client)")
		require.Len(t, pods, 3)
		t.Logf("TIMING mesh pods Ready %s after the manifest was set", time.Since(start).Round(time.Millisecond))
		for _, p := range pods {
			for _, f := range []string{meshcert.MeshCAFile, meshcert.CertChainFile, meshcert.RootCAFile} {
				out := execApp(ctx, t, c, p.Name, p.Spec.Containers[0].Name, "cat", inject.MountPath+"/"+f)
				assert.Contains(t, out, "-----BEGIN CERTIFICATE-----", "%s: %s", p.Name, f)
			}
			chain := execApp(ctx, t, c, p.Name, p.Spec.Containers[0].Name, "cat", inject.MountPath+"/"+meshcert.CertChainFile)
			leaf := firstCert(t, chain)
			assert.Contains(t, leaf.DNSNames, p.Labels["app"], "the manifest's SAN")
			logs := c.Kubectl(t, "-n", meshApps, "logs", p.Name, "-c", inject.InitializerName)
			assert.Contains(t, logs, "simulated", "the Initializer says it runs on a simulated TEE")
		}
	})

	t.Run("EgressToIngressMTLS", func(t *testing.T) {
		out, err := execAppErr(ctx, c, "client", "app", "get", "http://"+egressBackend+"/")
		require.NoError(t, err, out)
		assert.Contains(t, out, "hello from backend-", "the client reaches a backend through its egress and the backend's ingress")
	})

	t.Run("IngressModes", func(t *testing.T) {
		backendIP := backendPod.Status.PodIP
		if backendIP == "" {
			pods := readyPods(ctx, t, c, meshApps, "app=backend")
			backendIP = pods[0].Status.PodIP
		}
		// the outside pod has no mesh certificate
		out, err := execAppErr(ctx, c, "outside", "app", "get", "-insecure", "https://"+backendIP+":8080/")
		require.Error(t, err, "a client without a mesh certificate is refused on an mTLS port: %s", out)
		assert.GreaterOrEqual(t, meshMetric(ctx, t, c, backendPod.Name, "mtls", `contrast_meshproxy_handshake_failures_total{direction="ingress",reason="no-client-certificate"}`), 1.0,
			"the backend's proxy refused it for want of a client certificate")
		out, err = execAppErr(ctx, c, "outside", "app", "get", "-insecure", "https://"+backendIP+":8081/")
		require.NoError(t, err, out)
		assert.Contains(t, out, "hello from backend-", "a #false port takes TLS without a client certificate")
		out, err = execAppErr(ctx, c, "outside", "app", "get", "http://"+backendIP+":8082/")
		require.NoError(t, err, out)
		assert.Contains(t, out, "hello from backend-", "a #true port is not redirected")
		out, err = execAppErr(ctx, c, "outside", "app", "get", "http://"+backendIP+":8080/")
		require.Error(t, err, "plain HTTP to an mTLS port: %s", out)
	})

	t.Run("EgressVerifiesTheServer", func(t *testing.T) {
		out, err := execAppErr(ctx, c, "client", "app", "get", "http://"+egressWrongName+"/")
		require.Error(t, err, "the backend's certificate does not name wrongname: %s", out)
		out, err = execAppErr(ctx, c, "client", "app", "get", "http://"+egressNonMesh+"/")
		require.Error(t, err, "a server without a mesh certificate: %s", out)
		assert.GreaterOrEqual(t, meshMetric(ctx, t, c, "client", "app", `contrast_meshproxy_handshake_failures_total{direction="egress",reason="name-mismatch"}`), 1.0,
			"the client's proxy refused the backend's certificate for wrongname")
		assert.GreaterOrEqual(t, meshMetric(ctx, t, c, "client", "app", `contrast_meshproxy_handshake_failures_total{direction="egress",reason="unknown-authority"}`), 1.0,
			"the client's proxy refused the outside server's certificate")
	})

	t.Run("OldMeshCARefusedAfterUpdate", func(t *testing.T) {
		before := podNames(ctx, t, c, meshApps, "app=backend")
		oldCA := execApp(ctx, t, c, "client", "app", "cat", inject.MountPath+"/"+meshcert.MeshCAFile)
		// a manifest update: a new generation, so a new mesh CA
		e.setWorkloads(ctx, t, workloads, map[string][]string{"backend": {"backend.mesh-apps"}})
		c.Kubectl(t, "-n", meshApps, "rollout", "restart", "deployment/backend")
		require.NoError(t, wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
			pods, err := c.Pods(ctx, meshApps, "app=backend")
			if err != nil || len(pods) != 2 {
				return false, err
			}
			for _, p := range pods {
				if p.DeletionTimestamp != nil || !podReady(&p) || strings.Contains(strings.Join(before, " "), p.Name) {
					return false, nil
				}
			}
			return true, nil
		}), "the restarted backends are Ready")
		pods := readyPods(ctx, t, c, meshApps, "app=backend")
		newCA := execApp(ctx, t, c, pods[0].Name, "mtls", "cat", inject.MountPath+"/"+meshcert.MeshCAFile)
		require.NotEqual(t, oldCA, newCA, "the update rotated the mesh CA")
		leaf := firstCert(t, execApp(ctx, t, c, pods[0].Name, "mtls", "cat", inject.MountPath+"/"+meshcert.CertChainFile))
		assert.Contains(t, leaf.DNSNames, "backend.mesh-apps", "the new certificate has the new SAN")

		// the client trusts only the old mesh CA and the backends only the
		// new one: whichever side checks first refuses the other's
		// certificate as of an unknown authority
		const unknown = `contrast_meshproxy_handshake_failures_total{direction="egress",reason="unknown-authority"}`
		refusedBefore := meshMetric(ctx, t, c, "client", "app", unknown)
		out, err := execAppErr(ctx, c, "client", "app", "get", "http://"+egressBackend+"/")
		require.Error(t, err, "the client's certificate from the old mesh CA is refused: %s", out)
		assert.InDelta(t, refusedBefore+1, meshMetric(ctx, t, c, "client", "app", unknown), 0.5,
			"the client's proxy refused the restarted backend's certificate: not of the mesh CA it holds")

		// the client restarted gets a certificate of the new CA
		require.NoError(t, c.Client.CoreV1().Pods(meshApps).Delete(ctx, "client", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := c.Client.CoreV1().Pods(meshApps).Get(ctx, "client", metav1.GetOptions{})
			return err != nil, nil
		}))
		_, err = c.Client.CoreV1().Pods(meshApps).Create(ctx, clientPod(e.appRef, svc.Spec.ClusterIP, outsideIP), metav1.CreateOptions{})
		require.NoError(t, err)
		readyPods(ctx, t, c, meshApps, "app=client")
		out, err = execAppErr(ctx, c, "client", "app", "get", "http://"+egressBackend+"/")
		require.NoError(t, err, out)
		assert.Contains(t, out, "hello from backend-")
	})

	t.Run("InitDataEditedAfterAdmission", func(t *testing.T) {
		// admitted but held back from scheduling, so its initdata can be
		// edited before the Initializer reads it, as an untrusted
		// cluster admin could
		p := clientPod(e.appRef, svc.Spec.ClusterIP, outsideIP)
		p.Name = "tampered"
		p.Labels = map[string]string{"app": "tampered"}
		p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "contrast.cc/test"}}
		admitted, err := c.Client.CoreV1().Pods(meshApps).Create(ctx, p, metav1.CreateOptions{})
		require.NoError(t, err)
		initData := admitted.Annotations[policy.AnnotationInitData]
		require.NotEmpty(t, initData)
		// a valid initdata document, edited: its digest is no policy of
		// the manifest
		doc, err := policy.DecodeInitDataAnnotation(initData)
		require.NoError(t, err)
		gz, err := policy.GzipInitData(append(doc, "\n# edited after admission\n"...))
		require.NoError(t, err)
		edited := base64.StdEncoding.EncodeToString(gz)
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, policy.AnnotationInitData, edited)
		_, err = c.Client.CoreV1().Pods(meshApps).Patch(ctx, "tampered", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		require.NoError(t, err, "no webhook stops an annotation update")
		_, err = c.Client.CoreV1().Pods(meshApps).Patch(ctx, "tampered", types.JSONPatchType, []byte(`[{"op":"remove","path":"/spec/schedulingGates"}]`), metav1.PatchOptions{})
		require.NoError(t, err)

		// a refusal ends the Initializer's run (the kubelet restarts it
		// with its back-off): its log is the current or the previous one
		var logs string
		require.NoError(t, wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			for _, prev := range []string{"--previous=false", "--previous=true"} {
				out, err := c.RunKubectl(ctx, nil, "-n", meshApps, "logs", "tampered", "-c", inject.InitializerName, prev)
				logs = out
				if err == nil && strings.Contains(out, "unknown policy hash") {
					return true, nil
				}
			}
			return false, nil
		}), "the Initializer logs the Coordinator's reason; logs:\n%s", logs)
		got, err := c.Client.CoreV1().Pods(meshApps).Get(ctx, "tampered", metav1.GetOptions{})
		require.NoError(t, err)
		assert.False(t, podReady(got), "the pod does not start without a certificate")
	})
}

// setWorkloads sets a manifest with the Coordinator and the given
// workloads (their admitted policies; SANs [name, "*"] plus extra).
func (e *meshNodeEnv) setWorkloads(ctx context.Context, t *testing.T, workloads map[string]*corev1.Pod, extraSANs map[string][]string) {
	t.Helper()
	m := &manifest.Manifest{
		Policies: map[manifest.HexString]manifest.PolicyEntry{
			manifest.NewHexString(e.coord.Digest): {SANs: []string{"coordinator"}, Role: manifest.RoleCoordinator},
		},
		ReferenceValues:       manifest.ReferenceValues{SNP: []snp.ReferenceValues{e.ref}},
		WorkloadOwnerPubKeys:  []manifest.HexString{coordinatortest.PubHex(&chartOwnerKey().PublicKey)},
		SeedshareOwnerPubKeys: []manifest.HexString{coordinatortest.PubHex(&coordinatortest.SeedShareKey().PublicKey)},
	}
	docs := [][]byte{e.coord.InitData}
	for name, p := range workloads {
		doc, err := policy.DecodeInitDataAnnotation(p.Annotations[policy.AnnotationInitData])
		require.NoError(t, err, "%s: the admitted initdata", name)
		m.Policies[manifest.HexString(p.Annotations[policy.AnnotationPolicyHash])] = manifest.PolicyEntry{
			SANs:             append([]string{name, "*"}, extraSANs[name]...),
			WorkloadSecretID: p.Namespace + "/" + name,
		}
		docs = append(docs, doc)
	}
	e.latest = setManifestRequest(ctx, t, e.c, e.ns, e.ref, &userpb.SetManifestRequest{
		Manifest: coordinatortest.JSON(m), Policies: docs, ExpectedLatestTransition: e.latest,
	})
}

// chartOwnerKey is the workload owner of the manifests the real-node chart
// tests set.
var chartOwnerKey = sync.OnceValue(coordinatortest.OwnerKey)

// setManifestRequest sends req to the installed Coordinator as the owner
// and returns the new latest transition.
func setManifestRequest(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string, ref snp.ReferenceValues, req *userpb.SetManifestRequest) []byte {
	t.Helper()
	pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, "contrast-coordinator-0", metav1.GetOptions{})
	require.NoError(t, err)
	v, err := snp.NewValidator(snp.Config{ReferenceValues: []snp.ReferenceValues{ref}})
	require.NoError(t, err)
	client, conn, err := coordinatortest.DialUser(fmt.Sprintf("%s:1313", pod.Status.PodIP), chartOwnerKey(), []attest.Validator{v})
	require.NoError(t, err)
	defer conn.Close()
	resp, err := client.SetManifest(ctx, req)
	require.NoError(t, err)
	require.NotEmpty(t, resp.GetTransitionHash())
	return resp.GetTransitionHash()
}

func serveContainer(name, image string, port int32) corev1.Container {
	return corev1.Container{
		Name: name, Image: image, Args: []string{"serve", "-port", fmt.Sprint(port)},
		// no kubelet probe: it would be redirected to the proxy like any
		// inbound connection, and fail on an mTLS port
		Ports: []corev1.ContainerPort{{ContainerPort: port}},
	}
}

// clientPod is the mesh client: a server it does not use (so it keeps
// running for kubectl exec) and three egress entries.
func clientPod(image, backendIP, outsideIP string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:   "client",
			Labels: map[string]string{"app": "client"},
			Annotations: map[string]string{
				meshconfig.AnnotationEgress: "backend#" + egressBackend + "#backend:8080" +
					"##wrongname#" + egressWrongName + "#wrongname:8080" +
					"##nonmesh#" + egressNonMesh + "#nonmesh:8443",
				meshconfig.AnnotationAdminPort: fmt.Sprint(meshAdminPort),
			},
		},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			// backend resolves through the cluster DNS; wrongname is
			// another name for its Service
			HostAliases: []corev1.HostAlias{
				{IP: backendIP, Hostnames: []string{"wrongname"}},
				{IP: outsideIP, Hostnames: []string{"nonmesh"}},
			},
			Containers: []corev1.Container{serveContainer("app", image, 9000)},
		},
	}
}

// waitAdmitted waits for a pod of selector to exist and returns it.
func waitAdmitted(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, selector string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Pods(ctx, ns, selector)
		if err != nil || len(pods) == 0 {
			return false, err
		}
		pod = &pods[0]
		return true, nil
	}), "a pod %s in %s", selector, ns)
	require.Len(t, pod.Annotations[policy.AnnotationPolicyHash], 64, "admitted by the webhook")
	return pod
}

// execApp runs the test server's tool in a container of meshApps and returns its
// output, failing the test on error.
func execApp(ctx context.Context, t *testing.T, c *cluster.Cluster, pod, container string, args ...string) string {
	t.Helper()
	out, err := execAppErr(ctx, c, pod, container, args...)
	require.NoError(t, err, out)
	return out
}

func execAppErr(ctx context.Context, c *cluster.Cluster, pod, container string, args ...string) (string, error) {
	return c.RunKubectl(ctx, nil, append([]string{"-n", meshApps, "exec", pod, "-c", container, "--", "/testserver"}, args...)...)
}

// meshMetric reads one series of the mesh proxy's metrics in a pod
// (through a container of the pod: the admin port is on its loopback); 0
// when the series is absent.
func meshMetric(ctx context.Context, t *testing.T, c *cluster.Cluster, pod, container, series string) float64 {
	t.Helper()
	out := execApp(ctx, t, c, pod, container, "get", fmt.Sprintf("http://127.0.0.1:%d/metrics", meshAdminPort))
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err, line)
			return f
		}
	}
	return 0
}

func firstCert(t *testing.T, chain string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(chain))
	require.NotNil(t, block)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}
