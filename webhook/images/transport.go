package images

import (
	"net/http"
	"strings"
)

// httpsOnly refuses requests that are not HTTPS, except to the hosts
// configured as insecure (mirrors with Insecure, RegistryConfig.Insecure).
//
// go-containerregistry falls back to plain HTTP on its own for hosts that
// look local (localhost, 127.0.0.0/8, ::1, 10/8, 172.16/12, 192.168/16 and
// *.local): for registry hosts written in pods that would let anyone who can
// create a pod talk plain HTTP to internal services. Checking the final
// request also covers token realms and redirects.
type httpsOnly struct {
	next     http.RoundTripper
	insecure map[string]bool // host[:port], lower case
}

func newHTTPSOnly(next http.RoundTripper, insecureHosts []string) *httpsOnly {
	t := &httpsOnly{next: next, insecure: map[string]bool{}}
	for _, h := range insecureHosts {
		t.insecure[strings.ToLower(h)] = true
	}
	return t
}

// RoundTrip implements http.RoundTripper.
func (t *httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	allowed := req.URL.Scheme == "https" || req.URL.Scheme == "http" && t.insecure[strings.ToLower(req.URL.Host)]
	if !allowed {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, errPlainHTTP
	}
	return t.next.RoundTrip(req)
}
