// Package tutorial runs the Contrast tutorial as a new user would: the
// project's images built and pushed, the control plane installed with
// helm, a namespace opted in, `contrast generate`, `kubectl apply` of
// unmodified workloads, `contrast set`, `contrast verify`, a client outside
// the mesh checking the frontend against the verified mesh CA, a manifest
// update, and a Coordinator recovered with `contrast recover`. Every step
// runs the real binaries (helm, kubectl, bin/contrast, curl, openssl) and
// prints the command before its output.
//
// `make demo` narrates it on a local cluster with a real node and simulated
// TEEs (integration/cmd/demo); TestTutorialOnRealNode runs the same steps
// and checks each outcome.
package tutorial

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/integration/chart"
	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/integration/images"
	"github.com/contrast-cc/contrast/webhook/inject"
)

// Names of the tutorial.
const (
	// WebImage and BackendImage are the images the tutorial's workloads
	// name: Debian's nginx and openssl, assembled from the .deb files of
	// the host's apt and served by the node's registry as a mirror of
	// registry.contrast.local.
	WebImage     = "registry.contrast.local/tutorial/nginx:bookworm"
	BackendImage = "registry.contrast.local/tutorial/openssl:bookworm"
	// MirrorHost is the registry the node mirrors.
	MirrorHost = "registry.contrast.local"
	// Release is the Helm release.
	Release = "contrast"
	// ControlPlane is the release's namespace.
	ControlPlane = "contrast-system"
	// Namespace is the opted-in namespace of the workloads.
	Namespace = "tutorial"
)

// Tutorial is one run. Create it with New; the steps run in the order of
// Run, and each records what the next ones need.
type Tutorial struct {
	// Root is the repository root; Dir receives the run's files
	// (workspace, values, the authority, the copy of the workloads).
	Root, Dir string
	// Cluster is the local cluster with a real node.
	Cluster *cluster.Cluster
	// Out receives the narration.
	Out io.Writer
	// Log receives the harness's progress (registry forwarder).
	Log *slog.Logger

	// Contrast and Helm are the binaries.
	Contrast, Helm string
	// Workspace is the contrast workspace; Apps the copy of
	// examples/tutorial the user edits.
	Workspace, Apps string
	// CoordinatorAddr is the Coordinator's user API (pod IP:1313).
	CoordinatorAddr string
	// WebIP is the web frontend's Service address (port 443), the SAN the
	// manifest update adds.
	WebIP string

	fwd         *chart.Forwarder
	valuesFile  string
	chartFile   string
	authFile    string
	measurement string
}

// New prepares a run in dir against c.
func New(root, dir string, c *cluster.Cluster, out io.Writer, log *slog.Logger) *Tutorial {
	return &Tutorial{
		Root: root, Dir: dir, Cluster: c, Out: out, Log: log,
		Contrast:  filepath.Join(dir, "bin", "contrast"),
		Helm:      filepath.Join(c.BinDir, "helm"),
		Workspace: filepath.Join(dir, "workspace"),
		Apps:      filepath.Join(dir, "tutorial"),
	}
}

// RegistryMirror is the URL of the node's registry as the webhook's pods
// reach it (a mirror in the chart's webhook.registry values).
func (t *Tutorial) RegistryMirror() string {
	if t.fwd == nil {
		return ""
	}
	return "http://" + t.fwd.Addr
}

// Close stops the registry forwarder.
func (t *Tutorial) Close() error {
	if t.fwd != nil {
		return t.fwd.Close()
	}
	return nil
}

// Run runs every step.
func (t *Tutorial) Run(ctx context.Context) error {
	for _, step := range []struct {
		title string
		run   func(context.Context) error
	}{
		{"Build the contrast CLI and the images, and push them to the node's registry", t.Build},
		{"Render the chart and generate the manifest", t.Generate},
		{"Install the control plane", t.Install},
		{"Set the manifest at the Coordinator", t.Set},
		{"Opt a namespace in and deploy the workloads, unmodified", t.Deploy},
		{"Verify the deployment, as an auditor would", t.Verify},
		{"Connect from outside the mesh", t.Connect},
		{"Update the manifest: the frontend's certificate gets its IP address", t.Update},
		{"Restart the Coordinator and recover it", t.Recover},
	} {
		t.Section(step.title)
		start := time.Now()
		if err := step.run(ctx); err != nil {
			return fmt.Errorf("%s: %w", step.title, err)
		}
		t.Say("(%s)", time.Since(start).Round(100*time.Millisecond))
	}
	return nil
}

// Section prints a step's title.
func (t *Tutorial) Section(title string) {
	fmt.Fprintf(t.Out, "\n==> %s\n", title)
}

// Say prints a line of narration.
func (t *Tutorial) Say(format string, args ...any) {
	fmt.Fprintf(t.Out, "    "+format+"\n", args...)
}

// Build builds bin/contrast and the project's images, assembles the
// workloads' images from Debian packages and pushes them all; it starts the
// forwarder through which the webhook's pods reach the registry.
func (t *Tutorial) Build(ctx context.Context) error {
	if _, err := t.run(ctx, nil, "go", "build", "-o", t.Contrast, "./cli/cmd/contrast"); err != nil {
		return err
	}
	t.Say("$ make images REGISTRY=%s/contrast   (the Coordinator, webhook, Initializer and mesh-proxy images)", t.Cluster.Registry())
	imgs, err := chart.BuildAndPush(ctx, t.Root, t.Cluster.Registry())
	if err != nil {
		return err
	}
	for _, ref := range []string{imgs.Coordinator, imgs.Webhook, imgs.Initializer, imgs.MeshProxy} {
		t.Say("  pushed %s", ref)
	}
	for _, w := range []struct {
		ref, what, entrypoint string
		packages              []string
	}{
		{WebImage, "the frontend", "/usr/sbin/nginx", []string{"nginx"}},
		{BackendImage, "the backend", "/usr/bin/openssl", []string{"openssl"}},
	} {
		img, pkgs, err := images.BuildDebian(ctx, images.DebianSpec{
			Packages:   w.packages,
			CacheDir:   filepath.Join(t.Root, "bin", "debs"),
			Entrypoint: []string{w.entrypoint},
			Progress:   t.Say,
		})
		if err != nil {
			return err
		}
		ref, err := images.PushAs(ctx, t.Cluster.Registry(), w.ref, img)
		if err != nil {
			return err
		}
		versions := make([]string, len(pkgs))
		for i, p := range pkgs {
			versions[i] = p.Name + " " + p.Version
		}
		t.Say("  pushed %s as %s (%s)", w.what, w.ref, ref)
		t.Say("    from Debian: %s", strings.Join(versions, ", "))
	}
	if t.fwd, err = chart.ForwardRegistry(ctx, t.Cluster, t.Log); err != nil {
		return err
	}

	// The values of this local cluster: simulated SNP on runc, the
	// images from the node's registry.
	t.authFile = filepath.Join(t.Dir, "sim-snp.pem")
	if _, err := sim.LoadOrCreateSNPAuthority(t.authFile); err != nil {
		return err
	}
	meas := make([]byte, 48)
	if _, err := rand.Read(meas); err != nil {
		return err
	}
	t.measurement = hex.EncodeToString(meas)
	values := chart.MergeValues(chart.LocalValues(imgs, t.Cluster.Registry(), t.fwd.Addr), map[string]any{
		"coordinator": map[string]any{"simAuthoritySecret": "sim-authority", "simMeasurement": t.measurement},
		"webhook": map[string]any{"registry": map[string]any{
			"mirrors":    map[string]any{MirrorHost: []string{"http://" + t.fwd.Addr}},
			"skipOrigin": []string{t.Cluster.Registry(), MirrorHost},
		}},
	})
	t.valuesFile, err = chart.WriteValues(t.Dir, "values.yaml", values)
	if err != nil {
		return err
	}
	t.Say("wrote %s (simulated SNP on runc, images from the local registry)", t.rel(t.valuesFile))
	return nil
}

// Generate renders the chart and runs contrast generate over a copy of
// examples/tutorial.
func (t *Tutorial) Generate(ctx context.Context) error {
	if err := copyDir(filepath.Join(t.Root, "examples", "tutorial"), t.Apps); err != nil {
		return err
	}
	t.chartFile = filepath.Join(t.Dir, "chart.yaml")
	n, err := t.render(ctx, t.chartFile, t.valuesFile)
	if err != nil {
		return err
	}
	t.Say("(%d lines: the chart's objects, among them the Coordinator's StatefulSet and the webhook's settings)", n)
	return t.GenerateFor(ctx, t.Workspace, t.chartFile, Namespace, t.Apps)
}

// render writes helm template of the chart with the values files to file
// and returns its number of lines.
func (t *Tutorial) render(ctx context.Context, file string, values ...string) (int, error) {
	args := []string{"template", Release, filepath.Join(t.Root, "charts", "contrast"), "-n", ControlPlane}
	for _, v := range values {
		args = append(args, "-f", v)
	}
	fmt.Fprintf(t.Out, "\n    $ %s > %s\n", t.display(t.Helm, args), t.rel(file))
	var rendered bytes.Buffer
	cmd := exec.CommandContext(ctx, t.Helm, args...) //nolint:gosec // the cluster's helm
	cmd.Dir, cmd.Stdout = t.Root, &rendered
	w := &indentWriter{w: t.Out}
	cmd.Stderr = w
	err := cmd.Run()
	w.flush()
	if err != nil {
		return 0, fmt.Errorf("helm template: %w", err)
	}
	if err := os.WriteFile(file, rendered.Bytes(), 0o600); err != nil {
		return 0, err
	}
	return bytes.Count(rendered.Bytes(), []byte("\n")), nil
}

// GenerateFor runs contrast generate as the tutorial does, for the
// workloads at paths (namespace ns where they name none) into the
// workspace ws, with the webhook's settings and the Coordinator of the
// rendered chart chartFile and the simulated platform's reference values.
func (t *Tutorial) GenerateFor(ctx context.Context, ws, chartFile, ns string, paths ...string) error {
	args := []string{"generate", "-w", ws, "--settings", chartFile, "--coordinator-yaml", chartFile,
		"--reference-values", "snp-simulated", "--sim-authority", t.authFile, "--sim-measurement", t.measurement, "-n", ns}
	_, err := t.run(ctx, nil, t.Contrast, append(args, paths...)...)
	return err
}

// UpgradeControlPlane runs helm upgrade of the release with extra values
// over the tutorial's, waits for it, and renders the chart with the same
// values into a file named after name; it returns that file (for
// GenerateFor).
func (t *Tutorial) UpgradeControlPlane(ctx context.Context, name string, extra map[string]any) (string, error) {
	extraFile, err := chart.WriteValues(t.Dir, name+".values.yaml", extra)
	if err != nil {
		return "", err
	}
	values := []string{t.valuesFile, filepath.Join(t.Workspace, "chart-values.yaml"), extraFile}
	args := []string{"upgrade", Release, filepath.Join(t.Root, "charts", "contrast"), "-n", ControlPlane}
	for _, v := range values {
		args = append(args, "-f", v)
	}
	if _, err := t.run(ctx, nil, t.Helm, append(args, "--wait", "--timeout", "5m")...); err != nil {
		return "", err
	}
	chartFile := filepath.Join(t.Dir, name+".chart.yaml")
	if _, err := t.render(ctx, chartFile, values...); err != nil {
		return "", err
	}
	return chartFile, nil
}

// Install creates the simulated authority's Secret and installs the
// chart with the values generate wrote.
func (t *Tutorial) Install(ctx context.Context) error {
	if _, err := t.kubectl(ctx, "create", "namespace", ControlPlane); err != nil {
		return err
	}
	if _, err := t.kubectl(ctx, "-n", ControlPlane, "create", "secret", "generic", "sim-authority", "--from-file=authority.pem="+t.authFile); err != nil {
		return err
	}
	_, err := t.run(ctx, nil, t.Helm, "install", Release, filepath.Join(t.Root, "charts", "contrast"), "-n", ControlPlane,
		"-f", t.valuesFile, "-f", filepath.Join(t.Workspace, "chart-values.yaml"), "--wait", "--timeout", "5m")
	if err != nil {
		return err
	}
	ip, err := t.kubectl(ctx, "-n", ControlPlane, "get", "pod", "contrast-coordinator-0", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		return err
	}
	t.CoordinatorAddr = strings.TrimSpace(ip) + ":1313"
	return nil
}

// Deploy opts the namespace in, gives it the simulated device, applies the
// workloads and waits for them.
func (t *Tutorial) Deploy(ctx context.Context) error {
	if _, err := t.kubectl(ctx, "create", "namespace", Namespace); err != nil {
		return err
	}
	if _, err := t.kubectl(ctx, "label", "namespace", Namespace, inject.LabelInject+"=enabled"); err != nil {
		return err
	}
	if err := t.Cluster.WaitForNamespaceReady(ctx, Namespace); err != nil {
		return err
	}
	device, err := t.deviceFile()
	if err != nil {
		return err
	}
	t.Say("(simulated TEE only: the device a Kata VM would have, for the pods of this namespace)")
	if _, err := t.kubectl(ctx, "-n", Namespace, "create", "secret", "generic", inject.DefaultSimDeviceSecret, "--from-file="+inject.SimDeviceSecretKey+"="+device); err != nil {
		return err
	}
	if _, err := t.kubectl(ctx, "-n", Namespace, "apply", "-f", t.Apps); err != nil {
		return err
	}
	t.Say("(each pod's Initializer attests to the Coordinator and gets its mesh certificate; then the pod starts)")
	if err := t.waitReady(ctx); err != nil {
		return err
	}
	ip, err := t.kubectl(ctx, "-n", Namespace, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
	t.WebIP = strings.TrimSpace(ip)
	return err
}

// Set attests the Coordinator and sets the manifest.
func (t *Tutorial) Set(ctx context.Context) error {
	_, err := t.run(ctx, nil, t.Contrast, "set", "-w", t.Workspace, "-c", t.CoordinatorAddr)
	return err
}

func (t *Tutorial) waitReady(ctx context.Context) error {
	for _, d := range []string{"backend", "web"} {
		if _, err := t.kubectl(ctx, "-n", Namespace, "rollout", "status", "deployment/"+d, "--timeout=3m"); err != nil {
			return err
		}
	}
	_, err := t.kubectl(ctx, "-n", Namespace, "get", "pods", "-o", "wide")
	return err
}

// Verify runs contrast verify.
func (t *Tutorial) Verify(ctx context.Context) error {
	_, err := t.run(ctx, nil, t.Contrast, "verify", "-w", t.Workspace, "-c", t.CoordinatorAddr)
	return err
}

// Connect checks the frontend against the verified mesh CA: by name it
// verifies, by IP address it does not (the certificate has no IP SAN).
func (t *Tutorial) Connect(ctx context.Context) error {
	ca := filepath.Join(t.Workspace, "verify", "mesh-ca.pem")
	t.Say("(the mesh CA is an intermediate under the Coordinator's root CA: -partial_chain lets openssl trust it")
	t.Say(" alone, as curl does by default; trusting the root instead would also trust every earlier mesh CA)")
	if _, err := t.run(ctx, strings.NewReader(""), "openssl", "s_client", "-connect", t.WebIP+":443", "-servername", "web",
		"-CAfile", ca, "-partial_chain", "-verify_return_error", "-brief"); err != nil {
		return err
	}
	if err := t.getUpstream(ctx, ca, "--resolve", "web:443:"+t.WebIP, "https://web/upstream"); err != nil {
		return err
	}
	t.Say("(nginx answered with the page of an openssl s_server backend, reached through its mesh egress: mTLS")
	t.Say(" inside the mesh, and the backend's own TLS inside that, checked by nginx against the root CA)")
	// curl's exit code 60: the peer's certificate failed verification
	if err := t.runExpectFail(ctx, 60, "the certificate has no IP SAN", "curl", "-sS", "--fail", "--cacert", ca, "https://"+t.WebIP+"/"); err != nil {
		return err
	}
	t.Say("(refused as expected: the frontend's certificate names \"web\", not %s)", t.WebIP)
	return nil
}

// Update adds the frontend's IP address to its SANs, sets the new
// manifest (a new mesh CA), restarts the workloads and connects by IP.
func (t *Tutorial) Update(ctx context.Context) error {
	web := filepath.Join(t.Apps, "web.yaml")
	t.Say("edit %s: the Deployment gets the annotation contrast.cc/sans: %q", t.rel(web), t.WebIP)
	if err := addSANAnnotation(web, "web", t.WebIP); err != nil {
		return err
	}
	if _, err := t.run(ctx, nil, t.Contrast, "generate", "-w", t.Workspace, "--settings", t.chartFile, "--coordinator-yaml", t.chartFile, "-n", Namespace, t.Apps); err != nil {
		return err
	}
	if _, err := t.run(ctx, nil, t.Contrast, "set", "-w", t.Workspace, "-c", t.CoordinatorAddr); err != nil {
		return err
	}
	for _, d := range []string{"backend", "web"} {
		if _, err := t.kubectl(ctx, "-n", Namespace, "rollout", "restart", "deployment/"+d); err != nil {
			return err
		}
	}
	if err := t.waitReady(ctx); err != nil {
		return err
	}
	return t.verifyAndConnectByIP(ctx)
}

// Recover deletes the Coordinator's pod; the new one starts in recovery
// mode, and contrast recover gives it the seed back.
func (t *Tutorial) Recover(ctx context.Context) error {
	if _, err := t.kubectl(ctx, "-n", ControlPlane, "delete", "pod", "contrast-coordinator-0"); err != nil {
		return err
	}
	var ip string
	if err := poll(ctx, 3*time.Minute, func() bool {
		out, err := t.quietKubectl(ctx, "-n", ControlPlane, "get", "pod", "contrast-coordinator-0", "-o", "jsonpath={.status.podIP} {.status.containerStatuses[0].started}")
		ip = strings.Fields(out + " ")[0]
		return err == nil && strings.HasSuffix(strings.TrimSpace(out), "true") && ip != ""
	}); err != nil {
		return fmt.Errorf("the Coordinator did not start again: %w", err)
	}
	t.CoordinatorAddr = ip + ":1313"
	t.Say("(the new Coordinator runs without the seed: recovery mode, not Ready)")
	if _, err := t.run(ctx, nil, t.Contrast, "recover", "-w", t.Workspace, "-c", t.CoordinatorAddr); err != nil {
		return err
	}
	if _, err := t.kubectl(ctx, "-n", ControlPlane, "wait", "--for=condition=Ready", "pod/contrast-coordinator-0", "--timeout=2m"); err != nil {
		return err
	}
	return t.verifyAndConnectByIP(ctx)
}

// verifyAndConnectByIP verifies again and reaches the frontend by its IP
// address through its backend, trusting the verified mesh CA.
func (t *Tutorial) verifyAndConnectByIP(ctx context.Context) error {
	if err := t.Verify(ctx); err != nil {
		return err
	}
	ca := filepath.Join(t.Workspace, "verify", "mesh-ca.pem")
	return t.getUpstream(ctx, ca, "https://"+t.WebIP+"/upstream")
}

// getUpstream fetches the frontend's /upstream with curl, trusting the mesh
// CA file ca, and checks that the page is the backend's. Right after a
// rollout kube-proxy may still send a connection to a terminating pod, or
// the frontend's first call reach a backend still starting: curl retries,
// as a client would.
func (t *Tutorial) getUpstream(ctx context.Context, ca string, args ...string) error {
	curl := append([]string{"-sS", "--fail", "--retry", "10", "--retry-all-errors", "--retry-delay", "1", "--cacert", ca}, args...)
	out, err := t.run(ctx, nil, "curl", curl...)
	return expectBackend(out, err)
}

// BackendGreeting is in the page the backend serves (examples/tutorial).
const BackendGreeting = "Hello from the backend (openssl s_server)"

// expectBackend checks that a call of the frontend's /upstream got the
// backend's page: nginx reached openssl s_server through the mesh.
func expectBackend(out string, err error) error {
	if err != nil {
		return err
	}
	if !strings.Contains(out, BackendGreeting) {
		return fmt.Errorf("the frontend answered %q, not the backend's page", strings.TrimSpace(out))
	}
	return nil
}

// deviceFile writes the simulated device of the pods: the authority's, with
// the Coordinator's launch measurement (the same guest image).
func (t *Tutorial) deviceFile() (string, error) {
	auth, err := sim.LoadOrCreateSNPAuthority(t.authFile)
	if err != nil {
		return "", err
	}
	cfg := sim.DefaultSNPDeviceConfig()
	meas, err := hex.DecodeString(t.measurement)
	if err != nil {
		return "", err
	}
	copy(cfg.Measurement[:], meas)
	dev, err := auth.NewDevice(cfg)
	if err != nil {
		return "", err
	}
	raw, err := dev.MarshalDeviceFile()
	if err != nil {
		return "", err
	}
	path := filepath.Join(t.Dir, "sim-device.json")
	return path, os.WriteFile(path, raw, 0o600)
}

func (t *Tutorial) kubectl(ctx context.Context, args ...string) (string, error) {
	return t.run(ctx, nil, filepath.Join(t.Cluster.BinDir, "kubectl"), args...)
}

func (t *Tutorial) quietKubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(t.Cluster.BinDir, "kubectl"), args...) //nolint:gosec // the cluster's kubectl
	cmd.Env = append(os.Environ(), "KUBECONFIG="+t.Cluster.Kubeconfig)
	out, err := cmd.Output()
	return string(out), err
}

// run prints the command, runs it in the repository root with KUBECONFIG
// set, prints its output indented, and returns stdout.
func (t *Tutorial) run(ctx context.Context, stdin io.Reader, name string, args ...string) (string, error) {
	fmt.Fprintf(t.Out, "\n    $ %s\n", t.display(name, args))
	stdout, err := t.exec(ctx, stdin, name, args...)
	if err != nil {
		return stdout, fmt.Errorf("%s: %w", filepath.Base(name), err)
	}
	return stdout, nil
}

// runExpectFail is run for a command that must fail.
func (t *Tutorial) runExpectFail(ctx context.Context, wantCode int, why string, name string, args ...string) error {
	fmt.Fprintf(t.Out, "\n    $ %s   # expected to fail\n", t.display(name, args))
	_, err := t.exec(ctx, nil, name, args...)
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return fmt.Errorf("%s succeeded, but must fail (%s)", filepath.Base(name), why)
	case !errors.As(err, &exitErr):
		return err
	case exitErr.ExitCode() != wantCode:
		return fmt.Errorf("%s failed with exit code %d, want %d (%s)", filepath.Base(name), exitErr.ExitCode(), wantCode, why)
	}
	return nil
}

func (t *Tutorial) exec(ctx context.Context, stdin io.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...) //nolint:gosec // the tutorial's commands
	cmd.Dir = t.Root
	cmd.Stdin = stdin
	cmd.Env = append(os.Environ(), "KUBECONFIG="+t.Cluster.Kubeconfig)
	var stdout bytes.Buffer
	w := &indentWriter{w: t.Out}
	cmd.Stdout = io.MultiWriter(&stdout, w)
	cmd.Stderr = w
	err := cmd.Run()
	w.flush()
	return stdout.String(), err
}

// display is the command as the user would type it: binaries by name,
// paths relative to the repository root.
func (t *Tutorial) display(name string, args []string) string {
	parts := []string{filepath.Base(name)}
	if name == t.Contrast {
		parts[0] = "contrast"
	}
	for _, a := range args {
		a = t.rel(a)
		if strings.ContainsAny(a, " \"'$") {
			a = fmt.Sprintf("%q", a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func (t *Tutorial) rel(s string) string {
	if strings.HasPrefix(s, t.Root+string(filepath.Separator)) {
		return strings.TrimPrefix(s, t.Root+string(filepath.Separator))
	}
	if i := strings.Index(s, "="+t.Root+string(filepath.Separator)); i >= 0 {
		return s[:i+1] + strings.TrimPrefix(s[i+1:], t.Root+string(filepath.Separator))
	}
	return s
}

// indentWriter indents every line it writes by six spaces. A command's
// stdout and stderr copy into it from two goroutines, so it serializes them.
type indentWriter struct {
	mu   sync.Mutex
	w    io.Writer
	line []byte
}

func (w *indentWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range p {
		w.line = append(w.line, b)
		if b == '\n' {
			if _, err := fmt.Fprintf(w.w, "      %s", w.line); err != nil {
				return 0, err
			}
			w.line = w.line[:0]
		}
	}
	return len(p), nil
}

func (w *indentWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.line) > 0 {
		fmt.Fprintf(w.w, "      %s\n", w.line)
		w.line = w.line[:0]
	}
}

func poll(ctx context.Context, timeout time.Duration, ok func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if ok() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o750); err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(src, e.Name())) //nolint:gosec // the project's examples
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), raw, 0o644); err != nil { //nolint:gosec // the user's copy of the examples
			return err
		}
	}
	return nil
}

// addSANAnnotation sets contrast.cc/sans on the Deployment name in the
// multi-document file (the Deployment object's own metadata: the pod
// template, and so the policy, stays the same).
func addSANAnnotation(file, name, san string) error {
	raw, err := os.ReadFile(file) //nolint:gosec // the tutorial's copy
	if err != nil {
		return err
	}
	docs := strings.Split(string(raw), "\n---\n")
	found := false
	for i, d := range docs {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(d), &obj); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		meta, _ := obj["metadata"].(map[string]any)
		if obj["kind"] != "Deployment" || meta["name"] != name {
			continue
		}
		ann, _ := meta["annotations"].(map[string]any)
		if ann == nil {
			ann = map[string]any{}
		}
		ann["contrast.cc/sans"] = san
		meta["annotations"] = ann
		out, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		docs[i] = string(out)
		found = true
	}
	if !found {
		return fmt.Errorf("%s: no Deployment %q", file, name)
	}
	return os.WriteFile(file, []byte(strings.Join(docs, "\n---\n")), 0o644) //nolint:gosec // the user's copy of the examples
}
