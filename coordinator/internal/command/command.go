// Package command is the coordinator command line: flags (with environment
// fallbacks) are parsed and validated here, so the command is testable with
// arguments.
package command

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/attest/tdx"
	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/coordinator/server"
)

// Options are the command's settings.
type Options struct {
	Namespace     string
	Kubeconfig    string
	UserAddr      string
	MeshAddr      string
	ProbeAddr     string
	Platform      string
	Offline       bool
	CollateralDir string
	// MaxCollateralAge bounds the age of CRLs, TCB info and QE identity.
	MaxCollateralAge time.Duration
	// CollateralTTL is how long fetched mutable documents are cached.
	CollateralTTL time.Duration
	// FetchRate, FetchBurst and FetchNegativeTTL bound the requests to AMD
	// KDS and Intel PCS (per source).
	FetchRate        float64
	FetchBurst       int
	FetchNegativeTTL time.Duration
	LogLevel         string
	SimAuthority     string
	SimHostData      string
	SimInitdata      string
	SimMeasure       string
	InMemoryStore    bool
	Peers            []string
}

// envPrefix: every flag can be set as CONTRAST_COORDINATOR_<FLAG> (dashes
// become underscores); the namespace also falls back to POD_NAMESPACE.
const envPrefix = "CONTRAST_COORDINATOR_"

// New returns the coordinator command. level is the level of logger's
// handler; --log-level sets it.
func New(logger *slog.Logger, level *slog.LevelVar) *cobra.Command {
	return newCommand(&Options{}, logger, level)
}

// newCommand returns the command that parses its flags into o.
func newCommand(o *Options, logger *slog.Logger, level *slog.LevelVar) *cobra.Command {
	cmd := &cobra.Command{
		Use:           "coordinator",
		Short:         "Run the Contrast Coordinator: user API (1313), mesh API (7777), probes and metrics (9102)",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Namespace == "" {
				o.Namespace = os.Getenv("POD_NAMESPACE")
			}
			if err := o.Validate(); err != nil {
				return err
			}
			if level != nil {
				_ = level.UnmarshalText([]byte(o.LogLevel))
			}
			log := logger
			if attest.Platform(o.Platform).Simulated() {
				// every line says so: simulated evidence proves nothing
				log = log.With("simulated", true)
			}
			err := run(cmd, o, log)
			if err != nil {
				log.Error("coordinator failed", "error", err)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Namespace, "namespace", "", "namespace of the history ConfigMaps (default $POD_NAMESPACE)")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster configuration")
	f.StringVar(&o.UserAddr, "user-api-addr", server.DefaultUserAddr, "listen address of the user API (aTLS)")
	f.StringVar(&o.MeshAddr, "mesh-api-addr", server.DefaultMeshAddr, "listen address of the mesh API (mutual aTLS)")
	f.StringVar(&o.ProbeAddr, "probe-addr", server.DefaultProbeAddr, "listen address of /livez, /readyz and /metrics")
	f.StringVar(&o.Platform, "platform", "", "evidence issuer: snp, tdx, snp-simulated or tdx-simulated (required)")
	f.BoolVar(&o.Offline, "offline", false, "never fetch from AMD KDS / Intel PCS: use only collateral cached in --collateral-dir (seeded by an operator) or carried by evidence, within --collateral-max-age; no check is skipped")
	f.StringVar(&o.CollateralDir, "collateral-dir", "", "directory persisting fetched KDS/PCS documents across restarts, and where an operator seeds them for --offline")
	f.DurationVar(&o.MaxCollateralAge, "collateral-max-age", certcache.DefaultMaxAge, "maximum age of a CRL, TCB info or QE identity: since its issue date, or since this Coordinator fetched it (or it was seeded)")
	f.DurationVar(&o.CollateralTTL, "collateral-refresh", time.Hour, "how long a fetched CRL, TCB info or QE identity is used before it is fetched again")
	f.Float64Var(&o.FetchRate, "vendor-fetch-rate", 1, "sustained requests per second to each of AMD KDS and Intel PCS")
	f.IntVar(&o.FetchBurst, "vendor-fetch-burst", 10, "requests allowed at once to each of AMD KDS and Intel PCS")
	f.DurationVar(&o.FetchNegativeTTL, "vendor-fetch-retry-after", time.Minute, "how long a failed KDS/PCS request is not repeated")
	f.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.SimAuthority, "sim-authority", "", "simulated: file of the simulated AMD/Intel root and keys (created if missing)")
	f.StringVar(&o.SimHostData, "sim-host-data", "", "simulated: hex policy digest the simulated TEE reports")
	f.StringVar(&o.SimInitdata, "sim-initdata-file", "", "simulated: the pod's initdata annotation (base64 of gzip of the TOML, e.g. from the downward API); the reported policy digest is SHA-256 of the TOML, as Kata derives it")
	f.StringVar(&o.SimMeasure, "sim-measurement", "", "simulated: hex launch measurement (48 bytes) the simulated TEE reports")
	f.BoolVar(&o.InMemoryStore, "in-memory-store", false, "keep the history in memory (simulated platforms only; lost on restart)")
	f.StringSliceVar(&o.Peers, "peers", nil, "mesh API addresses (host:port, comma-separated) of the other Coordinator replicas for peer recovery; "+
		"each host is resolved to all its addresses (e.g. the headless Service of ready replicas, coordinator-peers.<ns>.svc:7777)")
	return cmd
}

func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("environment %s: %w", envPrefix+f.Name, serr)
			}
		}
	})
	return err
}

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	p := attest.Platform(o.Platform)
	switch p {
	case attest.PlatformSNP, attest.PlatformTDX, attest.PlatformSimulatedSNP, attest.PlatformSimulatedTDX:
	default:
		errs = append(errs, fmt.Errorf("--platform must be snp, tdx, snp-simulated or tdx-simulated, got %q", o.Platform))
	}
	if !p.Simulated() && (o.SimAuthority != "" || o.SimHostData != "" || o.SimInitdata != "" || o.SimMeasure != "") {
		errs = append(errs, errors.New("--sim-* flags need a simulated --platform"))
	}
	if o.SimHostData != "" && o.SimInitdata != "" {
		errs = append(errs, errors.New("--sim-host-data and --sim-initdata-file are exclusive"))
	}
	if o.SimHostData != "" {
		if b, err := hex.DecodeString(o.SimHostData); err != nil || len(b) != 32 {
			errs = append(errs, errors.New("--sim-host-data must be 32 hex-encoded bytes"))
		}
	}
	if o.SimMeasure != "" {
		if b, err := hex.DecodeString(o.SimMeasure); err != nil || len(b) != 48 {
			errs = append(errs, errors.New("--sim-measurement must be 48 hex-encoded bytes"))
		}
	}
	// The in-memory store loses the history on every restart, so nothing
	// can be recovered: acceptable for development against a simulated
	// TEE, never for a deployment on real hardware.
	if o.InMemoryStore && !p.Simulated() {
		errs = append(errs, fmt.Errorf("--in-memory-store is only allowed with a simulated --platform (snp-simulated or tdx-simulated), got --platform %q", o.Platform))
	}
	if !o.InMemoryStore && o.Namespace == "" {
		errs = append(errs, errors.New("--namespace (or $POD_NAMESPACE) is required"))
	}
	for _, p := range o.Peers {
		if host, port, err := net.SplitHostPort(p); err != nil || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("--peers: %q is not host:port", p))
		}
	}
	if len(o.Peers) > 0 && o.InMemoryStore {
		errs = append(errs, errors.New("--peers needs the shared ConfigMap store, not --in-memory-store"))
	}
	// Zero means the default of each (certcache, validators).
	if o.MaxCollateralAge < 0 || o.CollateralTTL < 0 || o.FetchRate < 0 || o.FetchBurst < 0 || o.FetchNegativeTTL < 0 {
		errs = append(errs, errors.New("--collateral-max-age, --collateral-refresh, --vendor-fetch-rate, --vendor-fetch-burst and --vendor-fetch-retry-after must not be negative"))
	}
	switch o.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level must be debug, info, warn or error, got %q", o.LogLevel))
	}
	return errors.Join(errs...)
}

// serverConfig builds the Coordinator's configuration from validated
// options, except the Kubernetes client of the ConfigMap store.
func (o *Options) serverConfig(log *slog.Logger) (server.Config, error) {
	vopts := o.ValidatorOptions(log)
	issuer, err := o.issuer(vopts.Cache, log)
	if err != nil {
		return server.Config{}, err
	}
	return server.Config{
		Issuer: issuer, Namespace: o.Namespace,
		UserAddr: o.UserAddr, MeshAddr: o.MeshAddr, ProbeAddr: o.ProbeAddr, Peers: o.Peers,
		ValidatorOptions: vopts,
		Logger:           log,
	}, nil
}

// ValidatorOptions returns the options of the validators the Coordinator
// builds from each manifest: the production configuration.
func (o *Options) ValidatorOptions(log *slog.Logger) manifest.ValidatorOptions {
	cache := certcache.New(certcache.Config{
		Offline: o.Offline, Dir: o.CollateralDir, TTL: o.CollateralTTL,
		FetchRate: o.FetchRate, FetchBurst: o.FetchBurst, NegativeTTL: o.FetchNegativeTTL,
		Logger: log.With("component", "certcache"),
	})
	return manifest.ValidatorOptions{Cache: cache, MaxCollateralAge: o.MaxCollateralAge, Logger: log.With("component", "validator")}
}

func run(cmd *cobra.Command, o *Options, log *slog.Logger) error {
	ctx := cmd.Context()
	cfg, err := o.serverConfig(log)
	if err != nil {
		return err
	}
	if !o.InMemoryStore {
		rc, err := restConfig(o.Kubeconfig)
		if err != nil {
			return err
		}
		if cfg.Kubernetes, err = kubernetes.NewForConfig(rc); err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
	}
	c, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	return c.Serve(ctx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration (use --kubeconfig outside a cluster): %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	return c, nil
}

func (o *Options) simHostData() ([32]byte, error) {
	var hd [32]byte
	switch {
	case o.SimHostData != "":
		b, _ := hex.DecodeString(o.SimHostData)
		copy(hd[:], b)
	case o.SimInitdata != "":
		// The pod's initdata annotation (downward API): base64 of gzip of
		// the TOML document; Kata reports SHA-256 of the raw TOML.
		data, err := os.ReadFile(o.SimInitdata) //nolint:gosec // path chosen by the operator
		if err != nil {
			return hd, fmt.Errorf("reading --sim-initdata-file: %w", err)
		}
		if hd, err = sim.InitDataDigest(data); err != nil {
			return hd, fmt.Errorf("--sim-initdata-file %s: %w", o.SimInitdata, err)
		}
	}
	return hd, nil
}

func (o *Options) issuer(cache *certcache.Cache, log *slog.Logger) (attest.Issuer, error) {
	switch attest.Platform(o.Platform) {
	case attest.PlatformSNP:
		return snp.NewIssuer(snp.IssuerConfig{Cache: cache, Logger: log.With("component", "issuer")}), nil
	case attest.PlatformTDX:
		return tdx.NewIssuer(tdx.IssuerConfig{Cache: cache, Logger: log.With("component", "issuer")}), nil
	}
	hd, err := o.simHostData()
	if err != nil {
		return nil, err
	}
	var meas [48]byte
	if o.SimMeasure != "" {
		b, _ := hex.DecodeString(o.SimMeasure)
		copy(meas[:], b)
	}
	if attest.Platform(o.Platform) == attest.PlatformSimulatedTDX {
		var auth *sim.TDXAuthority
		if o.SimAuthority != "" {
			auth, err = sim.LoadOrCreateTDXAuthority(o.SimAuthority)
		} else {
			auth, err = sim.NewTDXAuthority()
		}
		if err != nil {
			return nil, fmt.Errorf("simulated TDX authority: %w", err)
		}
		dc := sim.DefaultTDXDeviceConfig()
		copy(dc.MrConfigID[:], hd[:])
		if o.SimMeasure != "" {
			dc.MrTd = meas
		}
		dev, err := auth.NewDevice(dc)
		if err != nil {
			return nil, fmt.Errorf("simulated TD: %w", err)
		}
		log.Warn("using a SIMULATED TDX device: evidence proves nothing about this host", "simulated", true)
		ic := dev.IssuerConfig()
		ic.Logger = log.With("component", "issuer")
		return tdx.NewIssuer(ic), nil
	}
	var auth *sim.SNPAuthority
	if o.SimAuthority != "" {
		auth, err = sim.LoadOrCreateSNPAuthority(o.SimAuthority)
	} else {
		auth, err = sim.NewSNPAuthority()
	}
	if err != nil {
		return nil, fmt.Errorf("simulated SNP authority: %w", err)
	}
	dc := sim.DefaultSNPDeviceConfig()
	dc.HostData = hd
	if o.SimMeasure != "" {
		dc.Measurement = meas
	}
	dev, err := auth.NewDevice(dc)
	if err != nil {
		return nil, fmt.Errorf("simulated SNP device: %w", err)
	}
	log.Warn("using a SIMULATED SNP device: evidence proves nothing about this host", "simulated", true)
	ic := dev.IssuerConfig()
	ic.Logger = log.With("component", "issuer")
	return snp.NewIssuer(ic), nil
}
