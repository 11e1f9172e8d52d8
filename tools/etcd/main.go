// Command etcd is etcd v3.6 built from source through the Go module proxy, so
// the integration harness needs no downloaded release binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
