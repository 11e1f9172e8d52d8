package cmd

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// freeAddr returns a loopback address nothing listens on (it refuses
// connections).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// TestWaitListening: a Coordinator that is restarting refuses connections
// until its server listens; set, verify and recover wait for it (saying
// so) instead of failing at once.
func TestWaitListening(t *testing.T) {
	addr := freeAddr(t)
	var out bytes.Buffer
	cmd := &cobra.Command{}
	cmd.SetErr(&out)
	go func() {
		time.Sleep(time.Second)
		l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
		if err != nil {
			return
		}
		t.Cleanup(func() { _ = l.Close() })
		c, err := l.Accept()
		if err == nil {
			_ = c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	require.NoError(t, waitListening(ctx, cmd, addr))
	assert.Contains(t, out.String(), "refuses connections (not listening yet?): retrying until --timeout")
}

func TestWaitListeningGivesUp(t *testing.T) {
	addr := freeAddr(t)
	cmd := &cobra.Command{}
	cmd.SetErr(&bytes.Buffer{})
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	err := waitListening(ctx, cmd, addr)
	var ee *exitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, ExitFailure, ee.code)
	assert.Contains(t, err.Error(), "refused connections until --timeout ended")
}
