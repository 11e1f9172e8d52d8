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
	client := &http.Client{
		Transport: &http.Transport{
			// The kubelet does not verify an HTTPS probe's certificate
			// either; this is a liveness signal, not a trust decision.
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet's HTTPS probes
			DisableKeepAlives: true,
		},
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

// runProbe runs pr against target (host:port) as the kubelet would.
func runProbe(ctx context.Context, client *http.Client, pr meshconfig.Probe, target string) error {
	if pr.Kind == meshconfig.ProbeTCP {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, string(pr.Kind)+"://"+target+pr.Path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "contrast-mesh-proxy/probe")
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
