package chart

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/integration/images"
)

// Images are the project's images in a registry, pinned by digest: the
// values under `images:` of the chart.
type Images struct {
	Coordinator, Webhook, Initializer, MeshProxy string
}

// Values returns the `images:` block of the chart's values.
func (i Images) Values() map[string]any {
	return map[string]any{
		"coordinator": i.Coordinator,
		"webhook":     i.Webhook,
		"initializer": i.Initializer,
		"meshProxy":   i.MeshProxy,
	}
}

// BuildAndPush builds the Coordinator, webhook, Initializer and mesh-proxy
// images of the repository at root (the same builds as `make images`) and
// pushes them to registry (host:port, plain HTTP) as contrast/<name>.
// A component whose program is not in the checkout fails with
// *images.MissingProgramError: nothing stands in for it.
func BuildAndPush(ctx context.Context, root, registry string) (Images, error) {
	imgs, err := images.BuildComponents(ctx, root, "", nil)
	if err != nil {
		return Images{}, err
	}
	refs := map[string]string{}
	for name, img := range imgs {
		ref, err := images.PushRepository(ctx, registry+"/contrast/"+name, "", img, images.PushOptions{Insecure: true})
		if err != nil {
			return Images{}, fmt.Errorf("image %s: %w", name, err)
		}
		refs[name] = ref
	}
	return Images{
		Coordinator: refs["coordinator"], Webhook: refs["webhook"],
		Initializer: refs["initializer"], MeshProxy: refs["mesh-proxy"],
	}, nil
}

// Forwarder relays TCP connections from an address pods can reach to the
// node's local registry, which listens on 127.0.0.1 of the host: the
// webhook resolves images from inside a pod.
type Forwarder struct {
	// Addr is host:port on the node's address.
	Addr string

	l    net.Listener
	wg   sync.WaitGroup
	once sync.Once
}

// ForwardRegistry starts a Forwarder from the node's address to the
// cluster's registry. Close stops it.
func ForwardRegistry(ctx context.Context, c *cluster.Cluster, log *slog.Logger) (*Forwarder, error) {
	if c.Registry() == "" || c.NodeAddress() == "" {
		return nil, errors.New("the cluster has no real node and registry (cluster.Options{Node: true})")
	}
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", net.JoinHostPort(c.NodeAddress(), "0"))
	if err != nil {
		return nil, fmt.Errorf("listening on the node address: %w", err)
	}
	f := &Forwarder{Addr: l.Addr().String(), l: l}
	target := c.Registry()
	// Relays dial until the forwarder is closed, not until ctx (the start) ends.
	ctx = context.WithoutCancel(ctx)
	f.wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() { relay(ctx, conn, target, log) })
		}
	})
	return f, nil
}

func relay(ctx context.Context, in net.Conn, target string, log *slog.Logger) {
	defer in.Close()
	d := net.Dialer{Timeout: 5 * time.Second}
	out, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		if log != nil {
			log.Warn("registry forwarder: dialing the registry", "error", err)
		}
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); closeWrite(out); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); closeWrite(in); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// Close stops accepting and waits for open relays to end.
func (f *Forwarder) Close() error {
	var err error
	f.once.Do(func() {
		err = f.l.Close()
		f.wg.Wait()
	})
	return err
}

// LocalValues returns the values of a release on the harness's real node:
// the simulated TEE with the runc handler, the images from the node's local
// registry (host:port) and the webhook resolving them through podRegistry,
// an address of the same registry that pods reach (see ForwardRegistry).
func LocalValues(imgs Images, registry, podRegistry string) map[string]any {
	return map[string]any{
		"simulated": true,
		"images":    imgs.Values(),
		"runtimeClass": map[string]any{
			"handler":  "runc",
			"overhead": nil,
		},
		"webhook": map[string]any{
			"registry": map[string]any{
				"mirrors":    map[string]any{registry: []string{"http://" + podRegistry}},
				"skipOrigin": []string{registry},
			},
			// Small requests: the test node is a 2-core machine.
			"resources": map[string]any{"requests": map[string]any{"cpu": "10m", "memory": "32Mi"}},
		},
		"coordinator": map[string]any{
			"resources": map[string]any{"requests": map[string]any{"cpu": "10m", "memory": "32Mi"}},
		},
	}
}

// MergeValues returns base with override merged in (maps recursively; other
// values replaced).
func MergeValues(base, override map[string]any) map[string]any {
	out := make(map[string]any, len(base))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range override {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = MergeValues(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// Release is a release of the chart installed in a cluster.
type Release struct {
	Name, Namespace string
	Helm            *Helm
	Chart           string
	// ValuesFile holds the values of the last install or upgrade.
	ValuesFile string
	// Values are those values.
	Values map[string]any
}

// Install runs `helm install --create-namespace --wait` of the chart at
// chartDir as release in namespace with values, and returns the release.
// dir receives the values file.
func Install(ctx context.Context, h *Helm, chartDir, dir, release, namespace string, values map[string]any, timeout time.Duration) (*Release, error) {
	r := &Release{Name: release, Namespace: namespace, Helm: h, Chart: chartDir}
	if err := r.run(ctx, dir, "install", values, timeout, "--create-namespace"); err != nil {
		return r, err
	}
	return r, nil
}

// Upgrade runs `helm upgrade --wait` with values (the whole set, not a
// difference: the release's values are replaced).
func (r *Release) Upgrade(ctx context.Context, dir string, values map[string]any, timeout time.Duration) error {
	return r.run(ctx, dir, "upgrade", values, timeout)
}

func (r *Release) run(ctx context.Context, dir, verb string, values map[string]any, timeout time.Duration, extra ...string) error {
	f, err := os.CreateTemp(dir, r.Name+"-"+verb+"-*.yaml")
	if err != nil {
		return fmt.Errorf("creating values file: %w", err)
	}
	_ = f.Close()
	if _, err := WriteValues(dir, f.Name()[len(dir)+1:], values); err != nil {
		return err
	}
	r.ValuesFile, r.Values = f.Name(), values
	args := []string{verb, r.Name, r.Chart, "--namespace", r.Namespace, "--values", f.Name(),
		"--wait", "--timeout", timeout.String()}
	_, err = r.Helm.Run(ctx, append(args, extra...)...)
	return err
}

// Uninstall runs `helm uninstall --wait`.
func (r *Release) Uninstall(ctx context.Context, timeout time.Duration) error {
	_, err := r.Helm.Run(ctx, "uninstall", r.Name, "--namespace", r.Namespace, "--wait", "--timeout", timeout.String())
	return err
}

// Manifest returns the manifests of the installed release (`helm get manifest`).
func (r *Release) Manifest(ctx context.Context) (string, error) {
	return r.Helm.Run(ctx, "get", "manifest", r.Name, "--namespace", r.Namespace)
}
