package integration_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// Validities of the self-managed certificates in TestWebhookSelfManagedCerts:
// the serving certificate is renewed after ~6.7s (same CA), the CA after
// ~13.3s, and expiry is checked every second.
const (
	selfManagedCAValidity   = 20 * time.Second
	selfManagedCertValidity = 10 * time.Second
)

// TestWebhookSelfManagedCerts runs the real webhook binary with
// --self-managed-certs against a real API server, with a ServiceAccount
// that has only the documented permissions. Before its
// MutatingWebhookConfiguration exists the webhook cannot publish its CA: it
// is unready and serves no certificate. Once the configuration exists the
// webhook patches the caBundle with a CA that verifies its serving
// certificate, becomes ready, and the API server calls it through that
// caBundle (a server-side dry run returns the mutated pod). With short
// validities it renews the serving certificate, then publishes a new CA
// (merged into the caBundle, the old one kept) before serving a
// certificate of it; admissions through the API server keep succeeding
// throughout. When the caBundle is reset (a Helm upgrade), the webhook adds
// its CA again and is unready meanwhile.
func TestWebhookSelfManagedCerts(t *testing.T) {
	bin := buildWebhook(t)
	imgs := injecttest.Serve(t)
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	c.Kubectl(t, "create", "namespace", "contrast-system")
	kubeconfig := webhookKubeconfig(ctx, t, c, "contrast-system", "contrast-webhook")
	mirror := "http://" + imgs.Registry.Host
	wh := startWebhookBinary(t, bin, []string{
		"--self-managed-certs", "--tls-dns-names=localhost", "--webhook-configuration=contrast-webhook",
		"--self-managed-ca-validity=" + selfManagedCAValidity.String(),
		"--self-managed-cert-validity=" + selfManagedCertValidity.String(),
		"--listen-address=127.0.0.1:0", "--probe-address=127.0.0.1:0",
		"--registry-mirror=docker.l5d.io=" + mirror, "--registry-mirror=registry.example=" + mirror,
		"--registry-skip-origin=docker.l5d.io", "--registry-skip-origin=registry.example",
		"--kubeconfig=" + kubeconfig,
	}, []string{
		"POD_NAMESPACE=contrast-system",
		"CONTRAST_WEBHOOK_INITIALIZER_IMAGE=" + imgs.InitializerImage,
		"CONTRAST_WEBHOOK_PROXY_IMAGE=" + imgs.ProxyImage,
		"CONTRAST_WEBHOOK_PLATFORM=snp",
		"CONTRAST_WEBHOOK_COORDINATOR_POLICY_HASH=" + hex.EncodeToString(injecttest.CoordinatorPolicyHash),
		"CONTRAST_WEBHOOK_COORDINATOR_REFERENCE_VALUES=" + coordinatorReferenceValuesFile(t),
	})

	// no configuration to publish the CA to: unready (once the first attempt
	// failed, with the reason), no certificate served
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		code, body := wh.probe(ctx, t, "/readyz?verbose")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]certificate failed") {
			return false, fmt.Errorf("ready without a published CA: %d %s", code, body)
		}
		return strings.Contains(body, `"contrast-webhook" not found`), nil
	}))
	_, err := servedCertificate(ctx, wh.Addr)
	require.Error(t, err, "a TLS handshake must fail before the CA is published")

	createOptedInNamespace(ctx, t, c, "selfmanaged")
	_, port, err := net.SplitHostPort(wh.Addr)
	require.NoError(t, err)
	createRuntimeClass(ctx, t, c)
	registerWebhook(ctx, t, c, "https://localhost:"+port+"/mutate", nil) // no caBundle
	registerValidatingWebhook(ctx, t, c, "https://localhost:"+port+"/validate", nil)

	// the webhook publishes its CA, then serves and reports ready
	start := time.Now()
	var bundle []*x509.Certificate
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if code, _ := wh.probe(ctx, t, "/readyz"); code != http.StatusOK {
			return false, nil
		}
		bundle = caBundle(ctx, t, c)
		return true, nil
	}), "webhook not ready")
	t.Logf("ready %s after the configuration was created", time.Since(start).Round(time.Millisecond))
	require.Len(t, bundle, 1)
	assert.Equal(t, bundle, validatingCABundle(ctx, t, c), "the validating configuration trusts the same CA")
	firstCA := bundle[0]
	first, err := servedCertificate(ctx, wh.Addr)
	require.NoError(t, err)
	require.NoError(t, verifyServing(first, bundle), "the patched caBundle must verify the serving certificate for localhost")

	// the API server calls the webhook through the patched caBundle
	assertMutatedDryRun(ctx, t, c, "first")

	// the binary serves the validating endpoint on the same port, with the
	// same certificate (the dry run above went through it as well)
	assertValidateServed(ctx, t, wh.Addr, bundle)

	// rotation, with admissions through the API server all along
	h := startAdmissionLoop(ctx, t, c, "selfmanaged", "docker.l5d.io/buoyantio/emojivoto-web:v11", inject.DefaultRuntimeClassName)
	var leafRenewed, caRotated bool
	seen := map[string]bool{first.SerialNumber.String(): true}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*selfManagedCAValidity, true, func(ctx context.Context) (bool, error) {
		// the certificate first, then the configuration: a new CA is
		// published before a certificate of it is served
		leaf, err := servedCertificate(ctx, wh.Addr)
		if err != nil {
			return false, fmt.Errorf("TLS handshake during rotation: %w", err)
		}
		current := caBundle(ctx, t, c)
		if err := verifyServing(leaf, current); err != nil {
			return false, fmt.Errorf("served certificate %s not verified by the caBundle: %w", leaf.SerialNumber, err)
		}
		if seen[leaf.SerialNumber.String()] {
			return false, nil
		}
		seen[leaf.SerialNumber.String()] = true
		switch {
		case leaf.CheckSignatureFrom(firstCA) == nil:
			t.Logf("serving certificate renewed by the same CA after %s", time.Since(start).Round(time.Millisecond))
			assert.Len(t, current, 1, "a renewed serving certificate does not touch the caBundle")
			leafRenewed = true
		default:
			t.Logf("new CA published after %s", time.Since(start).Round(time.Millisecond))
			require.Len(t, current, 2, "the new CA is added, the previous one kept")
			assert.False(t, current[0].Equal(firstCA), "the newest CA comes first")
			assert.True(t, current[1].Equal(firstCA))
			require.NoError(t, leaf.CheckSignatureFrom(current[0]))
			caRotated = true
		}
		return caRotated, nil
	})
	require.NoError(t, err)
	assert.True(t, leafRenewed, "the serving certificate is renewed before the CA")

	// the API server follows the re-patched caBundle (a new client, so a
	// new TLS connection verified against the new CA)
	time.Sleep(time.Second)
	assertMutatedDryRun(ctx, t, c, "after-rotation")
	admitted, failures := h.stop()
	assert.Empty(t, failures, "admissions through the API server failed during rotation")
	assert.Positive(t, admitted)
	t.Logf("%d admissions through the API server during rotation", admitted)

	// a Helm upgrade or GitOps sync resets the caBundle: the webhook adds its
	// CA again on its next check and is unready until every API server has
	// had time to see it, then admissions work again
	require.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cfg, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "contrast-webhook", metav1.GetOptions{})
		if err != nil {
			return err
		}
		cfg.Webhooks[0].ClientConfig.CABundle = nil
		_, err = c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, cfg, metav1.UpdateOptions{})
		return err
	}))
	reset := time.Now()
	var unready string
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		code, body := wh.probe(ctx, t, "/readyz?verbose")
		if code != http.StatusOK {
			if unready == "" {
				unready = body
				t.Logf("unready %s after the caBundle was reset: %s", time.Since(reset).Round(time.Millisecond), strings.TrimSpace(body))
			}
			return false, nil
		}
		return unready != "", nil
	}), "the webhook must turn unready once it finds its CA missing, then ready again")
	assert.Contains(t, unready, "caBundle")
	t.Logf("ready again %s after the caBundle was reset", time.Since(reset).Round(time.Millisecond))
	leaf, err := servedCertificate(ctx, wh.Addr)
	require.NoError(t, err)
	require.NoError(t, verifyServing(leaf, caBundle(ctx, t, c)), "the CA is back in the caBundle")
	assertMutatedDryRun(ctx, t, c, "after-reset")

	// the metrics of the binary, including the registry client's
	code, metrics := wh.probe(ctx, t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	assert.GreaterOrEqual(t, metricValue(t, metrics, `contrast_webhook_admissions_total{reason="ok",result="mutated"}`), float64(admitted+2))
	assert.Positive(t, metricValue(t, metrics, `contrast_webhook_registry_cache_requests_total{kind="manifest",result="miss"}`))
	assert.Positive(t, metricValue(t, metrics, `contrast_webhook_registry_cache_requests_total{kind="config",result="hit"}`))
	assert.Positive(t, metricValue(t, metrics, `contrast_webhook_registry_fetch_duration_seconds_count{kind="manifest",result="ok"}`))
	assert.Zero(t, metricValue(t, metrics, `contrast_webhook_registry_fetch_duration_seconds_count{kind="manifest",result="error"}`))
}

// assertValidateServed posts the review of a pod the mutating webhook has
// not seen to /validate of the webhook at addr (verified for localhost with
// the CAs of bundle) and checks that it is denied as such.
func assertValidateServed(ctx context.Context, t *testing.T, addr string, bundle []*x509.Certificate) {
	t.Helper()
	raw, err := json.Marshal(&corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "unmutated", Namespace: "selfmanaged"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "docker.l5d.io/buoyantio/emojivoto-web:v11"}}},
	})
	require.NoError(t, err)
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "7f2c4b8e-0000-4000-8000-000000000001", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: "selfmanaged",
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		},
	})
	require.NoError(t, err)
	roots := x509.NewCertPool()
	for _, ca := range bundle {
		roots.AddCert(ca)
	}
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://localhost:"+port+"/validate", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var ar admissionv1.AdmissionReview
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&ar))
	require.NotNil(t, ar.Response)
	assert.False(t, ar.Response.Allowed)
	require.NotNil(t, ar.Response.Result)
	assert.Contains(t, ar.Response.Result.Message, "not mutated by the Contrast webhook")
}

// servedCertificate completes a TLS handshake with the webhook for the name
// localhost and returns the certificate it serves, unverified.
func servedCertificate(ctx context.Context, addr string) (*x509.Certificate, error) {
	d := tls.Dialer{Config: &tls.Config{
		ServerName: "localhost",
		MinVersion: tls.VersionTLS12,
		//nolint:gosec // G402: the test verifies the certificate itself, against the caBundle read after the handshake.
		InsecureSkipVerify: true,
	}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates //nolint:forcetypeassert // tls.Dialer returns *tls.Conn.
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificate from %s", addr)
	}
	return certs[0], nil
}

// verifyServing verifies leaf as a serving certificate for localhost
// against the CAs of a caBundle.
func verifyServing(leaf *x509.Certificate, bundle []*x509.Certificate) error {
	roots := x509.NewCertPool()
	for _, ca := range bundle {
		roots.AddCert(ca)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// caBundle returns the CAs of the caBundle of the single webhook of the
// contrast-webhook configuration.
func caBundle(ctx context.Context, t *testing.T, c *cluster.Cluster) []*x509.Certificate {
	t.Helper()
	cfg, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "contrast-webhook", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, cfg.Webhooks, 1)
	return parseBundle(t, cfg.Webhooks[0].ClientConfig.CABundle)
}

// validatingCABundle returns the CAs of the ValidatingWebhookConfiguration.
func validatingCABundle(ctx context.Context, t *testing.T, c *cluster.Cluster) []*x509.Certificate {
	t.Helper()
	cfg, err := c.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "contrast-webhook", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, cfg.Webhooks, 1)
	return parseBundle(t, cfg.Webhooks[0].ClientConfig.CABundle)
}

func parseBundle(t *testing.T, pemBundle []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for rest := pemBundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		ca, err := x509.ParseCertificate(b.Bytes)
		require.NoError(t, err)
		out = append(out, ca)
	}
}

// assertMutatedDryRun runs kubectl create --dry-run=server of a pod in the
// opted-in namespace and checks that the webhook mutated it.
func assertMutatedDryRun(ctx context.Context, t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	out, err := c.RunKubectl(ctx, strings.NewReader(plainPod("selfmanaged", name, "docker.l5d.io/buoyantio/emojivoto-web:v11", nil)),
		"create", "--dry-run=server", "-o", "yaml", "-f", "-")
	require.NoError(t, err)
	var pod corev1.Pod
	require.NoError(t, yaml.Unmarshal([]byte(out), &pod))
	assertMutated(t, &pod)
}

func assertMutated(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	assert.Equal(t, inject.DefaultRuntimeClassName, ptr.Deref(pod.Spec.RuntimeClassName, ""))
	assert.NotEmpty(t, pod.Annotations[policy.AnnotationPolicyHash])
	require.NotEmpty(t, pod.Spec.InitContainers)
	assert.Equal(t, inject.InitializerName, pod.Spec.InitContainers[0].Name)
	assert.Regexp(t, digestRef, pod.Spec.Containers[0].Image)
}

// admissionLoop creates pods with server-side dry runs until stopped.
type admissionLoop struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	admitted int
	failures []string
}

// startAdmissionLoop creates a pod of image in namespace ns every 200 ms
// (server-side dry run) and counts it admitted if the webhook set runtime
// class runtimeClass.
func startAdmissionLoop(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, image, runtimeClass string) *admissionLoop {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	l := &admissionLoop{cancel: cancel, done: make(chan struct{})}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "loop", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			got, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if ctx.Err() != nil {
				return
			}
			l.mu.Lock()
			switch {
			case err != nil:
				l.failures = append(l.failures, time.Now().Format(time.StampMilli)+": "+err.Error())
			case ptr.Deref(got.Spec.RuntimeClassName, "") != runtimeClass:
				l.failures = append(l.failures, time.Now().Format(time.StampMilli)+": pod not mutated")
			default:
				l.admitted++
			}
			l.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *admissionLoop) stop() (int, []string) {
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.admitted, l.failures
}

// metricValue returns the value of a series of the Prometheus text format
// (labels in the exposition's order); the series must exist.
func metricValue(t *testing.T, exposition, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(exposition)
	require.NotNil(t, m, "no series %s", series)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}
