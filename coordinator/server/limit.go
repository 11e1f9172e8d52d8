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
	t := time.NewTimer(maxSlotWait)
	select {
	case l.sem <- struct{}{}:
		t.Stop()
		defer func() { <-l.sem }()
	case <-t.C:
	}
	return l.TransportCredentials.ServerHandshake(raw)
}

// Clone implements credentials.TransportCredentials, sharing the limit.
func (l *handshakeLimiter) Clone() credentials.TransportCredentials {
	return &handshakeLimiter{TransportCredentials: l.TransportCredentials.Clone(), sem: l.sem}
}
