package integration_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
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
		ns := fmt.Sprintf("bench-%d-%t", i, opted)
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
		err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return err == nil && len(pods.Items) == 4, err
		})
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
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
