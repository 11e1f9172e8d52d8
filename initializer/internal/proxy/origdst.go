package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST of linux/netfilter_ipv6/ip6_tables.h
// (the same number as SO_ORIGINAL_DST, at level SOL_IPV6).
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination a redirected connection had before
// the nftables redirect rewrote it (getsockopt SO_ORIGINAL_DST, from the
// connection's conntrack entry). IPv4 connections on a dual-stack socket are
// asked at level SOL_IP, IPv6 ones at SOL_IPV6.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, errors.New("connection has no TCP local address")
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var dst netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		if local.AddrPort().Addr().Unmap().Is4() {
			// The kernel writes a struct sockaddr_in (16 bytes): family,
			// port (network order), address. IPv6Mreq is 20 bytes.
			var m *unix.IPv6Mreq
			m, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if serr != nil {
				return
			}
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Multiaddr[4:8])), binary.BigEndian.Uint16(m.Multiaddr[2:4]))
			return
		}
		// The kernel writes a struct sockaddr_in6 (28 bytes); IPv6MTUInfo
		// starts with one and is 32 bytes.
		var info *unix.IPv6MTUInfo
		info, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst)
		if serr != nil {
			return
		}
		var port [2]byte
		binary.NativeEndian.PutUint16(port[:], info.Addr.Port) // stored in network order
		dst = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), binary.BigEndian.Uint16(port[:]))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination (getsockopt SO_ORIGINAL_DST): %w", err)
	}
	return dst, nil
}
