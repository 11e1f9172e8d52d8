// The webhook binary is Contrast's mutating admission webhook.
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
	if err := NewWebhookCommand().ExecuteContext(ctx); err != nil {
		slog.New(slog.NewJSONHandler(os.Stderr, nil)).Error("webhook failed", "component", "webhook", "error", err)
		os.Exit(1)
	}
}
