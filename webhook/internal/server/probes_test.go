package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	req := httptest.NewRequestWithContext(context.Background(), http.MethodGet, path, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

func TestProbes(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	m.observeAdmission(ResultMutated, "ok", 0)
	p := NewProbes()
	certErr := errors.New("no serving certificate yet")
	p.AddReadiness("certificate", func(context.Context) error { return certErr })
	p.AddLiveness("ping", func(context.Context) error { return nil })
	h := p.Handler(reg)

	code, body := get(t, h, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "[-]certificate failed: no serving certificate yet")

	certErr = nil
	code, body = get(t, h, "/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok\n", body)
	code, body = get(t, h, "/readyz?verbose")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "[+]certificate ok\nok\n", body)

	code, _ = get(t, h, "/livez")
	assert.Equal(t, http.StatusOK, code)

	code, body = get(t, h, "/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `contrast_webhook_admissions_total{reason="ok",result="mutated"} 1`)
	assert.Contains(t, body, `contrast_webhook_admission_duration_seconds_bucket{result="mutated"`)
}
