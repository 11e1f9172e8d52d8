// The initializer binary is the first init container of every confidential
// pod: it attests the pod to the Coordinator and writes its mesh identity.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Execute(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	os.Exit(int(code))
}
