package meshconfig

import (
	"fmt"
	"regexp"
	"strings"
)

// probeNamePattern: a container name (up to 63) and "-readiness".
var probeNamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,78}[A-Za-z0-9])?$`)

// Kubelet probes of a port the proxy redirects cannot pass it: an HTTP or
// TCP probe from the node reaches the proxy's ingress, which asks for TLS
// (and a mesh client certificate). As Istio does, the webhook rewrites such
// a probe into an HTTP GET of ProbePathPrefix+name on the proxy's ProbePort,
// which is not redirected, and hands the original probe to the proxy in
// EnvProbes; the proxy runs it against the application on localhost and
// answers 200 or 503.
const (
	// EnvProbes holds the probes the proxy runs, in canonical form.
	EnvProbes = "CONTRAST_SERVICEMESH_PROBES"
	// ProbePort is the proxy's plain HTTP port for rewritten probes; it is
	// never redirected and reserved in every pod with the proxy.
	ProbePort uint16 = 15021
	// ProbePathPrefix is the path prefix of a rewritten probe.
	ProbePathPrefix = "/app-health/"
)

// ProbeKind is how the proxy checks the application.
type ProbeKind string

// Probe kinds, as in a Kubernetes probe.
const (
	ProbeHTTP  ProbeKind = "http"
	ProbeHTTPS ProbeKind = "https"
	ProbeTCP   ProbeKind = "tcp"
)

// Probe is one probe the proxy runs for the kubelet: name#http#port#path,
// name#https#port#path or name#tcp#port.
type Probe struct {
	// Name is "<container>-<liveness|readiness|startup>", the last segment
	// of the rewritten probe's path.
	Name string
	Kind ProbeKind
	// Port is the application's port on localhost.
	Port uint16
	// Path is the HTTP path with its query ("/healthz?full=1"); empty for tcp.
	Path string
}

func (p Probe) String() string {
	if p.Kind == ProbeTCP {
		return fmt.Sprintf("%s#%s#%d", p.Name, p.Kind, p.Port)
	}
	return fmt.Sprintf("%s#%s#%d#%s", p.Name, p.Kind, p.Port, p.Path)
}

// ProbesString returns the probe entries in canonical form.
func (c *Config) ProbesString() string { return join(c.Probes) }

// CheckProbePath returns an error when path cannot be carried in a probe
// entry: it must start with "/", hold no '#', space or control character,
// and be at most 1024 bytes.
func CheckProbePath(path string) error {
	switch {
	case !strings.HasPrefix(path, "/"):
		return fmt.Errorf("path %q must start with /", path)
	case len(path) > 1024:
		return fmt.Errorf("path of %d bytes is longer than 1024", len(path))
	case strings.ContainsAny(path, "# \t"):
		return fmt.Errorf("path %q must not contain '#' or white space", path)
	}
	for _, r := range path {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("path %q must not contain control characters", path)
		}
	}
	return nil
}

// ParseProbes parses the value of EnvProbes. Names are unique.
func ParseProbes(v string) ([]Probe, error) {
	var out []Probe
	seen := map[string]bool{}
	for _, e := range splitEntries(v) {
		bad := func(format string, args ...any) error {
			return &Error{Annotation: EnvProbes, Entry: e, Reason: fmt.Sprintf(format, args...)}
		}
		parts := strings.SplitN(e, "#", 4)
		if len(parts) < 3 {
			return nil, bad("want name#kind#port[#path]")
		}
		p := Probe{Name: parts[0], Kind: ProbeKind(parts[1])}
		if !probeNamePattern.MatchString(p.Name) {
			return nil, bad("name %q must be 1-80 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", p.Name)
		}
		if seen[p.Name] {
			return nil, bad("name %q appears twice", p.Name)
		}
		seen[p.Name] = true
		port, err := parsePort(parts[2])
		if err != nil {
			return nil, bad("%v", err)
		}
		p.Port = port
		switch p.Kind {
		case ProbeTCP:
			if len(parts) != 3 {
				return nil, bad("a tcp probe has no path")
			}
		case ProbeHTTP, ProbeHTTPS:
			if len(parts) != 4 {
				return nil, bad("an %s probe needs a path", p.Kind)
			}
			if err := CheckProbePath(parts[3]); err != nil {
				return nil, bad("%v", err)
			}
			p.Path = parts[3]
		default:
			return nil, bad("kind %q: want http, https or tcp", p.Kind)
		}
		out = append(out, p)
	}
	return out, nil
}
