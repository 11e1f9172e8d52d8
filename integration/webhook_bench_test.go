package integration_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/inject/settings"
	"github.com/contrast-cc/contrast/webhook/inject/webhooktest"
)

// BenchmarkKubectlApplyEmojivoto measures `kubectl apply` of the emojivoto
// Deployments until the controllers' four pods exist, in a namespace opted
// in to the webhook and in one that is not (the API server skips the
// webhooks, mutating and validating), alternating in one run against one
// control plane. It reports both and their ratio. Each iteration uses a
// fresh namespace: the manifests' namespace is rewritten in memory, the
// files stay unmodified.
func BenchmarkKubectlApplyEmojivoto(b *testing.B) {
	imgs := injecttest.Serve(b)
	c := cluster.Start(b, cluster.Options{})
	ctx := context.Background()
	wh := webhooktest.Start(b, webhooktest.Config{Images: imgs})
	createRuntimeClass(ctx, b, c)
	registerWebhook(ctx, b, c, wh.URL, wh.CABundle)
	registerValidatingWebhook(ctx, b, c, wh.ValidateURL, wh.CABundle)

	var docs []byte
	for _, f := range []string{"web.yml", "emoji.yml", "voting.yml", "vote-bot.yml"} {
		raw, err := os.ReadFile(filepath.Join(emojivotoDir(b), f))
		if err != nil {
			b.Fatal(err)
		}
		docs = append(append(docs, raw...), []byte("\n---\n")...)
	}
	apply := func(i int, opted bool) time.Duration {
		return timeApply(ctx, b, c, fmt.Sprintf("bench-%d-%t", i, opted), opted, docs, 4, 2*time.Minute, false)
	}
	var with, without time.Duration
	b.ResetTimer()
	i := 0
	for b.Loop() {
		without += apply(i, false)
		with += apply(i, true)
		i++
	}
	b.StopTimer()
	b.ReportMetric(float64(with.Milliseconds())/float64(i), "with-webhook-ms/apply")
	b.ReportMetric(float64(without.Milliseconds())/float64(i), "without-webhook-ms/apply")
	b.ReportMetric(float64(with)/float64(without), "ratio")
}

// BenchmarkDeploymentScaleUp measures a scale-up of the emojivoto web
// Deployment to 100 replicas, from `kubectl apply` until the ReplicaSet
// controller's 100 pods exist, in a namespace opted in to the webhook and in
// one that is not, alternating against one control plane, as
// BenchmarkKubectlApplyEmojivoto does. The webhook runs with the policy
// cache, the patch cache and the tag TTL of its defaults: the first pod's
// admission generates the policy, the other 99 (and every validation) hit
// the policy cache, and the other 99 admissions the patch cache (the API
// server sends each pod with its own managedFields time). It reports both
// durations, their ratio and the webhook's policy and patch cache hits and
// misses.
func BenchmarkDeploymentScaleUp(b *testing.B) {
	const replicas = 100
	imgs := injecttest.Serve(b)
	mirror := []images.Mirror{{Host: imgs.Registry.Host, Insecure: true}}
	withTTL := *imgs
	withTTL.Source = images.NewRegistry(images.RegistryConfig{
		Mirrors:    map[string][]images.Mirror{"docker.l5d.io": mirror, "registry.example": mirror},
		SkipOrigin: []string{"docker.l5d.io", "registry.example"},
		TagTTL:     settings.DefaultRegistryTagTTL,
	})
	c := cluster.Start(b, cluster.Options{})
	ctx := context.Background()
	wh := webhooktest.Start(b, webhooktest.Config{Images: &withTTL})
	createRuntimeClass(ctx, b, c)
	registerWebhook(ctx, b, c, wh.URL, wh.CABundle)
	registerValidatingWebhook(ctx, b, c, wh.ValidateURL, wh.CABundle)

	raw, err := os.ReadFile(filepath.Join(emojivotoDir(b), "web.yml"))
	if err != nil {
		b.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("replicas: 1\n")) {
		b.Fatal("web.yml has no replicas: 1")
	}
	doc := bytes.Replace(raw, []byte("replicas: 1\n"), fmt.Appendf(nil, "replicas: %d\n", replicas), 1)
	scaleUp := func(i int, opted bool) time.Duration {
		return timeApply(ctx, b, c, fmt.Sprintf("scale-%d-%t", i, opted), opted, doc, replicas, 5*time.Minute, true)
	}
	var with, without time.Duration
	i := 0
	for b.Loop() {
		without += scaleUp(i, false)
		with += scaleUp(i, true)
		i++
	}
	b.ReportMetric(float64(with.Milliseconds())/float64(i), "with-webhook-ms/scale-up")
	b.ReportMetric(float64(without.Milliseconds())/float64(i), "without-webhook-ms/scale-up")
	b.ReportMetric(float64(with)/float64(without), "ratio")
	for _, r := range []string{"hit", "miss", "shared"} {
		b.ReportMetric(gatheredCounter(b, wh.Registry, "contrast_webhook_policy_cache_requests_total", "result", r), "policy-cache-"+r)
	}
	for _, r := range []string{"hit", "miss"} {
		b.ReportMetric(gatheredCounter(b, wh.Registry, "contrast_webhook_patch_cache_requests_total", "result", r), "patch-cache-"+r)
	}
}

// gatheredCounter is the value of the counter name{label=value} in g.
func gatheredCounter(b *testing.B, g prometheus.Gatherer, name, label, value string) float64 {
	b.Helper()
	mfs, err := g.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// timeApply creates namespace ns (opted in or not), applies the emojivoto
// documents docs there and returns the time until pods pods exist; with
// cleanup the namespace is deleted afterwards (not waited for).
func timeApply(ctx context.Context, b *testing.B, c *cluster.Cluster, ns string, opted bool, docs []byte, pods int, timeout time.Duration, cleanup bool) time.Duration {
	b.Helper()
	if _, err := c.RunKubectl(ctx, nil, "create", "namespace", ns); err != nil {
		b.Fatal(err)
	}
	if opted {
		if _, err := c.RunKubectl(ctx, nil, "label", "namespace", ns, inject.LabelInject+"=enabled"); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.WaitForNamespaceReady(ctx, ns); err != nil {
		b.Fatal(err)
	}
	manifest := bytes.ReplaceAll(docs, []byte("namespace: emojivoto"), []byte("namespace: "+ns))
	start := time.Now()
	if out, err := c.RunKubectl(ctx, bytes.NewReader(manifest), "apply", "-f", "-"); err != nil {
		b.Fatal(out, err)
	}
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) == pods, err
	})
	if err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	if cleanup {
		if _, err := c.RunKubectl(ctx, nil, "delete", "namespace", ns, "--wait=false"); err != nil {
			b.Fatal(err)
		}
	}
	return d
}
