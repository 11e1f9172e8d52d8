// Command coordinator runs the Contrast Coordinator (DESIGN.md §5).
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/contrast-cc/contrast/coordinator/internal/command"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var level slog.LevelVar
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: &level}))
	err := command.New(logger, &level).ExecuteContext(ctx)
	stop()
	if err != nil {
		os.Exit(1)
	}
}
