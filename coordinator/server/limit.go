package server

import (
	"net"
	"time"

	"google.golang.org/grpc/credentials"
)

// handshakeLimiter bounds the number of concurrent server handshakes. Under
// a storm of initializers, unbounded handshakes share the CPU fairly and all
// finish late; bounded, most finish in arrival order. A handshake waits for
// a slot at most maxSlotWait and then proceeds anyway, so peers that open
// connections and stall cannot block others for longer than that.
type handshakeLimiter struct {
	credentials.TransportCredentials
	sem chan struct{}
}

const maxSlotWait = time.Second

func limitHandshakes(c credentials.TransportCredentials, n int) credentials.TransportCredentials {
	return &handshakeLimiter{TransportCredentials: c, sem: make(chan struct{}, n)}
}

// ServerHandshake implements credentials.TransportCredentials.
func (l *handshakeLimiter) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if l.acquire() {
		defer func() { <-l.sem }()
	}
	return l.TransportCredentials.ServerHandshake(raw)
}

// acquire takes a slot, waiting at most maxSlotWait, and reports whether it
// did. A free slot is taken without creating a timer.
func (l *handshakeLimiter) acquire() bool {
	select {
	case l.sem <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(maxSlotWait)
	defer t.Stop()
	select {
	case l.sem <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// Clone implements credentials.TransportCredentials, sharing the limit.
func (l *handshakeLimiter) Clone() credentials.TransportCredentials {
	return &handshakeLimiter{TransportCredentials: l.TransportCredentials.Clone(), sem: l.sem}
}
