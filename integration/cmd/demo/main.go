// Command demo runs the Contrast tutorial as a narrated walk-through on a
// local cluster with a real node and simulated TEEs (`make demo`), and
// leaves the cluster running for exploration until Ctrl-C or
// `make demo-down`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/integration/images"
	"github.com/contrast-cc/contrast/integration/tutorial"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo failed:", err)
		os.Exit(1)
	}
}

func run() error {
	dirFlag := flag.String("dir", "bin/demo", "folder of the run: cluster state and logs, the contrast workspace, the values (removed and recreated)")
	keep := flag.Bool("keep", true, "after the tutorial, keep the cluster running until Ctrl-C or `make demo-down`")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `Usage: go run ./integration/cmd/demo [flags]   (make demo)

Runs the Contrast tutorial on a local Kubernetes cluster with a real node (containerd, runc, kubelet) and
simulated SEV-SNP: builds the images, installs the chart, deploys two workloads, sets and verifies the
manifest, connects through the mesh, updates the manifest and recovers a restarted Coordinator. Each command
is printed before its output. Needs root and the binaries of make k8s-bins.

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()

	root, err := images.RepoRoot(".")
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(*dirFlag)
	if err != nil {
		return err
	}
	pidFile := filepath.Join(dir, "demo.pid")
	if pid, alive := running(pidFile); alive {
		return fmt.Errorf("a demo is already running (pid %d): stop it with make demo-down", pid)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := os.Stdout
	logFile, err := os.Create(filepath.Join(dir, "harness.log")) //nolint:gosec // in the run's own folder
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, nil))

	start := time.Now()
	fmt.Fprintf(out, "==> Start a local cluster: etcd, kube-apiserver, kube-controller-manager, and a real node\n")
	fmt.Fprintf(out, "    (containerd with runc, kubelet, kube-proxy, kube-scheduler; logs in %s)\n", rel(root, filepath.Join(dir, "cluster")))
	c, err := cluster.New(ctx, cluster.Options{Node: true, Dir: filepath.Join(dir, "cluster"), Logger: log, Mirrors: []string{tutorial.MirrorHost}})
	if err != nil {
		return fmt.Errorf("starting the cluster: %w", err)
	}
	defer func() {
		fmt.Fprintln(out, "\n==> Stopping the cluster")
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the cluster:", err)
		}
	}()
	fmt.Fprintf(out, "    ready in %s\n", time.Since(start).Round(100*time.Millisecond))

	t := tutorial.New(root, dir, c, out, log)
	defer t.Close()
	if err := t.Run(ctx); err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return errors.New("interrupted")
		}
		return err
	}

	fmt.Fprintf(out, `
==> Done in %s. What you saw:
    - the Helm chart installed the Coordinator and the webhook as real pods (simulated SEV-SNP on runc);
    - contrast generate computed every pod's policy with the webhook's own code, offline;
    - kubectl apply of the unmodified workloads: the webhook made them confidential pods;
    - contrast set: the Coordinator attested, the manifest set, and every pod's Initializer got its
      mesh certificate after the Coordinator checked its evidence;
    - contrast verify: an auditor's check, and the mesh CA that clients outside the mesh trust;
    - a manifest update (new SAN, new mesh CA) and a Coordinator restarted and recovered with the seed share.
    Nothing here ran in a TEE: the simulated device stands in for the hardware, so it shows the protocol,
    not the protection.
`, time.Since(start).Round(time.Second))
	if !*keep {
		return nil
	}
	fmt.Fprintf(out, `
==> The cluster keeps running. In another terminal:
      export KUBECONFIG=%s
      %s get pods -A
      ls %s          # the contrast workspace: manifest.json, keys, verify/
      %s verify -w %s -c %s
    Stop it with Ctrl-C here or make demo-down.
`, c.Kubeconfig, rel(root, filepath.Join(c.BinDir, "kubectl")), rel(root, t.Workspace), rel(root, t.Contrast), rel(root, t.Workspace), t.CoordinatorAddr)
	<-ctx.Done()
	return nil
}

// running reports the pid of a demo that still runs.
func running(pidFile string) (int, bool) {
	raw, err := os.ReadFile(pidFile) //nolint:gosec // the demo's own pid file
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, syscall.Kill(pid, 0) == nil
}

func rel(root, path string) string {
	if r, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}
