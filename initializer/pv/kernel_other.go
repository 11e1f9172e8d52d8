//go:build !linux

package pv

import "errors"

// ProbeKernel finds no device-mapper outside Linux.
func ProbeKernel() Kernel {
	return Kernel{TargetsErr: errors.New("device-mapper is Linux only")}
}
