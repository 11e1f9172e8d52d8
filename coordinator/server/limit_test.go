package server

import (
	"testing"
	"time"
)

func TestHandshakeLimiterAcquire(t *testing.T) {
	l := &handshakeLimiter{sem: make(chan struct{}, 1)}
	if !l.acquire() {
		t.Fatal("acquire with a free slot failed")
	}
	start := time.Now()
	if l.acquire() {
		t.Fatal("acquire with no free slot succeeded")
	}
	if d := time.Since(start); d < maxSlotWait {
		t.Errorf("acquire gave up after %v, want at least %v", d, maxSlotWait)
	}
	<-l.sem
	if !l.acquire() {
		t.Fatal("acquire after release failed")
	}
}
