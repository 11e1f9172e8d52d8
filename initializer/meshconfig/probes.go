package meshconfig

import (
	"errors"
	"fmt"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// probeNamePattern: a container name (up to 63) and "-readiness".
var probeNamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,78}[A-Za-z0-9])?$`)

// Kubelet probes of a port the proxy redirects cannot pass it: an HTTP, TCP
// or gRPC probe from the node reaches the proxy's ingress, which asks for TLS
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
	// ProbeGRPC is the standard gRPC health check
	// (grpc.health.v1.Health/Check) in plaintext, as the kubelet's.
	ProbeGRPC ProbeKind = "grpc"
	// ProbeGRPCS is the gRPC health check over TLS without verifying the
	// certificate, as the kubelet's probe in mode TLS.
	ProbeGRPCS ProbeKind = "grpcs"
)

// Probe is one probe the proxy runs for the kubelet:
//
//	name#http#port#path[#headers]
//	name#https#port#path[#headers]
//	name#tcp#port
//	name#grpc#port[#service]
//	name#grpcs#port[#service]
//
// headers is a list of Name:value joined by ',' (canonical names, sorted by
// name, values of one name in their order); the values and the service are
// percent-encoded (see escapeValue), so neither can hold a separator. An
// empty header list or service is left out, never written empty.
type Probe struct {
	// Name is "<container>-<liveness|readiness|startup>", the last segment
	// of the rewritten probe's path.
	Name string
	Kind ProbeKind
	// Port is the application's port on localhost.
	Port uint16
	// Path is the HTTP path with its query ("/healthz?full=1"); empty for
	// the other kinds.
	Path string
	// Headers are the probe's custom HTTP headers (http and https only), in
	// canonical order (see CanonicalHeaders).
	Headers []ProbeHeader
	// Service is the gRPC health service name (grpc and grpcs only; "" is
	// the server's overall health).
	Service string
}

// ProbeHeader is one custom header of an HTTP probe, as in a Kubernetes
// probe's httpGet.httpHeaders.
type ProbeHeader struct {
	Name  string
	Value string
}

func (p Probe) String() string {
	s := fmt.Sprintf("%s#%s#%d", p.Name, p.Kind, p.Port)
	switch p.Kind {
	case ProbeHTTP, ProbeHTTPS:
		s += "#" + p.Path
		if len(p.Headers) > 0 {
			hs := make([]string, len(p.Headers))
			for i, h := range p.Headers {
				hs[i] = h.Name + ":" + escapeValue(h.Value)
			}
			s += "#" + strings.Join(hs, ",")
		}
	case ProbeGRPC, ProbeGRPCS:
		if p.Service != "" {
			s += "#" + escapeValue(p.Service)
		}
	}
	return s
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

// headerNamePattern is what the Kubernetes API server accepts as an
// httpHeaders name (a subset of the tokens net/http sends).
var headerNamePattern = regexp.MustCompile(`^[-A-Za-z0-9]+$`)

// CheckProbeHeader returns an error when a probe's custom header cannot be
// sent as the kubelet sends it: the name must be letters, digits and '-'
// (as the API server requires), the value free of control characters other
// than tab (net/http refuses to send those).
func CheckProbeHeader(name, value string) error {
	if !headerNamePattern.MatchString(name) {
		return fmt.Errorf("header name %q must be letters, digits and '-'", name)
	}
	for i := range len(value) {
		if b := value[i]; (b < 0x20 && b != '\t') || b == 0x7f {
			return fmt.Errorf("value of header %s must not contain control characters other than tab", name)
		}
	}
	return nil
}

// CanonicalHeaders returns hs in the form a probe entry carries them:
// names canonicalized as net/http sends them (textproto's canonical MIME
// header key, "x-host" becomes "X-Host"), sorted by name, values of one
// name in their original order. The kubelet sends the same request for hs
// and for CanonicalHeaders(hs), so a set of probes has one entry string.
// hs must pass CheckProbeHeader.
func CanonicalHeaders(hs []ProbeHeader) []ProbeHeader {
	if len(hs) == 0 {
		return nil
	}
	out := make([]ProbeHeader, len(hs))
	for i, h := range hs {
		out[i] = ProbeHeader{Name: textproto.CanonicalMIMEHeaderKey(h.Name), Value: h.Value}
	}
	slices.SortStableFunc(out, func(a, b ProbeHeader) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// CheckProbeService returns an error when service cannot be sent as a gRPC
// health check's service name, a protobuf string: it must be valid UTF-8.
func CheckProbeService(service string) error {
	if !utf8.ValidString(service) {
		return fmt.Errorf("service %q is not valid UTF-8", service)
	}
	return nil
}

// escapeValue percent-encodes every byte of s outside '!'..'~' and the
// bytes '"', '#', '$', '%', ',' and '\\' as %XX with upper-case hex digits;
// the other printable ASCII bytes stay. The result holds no separator of a
// probe entry, no "$(" or "$$" that the kubelet would expand in an
// environment value, needs no escaping in JSON, and is the only encoding
// unescapeValue accepts for s.
func escapeValue(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		if literalByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

func literalByte(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`"#$%,\`, rune(c))
}

// unescapeValue reverses escapeValue and refuses any other encoding of the
// same bytes (lower-case hex, an escaped byte that escapeValue keeps, a
// byte it would escape), so an entry has one spelling.
func unescapeValue(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if !literalByte(c) {
				return "", fmt.Errorf("byte %q must be percent-encoded", c)
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("%q: incomplete percent-encoding", s[i:])
		}
		hi, lo := unhex(s[i+1]), unhex(s[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("%q: want %%XX with upper-case hex digits", s[i:i+3])
		}
		d := byte(hi<<4 | lo) //nolint:gosec // G115: hi and lo are hex digits, 0-15
		if literalByte(d) {
			return "", fmt.Errorf("%q: %q is written as itself, not percent-encoded", s[i:i+3], d)
		}
		b.WriteByte(d)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// parseHeaders parses the header list of an http(s) probe entry.
func parseHeaders(v string) ([]ProbeHeader, error) {
	if v == "" {
		return nil, errors.New("empty header list (leave the field out)")
	}
	var out []ProbeHeader
	for h := range strings.SplitSeq(v, ",") {
		name, ev, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("header %q: want Name:value", h)
		}
		value, err := unescapeValue(ev)
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", name, err)
		}
		if err := CheckProbeHeader(name, value); err != nil {
			return nil, err
		}
		if c := textproto.CanonicalMIMEHeaderKey(name); c != name {
			return nil, fmt.Errorf("header name %q is not in canonical form %q", name, c)
		}
		if len(out) > 0 && out[len(out)-1].Name > name {
			return nil, fmt.Errorf("header %s after %s: want the names sorted", name, out[len(out)-1].Name)
		}
		out = append(out, ProbeHeader{Name: name, Value: value})
	}
	return out, nil
}

// ParseProbes parses the value of EnvProbes. Names are unique.
func ParseProbes(v string) ([]Probe, error) {
	var out []Probe
	seen := map[string]bool{}
	for _, e := range splitEntries(v) {
		bad := func(format string, args ...any) error {
			return &Error{Annotation: EnvProbes, Entry: e, Reason: fmt.Sprintf(format, args...)}
		}
		parts := strings.Split(e, "#")
		if len(parts) < 3 || len(parts) > 5 {
			return nil, bad("want name#kind#port[#path[#headers]] or name#grpc#port[#service]")
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
			if len(parts) < 4 {
				return nil, bad("an %s probe needs a path", p.Kind)
			}
			if err := CheckProbePath(parts[3]); err != nil {
				return nil, bad("%v", err)
			}
			p.Path = parts[3]
			if len(parts) == 5 {
				if p.Headers, err = parseHeaders(parts[4]); err != nil {
					return nil, bad("%v", err)
				}
			}
		case ProbeGRPC, ProbeGRPCS:
			if len(parts) > 4 {
				return nil, bad("want name#%s#port[#service]", p.Kind)
			}
			if len(parts) == 4 {
				if parts[3] == "" {
					return nil, bad("empty service (leave the field out)")
				}
				if p.Service, err = unescapeValue(parts[3]); err != nil {
					return nil, bad("service: %v", err)
				}
				if err := CheckProbeService(p.Service); err != nil {
					return nil, bad("%v", err)
				}
			}
		default:
			return nil, bad("kind %q: want http, https, tcp, grpc or grpcs", p.Kind)
		}
		out = append(out, p)
	}
	return out, nil
}
