package proxy

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Label values (docs/metrics.md). Every label has this bounded set.
const (
	DirectionIngress = "ingress"
	DirectionEgress  = "egress"

	// Connection results.
	ResultForwarded       = "forwarded"        // handshake done, upstream connected
	ResultHandshakeFailed = "handshake-failed" // see handshake_failures_total
	ResultDialFailed      = "dial-failed"      // upstream unreachable
	ResultRefused         = "refused"          // ingress: no original destination, or a port the proxy does not serve

	FlowRequest  = "request"  // from the connection's initiator to its target
	FlowResponse = "response" // back
)

// Handshake failure reasons.
const (
	ReasonNoClientCertificate = "no-client-certificate"
	ReasonUnknownAuthority    = "unknown-authority"
	ReasonNameMismatch        = "name-mismatch"
	ReasonExpired             = "expired"
	ReasonBadCertificate      = "bad-certificate"
	ReasonRejectedByPeer      = "rejected-by-peer"
	ReasonProtocol            = "protocol"
	ReasonTimeout             = "timeout"
	ReasonConnectionClosed    = "connection-closed"
	ReasonOther               = "other"
)

var (
	directions = []string{DirectionIngress, DirectionEgress}
	results    = []string{ResultForwarded, ResultHandshakeFailed, ResultDialFailed, ResultRefused}
	reasons    = []string{ReasonNoClientCertificate, ReasonUnknownAuthority, ReasonNameMismatch, ReasonExpired,
		ReasonBadCertificate, ReasonRejectedByPeer, ReasonProtocol, ReasonTimeout, ReasonConnectionClosed, ReasonOther}
)

// Metrics are the proxy's collectors, registered on Registry. A nil
// *Metrics records nothing.
type Metrics struct {
	Registry *prometheus.Registry

	connections       *prometheus.CounterVec
	bytes             *prometheus.CounterVec
	handshakeFailures *prometheus.CounterVec
	active            *prometheus.GaugeVec
	reloads           *prometheus.CounterVec
	notAfter          prometheus.Gauge
}

// NewMetrics creates and registers the metrics; version is reported by
// contrast_build_info.
func NewMetrics(version string) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_meshproxy_connections_total",
			Help: "Accepted connections by direction (ingress, egress) and result (forwarded, handshake-failed, dial-failed, refused).",
		}, []string{"direction", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_meshproxy_bytes_total",
			Help: "Payload bytes forwarded by direction (ingress, egress) and flow (request: from the initiator, response: back).",
		}, []string{"direction", "flow"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_meshproxy_handshake_failures_total",
			Help: "Failed TLS handshakes by direction and reason (no-client-certificate, unknown-authority, name-mismatch, expired, bad-certificate, rejected-by-peer, protocol, timeout, connection-closed, other).",
		}, []string{"direction", "reason"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "contrast_meshproxy_active_connections",
			Help: "Connections being handled, by direction.",
		}, []string{"direction"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "contrast_meshproxy_certificate_loads_total",
			Help: "Loads of changed mesh certificate files by result (ok, invalid).",
		}, []string{"result"}),
		notAfter: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "contrast_meshproxy_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the mesh certificate in use, as a Unix timestamp (0 before the first load).",
		}),
	}
	for _, d := range directions {
		for _, r := range results {
			m.connections.WithLabelValues(d, r)
		}
		for _, r := range reasons {
			m.handshakeFailures.WithLabelValues(d, r)
		}
		m.bytes.WithLabelValues(d, FlowRequest)
		m.bytes.WithLabelValues(d, FlowResponse)
		m.active.WithLabelValues(d)
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("invalid")
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "contrast_build_info",
		Help: "Always 1; identifies the running build.",
	}, []string{"component", "version", "goversion"})
	buildInfo.WithLabelValues("mesh-proxy", version, runtime.Version()).Set(1)
	m.Registry.MustRegister(m.connections, m.bytes, m.handshakeFailures, m.active, m.reloads, m.notAfter, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) connection(direction, result string) {
	if m != nil {
		m.connections.WithLabelValues(direction, result).Inc()
	}
}

func (m *Metrics) handshakeFailure(direction, reason string) {
	if m != nil {
		m.handshakeFailures.WithLabelValues(direction, reason).Inc()
	}
}

// byteCounter returns a function that counts bytes of one direction and
// flow, nil for a nil *Metrics.
func (m *Metrics) byteCounter(direction, flow string) func(int) {
	if m == nil {
		return nil
	}
	c := m.bytes.WithLabelValues(direction, flow)
	return func(n int) { c.Add(float64(n)) }
}

func (m *Metrics) activeGauge(direction string) prometheus.Gauge {
	if m == nil {
		return nil
	}
	return m.active.WithLabelValues(direction)
}

func (m *Metrics) certificateReload(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
	} else {
		m.reloads.WithLabelValues("invalid").Inc()
	}
}

func (m *Metrics) certificateNotAfter(t time.Time) {
	if m != nil {
		m.notAfter.Set(float64(t.Unix()))
	}
}
