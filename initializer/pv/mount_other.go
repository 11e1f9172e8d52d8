//go:build !linux

package pv

import "errors"

func mountExt4(_, _ string) error { return errors.New("mounting needs Linux") }

func unmount(string) error { return errors.New("unmounting needs Linux") }
