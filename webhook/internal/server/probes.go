package server

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is a named health check; nil means healthy.
type Check func(ctx context.Context) error

// Probes serves /livez, /readyz (with ?verbose listing the named checks) and
// /metrics on the plain HTTP probe port.
type Probes struct {
	mu        sync.RWMutex
	liveness  map[string]Check
	readiness map[string]Check
}

// NewProbes returns probes without checks.
func NewProbes() *Probes {
	return &Probes{liveness: map[string]Check{}, readiness: map[string]Check{}}
}

// AddLiveness adds a named liveness check.
func (p *Probes) AddLiveness(name string, c Check) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.liveness[name] = c
}

// AddReadiness adds a named readiness check.
func (p *Probes) AddReadiness(name string, c Check) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.readiness[name] = c
}

// Handler returns the probe mux; metrics are gathered from g.
func (p *Probes) Handler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", p.serve(func() map[string]Check { return p.liveness }))
	mux.HandleFunc("GET /readyz", p.serve(func() map[string]Check { return p.readiness }))
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}

func (p *Probes) serve(checks func() map[string]Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		p.mu.RLock()
		cs := checks()
		names := make([]string, 0, len(cs))
		for n := range cs {
			names = append(names, n)
		}
		p.mu.RUnlock()
		sort.Strings(names)
		var b strings.Builder
		ok := true
		for _, n := range names {
			p.mu.RLock()
			c := cs[n]
			p.mu.RUnlock()
			if err := c(ctx); err != nil {
				ok = false
				fmt.Fprintf(&b, "[-]%s failed: %v\n", n, err)
			} else {
				fmt.Fprintf(&b, "[+]%s ok\n", n)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, b.String()+"check failed\n")
			return
		}
		if _, verbose := r.URL.Query()["verbose"]; verbose {
			fmt.Fprint(w, b.String())
		}
		fmt.Fprint(w, "ok\n")
	}
}
