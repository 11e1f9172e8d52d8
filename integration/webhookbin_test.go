package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
)

// buildWebhook builds the real webhook binary (webhook/cmd/webhook) into a
// folder of the test; Go's build cache makes it quick after the first time.
func buildWebhook(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "webhook")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/contrast-cc/contrast/webhook/cmd/webhook")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), "go build of the webhook: %s", stderr.String())
	t.Logf("built the webhook binary in %s", time.Since(start).Round(time.Millisecond))
	return out
}

// webhookProcess is the webhook binary running for a test.
type webhookProcess struct {
	// Addr and ProbeAddr are the addresses the webhook logged it serves
	// on (host:port).
	Addr, ProbeAddr string

	cmd  *exec.Cmd
	done chan error
	log  *webhookLog
}

// startWebhookBinary runs bin with args and env (added to a minimal
// environment) and waits until it logs both listening addresses. The test's
// cleanup stops it with SIGTERM and fails the test if it does not exit
// cleanly; the process dies with the test binary in any case.
func startWebhookBinary(t *testing.T, bin string, args, env []string) *webhookProcess {
	t.Helper()
	log := &webhookLog{addrs: map[string]string{}, changed: make(chan struct{}, 1)}
	// Not bound to a context that ends with the test: the cleanup stops it
	// with SIGTERM, to see a graceful shutdown.
	//nolint:gosec // the binary this test built, with the test's arguments.
	cmd := exec.CommandContext(context.WithoutCancel(t.Context()), bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	p := &webhookProcess{cmd: cmd, done: make(chan error, 1), log: log}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("stopping the webhook: %v", err)
		}
		if t.Failed() {
			t.Logf("--- webhook log:\n%s", log.String())
		}
	})

	deadline := time.After(30 * time.Second)
	for {
		log.mu.Lock()
		p.Addr, p.ProbeAddr = log.addrs["serving admission webhook"], log.addrs["serving probes and metrics"]
		log.mu.Unlock()
		if p.Addr != "" && p.ProbeAddr != "" {
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("webhook exited before serving: %v\n%s", err, log.String())
		case <-deadline:
			t.Fatalf("webhook did not log its addresses within 30s:\n%s", log.String())
		case <-log.changed:
		}
	}
}

// stop sends SIGTERM and waits for a clean exit (SIGKILL after 20s).
func (p *webhookProcess) stop() error {
	select {
	case err := <-p.done:
		p.done <- err
		return errors.New("the webhook had exited on its own")
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		err := <-p.done
		return fmt.Errorf("the webhook did not exit within 20s of SIGTERM (killed: %w)", err)
	}
}

// probe GETs path from the probe port and returns the status and body.
func (p *webhookProcess) probe(ctx context.Context, t *testing.T, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.ProbeAddr+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// webhookLog keeps the webhook's JSON log and records the addresses of its
// "serving ..." lines.
type webhookLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
	addrs   map[string]string
	changed chan struct{}
}

func (l *webhookLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		var line struct {
			Msg     string `json:"msg"`
			Address string `json:"address"`
		}
		if json.Unmarshal(l.partial[:i], &line) == nil && line.Address != "" && strings.HasPrefix(line.Msg, "serving ") {
			l.addrs[line.Msg] = line.Address
			select {
			case l.changed <- struct{}{}:
			default:
			}
		}
		l.partial = l.partial[i+1:]
	}
	return len(b), nil
}

func (l *webhookLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// webhookKubeconfig creates the webhook's ServiceAccount in namespace ns
// with only the permissions webhook/cmd/webhook/README.md documents (get
// and update of the named MutatingWebhookConfiguration for self-managed
// certificates; get of secrets and service accounts for pull secrets) and
// writes a kubeconfig with a token of it.
func webhookKubeconfig(ctx context.Context, t *testing.T, c *cluster.Cluster, ns, webhookConfiguration string) string {
	t.Helper()
	const name = "contrast-webhook"
	_, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"}, ResourceNames: []string{webhookConfiguration}, Verbs: []string{"get", "update"}},
			{APIGroups: []string{""}, Resources: []string{"secrets", "serviceaccounts"}, Verbs: []string{"get"}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	tok, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	require.NoError(t, err)

	server := c.Config.Host
	if !strings.Contains(server, "://") {
		server = "https://" + server
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["contrast"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: c.Config.CAData}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts["contrast"] = &clientcmdapi.Context{Cluster: "contrast", AuthInfo: name}
	kc.CurrentContext = "contrast"
	path := filepath.Join(t.TempDir(), "webhook.kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*kc, path))
	return path
}

// coordinatorReferenceValuesFile writes injecttest's fixed Coordinator
// reference values for --coordinator-reference-values.
func coordinatorReferenceValuesFile(t *testing.T) string {
	t.Helper()
	b, err := json.Marshal(injecttest.CoordinatorReferenceValues())
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "coordinator-reference-values.json")
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}
