// Package netnstest creates network namespaces for tests that set real
// nftables rules and open sockets behind them. It needs root and the ip tool
// (Debian iproute2). Where they are missing a test is skipped with the
// reason, except under CI (CI set), where it fails: CI must run these tests.
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// NS is a network namespace with its loopback up.
type NS struct {
	Name string
	fd   int
}

// Require skips t (fails it under CI) unless network namespaces can be
// created here.
func Require(t testing.TB) {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + " (this test needs root and iproute2 to create network namespaces)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI is set, so this is a failure, not a skip")
		}
		t.Skip(msg)
	}
	if os.Geteuid() != 0 {
		unavailable("not running as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		unavailable("ip not found: %v", err)
	}
}

// New creates a network namespace that is deleted when the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	Require(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "contrast-test-" + hex.EncodeToString(b[:])
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.CommandContext(context.Background(), "ip", "netns", "del", name).Run() }) //nolint:gosec // ip with a name this package generated.
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening network namespace %s: %v", name, err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	ns := &NS{Name: name, fd: fd}
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// FD is a file descriptor of the namespace (for nftables.WithNetNSFd).
func (n *NS) FD() int { return n.fd }

// Run runs a command inside the namespace and fails t on error.
func (n *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Do runs f on an OS thread that has joined the namespace, so sockets f
// opens belong to it. The thread is discarded afterwards (it stays locked
// and ends with its goroutine), so no other goroutine ever runs in the
// namespace by accident. Goroutines f starts run outside the namespace.
func (n *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("joining network namespace %s: %w", n.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Link connects a and b with a veth pair and gives them the addresses
// addrA and addrB (CIDR notation, e.g. 10.0.0.1/24 and 10.0.0.2/24).
func Link(t testing.TB, a, b *NS, addrA, addrB string) (netip.Addr, netip.Addr) {
	t.Helper()
	var r [3]byte
	_, _ = rand.Read(r[:])
	ifA, ifB := "ct"+hex.EncodeToString(r[:])+"a", "ct"+hex.EncodeToString(r[:])+"b"
	run(t, "ip", "link", "add", ifA, "netns", a.Name, "type", "veth", "peer", "name", ifB, "netns", b.Name)
	var addrs [2]netip.Addr
	for i, e := range []struct {
		ns        *NS
		dev, addr string
	}{{a, ifA, addrA}, {b, ifB, addrB}} {
		p, err := netip.ParsePrefix(e.addr)
		if err != nil {
			t.Fatalf("address %q: %v", e.addr, err)
		}
		args := []string{"ip", "addr", "add", e.addr, "dev", e.dev}
		if p.Addr().Is6() {
			args = append(args, "nodad") // usable at once, not tentative
		}
		e.ns.Run(t, args...)
		e.ns.Run(t, "ip", "link", "set", e.dev, "up")
		addrs[i] = p.Addr()
	}
	return addrs[0], addrs[1]
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(context.Background(), args[0], args[1:]...).CombinedOutput() //nolint:gosec // test helper running ip with fixed arguments.
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
