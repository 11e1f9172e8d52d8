package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/contrast-cc/contrast/integration/images"
)

// valuesKeys maps a component to its key under `images:` in the chart's
// values.yaml.
var valuesKeys = map[string]string{
	"coordinator": "coordinator",
	"webhook":     "webhook",
	"initializer": "initializer",
	"mesh-proxy":  "meshProxy",
}

// webhookFlags maps the components injected by the webhook to its flags.
var webhookFlags = map[string]string{
	"initializer": "--initializer-image",
	"mesh-proxy":  "--proxy-image",
}

type options struct {
	registry   string
	tag        string
	names      []string
	insecure   bool
	valuesOut  string
	root       string
	revision   string
	buildOnly  bool
	dirtyCheck bool
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var names string
	fs.StringVar(&o.registry, "registry", "", "registry and path prefix to push to, e.g. ghcr.io/contrast-cc/contrast or 127.0.0.1:5000/contrast (required unless -build-only)")
	fs.StringVar(&o.tag, "tag", "", "tag to push besides the digest (empty: push by digest only)")
	fs.StringVar(&names, "images", "", "comma-separated images to build (default: all of "+strings.Join(images.ComponentNames(), ",")+")")
	fs.BoolVar(&o.insecure, "insecure", false, "allow plain HTTP to the registry (a local registry)")
	fs.StringVar(&o.valuesOut, "values-out", "", "write a Helm values file with the pinned images to this path")
	fs.StringVar(&o.root, "root", "", "repository root (default: the folder holding go.work above the working directory)")
	fs.StringVar(&o.revision, "revision", "", "git revision recorded in the image label org.opencontainers.image.revision (default: git rev-parse HEAD)")
	fs.BoolVar(&o.buildOnly, "build-only", false, "build and print the digests without pushing")
	fs.BoolVar(&o.dirtyCheck, "warn-dirty", true, "warn when the work tree has uncommitted changes")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.registry == "" && !o.buildOnly {
		return nil, errors.New("-registry is required (make images REGISTRY=host[:port]/path), or -build-only")
	}
	if o.registry != "" && (strings.Contains(o.registry, "://") || strings.HasSuffix(o.registry, "/") || strings.ContainsAny(o.registry, "@ ")) {
		return nil, fmt.Errorf("-registry %q: want host[:port][/path] without scheme or trailing slash", o.registry)
	}
	if names != "" {
		for _, n := range strings.Split(names, ",") {
			if n = strings.TrimSpace(n); n != "" {
				o.names = append(o.names, n)
			}
		}
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	if o.root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if o.root, err = images.RepoRoot(wd); err != nil {
			return err
		}
	}
	if o.revision == "" {
		o.revision = git(ctx, o.root, "rev-parse", "HEAD")
	}
	if o.dirtyCheck && git(ctx, o.root, "status", "--porcelain") != "" {
		fmt.Fprintf(stderr, "warning: the work tree has uncommitted changes; the digests are not those of commit %s\n", o.revision)
	}
	start := time.Now()
	imgs, err := images.BuildComponents(ctx, o.root, o.revision, o.names)
	if err != nil {
		return err
	}
	names := o.names
	if len(names) == 0 {
		names = images.ComponentNames()
	}
	refs := make(map[string]string, len(names))
	for _, n := range names {
		d, err := imgs[n].Digest()
		if err != nil {
			return fmt.Errorf("image %s: %w", n, err)
		}
		if o.buildOnly {
			refs[n] = d.String()
			continue
		}
		ref, err := images.PushRepository(ctx, o.registry+"/"+n, o.tag, imgs[n], images.PushOptions{Insecure: o.insecure})
		if err != nil {
			return fmt.Errorf("image %s: %w", n, err)
		}
		refs[n] = ref
	}
	fmt.Fprintf(stderr, "built %d images in %s (revision %s)\n", len(names), time.Since(start).Round(time.Millisecond), o.revision)

	for _, n := range names {
		fmt.Fprintf(stdout, "%-12s %s\n", n, refs[n])
	}
	if o.buildOnly {
		return nil
	}
	values := valuesYAML(names, refs)
	fmt.Fprintf(stdout, "\n# Helm values for charts/contrast (helm install … -f FILE):\n%s", values)
	var flags []string
	for _, n := range names {
		if f, ok := webhookFlags[n]; ok {
			flags = append(flags, f+"="+refs[n])
		}
	}
	if len(flags) > 0 {
		fmt.Fprintf(stdout, "\n# webhook flags:\n%s\n", strings.Join(flags, " "))
	}
	if o.valuesOut != "" {
		if err := os.WriteFile(o.valuesOut, []byte(values), 0o644); err != nil { //nolint:gosec // a values file for helm, not a secret.
			return fmt.Errorf("writing %s: %w", o.valuesOut, err)
		}
	}
	return nil
}

// valuesYAML renders the `images:` block of the chart's values.
func valuesYAML(names []string, refs map[string]string) string {
	var b bytes.Buffer
	b.WriteString("images:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %s: %s\n", valuesKeys[n], refs[n])
	}
	return b.String()
}

// git returns the trimmed output of a git command in dir, or "" if it fails
// (no git, not a repository): the revision label is then left out.
func git(ctx context.Context, dir string, args ...string) string {
	cmd := exec.CommandContext(ctx, "git", args...) //nolint:gosec // git with this program's fixed subcommands.
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
