// Package initenv is the contract between the admission webhook and the
// Initializer: the environment variables the webhook injects into the
// Initializer container and the one parser both sides use.
//
// Everything the Initializer trusts about the Coordinator arrives here: the
// Coordinator's policy hashes and the reference values its evidence must
// meet. The variables are part of the container spec, so the pod's Kata
// policy pins them and they are covered by the policy digest in HOST_DATA /
// MRCONFIGID: a webhook that lies about them changes the pod's policy hash,
// and the real Coordinator then refuses the pod.
package initenv

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/attest/tdx"
)

// Environment variables of the Initializer container.
const (
	// EnvCoordinatorHost is host:port of the Coordinator's mesh API.
	EnvCoordinatorHost = "COORDINATOR_HOST"
	// EnvPlatform selects the Initializer's own evidence: snp, tdx,
	// snp-simulated or tdx-simulated.
	EnvPlatform = "CONTRAST_PLATFORM"
	// EnvCoordinatorPolicyHashes lists the hex SHA-256 policy hashes a
	// Coordinator may run, comma-separated (more than one while the
	// Coordinator is upgraded).
	EnvCoordinatorPolicyHashes = "CONTRAST_COORDINATOR_POLICY_HASHES"
	// EnvCoordinatorReferenceValues is the prefix of the variables
	// holding the JSON of the reference values the Coordinator's evidence
	// must meet, in the shape of the manifest's ReferenceValues
	// ({"snp": [...], "tdx": [...]}): the JSON is cut into chunks of at most
	// ReferenceValuesChunkSize bytes, in CONTRAST_COORDINATOR_REFERENCE_VALUES_0,
	// _1, ... (a Kata policy line, which pins each variable, is limited to
	// 1023 characters, and a simulated root alone takes several thousand).
	EnvCoordinatorReferenceValues = "CONTRAST_COORDINATOR_REFERENCE_VALUES"
	// EnvSimDeviceFile is the simulated device's key file (simulated
	// platforms only; see attest/sim), mounted from a Secret.
	EnvSimDeviceFile = "CONTRAST_SIM_DEVICE_FILE"
	// EnvSimInitDataFile is the pod's initdata annotation exposed through
	// the downward API (simulated platforms only): the simulated device
	// derives HOST_DATA / MRCONFIGID from it as Kata does.
	EnvSimInitDataFile = "CONTRAST_SIM_INITDATA_FILE"
)

// Limits of the environment.
const (
	// MaxReferenceValuesSize bounds the reference values' JSON.
	MaxReferenceValuesSize = 64 << 10
	// ReferenceValuesChunkSize bounds one variable holding reference
	// values: with JSON escaping in the policy at most twice as long,
	// well under the policy's line limit.
	ReferenceValuesChunkSize = 384
	// MaxCoordinatorPolicyHashes bounds EnvCoordinatorPolicyHashes.
	MaxCoordinatorPolicyHashes = 8
)

// referenceValuesChunk names chunk i of the reference values.
func referenceValuesChunk(i int) string {
	return EnvCoordinatorReferenceValues + "_" + strconv.Itoa(i)
}

// chunks cuts s into pieces of at most n bytes, at UTF-8 rune boundaries.
func chunks(s string, n int) []string {
	var out []string
	for len(s) > n {
		i := n
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

// ErrInvalid is wrapped by every error of Parse.
var ErrInvalid = errors.New("invalid Initializer environment")

// ReferenceValues are the Coordinator's reference values, in the JSON shape
// of the manifest's ReferenceValues.
type ReferenceValues struct {
	SNP []snp.ReferenceValues `json:"snp,omitempty"`
	TDX []tdx.ReferenceValues `json:"tdx,omitempty"`
}

// Simulated reports whether the reference values name simulated platforms
// (Validate refuses a mix).
func (r *ReferenceValues) Simulated() bool {
	for i := range r.SNP {
		if r.SNP[i].Simulated() {
			return true
		}
	}
	for i := range r.TDX {
		if r.TDX[i].Simulated() {
			return true
		}
	}
	return false
}

// Validators returns one validator per platform with reference values.
func (r *ReferenceValues) Validators(snpCfg snp.Config, tdxCfg tdx.Config) ([]attest.Validator, error) {
	var vs []attest.Validator
	if len(r.SNP) > 0 {
		snpCfg.ReferenceValues = r.SNP
		v, err := snp.NewValidator(snpCfg)
		if err != nil {
			return nil, fmt.Errorf("SNP validator: %w", err)
		}
		vs = append(vs, v)
	}
	if len(r.TDX) > 0 {
		tdxCfg.ReferenceValues = r.TDX
		v, err := tdx.NewValidator(tdxCfg)
		if err != nil {
			return nil, fmt.Errorf("TDX validator: %w", err)
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// Config is the Initializer's configuration as the webhook injects it.
type Config struct {
	// CoordinatorAddress is host:port of the mesh API.
	CoordinatorAddress string
	// Platform is the Initializer's own TEE.
	Platform attest.Platform
	// CoordinatorPolicyHashes are the policy hashes a Coordinator may run
	// (32 bytes each).
	CoordinatorPolicyHashes [][]byte
	// CoordinatorReferenceValues must accept the Coordinator's evidence.
	CoordinatorReferenceValues ReferenceValues
	// SimDeviceFile and SimInitDataFile are absolute paths, set exactly
	// for simulated platforms.
	SimDeviceFile, SimInitDataFile string
}

// Validate checks c: every problem, joined, each naming its variable.
func (c *Config) Validate() error {
	var errs []error
	bad := func(env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, env, fmt.Sprintf(format, args...)))
	}
	if host, port, err := net.SplitHostPort(c.CoordinatorAddress); err != nil || host == "" || !validPort(port) {
		bad(EnvCoordinatorHost, "%q is not host:port", c.CoordinatorAddress)
	}
	switch c.Platform {
	case attest.PlatformSNP, attest.PlatformTDX, attest.PlatformSimulatedSNP:
	case attest.PlatformSimulatedTDX:
		bad(EnvPlatform, "%q: pods have no simulated TDX device yet (attest/sim has device files for SNP only); use snp-simulated", string(c.Platform))
	default:
		bad(EnvPlatform, "%q: want snp, tdx, snp-simulated or tdx-simulated", string(c.Platform))
	}
	if len(c.CoordinatorPolicyHashes) == 0 {
		bad(EnvCoordinatorPolicyHashes, "at least one Coordinator policy hash is required")
	}
	if len(c.CoordinatorPolicyHashes) > MaxCoordinatorPolicyHashes {
		bad(EnvCoordinatorPolicyHashes, "%d Coordinator policy hashes, at most %d", len(c.CoordinatorPolicyHashes), MaxCoordinatorPolicyHashes)
	}
	for i, h := range c.CoordinatorPolicyHashes {
		if len(h) != 32 {
			bad(EnvCoordinatorPolicyHashes, "entry %d has %d bytes, want 32 (hex SHA-256)", i, len(h))
		}
	}
	rv := &c.CoordinatorReferenceValues
	if len(rv.SNP)+len(rv.TDX) == 0 {
		bad(EnvCoordinatorReferenceValues, "at least one reference value for the Coordinator is required")
	}
	for _, p := range []struct {
		name string
		err  error
	}{{"snp", validateSNP(rv.SNP)}, {"tdx", validateTDX(rv.TDX)}} {
		for _, fe := range attest.FieldErrors(p.err) {
			bad(EnvCoordinatorReferenceValues, "%s", attest.PrefixFieldErrors(p.name, fe))
		}
	}
	if err := checkMix(c.Platform, rv); err != nil {
		bad(EnvCoordinatorReferenceValues, "%v", err)
	}
	if c.Platform.Simulated() {
		for _, f := range []struct{ env, v string }{{EnvSimDeviceFile, c.SimDeviceFile}, {EnvSimInitDataFile, c.SimInitDataFile}} {
			if f.v == "" || !path.IsAbs(f.v) || path.Clean(f.v) != f.v {
				bad(f.env, "%q: a simulated platform needs an absolute, clean path", f.v)
			}
		}
	} else {
		for _, f := range []struct{ env, v string }{{EnvSimDeviceFile, c.SimDeviceFile}, {EnvSimInitDataFile, c.SimInitDataFile}} {
			if f.v != "" {
				bad(f.env, "set for the real platform %q: simulated devices never mix with real ones", string(c.Platform))
			}
		}
	}
	return errors.Join(errs...)
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536 && strconv.Itoa(n) == p
}

func validateSNP(rvs []snp.ReferenceValues) error {
	var errs []error
	for i := range rvs {
		errs = append(errs, attest.PrefixFieldErrors(fmt.Sprintf("[%d]", i), rvs[i].Validate()))
	}
	return errors.Join(errs...)
}

func validateTDX(rvs []tdx.ReferenceValues) error {
	var errs []error
	for i := range rvs {
		errs = append(errs, attest.PrefixFieldErrors(fmt.Sprintf("[%d]", i), rvs[i].Validate()))
	}
	return errors.Join(errs...)
}

// checkMix refuses simulated reference values with a real platform and real
// ones with a simulated platform, and a mix within the reference values.
func checkMix(p attest.Platform, rv *ReferenceValues) error {
	var sim, real int
	for i := range rv.SNP {
		if rv.SNP[i].Simulated() {
			sim++
		} else {
			real++
		}
	}
	for i := range rv.TDX {
		if rv.TDX[i].Simulated() {
			sim++
		} else {
			real++
		}
	}
	switch {
	case sim > 0 && real > 0:
		return errors.New("mixes simulated and real platforms")
	case sim > 0 && !p.Simulated():
		return fmt.Errorf("simulated reference values with the real platform %q", string(p))
	case real > 0 && p.Simulated():
		return fmt.Errorf("real reference values with the simulated platform %q", string(p))
	}
	return nil
}

// Parse reads the configuration from the environment (lookup is
// os.LookupEnv) and validates it.
func Parse(lookup func(string) (string, bool)) (*Config, error) {
	get := func(k string) string {
		v, _ := lookup(k)
		return v
	}
	c := &Config{
		CoordinatorAddress: get(EnvCoordinatorHost),
		Platform:           attest.Platform(get(EnvPlatform)),
		SimDeviceFile:      get(EnvSimDeviceFile),
		SimInitDataFile:    get(EnvSimInitDataFile),
	}
	var errs []error
	if v := get(EnvCoordinatorPolicyHashes); v != "" {
		for i, h := range strings.Split(v, ",") {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != 32 {
				errs = append(errs, fmt.Errorf("%w: %s: entry %d is not 64 hex digits", ErrInvalid, EnvCoordinatorPolicyHashes, i))
				continue
			}
			c.CoordinatorPolicyHashes = append(c.CoordinatorPolicyHashes, b)
		}
	}
	var refs strings.Builder
	for i := 0; ; i++ {
		v, ok := lookup(referenceValuesChunk(i))
		if !ok {
			break
		}
		if refs.Len()+len(v) > MaxReferenceValuesSize {
			errs = append(errs, fmt.Errorf("%w: %s_*: more than %d bytes", ErrInvalid, EnvCoordinatorReferenceValues, MaxReferenceValuesSize))
			break
		}
		refs.WriteString(v)
	}
	if v := refs.String(); v != "" {
		rv, err := ParseReferenceValues([]byte(v))
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %w", ErrInvalid, EnvCoordinatorReferenceValues, err))
		} else {
			c.CoordinatorReferenceValues = *rv
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ParseReferenceValues decodes reference values strictly: unknown fields
// and trailing data are errors, so a misspelled field never silently
// weakens a check. It does not validate them (Config.Validate does).
func ParseReferenceValues(data []byte) (*ReferenceValues, error) {
	if len(data) > MaxReferenceValuesSize {
		return nil, fmt.Errorf("%d bytes exceed %d", len(data), MaxReferenceValuesSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rv ReferenceValues
	if err := dec.Decode(&rv); err != nil {
		return nil, fmt.Errorf("decoding JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	return &rv, nil
}

// EnvVar is one environment variable.
type EnvVar struct{ Name, Value string }

// Env returns the variables that carry c, in a fixed order, leaving out
// empty ones. c must be valid.
func (c *Config) Env() ([]EnvVar, error) {
	rv, err := json.Marshal(&c.CoordinatorReferenceValues)
	if err != nil {
		return nil, fmt.Errorf("encoding the Coordinator's reference values: %w", err)
	}
	hashes := make([]string, len(c.CoordinatorPolicyHashes))
	for i, h := range c.CoordinatorPolicyHashes {
		hashes[i] = hex.EncodeToString(h)
	}
	out := []EnvVar{
		{EnvCoordinatorHost, c.CoordinatorAddress},
		{EnvPlatform, string(c.Platform)},
		{EnvCoordinatorPolicyHashes, strings.Join(hashes, ",")},
	}
	for i, chunk := range chunks(string(rv), ReferenceValuesChunkSize) {
		out = append(out, EnvVar{referenceValuesChunk(i), chunk})
	}
	out = append(out, EnvVar{EnvSimDeviceFile, c.SimDeviceFile}, EnvVar{EnvSimInitDataFile, c.SimInitDataFile})
	return slices.DeleteFunc(out, func(e EnvVar) bool { return e.Value == "" }), nil
}

// Names returns the names of every variable the package defines.
func Names() []string {
	return []string{
		EnvCoordinatorHost, EnvPlatform, EnvCoordinatorPolicyHashes, EnvCoordinatorReferenceValues + "_<n>",
		EnvSimDeviceFile, EnvSimInitDataFile,
	}
}
