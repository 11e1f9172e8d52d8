package rules

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/initializer/internal/netnstest"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

// TestApplyNetns applies rule sets in a fresh network namespace, reads them
// back from the kernel and checks that applying again (a restarted sidecar)
// or applying another set replaces the table instead of adding to it.
func TestApplyNetns(t *testing.T) {
	ns := netnstest.New(t)
	conn, err := nftables.New(nftables.WithNetNSFd(ns.FD()))
	require.NoError(t, err)

	first, err := Compute(&meshconfig.Config{
		Ingress:   []meshconfig.Ingress{{Name: "plain", Port: 8081, Mode: meshconfig.IngressPlain}, {Name: "web", Port: 8443, Mode: meshconfig.IngressTLS}},
		AdminPort: 9901,
	}, ingressPort)
	require.NoError(t, err)
	second, err := Compute(&meshconfig.Config{}, ingressPort)
	require.NoError(t, err)

	for i, s := range []*Set{first, first, second, second, first} {
		require.NoError(t, s.Apply(conn), "apply %d", i)
		installed, err := s.Read(conn)
		require.NoError(t, err)
		ok, err := s.Matches(installed)
		require.NoError(t, err)
		require.True(t, ok, "apply %d: installed rules differ from the computed set:\n%s\ninstalled: %d rules", i, s, len(installed))

		tables, err := conn.ListTables()
		require.NoError(t, err)
		require.Len(t, tables, 1, "apply %d", i)
		assert.Equal(t, TableName, tables[0].Name)
		chains, err := conn.ListChains()
		require.NoError(t, err)
		require.Len(t, chains, 1, "apply %d", i)
		assert.Equal(t, nftables.ChainHookPrerouting, chains[0].Hooknum)
	}
}

// TestRedirectNetns checks the rules on real traffic: a client namespace
// connects over a veth pair to a server namespace holding the rules. A port
// that needs TLS lands on the proxy's listener, a plain port and the admin
// port reach their own listeners, and connections the server namespace opens
// itself (to its own address or to loopback) are not redirected.
func TestRedirectNetns(t *testing.T) {
	for _, fam := range []struct{ name, client, server string }{
		{"ipv4", "10.77.0.1/24", "10.77.0.2/24"},
		{"ipv6", "fd00:77::1/64", "fd00:77::2/64"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			client, server := netnstest.New(t), netnstest.New(t)
			_, serverAddr := netnstest.Link(t, client, server, fam.client, fam.server)

			s, err := Compute(&meshconfig.Config{
				Ingress:   []meshconfig.Ingress{{Name: "plain", Port: 8081, Mode: meshconfig.IngressPlain}, {Name: "web", Port: 8443, Mode: meshconfig.IngressTLS}},
				AdminPort: 9901,
			}, ingressPort)
			require.NoError(t, err)
			conn, err := nftables.New(nftables.WithNetNSFd(server.FD()))
			require.NoError(t, err)
			require.NoError(t, s.Apply(conn))

			// Listeners in the server namespace, each answering with its own name.
			for _, l := range []struct {
				port uint16
				name string
			}{{ingressPort, "proxy"}, {8081, "plain"}, {9901, "admin"}} {
				var ln net.Listener
				require.NoError(t, server.Do(func() (err error) {
					var lc net.ListenConfig
					ln, err = lc.Listen(context.Background(), "tcp", net.JoinHostPort("::", strconv.Itoa(int(l.port))))
					return err
				}))
				t.Cleanup(func() { _ = ln.Close() })
				go func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						_, _ = c.Write([]byte(l.name))
						_ = c.Close()
					}
				}()
			}

			dialIn := func(ns *netnstest.NS, host string, port int) (string, error) {
				var got string
				err := ns.Do(func() error {
					d := net.Dialer{Timeout: 5 * time.Second}
					c, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
					if err != nil {
						return err
					}
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					b := make([]byte, 16)
					n, err := c.Read(b)
					got = string(b[:n])
					if err != nil {
						return fmt.Errorf("reading: %w", err)
					}
					return nil
				})
				return got, err
			}
			server4or6 := serverAddr.String()
			for _, tc := range []struct {
				port int
				want string
			}{
				{8080, "proxy"}, // mTLS port (unlisted)
				{8443, "proxy"}, // TLS-only port
				{22, "proxy"},
				{8081, "plain"},
				{9901, "admin"},
				{ingressPort, "proxy"},
			} {
				got, err := dialIn(client, server4or6, tc.port)
				require.NoError(t, err, "port %d", tc.port)
				assert.Equal(t, tc.want, got, "port %d", tc.port)
			}

			// Connections the pod opens itself are not redirected: nothing
			// listens on 8080, so they are refused.
			loopback := "127.0.0.1"
			if serverAddr.Is6() {
				loopback = "::1"
			}
			for _, host := range []string{server4or6, loopback} {
				_, err := dialIn(server, host, 8080)
				require.ErrorIs(t, err, syscall.ECONNREFUSED, "local connection to %s:8080", host)
			}
		})
	}
}
