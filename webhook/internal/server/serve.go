package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// ServeConfig configures Serve.
type ServeConfig struct {
	// Webhook is the HTTPS listener of the admission handler.
	Webhook net.Listener
	// Probes is the plain HTTP listener of /livez, /readyz and /metrics.
	Probes net.Listener
	// Admission handles MutatePath, MutateStatefulSetPath and ValidatePath
	// (the handler of NewAdmissionHandler serves them all).
	Admission http.Handler
	// ProbeHandler serves the probe listener.
	ProbeHandler http.Handler
	// GetCertificate returns the serving certificate.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Background runs alongside the servers (e.g. certificate reloading)
	// and is stopped with them.
	Background []func(context.Context) error
	Logger     *slog.Logger
	// ShutdownTimeout bounds graceful shutdown (default 10s).
	ShutdownTimeout time.Duration
}

// MutatePath and ValidatePath are the paths of the mutating and the
// validating admission webhook.
const (
	MutatePath   = "/mutate"
	ValidatePath = "/validate"
)

// Serve runs the HTTPS webhook and the probe server until ctx is done, then
// shuts both down gracefully.
func Serve(ctx context.Context, cfg ServeConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+MutatePath, cfg.Admission)
	mux.Handle("POST "+ValidatePath, cfg.Admission)
	mux.Handle("POST "+MutateStatefulSetPath, cfg.Admission)
	webhook := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// the API server's webhook timeout is at most 30s
		WriteTimeout: 35 * time.Second,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: cfg.GetCertificate,
		},
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	probes := &http.Server{Handler: cfg.ProbeHandler, ReadHeaderTimeout: 10 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		cfg.Logger.Info("serving admission webhook", "address", cfg.Webhook.Addr().String())
		if err := webhook.ServeTLS(cfg.Webhook, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("webhook server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		cfg.Logger.Info("serving probes and metrics", "address", cfg.Probes.Addr().String())
		if err := probes.Serve(cfg.Probes); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("probe server: %w", err)
		}
		return nil
	})
	for _, bg := range cfg.Background {
		g.Go(func() error { return bg(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownTimeout)
		defer cancel()
		return errors.Join(webhook.Shutdown(sctx), probes.Shutdown(sctx))
	})
	return g.Wait()
}
