//go:build tools

// Package containerd pins containerd, its runc shim and ctr for the
// integration harness's real node. `make k8s-bins` builds them from source.
package containerd

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
