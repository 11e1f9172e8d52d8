// Package metrics defines the Coordinator's Prometheus metrics (listed in
// docs/metrics.md). Every label has a bounded set of values.
package metrics

import (
	"context"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/contrast-cc/contrast/attest/certcache"
)

// Metrics are the Coordinator's collectors, registered on Registry.
type Metrics struct {
	Registry *prometheus.Registry

	ManifestGeneration prometheus.Gauge
	RecoveryMode       prometheus.Gauge
	Attestations       *prometheus.CounterVec
	CertificatesIssued prometheus.Counter
	ManifestUpdates    *prometheus.CounterVec
	CollateralFetches  *prometheus.CounterVec
	PeerRecoveries     *prometheus.CounterVec
	HeadRefreshes      *prometheus.CounterVec
	grpcRequests       *prometheus.CounterVec
	grpcDuration       *prometheus.HistogramVec
}

// Attestation outcomes (label "result").
const (
	ResultAccepted = "accepted"
	ResultRejected = "rejected"
)

// Peer recovery labels: "role" is the side, "result" the outcome.
const (
	PeerServed    = "responder"
	PeerRequested = "requester"

	PeerOK       = "ok"
	PeerRejected = "rejected"        // evidence or role refused, or the history did not verify
	PeerRefused  = "refused-by-peer" // the responder refused the requester's evidence or role
	PeerFailed   = "failed"          // no peer reachable, transport errors
)

// New creates and registers the metrics. version is reported by
// contrast_build_info.
func New(version string) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		ManifestGeneration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "contrast_coordinator_manifest_generation",
			Help: "Generation of the active manifest (0 before the first manifest or in recovery mode).",
		}),
		RecoveryMode: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "contrast_coordinator_recovery_mode",
			Help: "1 while the Coordinator has history but no seed and waits for Recover.",
		}),
		Attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_coordinator_attestations_total",
			Help: "Mesh API attestation outcomes by result and reason: per call on an aTLS connection (ok, the failed check, unknown-policy, no-manifest, ...), and once per failed aTLS handshake (session, protocol, tls, timeout, connection-closed, rejected-by-peer, other).",
		}, []string{"result", "reason"}),
		CertificatesIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "contrast_coordinator_certificates_issued_total",
			Help: "Mesh certificates issued.",
		}),
		ManifestUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_coordinator_manifest_updates_total",
			Help: "SetManifest outcomes by result (accepted, invalid, unauthorized, conflict, failed).",
		}, []string{"result"}),
		CollateralFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_coordinator_collateral_fetches_total",
			Help: "Requests for AMD KDS / Intel PCS documents that needed the network, by source (kds, pcs, other) and result (ok, error, shared, negative-cached, rate-limited).",
		}, []string{"source", "result"}),
		PeerRecoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_coordinator_peer_recoveries_total",
			Help: "Peer recovery attempts by role (requester, responder) and result (ok, rejected, refused-by-peer, failed).",
		}, []string{"role", "result"}),
		HeadRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_coordinator_history_refreshes_total",
			Help: "Reads of the stored latest pointer after a watch event or resync, by result (unchanged, adopted, refused, error).",
		}, []string{"result"}),
		grpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_coordinator_grpc_server_handled_total",
			Help: "gRPC calls completed by the server, by service, method and status code.",
		}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		grpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "contrast_coordinator_grpc_server_handling_seconds",
			Help:    "Duration of gRPC calls handled by the server, by service and method.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}, []string{"grpc_service", "grpc_method"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "contrast_build_info",
		Help: "Build information of the running binary; always 1.",
	}, []string{"component", "version", "goversion"})
	goVersion := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	buildInfo.WithLabelValues("coordinator", version, goVersion).Set(1)
	m.Registry.MustRegister(m.ManifestGeneration, m.RecoveryMode, m.Attestations, m.CertificatesIssued,
		m.ManifestUpdates, m.CollateralFetches, m.PeerRecoveries, m.HeadRefreshes, m.grpcRequests, m.grpcDuration, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Attestation counts one mesh API attestation outcome.
func (m *Metrics) Attestation(result, reason string) {
	if m == nil {
		return
	}
	m.Attestations.WithLabelValues(result, reason).Inc()
}

// ObserveFetch implements certcache.Observer.
func (m *Metrics) ObserveFetch(source certcache.Source, result certcache.FetchResult) {
	if m == nil {
		return
	}
	m.CollateralFetches.WithLabelValues(string(source), string(result)).Inc()
}

// PeerRecovery counts one peer recovery attempt.
func (m *Metrics) PeerRecovery(role, result string) {
	if m == nil {
		return
	}
	m.PeerRecoveries.WithLabelValues(role, result).Inc()
}

func splitMethod(full string) (string, string) {
	// full is "/package.Service/Method".
	for i := len(full) - 1; i > 0; i-- {
		if full[i] == '/' {
			return full[1:i], full[i+1:]
		}
	}
	return "unknown", "unknown"
}

// UnaryServerInterceptor records gRPC server metrics. Method names come from
// the registered services only, so the label set is bounded.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		svc, method := splitMethod(info.FullMethod)
		m.grpcRequests.WithLabelValues(svc, method, status.Code(err).String()).Inc()
		m.grpcDuration.WithLabelValues(svc, method).Observe(time.Since(start).Seconds())
		return resp, err
	}
}
