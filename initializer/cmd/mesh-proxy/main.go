// The mesh-proxy binary is Contrast's service-mesh sidecar (see
// initializer/README.md for its interface).
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := NewMeshProxyCommand().ExecuteContext(ctx); err != nil {
		slog.New(slog.NewJSONHandler(os.Stderr, nil)).Error("mesh proxy failed", "component", "mesh-proxy", "error", err)
		os.Exit(1)
	}
}
