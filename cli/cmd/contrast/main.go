// The contrast binary is Contrast's command-line tool: generate, set,
// verify and recover (docs/cli.md).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/contrast-cc/contrast/cli/internal/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cmd.Execute(ctx, cmd.NewRootCommand(), os.Stderr)
	stop()
	os.Exit(code)
}
