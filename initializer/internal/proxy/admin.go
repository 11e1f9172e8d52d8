package proxy

import (
	"fmt"
	"net/http"
	"strings"
)

// check is a named health check; a nil error means healthy.
type check struct {
	name  string
	check func() error
}

// checks serves a probe endpoint as the Kubernetes API server does: 200 "ok"
// when every check passes, 503 with the failing checks otherwise; ?verbose
// lists them all.
func checks(cs []check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		failed := false
		for _, c := range cs {
			if err := c.check(); err != nil {
				failed = true
				fmt.Fprintf(&b, "[-]%s failed: %v\n", c.name, err)
			} else {
				fmt.Fprintf(&b, "[+]%s ok\n", c.name)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, b.String())
			fmt.Fprintln(w, "check failed")
			return
		}
		if _, verbose := r.URL.Query()["verbose"]; verbose {
			fmt.Fprint(w, b.String())
		}
		fmt.Fprintln(w, "ok")
	}
}
