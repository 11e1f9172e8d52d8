// Package meshconfig parses the service-mesh annotations of a pod
// (contrast.cc/servicemesh-ingress, -egress, -admin-port and
// contrast.cc/servicemesh). The admission webhook and the mesh proxy sidecar
// use this one parser, so both read the same syntax the same way.
//
// Syntax (that of the original Contrast): entries are joined by "##".
// Ingress entries are name#port#false (TLS with the mesh certificate, no
// client certificate required) or name#port#true (no TLS, not redirected);
// every other inbound port requires mTLS. Egress entries are
// name#127.x.y.z:port#remote-host:port, a loopback listener that opens mTLS to
// the remote. The admin port is a port number.
package meshconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Annotation names.
const (
	AnnotationIngress   = "contrast.cc/servicemesh-ingress"
	AnnotationEgress    = "contrast.cc/servicemesh-egress"
	AnnotationAdminPort = "contrast.cc/servicemesh-admin-port"
	// AnnotationServiceMesh set to "disabled" leaves the mesh proxy out.
	AnnotationServiceMesh = "contrast.cc/servicemesh"

	// LegacyPrefix is the prefix of the original Contrast annotation names,
	// accepted as aliases (contrast.edgeless.systems/servicemesh-ingress, ...).
	LegacyPrefix = "contrast.edgeless.systems/servicemesh-"
)

// Values of AnnotationServiceMesh.
const (
	ServiceMeshEnabled  = "enabled"
	ServiceMeshDisabled = "disabled"
)

// Environment variables through which the webhook hands the parsed
// configuration, in canonical form, to the mesh proxy.
const (
	EnvIngress   = "CONTRAST_SERVICEMESH_INGRESS"
	EnvEgress    = "CONTRAST_SERVICEMESH_EGRESS"
	EnvAdminPort = "CONTRAST_SERVICEMESH_ADMIN_PORT"
)

const entrySep = "##"

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("malformed service-mesh annotation")

// Error is a parse error. It names the annotation and quotes the entry.
type Error struct {
	// Annotation is the annotation (or environment variable) name.
	Annotation string
	// Entry is the offending entry ("" when the error concerns the whole value).
	Entry  string
	Reason string
}

func (e *Error) Error() string {
	if e.Entry == "" {
		return fmt.Sprintf("annotation %s: %s", e.Annotation, e.Reason)
	}
	return fmt.Sprintf("annotation %s: entry %q: %s", e.Annotation, e.Entry, e.Reason)
}

// Unwrap makes errors.Is(err, ErrMalformed) true.
func (e *Error) Unwrap() error { return ErrMalformed }

// IngressMode is how the proxy treats an inbound port listed in the ingress
// annotation. Ports not listed require mTLS with a mesh client certificate.
type IngressMode int

const (
	// IngressTLS terminates TLS with the mesh certificate without requiring
	// a client certificate (public frontends): name#port#false.
	IngressTLS IngressMode = iota + 1
	// IngressPlain leaves the port alone (no TLS, not redirected): name#port#true.
	IngressPlain
)

func (m IngressMode) String() string {
	switch m {
	case IngressTLS:
		return "tls"
	case IngressPlain:
		return "plain"
	default:
		return "invalid"
	}
}

// Ingress is one ingress entry.
type Ingress struct {
	Name string
	Port uint16
	Mode IngressMode
}

func (i Ingress) String() string {
	return fmt.Sprintf("%s#%d#%t", i.Name, i.Port, i.Mode == IngressPlain)
}

// Egress is one egress entry.
type Egress struct {
	Name string
	// Listen is the loopback address the proxy listens on.
	Listen netip.AddrPort
	// Remote is host:port the proxy connects to with mTLS.
	Remote string
}

func (e Egress) String() string { return e.Name + "#" + e.Listen.String() + "#" + e.Remote }

// Config is the service-mesh configuration of a pod.
type Config struct {
	// Disabled is true when contrast.cc/servicemesh is "disabled": no proxy.
	Disabled bool
	Ingress  []Ingress
	Egress   []Egress
	// AdminPort is the proxy's admin port, 0 for none.
	AdminPort uint16
	// Probes are the kubelet probes the proxy runs on ProbePort (from
	// EnvProbes; the webhook computes them from the pod's probes, not from
	// an annotation).
	Probes []Probe
}

// IngressString returns the ingress entries in canonical form.
func (c *Config) IngressString() string { return join(c.Ingress) }

// EgressString returns the egress entries in canonical form.
func (c *Config) EgressString() string { return join(c.Egress) }

// AdminPortString returns the admin port, "" for none.
func (c *Config) AdminPortString() string {
	if c.AdminPort == 0 {
		return ""
	}
	return strconv.Itoa(int(c.AdminPort))
}

func join[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, entrySep)
}

// Parse reads the service-mesh configuration from pod annotations. The
// original contrast.edgeless.systems/servicemesh-* names are aliases; giving
// both names of one annotation with different values is an error.
func Parse(annotations map[string]string) (*Config, error) {
	get := func(canonical string) (string, bool, error) {
		alias := LegacyPrefix + strings.TrimPrefix(canonical, "contrast.cc/servicemesh-")
		v, ok := annotations[canonical]
		av, aok := annotations[alias]
		switch {
		case ok && aok && v != av:
			return "", false, &Error{Annotation: canonical, Reason: fmt.Sprintf("conflicts with its alias %s", alias)}
		case ok:
			return v, true, nil
		case aok:
			return av, true, nil
		}
		return "", false, nil
	}
	cfg := &Config{}
	switch v := annotations[AnnotationServiceMesh]; v {
	case "", ServiceMeshEnabled:
	case ServiceMeshDisabled:
		cfg.Disabled = true
	default:
		return nil, &Error{Annotation: AnnotationServiceMesh, Entry: v, Reason: fmt.Sprintf("must be %q or %q", ServiceMeshEnabled, ServiceMeshDisabled)}
	}
	ing, hasIng, err := get(AnnotationIngress)
	if err != nil {
		return nil, err
	}
	eg, hasEg, err := get(AnnotationEgress)
	if err != nil {
		return nil, err
	}
	admin, hasAdmin, err := get(AnnotationAdminPort)
	if err != nil {
		return nil, err
	}
	if cfg.Disabled {
		for _, a := range []struct {
			name string
			set  bool
		}{{AnnotationIngress, hasIng}, {AnnotationEgress, hasEg}, {AnnotationAdminPort, hasAdmin}} {
			if a.set {
				return nil, &Error{Annotation: a.name, Reason: fmt.Sprintf("set although %s is %q", AnnotationServiceMesh, ServiceMeshDisabled)}
			}
		}
		return cfg, nil
	}
	return parseValues(cfg, ing, eg, admin, AnnotationIngress, AnnotationEgress, AnnotationAdminPort)
}

// ParseEnv reads the configuration the webhook passed to the proxy through
// the Env* environment variables.
func ParseEnv(getenv func(string) string) (*Config, error) {
	cfg, err := parseValues(&Config{}, getenv(EnvIngress), getenv(EnvEgress), getenv(EnvAdminPort), EnvIngress, EnvEgress, EnvAdminPort)
	if err != nil {
		return nil, err
	}
	if cfg.Probes, err = ParseProbes(getenv(EnvProbes)); err != nil {
		return nil, err
	}
	if len(cfg.Probes) > 0 {
		if cfg.AdminPort == ProbePort {
			return nil, &Error{Annotation: EnvAdminPort, Entry: cfg.AdminPortString(), Reason: fmt.Sprintf("port %d is the proxy's probe port", ProbePort)}
		}
		for _, i := range cfg.Ingress {
			if i.Port == ProbePort {
				return nil, &Error{Annotation: EnvIngress, Entry: i.String(), Reason: fmt.Sprintf("port %d is the proxy's probe port", ProbePort)}
			}
		}
	}
	return cfg, nil
}

func parseValues(cfg *Config, ing, eg, admin, ingName, egName, adminName string) (*Config, error) {
	var err error
	if cfg.Ingress, err = ParseIngress(ing); err != nil {
		return nil, rename(err, ingName)
	}
	if cfg.Egress, err = ParseEgress(eg); err != nil {
		return nil, rename(err, egName)
	}
	if admin != "" {
		p, err := parsePort(admin)
		if err != nil {
			return nil, &Error{Annotation: adminName, Entry: admin, Reason: err.Error()}
		}
		cfg.AdminPort = p
		for _, i := range cfg.Ingress {
			if i.Port == p {
				return nil, &Error{Annotation: adminName, Entry: admin, Reason: fmt.Sprintf("port is also the ingress port of %q", i.Name)}
			}
		}
	}
	return cfg, nil
}

func rename(err error, name string) error {
	var e *Error
	if errors.As(err, &e) {
		e.Annotation = name
	}
	return err
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)

func checkName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("name %q must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", name)
	}
	return nil
}

func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 || strconv.FormatUint(p, 10) != s {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(p), nil
}

func splitEntries(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, entrySep)
}

// ParseIngress parses the value of the ingress annotation.
func ParseIngress(v string) ([]Ingress, error) {
	var out []Ingress
	for _, entry := range splitEntries(v) {
		fail := func(format string, args ...any) error {
			return &Error{Annotation: AnnotationIngress, Entry: entry, Reason: fmt.Sprintf(format, args...)}
		}
		if entry == "" {
			return nil, fail("empty entry (stray %q)", entrySep)
		}
		f := strings.Split(entry, "#")
		if len(f) != 3 {
			return nil, fail("want name#port#true (no TLS) or name#port#false (TLS without client certificate)")
		}
		if err := checkName(f[0]); err != nil {
			return nil, fail("%v", err)
		}
		port, err := parsePort(f[1])
		if err != nil {
			return nil, fail("%v", err)
		}
		var mode IngressMode
		switch f[2] {
		case "true":
			mode = IngressPlain
		case "false":
			mode = IngressTLS
		default:
			return nil, fail("third field %q must be true (no TLS) or false (TLS without client certificate)", f[2])
		}
		for _, prev := range out {
			if prev.Name == f[0] {
				return nil, fail("duplicate name %q", f[0])
			}
			if prev.Port == port {
				return nil, fail("port %d already listed by %q", port, prev.Name)
			}
		}
		out = append(out, Ingress{Name: f[0], Port: port, Mode: mode})
	}
	return out, nil
}

// ParseEgress parses the value of the egress annotation.
func ParseEgress(v string) ([]Egress, error) {
	var out []Egress
	for _, entry := range splitEntries(v) {
		fail := func(format string, args ...any) error {
			return &Error{Annotation: AnnotationEgress, Entry: entry, Reason: fmt.Sprintf(format, args...)}
		}
		if entry == "" {
			return nil, fail("empty entry (stray %q)", entrySep)
		}
		f := strings.Split(entry, "#")
		if len(f) != 3 {
			return nil, fail("want name#127.x.y.z:port#remote-host:port")
		}
		if err := checkName(f[0]); err != nil {
			return nil, fail("%v", err)
		}
		lhost, lport, err := net.SplitHostPort(f[1])
		if err != nil {
			return nil, fail("listen address %q: want 127.x.y.z:port", f[1])
		}
		addr, err := netip.ParseAddr(lhost)
		if err != nil || !addr.Is4() || !addr.IsLoopback() || addr.String() != lhost {
			return nil, fail("listen address %q: must be an IPv4 loopback address 127.x.y.z", f[1])
		}
		lp, err := parsePort(lport)
		if err != nil {
			return nil, fail("listen address %q: %v", f[1], err)
		}
		rhost, rport, err := net.SplitHostPort(f[2])
		if err != nil || rhost == "" {
			return nil, fail("remote %q: want host:port", f[2])
		}
		if err := checkHost(rhost); err != nil {
			return nil, fail("remote %q: %v", f[2], err)
		}
		if _, err := parsePort(rport); err != nil {
			return nil, fail("remote %q: %v", f[2], err)
		}
		listen := netip.AddrPortFrom(addr, lp)
		if i := slices.IndexFunc(out, func(e Egress) bool { return e.Name == f[0] }); i >= 0 {
			return nil, fail("duplicate name %q", f[0])
		}
		if i := slices.IndexFunc(out, func(e Egress) bool { return e.Listen == listen }); i >= 0 {
			return nil, fail("listen address %s already used by %q", listen, out[i].Name)
		}
		out = append(out, Egress{Name: f[0], Listen: listen, Remote: f[2]})
	}
	return out, nil
}

var dnsLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// checkHost accepts an IP address or a DNS name (RFC 1123).
func checkHost(h string) error {
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("host name longer than 253 characters")
	}
	for _, l := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if !dnsLabel.MatchString(l) {
			return fmt.Errorf("host %q is neither an IP address nor a DNS name", h)
		}
	}
	return nil
}
