package manifest

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/attest/tdx"
)

// FieldError is one problem of a manifest, at a JSON path such as
// `ReferenceValues.snp[0].MinimumTCB.SNPVersion`.
type FieldError struct {
	Path string
	Msg  string
}

func (e FieldError) String() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// ValidationError lists every problem found in a manifest.
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		parts[i] = fe.String()
	}
	return "invalid manifest: " + strings.Join(parts, "; ")
}

type collector struct{ errs []FieldError }

func (c *collector) add(path, format string, args ...any) {
	c.errs = append(c.errs, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks every field and returns a *ValidationError listing all
// problems, sorted by path, or nil.
func (m *Manifest) Validate() error {
	var c collector
	m.validatePolicies(&c)
	m.validateReferenceValues(&c)
	for i, k := range m.WorkloadOwnerPubKeys {
		if _, err := ParsePublicKey(k); err != nil {
			c.add(fmt.Sprintf("WorkloadOwnerPubKeys[%d]", i), "%v", err)
		}
	}
	for i, d := range m.WorkloadOwnerKeyDigests {
		if b, err := d.Bytes(); err != nil || len(b) != PolicyHashSize {
			c.add(fmt.Sprintf("WorkloadOwnerKeyDigests[%d]", i), "must be %d hex-encoded bytes (SHA-256)", PolicyHashSize)
		}
	}
	for i, k := range m.SeedshareOwnerPubKeys {
		if _, err := ParseSeedShareOwnerKey(k); err != nil {
			c.add(fmt.Sprintf("SeedshareOwnerPubKeys[%d]", i), "%v", err)
		}
	}
	m.validateAcceptUnenforced(&c)
	if len(c.errs) == 0 {
		return nil
	}
	sort.SliceStable(c.errs, func(i, j int) bool { return c.errs[i].Path < c.errs[j].Path })
	return &ValidationError{Errors: c.errs}
}

func (m *Manifest) validatePolicies(c *collector) {
	coordinators := 0
	for h, e := range m.Policies {
		path := fmt.Sprintf("Policies[%s]", h)
		if b, err := h.Bytes(); err != nil || len(b) != PolicyHashSize || strings.ToLower(string(h)) != string(h) {
			c.add(path, "policy hash must be %d lowercase hex characters (SHA-256)", 2*PolicyHashSize)
		}
		switch e.Role {
		case "":
		case RoleCoordinator:
			coordinators++
		default:
			c.add(path+".Role", "unknown role %q (want empty or %q)", e.Role, RoleCoordinator)
		}
		for i, san := range e.SANs {
			if err := ValidateSAN(san); err != nil {
				c.add(fmt.Sprintf("%s.SANs[%d]", path, i), "%v", err)
			}
		}
		if len(e.WorkloadSecretID) > 256 {
			c.add(path+".WorkloadSecretID", "longer than 256 characters")
		}
	}
	if coordinators == 0 {
		c.add("Policies", "no policy with Role %q", RoleCoordinator)
	}
}

func (m *Manifest) validateReferenceValues(c *collector) {
	rv := m.ReferenceValues
	if len(rv.SNP) == 0 && len(rv.TDX) == 0 {
		c.add("ReferenceValues", "no reference values for any platform")
	}
	var real, simulated []string
	for i := range rv.SNP {
		path := fmt.Sprintf("ReferenceValues.snp[%d]", i)
		validateSNP(c, path, &rv.SNP[i])
		if rv.SNP[i].Simulated() {
			simulated = append(simulated, path)
		} else {
			real = append(real, path)
		}
	}
	for i := range rv.TDX {
		path := fmt.Sprintf("ReferenceValues.tdx[%d]", i)
		validateTDX(c, path, &rv.TDX[i])
		if rv.TDX[i].Simulated() {
			simulated = append(simulated, path)
		} else {
			real = append(real, path)
		}
	}
	if len(real) > 0 && len(simulated) > 0 {
		c.add("ReferenceValues", "mixes simulated (%s) and real (%s) platforms", strings.Join(simulated, ", "), strings.Join(real, ", "))
	}
}

// validateSNP and validateTDX report every problem the attest package finds
// in an entry (it reports all of them, absent required fields as
// "missing"), at its path under the entry's.
func validateSNP(c *collector, path string, r *snp.ReferenceValues) {
	c.addAttest(path, r.Validate())
}

func validateTDX(c *collector, path string, r *tdx.ReferenceValues) {
	c.addAttest(path, r.Validate())
}

func (c *collector) addAttest(path string, err error) {
	for _, fe := range attest.FieldErrors(err) {
		c.add(attest.JoinPath(path, fe.Path), "%v", fe.Err)
	}
}

// Unenforced lists the reference-value fields the manifest sets that the
// evidence cannot show, so the validators do not check them (see the
// attest package: SNP CPUs and APEIP, TDX CPUs), with what that means.
// Sorted by path. The original Contrast's manifests may set them; they
// parse, but the Coordinator refuses them unless AcceptUnenforced lists
// them (CheckEnforceable).
func (m *Manifest) Unenforced() []FieldError {
	var out []FieldError
	for i := range m.ReferenceValues.SNP {
		for _, fe := range m.ReferenceValues.SNP[i].Unenforced() {
			out = append(out, FieldError{Path: attest.JoinPath(fmt.Sprintf("ReferenceValues.snp[%d]", i), fe.Path), Msg: fe.Err.Error()})
		}
	}
	for i := range m.ReferenceValues.TDX {
		for _, fe := range m.ReferenceValues.TDX[i].Unenforced() {
			out = append(out, FieldError{Path: attest.JoinPath(fmt.Sprintf("ReferenceValues.tdx[%d]", i), fe.Path), Msg: fe.Err.Error()})
		}
	}
	return out
}

// validateAcceptUnenforced refuses AcceptUnenforced entries that name no
// field Unenforced lists: a misspelled or stale acceptance is an error, not
// silently nothing.
func (m *Manifest) validateAcceptUnenforced(c *collector) {
	unenforced := map[string]bool{}
	for _, fe := range m.Unenforced() {
		unenforced[fe.Path] = true
	}
	for i, p := range m.AcceptUnenforced {
		if !unenforced[p] {
			c.add(fmt.Sprintf("AcceptUnenforced[%d]", i), "%q is not a field this manifest sets that the Coordinator cannot enforce", p)
		}
	}
}

// CheckEnforceable returns a *ValidationError naming every field
// Unenforced lists that AcceptUnenforced does not: a manifest that asks
// for something the Coordinator cannot check is refused rather than
// accepted silently. SetManifest calls it after Parse.
func (m *Manifest) CheckEnforceable() error {
	var c collector
	for _, fe := range m.Unenforced() {
		if !slices.Contains(m.AcceptUnenforced, fe.Path) {
			c.add(fe.Path, "set, but the Coordinator cannot enforce it (%s); remove it, or list %q in AcceptUnenforced to accept it as a note", fe.Msg, fe.Path)
		}
	}
	if len(c.errs) == 0 {
		return nil
	}
	return &ValidationError{Errors: c.errs}
}

// Accepted returns the fields Unenforced lists that AcceptUnenforced
// accepts, for the Coordinator to report.
func (m *Manifest) Accepted() []FieldError {
	var out []FieldError
	for _, fe := range m.Unenforced() {
		if slices.Contains(m.AcceptUnenforced, fe.Path) {
			out = append(out, fe)
		}
	}
	return out
}

// ValidateSAN checks the syntax of a subject alternative name: a DNS name
// (optionally with a leading "*." wildcard label, or "*" alone, as the
// original Contrast generates), an IPv4 or IPv6 address, or an absolute URI
// (RFC 3986: a scheme, ":", and more; e.g. `spiffe://cluster.local/ns/a`,
// `urn:uuid:…`). Anything with a ":" that is not an IP address is a URI.
func ValidateSAN(san string) error {
	switch san {
	case "":
		return errors.New("empty SAN")
	case "*":
		return nil
	}
	if _, err := netip.ParseAddr(san); err == nil {
		if strings.Contains(san, "%") {
			return fmt.Errorf("IP SAN %q must not have a zone", san)
		}
		return nil
	}
	if strings.Contains(san, ":") {
		return validateURI(san)
	}
	if err := validateDNSName(san, true); err != nil {
		return fmt.Errorf("invalid DNS SAN %q: %w", san, err)
	}
	return nil
}

// validateURI checks an absolute URI (RFC 3986 §4.3, with a fragment
// allowed as in a URI SAN). An authority's host must be a DNS name or an IP
// literal, as crypto/x509 requires of the SANs it parses.
func validateURI(uri string) error {
	scheme, rest, _ := strings.Cut(uri, ":")
	if !validScheme(scheme) {
		return fmt.Errorf("invalid URI SAN %q: %q is not a scheme (a letter, then letters, digits, '+', '-', '.')", uri, scheme)
	}
	if rest == "" {
		return fmt.Errorf("invalid URI SAN %q: nothing after the scheme", uri)
	}
	if strings.Trim(rest, "0123456789") == "" {
		return fmt.Errorf("invalid SAN %q: looks like host:port, but a SAN has no port (a DNS name is just the host)", uri)
	}
	for i := 0; i < len(uri); i++ {
		ch := uri[i]
		switch {
		case ch == '%':
			if i+2 >= len(uri) || !isHex(uri[i+1]) || !isHex(uri[i+2]) {
				return fmt.Errorf("invalid URI SAN %q: '%%' not followed by two hex digits", uri)
			}
		case !uriChar(ch):
			return fmt.Errorf("invalid URI SAN %q: character %q not allowed (percent-encode it)", uri, ch)
		}
	}
	u, err := url.Parse(uri)
	if err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // *url.Error repeats the URI
		}
		return fmt.Errorf("invalid URI SAN %q: %w", uri, err)
	}
	if strings.HasPrefix(rest, "//") {
		if u.Host == "" && u.Path == "" && u.RawQuery == "" && u.Fragment == "" {
			return fmt.Errorf("invalid URI SAN %q: neither host nor path", uri)
		}
		if host := u.Hostname(); host != "" && !strings.HasPrefix(u.Host, "[") {
			if err := validateDNSName(host, false); err != nil {
				return fmt.Errorf("invalid URI SAN %q: host %w", uri, err)
			}
		}
	}
	return nil
}

func validScheme(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isAlpha(s[i]) && !isDigit(s[i]) && s[i] != '+' && s[i] != '-' && s[i] != '.' {
			return false
		}
	}
	return true
}

// uriChar reports whether ch may appear in a URI unencoded (RFC 3986
// unreserved, gen-delims, sub-delims).
func uriChar(ch byte) bool {
	return isAlpha(ch) || isDigit(ch) || strings.IndexByte("-._~:/?#[]@!$&'()*+,;=", ch) >= 0
}

func isAlpha(ch byte) bool { return ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' }
func isDigit(ch byte) bool { return ch >= '0' && ch <= '9' }
func isHex(ch byte) bool   { return isDigit(ch) || ch >= 'a' && ch <= 'f' || ch >= 'A' && ch <= 'F' }

// validateDNSName checks a DNS name; wildcard allows a leading "*." label.
func validateDNSName(name string, wildcard bool) error {
	if len(name) > 253 {
		return fmt.Errorf("%q is longer than 253 characters", name)
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if wildcard && l == "*" && i == 0 && len(labels) > 1 {
			continue
		}
		if l == "" || len(l) > 63 {
			return fmt.Errorf("%q: label %d is empty or longer than 63 characters", name, i)
		}
		for j := 0; j < len(l); j++ {
			ch := l[j]
			ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_'
			if !ok {
				return fmt.Errorf("%q: character %q not allowed", name, ch)
			}
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%q: label %q starts or ends with '-'", name, l)
		}
	}
	return nil
}
