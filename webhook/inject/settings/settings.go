// Package settings holds the configuration that shapes an injected pod and
// its policy: runtime class, injected images, Coordinator address, policy
// mode and budget, and how images are resolved. The webhook and `contrast
// generate` both take it from here (flags, and a settings file), so the
// policy that generate computes offline is the policy the webhook computes
// at admission: a setting added here reaches both.
package settings

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/initializer/initenv"
	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/inject"
)

// Flag names, as on the command line and as keys of a settings file.
const (
	FlagRuntimeClass          = "runtime-class"
	FlagInitializerImage      = "initializer-image"
	FlagProxyImage            = "proxy-image"
	FlagCoordinatorAddress    = "coordinator-address"
	FlagPolicyMode            = "policy-mode"
	FlagMaxPolicyBytes        = "max-policy-bytes"
	FlagRegistryMirror        = "registry-mirror"
	FlagRegistrySkipOrigin    = "registry-skip-origin"
	FlagRegistryInsecure      = "registry-insecure"
	FlagRegistryHostsDir      = "registry-hosts-dir"
	FlagRegistryPlatform      = "registry-platform"
	FlagRegistryMaxConcurrent = "registry-max-concurrent"
	FlagRegistryTagTTL        = "registry-tag-ttl"
	// What the Initializer expects of the Coordinator (and of its own TEE).
	FlagPlatform                   = "platform"
	FlagCoordinatorPolicyHash      = "coordinator-policy-hash"
	FlagCoordinatorReferenceValues = "coordinator-reference-values"
	FlagSimDeviceSecret            = "sim-device-secret" //nolint:gosec // a flag name, not a credential
)

// DefaultRegistryTagTTL is how long a tag's resolution is reused by
// default: long enough for the pods of one scale-up, short against a moved
// tag.
const DefaultRegistryTagTTL = 5 * time.Second

// DefaultCoordinatorAddress is the Coordinator's mesh API as the chart
// installs it.
const DefaultCoordinatorAddress = "coordinator.contrast-system.svc:7777"

// Settings are the raw values of the injection flags.
type Settings struct {
	RuntimeClass          string
	InitializerImage      string
	ProxyImage            string
	CoordinatorAddress    string
	PolicyMode            string
	MaxPolicyBytes        int
	Mirrors               []string
	SkipOrigin            []string
	InsecureRegistries    []string
	HostsDir              string
	Platform              string
	RegistryMaxConcurrent int
	RegistryTagTTL        time.Duration
	// TEEPlatform is --platform (Platform is --registry-platform).
	TEEPlatform                string
	CoordinatorPolicyHashes    []string
	CoordinatorReferenceValues string
	SimDeviceSecret            string

	// names are the flags AddFlags registered: the keys a settings file
	// may hold.
	names []string
}

// AddFlags registers the injection flags on fs with their defaults.
func (s *Settings) AddFlags(fs *pflag.FlagSet) {
	before := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) { before[f.Name] = true })

	fs.StringVar(&s.RuntimeClass, FlagRuntimeClass, inject.DefaultRuntimeClassName, "Contrast runtime class set on pods")
	fs.StringVar(&s.InitializerImage, FlagInitializerImage, "", "Initializer image, pinned by digest (name@sha256:...)")
	fs.StringVar(&s.ProxyImage, FlagProxyImage, "", "service-mesh proxy image, pinned by digest (name@sha256:...)")
	fs.StringVar(&s.CoordinatorAddress, FlagCoordinatorAddress, DefaultCoordinatorAddress, "host:port of the Coordinator's mesh API, given to the Initializer")
	fs.StringVar(&s.PolicyMode, FlagPolicyMode, "initdata", "policy annotation: initdata or legacy")
	fs.IntVar(&s.MaxPolicyBytes, FlagMaxPolicyBytes, inject.DefaultMaxPolicyBytes, fmt.Sprintf("pods whose policy annotation is larger are denied (at most %d; pods whose annotations together would exceed the API server's limit of %d bytes are denied too)", inject.MaxPolicyBudget, inject.MaxAnnotationBytes))
	fs.StringSliceVar(&s.Mirrors, FlagRegistryMirror, nil, "registry mirror as registry=URL (http:// for plain HTTP), repeatable, tried in order before the registry")
	fs.StringSliceVar(&s.SkipOrigin, FlagRegistrySkipOrigin, nil, "registry reached only through its mirrors (air-gapped), repeatable")
	fs.StringSliceVar(&s.InsecureRegistries, FlagRegistryInsecure, nil, "registry (host[:port] as written in image names) reached over plain HTTP, repeatable; every other registry and every mirror without http:// is reached over HTTPS only")
	fs.StringVar(&s.HostsDir, FlagRegistryHostsDir, "", "containerd certs.d directory (<registry>/hosts.toml) with mirrors")
	fs.StringVar(&s.Platform, FlagRegistryPlatform, "linux/amd64", "platform selected from multi-platform images")
	fs.IntVar(&s.RegistryMaxConcurrent, FlagRegistryMaxConcurrent, 8, "concurrent registry requests")
	fs.DurationVar(&s.RegistryTagTTL, FlagRegistryTagTTL, DefaultRegistryTagTTL, "how long a tag's resolution to a digest is reused (concurrent lookups of one tag share one request); a tag moved within it is pinned to its previous digest; 0: every lookup asks the registry")
	fs.StringVar(&s.TEEPlatform, FlagPlatform, "", "TEE of the pods, given to the Initializer: snp, tdx, or snp-simulated (runc pods standing in for Kata VMs, development and tests only; never mixed with real reference values) (required)")
	fs.StringSliceVar(&s.CoordinatorPolicyHashes, FlagCoordinatorPolicyHash, nil, fmt.Sprintf("hex SHA-256 policy hash of the Coordinator pod the Initializer accepts, repeatable (e.g. old and new during an upgrade; at most %d) (required)", initenv.MaxCoordinatorPolicyHashes))
	fs.StringVar(&s.CoordinatorReferenceValues, FlagCoordinatorReferenceValues, "", "reference values the Coordinator's evidence must meet, JSON in the manifest's ReferenceValues shape ({\"snp\": [...], \"tdx\": [...]}): a file, or the JSON itself when the value starts with {; with snp-simulated they name the simulated platform and carry its root (required)")
	fs.StringVar(&s.SimDeviceSecret, FlagSimDeviceSecret, "", "snp-simulated only: Secret in each opted-in namespace holding the simulated device file under key "+inject.SimDeviceSecretKey+" (default "+inject.DefaultSimDeviceSecret+")")

	s.names = nil
	fs.VisitAll(func(f *pflag.Flag) {
		if !before[f.Name] {
			s.names = append(s.names, f.Name)
		}
	})
	slices.Sort(s.names)
}

// Names returns the flags registered by AddFlags, sorted: the keys a
// settings file may hold.
func (s *Settings) Names() []string { return slices.Clone(s.names) }

// Resolved is the validated configuration.
type Resolved struct {
	// Inject is the injection configuration.
	Inject inject.Config
	// Legacy selects the legacy policy annotation.
	Legacy bool
	// MaxPolicyBytes is the budget of the policy annotation.
	MaxPolicyBytes int
	// Registry configures image resolution (without Observer, Logger,
	// Keychain and Transport, which belong to the caller).
	Registry images.RegistryConfig
}

// Resolve validates the settings. Every error names the flag.
func (s *Settings) Resolve() (*Resolved, error) { return s.resolve(false) }

// ResolveCoordinatorOnly validates the settings except the Initializer's
// expectations of the Coordinator (--platform, --coordinator-policy-hash,
// --coordinator-reference-values, --sim-device-secret), which it ignores.
// Its Mutator mutates only Coordinator pods: contrast generate computes the
// Coordinator's policy hash with it before the expectations that name
// that hash are complete, and then resolves all settings.
func (s *Settings) ResolveCoordinatorOnly() (*Resolved, error) { return s.resolve(true) }

func (s *Settings) resolve(coordinatorOnly bool) (*Resolved, error) {
	r := &Resolved{
		Inject: inject.Config{
			RuntimeClassName:   s.RuntimeClass,
			InitializerImage:   s.InitializerImage,
			ProxyImage:         s.ProxyImage,
			CoordinatorAddress: s.CoordinatorAddress,
		},
		MaxPolicyBytes: s.MaxPolicyBytes,
	}
	r.Inject.CoordinatorOnly = coordinatorOnly
	var errs, imageErrs []error
	var expErr error
	if !coordinatorOnly {
		expErr = s.coordinatorExpectations(&r.Inject)
	}
	if expErr != nil {
		errs = append(errs, expErr)
	}
	for _, f := range []struct{ flag, v string }{{FlagInitializerImage, s.InitializerImage}, {FlagProxyImage, s.ProxyImage}} {
		switch err := inject.CheckPinnedImage(f.v); {
		case f.v == "":
			imageErrs = append(imageErrs, fmt.Errorf("--%s is required", f.flag))
		case err != nil:
			imageErrs = append(imageErrs, fmt.Errorf("--%s %q: %w", f.flag, f.v, err))
		}
	}
	errs = append(errs, imageErrs...)
	if err := r.Inject.Validate(); err != nil && len(imageErrs) == 0 && expErr == nil {
		errs = append(errs, err)
	}
	if _, _, err := net.SplitHostPort(s.CoordinatorAddress); s.CoordinatorAddress != "" && err != nil {
		errs = append(errs, fmt.Errorf("--%s %q: want host:port", FlagCoordinatorAddress, s.CoordinatorAddress))
	}
	switch s.PolicyMode {
	case "initdata":
	case "legacy":
		r.Legacy = true
		if attest.Platform(s.TEEPlatform).Simulated() {
			errs = append(errs, fmt.Errorf("--%s legacy with --%s %s: the simulated device derives HOST_DATA from the initdata annotation", FlagPolicyMode, FlagPlatform, s.TEEPlatform))
		}
	default:
		errs = append(errs, fmt.Errorf("--%s %q: want initdata or legacy", FlagPolicyMode, s.PolicyMode))
	}
	if s.MaxPolicyBytes <= 0 || s.MaxPolicyBytes > inject.MaxPolicyBudget {
		errs = append(errs, fmt.Errorf("--%s %d: want 1 to %d (the API server's limit of %d bytes is for all annotations of a pod together)", FlagMaxPolicyBytes, s.MaxPolicyBytes, inject.MaxPolicyBudget, inject.MaxAnnotationBytes))
	}
	reg, err := s.registryConfig()
	if err != nil {
		errs = append(errs, err)
	}
	r.Registry = reg
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

// coordinatorExpectations sets what the Initializer expects of the
// Coordinator, from --platform, --coordinator-policy-hash,
// --coordinator-reference-values and --sim-device-secret. inject.Config
// validates them with the Initializer's own rules (initenv).
func (s *Settings) coordinatorExpectations(c *inject.Config) error {
	var errs []error
	switch p := attest.Platform(s.TEEPlatform); p {
	case attest.PlatformSNP, attest.PlatformTDX, attest.PlatformSimulatedSNP:
		c.Platform = p
	case "":
		errs = append(errs, fmt.Errorf("--%s is required: snp, tdx or snp-simulated", FlagPlatform))
	default:
		errs = append(errs, fmt.Errorf("--%s %q: want snp, tdx or snp-simulated", FlagPlatform, s.TEEPlatform))
	}
	if len(s.CoordinatorPolicyHashes) == 0 {
		errs = append(errs, fmt.Errorf("--%s is required (the Coordinator pod's policy hash, as contrast generate computes it)", FlagCoordinatorPolicyHash))
	}
	for _, h := range s.CoordinatorPolicyHashes {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != 32 {
			errs = append(errs, fmt.Errorf("--%s %q: want 64 hex digits", FlagCoordinatorPolicyHash, h))
			continue
		}
		c.CoordinatorPolicyHashes = append(c.CoordinatorPolicyHashes, b)
	}
	switch v := s.CoordinatorReferenceValues; v {
	case "":
		errs = append(errs, fmt.Errorf("--%s is required (the reference values the Coordinator's evidence must meet: a JSON file, or the JSON)", FlagCoordinatorReferenceValues))
	default:
		data, from := []byte(v), "JSON"
		if !strings.HasPrefix(strings.TrimSpace(v), "{") {
			var err error
			if data, err = os.ReadFile(v); err != nil { //nolint:gosec // a path chosen by the operator
				errs = append(errs, fmt.Errorf("--%s: %w", FlagCoordinatorReferenceValues, err))
				break
			}
			from = v
		}
		rv, err := initenv.ParseReferenceValues(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %s: %w", FlagCoordinatorReferenceValues, from, err))
			break
		}
		c.CoordinatorReferenceValues = *rv
	}
	if s.SimDeviceSecret != "" && !c.Platform.Simulated() {
		errs = append(errs, fmt.Errorf("--%s needs --%s snp-simulated, got %q", FlagSimDeviceSecret, FlagPlatform, s.TEEPlatform))
	}
	c.SimDeviceSecret = s.SimDeviceSecret
	return errors.Join(errs...)
}

func (s *Settings) registryConfig() (images.RegistryConfig, error) {
	cfg := images.RegistryConfig{Mirrors: map[string][]images.Mirror{}, MaxConcurrent: s.RegistryMaxConcurrent, TagTTL: s.RegistryTagTTL}
	if s.RegistryMaxConcurrent <= 0 {
		return cfg, fmt.Errorf("--%s %d: want at least 1", FlagRegistryMaxConcurrent, s.RegistryMaxConcurrent)
	}
	if s.RegistryTagTTL < 0 {
		return cfg, fmt.Errorf("--%s %s: want 0 (off) or more", FlagRegistryTagTTL, s.RegistryTagTTL)
	}
	if s.HostsDir != "" {
		mirrors, skip, err := images.ConfigFromHostsDir(s.HostsDir)
		if err != nil {
			return cfg, fmt.Errorf("--%s: %w", FlagRegistryHostsDir, err)
		}
		cfg.Mirrors, cfg.SkipOrigin = mirrors, skip
	}
	for _, m := range s.Mirrors {
		registry, raw, ok := strings.Cut(m, "=")
		if !ok || registry == "" {
			return cfg, fmt.Errorf("--%s %q: want registry=URL", FlagRegistryMirror, m)
		}
		mirror, err := images.ParseMirror(raw)
		// unlike hosts.toml, the flag takes no path, not even the API's root
		if err != nil || mirror.Host == "" || !slices.Contains([]string{mirror.Host, "http://" + mirror.Host, "https://" + mirror.Host}, raw) {
			return cfg, fmt.Errorf("--%s %q: mirror must be host[:port] with an optional http:// or https://", FlagRegistryMirror, m)
		}
		cfg.Mirrors[registry] = append(cfg.Mirrors[registry], mirror)
	}
	for _, r := range s.SkipOrigin {
		if len(cfg.Mirrors[r]) == 0 {
			return cfg, fmt.Errorf("--%s %q: the registry has no mirror", FlagRegistrySkipOrigin, r)
		}
		cfg.SkipOrigin = append(cfg.SkipOrigin, r)
	}
	for _, r := range s.InsecureRegistries {
		if r == "" || strings.ContainsAny(r, "/ ") {
			return cfg, fmt.Errorf("--%s %q: want host[:port] as written in image names", FlagRegistryInsecure, r)
		}
		cfg.Insecure = append(cfg.Insecure, r)
	}
	osName, arch, ok := strings.Cut(s.Platform, "/")
	if !ok || osName == "" || arch == "" {
		return cfg, fmt.Errorf("--%s %q: want os/arch", FlagRegistryPlatform, s.Platform)
	}
	cfg.Platform = &v1.Platform{OS: osName, Architecture: arch}
	return cfg, nil
}

// Mutator returns the mutator of these settings that resolves images
// through src and logs to log (nil: no logging).
func (r *Resolved) Mutator(src images.Source, log *slog.Logger) *inject.Mutator {
	return &inject.Mutator{
		Config:         r.Inject,
		Images:         src,
		Legacy:         r.Legacy,
		MaxPolicyBytes: r.MaxPolicyBytes,
		Logger:         log,
	}
}
