package server

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	kwhhttp "github.com/slok/kubewebhook/v2/pkg/http"
	kwhmodel "github.com/slok/kubewebhook/v2/pkg/model"
	kwhmutating "github.com/slok/kubewebhook/v2/pkg/webhook/mutating"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkAdmissionVsNoop measures the admission of the emojivoto web pod
// (warm image cache) against a no-op kubewebhook mutator in the same run,
// alternating the two so both see the same machine load. It reports p50 and
// p99 latency and admissions per second of each and their ratios.
func BenchmarkAdmissionVsNoop(b *testing.B) {
	f := newFixture(b)
	noop := noopHandler(b)
	body := review(b, admissionv1.Create, "emojivoto", webPod(), false)
	serve := func(h http.Handler) time.Duration {
		req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/mutate", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, req)
		d := time.Since(start)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
		}
		return d
	}
	serve(f.handler) // warm the image cache
	var contrast, base []time.Duration
	b.ResetTimer()
	for b.Loop() {
		base = append(base, serve(noop))
		contrast = append(contrast, serve(f.handler))
	}
	b.StopTimer()
	pc50, pc99, rc := stats(contrast)
	pn50, pn99, rn := stats(base)
	b.ReportMetric(float64(pc50.Microseconds()), "contrast-p50-µs")
	b.ReportMetric(float64(pc99.Microseconds()), "contrast-p99-µs")
	b.ReportMetric(rc, "contrast-admissions/s")
	b.ReportMetric(float64(pn50.Microseconds()), "noop-p50-µs")
	b.ReportMetric(float64(pn99.Microseconds()), "noop-p99-µs")
	b.ReportMetric(rn, "noop-admissions/s")
	b.ReportMetric(float64(pc50)/float64(pn50), "p50-ratio")
	b.ReportMetric(float64(pc99)/float64(pn99), "p99-ratio")
}

func stats(ds []time.Duration) (p50, p99 time.Duration, perSecond float64) {
	s := slices.Clone(ds)
	slices.Sort(s)
	var total time.Duration
	for _, d := range s {
		total += d
	}
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)], float64(len(s)) / total.Seconds()
}

func noopHandler(b *testing.B) http.Handler {
	b.Helper()
	wh, err := kwhmutating.NewWebhook(kwhmutating.WebhookConfig{
		ID:  "noop",
		Obj: &corev1.Pod{},
		Mutator: kwhmutating.MutatorFunc(func(context.Context, *kwhmodel.AdmissionReview, metav1.Object) (*kwhmutating.MutatorResult, error) {
			return &kwhmutating.MutatorResult{}, nil
		}),
	})
	if err != nil {
		b.Fatal(err)
	}
	h, err := kwhhttp.HandlerFor(kwhhttp.HandlerConfig{Webhook: wh})
	if err != nil {
		b.Fatal(err)
	}
	return h
}
