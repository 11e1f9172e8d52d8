// Command images builds the project's images (Coordinator, webhook,
// Initializer, service-mesh proxy) reproducibly and pushes them to a
// registry; `make images REGISTRY=…` runs it. It prints the references by
// digest for the Helm chart and the webhook flags.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		stop()
		os.Exit(1)
	}
}
