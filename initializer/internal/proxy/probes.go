package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

// probeTimeout bounds one probe when the kubelet's request has no earlier
// deadline (the kubelet closes its request after the probe's
// timeoutSeconds, which ends the check too).
const probeTimeout = 30 * time.Second

// probeHandler answers the kubelet's rewritten probes (GET
// meshconfig.ProbePathPrefix+name) by running the original probe against
// the application on UpstreamHost, as the kubelet would have: 200 when it
// passes, 503 with the reason when not. It never touches the mesh
// certificate: the application's port is reached on loopback, which the
// redirect rules leave alone.
func (p *Proxy) probeHandler() http.Handler {
	mux := http.NewServeMux()
	for _, pr := range p.cfg.Mesh.Probes {
		mux.Handle("GET "+meshconfig.ProbePathPrefix+pr.Name, p.probe(pr))
	}
	return mux
}

func (p *Proxy) probe(pr meshconfig.Probe) http.HandlerFunc {
	target := net.JoinHostPort(p.cfg.UpstreamHost, strconv.Itoa(int(pr.Port)))
	transport := &http.Transport{
		// The kubelet does not verify an HTTPS probe's certificate
		// either; this is a liveness signal, not a trust decision.
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet's HTTPS probes
		DisableKeepAlives: true,
	}
	switch pr.Kind {
	case meshconfig.ProbeGRPC:
		// gRPC in plaintext: HTTP/2 with prior knowledge, as the
		// kubelet's insecure gRPC probe
		transport = &http.Transport{DisableKeepAlives: true, Protocols: new(http.Protocols)}
		transport.Protocols.SetUnencryptedHTTP2(true)
	case meshconfig.ProbeGRPCS:
		// gRPC over TLS (HTTP/2 only), unverified as the kubelet's
		transport.Protocols = new(http.Protocols)
		transport.Protocols.SetHTTP2(true)
	}
	client := &http.Client{
		Transport: transport,
		// The kubelet follows redirects only to the same host; a redirect
		// status counts as success, as for the kubelet.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		err := runProbe(ctx, client, pr, target)
		if err != nil {
			p.cfg.Logger.Debug("probe failed", "probe", pr.Name, "error", err)
			http.Error(w, fmt.Sprintf("probe %s: %v", pr.Name, err), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintf(w, "probe %s: ok\n", pr.Name)
	}
}

// probeUserAgent is the User-Agent of the proxy's probes unless the probe
// sets one (the kubelet sends kube-probe/<version> the same way).
const probeUserAgent = "contrast-mesh-proxy/probe"

// runProbe runs pr against target (host:port) as the kubelet would.
func runProbe(ctx context.Context, client *http.Client, pr meshconfig.Probe, target string) error {
	switch pr.Kind {
	case meshconfig.ProbeTCP:
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
		if err != nil {
			return err
		}
		return c.Close()
	case meshconfig.ProbeGRPC:
		return grpcHealthCheck(ctx, client, "http://"+target, pr.Service)
	case meshconfig.ProbeGRPCS:
		return grpcHealthCheck(ctx, client, "https://"+target, pr.Service)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, string(pr.Kind)+"://"+target+pr.Path, nil)
	if err != nil {
		return err
	}
	// the kubelet's request: the probe's headers, a default User-Agent and
	// "Accept: */*" unless the probe has its own (an empty Accept removes
	// it), and the Host header as the request's host
	for _, h := range pr.Headers {
		req.Header.Add(h.Name, h.Value)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", probeUserAgent)
	}
	if _, ok := req.Header["Accept"]; !ok {
		req.Header.Set("Accept", "*/*")
	} else if req.Header.Get("Accept") == "" {
		req.Header.Del("Accept")
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("the application answered %s", resp.Status)
	}
	return nil
}
