package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/inject/settings"
	"github.com/contrast-cc/contrast/webhook/internal/certs"
	"github.com/contrast-cc/contrast/webhook/internal/nudge"
	"github.com/contrast-cc/contrast/webhook/internal/server"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// envPrefix: every flag can also be set as CONTRAST_WEBHOOK_<FLAG>, e.g.
// CONTRAST_WEBHOOK_INITIALIZER_IMAGE; a flag given on the command line wins.
const envPrefix = "CONTRAST_WEBHOOK_"

// serviceAccountNamespaceFile holds the namespace of the pod's service
// account (and so of the pod) in every pod that mounts its token.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// alwaysExcluded are namespaces never mutated, whatever the flags say.
var alwaysExcluded = []string{"kube-system"}

type options struct {
	listen, probeListen  string
	certFile, keyFile    string
	selfManaged          bool
	dnsNames             []string
	webhookConfiguration string
	validatingConfig     string
	caValidity           time.Duration
	certValidity         time.Duration
	settings             settings.Settings
	settingsFile         string
	excludedNamespaces   []string
	namespace            string
	pullSecrets          bool
	kubeconfig           string
	logLevel             string
	policyCacheEntries   int
	policyCacheBytes     int64
	patchCacheEntries    int
	patchCacheBytes      int64
	coordinatorSet       string

	// lookupEnv reads the environment (os.LookupEnv; replaced in tests).
	lookupEnv func(string) (string, bool)
	// namespaceFile is serviceAccountNamespaceFile (replaced in tests).
	namespaceFile string
}

// NewWebhookCommand returns the webhook command.
func NewWebhookCommand() *cobra.Command {
	return newCommand(&options{lookupEnv: os.LookupEnv, namespaceFile: serviceAccountNamespaceFile})
}

func newCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:           "webhook",
		Short:         "Contrast's mutating admission webhook: makes pods in opted-in namespaces confidential",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.applyEnvAndFile(cmd.Flags()); err != nil {
				return err
			}
			cfg, err := o.config()
			if err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen-address", ":8443", "HTTPS address of the admission webhook")
	f.StringVar(&o.probeListen, "probe-address", ":9102", "HTTP address of /livez, /readyz and /metrics")
	f.StringVar(&o.certFile, "tls-cert-file", "", "serving certificate (PEM), reloaded when it changes")
	f.StringVar(&o.keyFile, "tls-key-file", "", "serving key (PEM), reloaded when it changes")
	f.BoolVar(&o.selfManaged, "self-managed-certs", false, "generate a CA, add it to the caBundle of --webhook-configuration and rotate the serving certificate (instead of --tls-cert-file/--tls-key-file)")
	f.StringSliceVar(&o.dnsNames, "tls-dns-names", nil, "DNS names of the self-managed serving certificate (the webhook Service, e.g. contrast-webhook.contrast-system.svc)")
	f.StringVar(&o.webhookConfiguration, "webhook-configuration", "contrast-webhook", "MutatingWebhookConfiguration whose caBundle the self-managed CA is added to")
	f.StringVar(&o.validatingConfig, "validating-webhook-configuration", "contrast-webhook", "ValidatingWebhookConfiguration (of /validate) whose caBundle the self-managed CA is also added to; skipped while it does not exist; empty: none")
	f.DurationVar(&o.caValidity, "self-managed-ca-validity", 365*24*time.Hour, "validity of the self-managed CA, replaced (and published first) after two thirds of it")
	f.DurationVar(&o.certValidity, "self-managed-cert-validity", 30*24*time.Hour, "validity of the self-managed serving certificate, replaced after two thirds of it and checked every tenth of it (at most every minute); at most --self-managed-ca-validity")
	o.settings.AddFlags(f)
	f.StringVar(&o.settingsFile, "settings", "", "settings file (YAML: flag name → value) for the injection flags ("+strings.Join(o.settings.Names(), ", ")+"); the command line and CONTRAST_WEBHOOK_* win over it")
	f.StringSliceVar(&o.excludedNamespaces, "excluded-namespaces", nil, "namespaces never mutated, in addition to kube-system and the webhook's own namespace (always excluded)")
	f.StringVar(&o.namespace, "namespace", "", "the webhook's own namespace, if neither POD_NAMESPACE nor "+serviceAccountNamespaceFile+" gives it")
	f.BoolVar(&o.pullSecrets, "pull-secrets", true, "read the pull secrets of pods and their service accounts from the API server")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for the API server (default: in-cluster)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.IntVar(&o.policyCacheEntries, "policy-cache-max-entries", policy.DefaultCacheMaxEntries, "policies cached by a digest of everything they depend on (pods of one controller, and the validation of a mutated pod, then cost one generation); 0 disables the cache")
	f.Int64Var(&o.policyCacheBytes, "policy-cache-max-bytes", policy.DefaultCacheMaxBytes, "bound on the size of the cached policies (texts, annotations and an estimate of the policy data); least recently used first out")
	f.IntVar(&o.patchCacheEntries, "patch-cache-max-entries", server.DefaultPatchCacheMaxEntries, "JSON patches of mutated pods cached by a digest of the admitted and the mutated pod (pods of one controller then skip deriving the patch); 0 disables the cache")
	f.Int64Var(&o.patchCacheBytes, "patch-cache-max-bytes", server.DefaultPatchCacheMaxBytes, "bound on the size of the cached JSON patches; least recently used first out")
	f.StringVar(&o.coordinatorSet, "coordinator-statefulset", "", "the Coordinator's StatefulSet in the webhook's own namespace: once ready, the webhook annotates it ("+nudge.AnnotationNudged+") until the StatefulSet controller has created the pods it lacked, so that the controller's back-off from the creations the webhook could not admit yet does not delay them; empty: never")
	return cmd
}

// applyEnvAndFile sets flags not given on the command line from
// CONTRAST_WEBHOOK_*, then those still unset from the settings file.
func (o *options) applyEnvAndFile(fs *pflag.FlagSet) error {
	if err := applyEnv(fs, o.lookupEnv); err != nil {
		return err
	}
	if o.settingsFile == "" {
		return nil
	}
	return o.settings.ApplyFile(fs, o.settingsFile)
}

// applyEnv sets flags not given on the command line from CONTRAST_WEBHOOK_*.
func applyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := lookup(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	})
	return errors.Join(errs...)
}

type config struct {
	listen, probeListen string
	certFile, keyFile   string
	selfManaged         bool
	dnsNames            []string
	webhookConfig       string
	validatingConfig    string
	caValidity          time.Duration
	certValidity        time.Duration
	settings            *settings.Resolved
	excluded            []string
	own                 string
	pullSecrets         bool
	kubeconfig          string
	logLevel            slog.Level
	// policyCache bounds the policy cache; nil: no cache.
	policyCache *policy.CacheConfig
	// patchCache bounds the patch cache; nil: no cache.
	patchCache *server.PatchCacheConfig
	// coordinatorSet is the Coordinator's StatefulSet to nudge; empty: none.
	coordinatorSet string
}

// config validates the options.
func (o *options) config() (*config, error) {
	c := &config{
		listen: o.listen, probeListen: o.probeListen, certFile: o.certFile, keyFile: o.keyFile,
		selfManaged: o.selfManaged, dnsNames: o.dnsNames, webhookConfig: o.webhookConfiguration,
		validatingConfig: o.validatingConfig,
		caValidity:       o.caValidity, certValidity: o.certValidity,
		pullSecrets: o.pullSecrets, kubeconfig: o.kubeconfig, coordinatorSet: o.coordinatorSet,
	}
	var errs []error
	switch {
	case o.selfManaged && (o.certFile != "" || o.keyFile != ""):
		errs = append(errs, errors.New("--self-managed-certs excludes --tls-cert-file and --tls-key-file"))
	case o.selfManaged && len(o.dnsNames) == 0:
		errs = append(errs, errors.New("--self-managed-certs needs --tls-dns-names"))
	case o.selfManaged && o.webhookConfiguration == "":
		errs = append(errs, errors.New("--self-managed-certs needs --webhook-configuration"))
	case !o.selfManaged && (o.certFile == "" || o.keyFile == ""):
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required (or --self-managed-certs)"))
	case o.selfManaged && (o.caValidity < time.Second || o.certValidity < time.Second):
		errs = append(errs, errors.New("--self-managed-ca-validity and --self-managed-cert-validity must be at least 1s"))
	case o.selfManaged && o.certValidity > o.caValidity:
		errs = append(errs, fmt.Errorf("--self-managed-cert-validity %s exceeds --self-managed-ca-validity %s", o.certValidity, o.caValidity))
	}
	resolved, err := o.settings.Resolve()
	if err != nil {
		errs = append(errs, err)
	}
	c.settings = resolved
	switch {
	case o.policyCacheEntries < 0:
		errs = append(errs, fmt.Errorf("--policy-cache-max-entries %d: want 0 (off) or more", o.policyCacheEntries))
	case o.policyCacheBytes <= 0:
		errs = append(errs, fmt.Errorf("--policy-cache-max-bytes %d: want at least 1", o.policyCacheBytes))
	case o.policyCacheEntries > 0:
		c.policyCache = &policy.CacheConfig{MaxEntries: o.policyCacheEntries, MaxBytes: o.policyCacheBytes}
	}
	switch {
	case o.patchCacheEntries < 0:
		errs = append(errs, fmt.Errorf("--patch-cache-max-entries %d: want 0 (off) or more", o.patchCacheEntries))
	case o.patchCacheBytes <= 0:
		errs = append(errs, fmt.Errorf("--patch-cache-max-bytes %d: want at least 1", o.patchCacheBytes))
	case o.patchCacheEntries > 0:
		c.patchCache = &server.PatchCacheConfig{MaxEntries: o.patchCacheEntries, MaxBytes: o.patchCacheBytes}
	}
	if o.coordinatorSet != "" {
		if msgs := validation.IsDNS1123Subdomain(o.coordinatorSet); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--coordinator-statefulset %q is not a StatefulSet name: %s", o.coordinatorSet, strings.Join(msgs, "; ")))
		}
	}
	if err := c.logLevel.UnmarshalText([]byte(o.logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: %w", o.logLevel, err))
	}
	excluded, err := o.excluded()
	if err != nil {
		errs = append(errs, err)
	}
	c.excluded = excluded
	if err == nil {
		// known: excluded() found it; the Coordinator of the Helm release runs there
		c.own, _ = o.ownNamespace()
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// excluded returns the namespaces never mutated: kube-system, the webhook's
// own namespace and --excluded-namespaces.
func (o *options) excluded() ([]string, error) {
	own, err := o.ownNamespace()
	if err != nil {
		return nil, err
	}
	out := append(slices.Clone(alwaysExcluded), own)
	for _, ns := range o.excludedNamespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			return nil, fmt.Errorf("--excluded-namespaces: %q is not a namespace name: %s", ns, strings.Join(msgs, "; "))
		}
		out = append(out, ns)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ownNamespace returns the webhook's namespace: POD_NAMESPACE (downward
// API), else the service account's namespace file, else --namespace. A
// --namespace that contradicts the namespace found is an error.
func (o *options) ownNamespace() (string, error) {
	var own, from string
	if v, ok := o.lookupEnv("POD_NAMESPACE"); ok && strings.TrimSpace(v) != "" {
		own, from = strings.TrimSpace(v), "POD_NAMESPACE"
	}
	if own == "" && o.namespaceFile != "" {
		b, err := os.ReadFile(o.namespaceFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return "", fmt.Errorf("reading the webhook's own namespace: %w", err)
		default:
			own, from = strings.TrimSpace(string(b)), o.namespaceFile
		}
	}
	switch {
	case own == "" && o.namespace == "":
		return "", fmt.Errorf("the webhook's own namespace, which is never mutated, is unknown: set POD_NAMESPACE (downward API), mount the service account token (%s) or pass --namespace", serviceAccountNamespaceFile)
	case own == "":
		own, from = o.namespace, "--namespace"
	case o.namespace != "" && o.namespace != own:
		return "", fmt.Errorf("--namespace %q contradicts the namespace %q from %s", o.namespace, own, from)
	}
	if msgs := validation.IsDNS1123Label(own); len(msgs) > 0 {
		return "", fmt.Errorf("the webhook's own namespace %q (from %s) is not a namespace name: %s", own, from, strings.Join(msgs, "; "))
	}
	return own, nil
}

func run(ctx context.Context, cfg *config) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel})).With("component", "webhook")
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "contrast_build_info",
		Help: "Always 1; identifies the running build.",
	}, []string{"component", "version", "goversion"})
	reg.MustRegister(buildInfo)
	buildInfo.WithLabelValues("webhook", version(), runtime.Version()).Set(1)
	metrics := server.NewMetrics(reg)

	registryCfg := cfg.settings.Registry
	registryCfg.Observer = metrics // the registry client's own caches and fetches
	registryCfg.Logger = log       // failed registry requests at debug level, never a response body
	mutator := cfg.settings.Mutator(server.NewCachingSource(images.NewRegistry(registryCfg), metrics), log)
	if cfg.policyCache != nil {
		pc := *cfg.policyCache
		pc.Observer = metrics
		mutator.Policies = policy.NewCache(pc)
	}
	var client kubernetes.Interface
	if cfg.pullSecrets || cfg.selfManaged || cfg.coordinatorSet != "" {
		rest, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.kubeconfig}, nil).ClientConfig()
		if err != nil {
			return fmt.Errorf("API server configuration (needed for pull secrets, self-managed certificates and --coordinator-statefulset): %w", err)
		}
		if client, err = kubernetes.NewForConfig(rest); err != nil {
			return fmt.Errorf("creating API client: %w", err)
		}
	}
	var keychain server.KeychainFunc
	if cfg.pullSecrets {
		keychain = server.PullSecretKeychain(client.CoreV1())
	}
	if client != nil {
		// envFrom: the ConfigMaps' keys and values are pinned at admission
		mutator.EnvSources = server.ConfigMapReader(client.CoreV1())
	}
	var patches *server.PatchCache
	if cfg.patchCache != nil {
		pc := *cfg.patchCache
		pc.Observer = metrics
		patches = server.NewPatchCache(pc)
	}
	admission, err := server.NewAdmissionHandler(server.AdmissionConfig{
		Mutator: mutator, Metrics: metrics, Logger: log, ExcludedNamespaces: cfg.excluded, CoordinatorNamespace: cfg.own, Keychain: keychain,
		Patches: patches,
	})
	if err != nil {
		return err
	}
	cert, err := certificateSource(cfg, client, log)
	if err != nil {
		return err
	}
	probes := server.NewProbes()
	probes.AddLiveness("ping", func(context.Context) error { return nil })
	probes.AddReadiness("certificate", cert.Ready)

	background := []func(context.Context) error{cert.Run}
	if cfg.coordinatorSet != "" {
		background = append(background, func(ctx context.Context) error {
			return nudge.Run(ctx, nudge.Config{
				StatefulSets: client.AppsV1().StatefulSets(cfg.own), Name: cfg.coordinatorSet,
				Ready: cert.Ready, Logger: log,
			})
		})
	}

	var lc net.ListenConfig
	wl, err := lc.Listen(ctx, "tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listening for admission reviews: %w", err)
	}
	pl, err := lc.Listen(ctx, "tcp", cfg.probeListen)
	if err != nil {
		wl.Close()
		return fmt.Errorf("listening for probes: %w", err)
	}
	return server.Serve(ctx, server.ServeConfig{
		Webhook:        wl,
		Probes:         pl,
		Admission:      admission,
		ProbeHandler:   probes.Handler(reg),
		GetCertificate: cert.GetCertificate,
		Background:     background,
		Logger:         log,
	})
}

// certificates is a source of the serving certificate.
type certificates interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Ready(context.Context) error
	Run(context.Context) error
}

func certificateSource(cfg *config, client kubernetes.Interface, log *slog.Logger) (certificates, error) {
	if !cfg.selfManaged {
		return certs.NewFileSource(certs.FileConfig{CertFile: cfg.certFile, KeyFile: cfg.keyFile, Logger: log}), nil
	}
	patcher := &certs.WebhookConfigPatcher{Client: client.AdmissionregistrationV1().MutatingWebhookConfigurations(), Name: cfg.webhookConfig}
	if cfg.validatingConfig != "" {
		patcher.Validating = client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
		patcher.ValidatingName = cfg.validatingConfig
	}
	s, err := certs.NewSelfManaged(certs.SelfManagedConfig{
		DNSNames:     cfg.dnsNames,
		Patcher:      patcher,
		CAValidity:   cfg.caValidity,
		LeafValidity: cfg.certValidity,
		Logger:       log,
	})
	if err != nil {
		return nil, fmt.Errorf("self-managed certificates: %w", err)
	}
	return s, nil
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}
