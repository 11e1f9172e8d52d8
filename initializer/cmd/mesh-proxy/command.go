package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/contrast-cc/contrast/initializer/internal/proxy"
	"github.com/contrast-cc/contrast/initializer/internal/rules"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

type options struct {
	getenv         func(string) string
	tlsDir         string
	ingressPort    uint16
	drainTimeout   time.Duration
	reloadInterval time.Duration
	logLevel       string
	// install applies the rules; tests replace it.
	install func(*rules.Set) error
}

// NewMeshProxyCommand returns the mesh-proxy command.
func NewMeshProxyCommand() *cobra.Command {
	return newCommand(&options{getenv: os.Getenv, install: rules.Install})
}

func newCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mesh-proxy",
		Short: "Contrast's service-mesh sidecar: mTLS for the pod's inbound TCP and configured egress",
		Long: `Contrast's service-mesh sidecar. It reads the pod's mesh configuration from
` + meshconfig.EnvIngress + `, ` + meshconfig.EnvEgress + `, ` + meshconfig.EnvAdminPort + ` and ` + meshconfig.EnvProbes + `
(set by the webhook from the contrast.cc/servicemesh-* annotations and the pod's kubelet
probes, which it runs on port 15021 for the kubelet), installs nftables
rules that redirect inbound TCP to its ingress port (needs CAP_NET_ADMIN), waits for the
mesh certificate in --tls-dir, and serves until SIGTERM, then drains.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			mesh, err := meshconfig.ParseEnv(o.getenv)
			if err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
			}
			log := slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})).With("component", "mesh-proxy")
			p, err := proxy.New(proxy.Config{
				Mesh:           mesh,
				TLSDir:         o.tlsDir,
				IngressPort:    o.ingressPort,
				ApplyRules:     o.install,
				ReloadInterval: o.reloadInterval,
				DrainTimeout:   o.drainTimeout,
				Logger:         log,
				Metrics:        proxy.NewMetrics(version()),
			})
			if err != nil {
				return err
			}
			log.Info("starting", "version", version(), "ingress", mesh.IngressString(), "egress", mesh.EgressString(),
				"adminPort", mesh.AdminPortString(), "ingressPort", o.ingressPort, "tlsDir", o.tlsDir)
			return p.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.tlsDir, "tls-dir", proxy.DefaultTLSDir, "folder with mesh-ca.pem, certChain.pem and key.pem (written by the Initializer); watched for changes")
	f.Uint16Var(&o.ingressPort, "ingress-port", proxy.DefaultIngressPort, "port of the ingress listener that inbound TCP is redirected to; the pod must not use it")
	f.DurationVar(&o.drainTimeout, "drain-timeout", proxy.DefaultDrainTimeout, "after SIGTERM, how long open connections may continue before they are closed")
	f.DurationVar(&o.reloadInterval, "reload-interval", proxy.DefaultReloadInterval, "how often the certificate files are checked for changes")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error (debug logs each failed handshake with its reason)")
	return cmd
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}
