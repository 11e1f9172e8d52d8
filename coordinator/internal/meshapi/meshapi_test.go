package meshapi

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/atls"
)

func TestHandshakeReason(t *testing.T) {
	testCases := map[string]struct {
		err  error
		want string
	}{
		"no evidence": {
			err:  fmt.Errorf("validating peer evidence: %w", attest.Errorf(attest.CheckSession, "peer sent no evidence but attestation is required")),
			want: "session",
		},
		"unknown check":  {err: attest.Errorf("made-up", "x"), want: "other"},
		"protocol error": {err: fmt.Errorf("%w: unknown message type 9", atls.ErrProtocol), want: "protocol"},
		"rejected by peer": {
			err:  attest.NewCheckError("measurement", atls.ErrRejectedByPeer),
			want: "rejected-by-peer",
		},
		"not TLS": {
			err:  fmt.Errorf("tls handshake: %w", tls.RecordHeaderError{Msg: "tls: first record does not look like a TLS handshake"}),
			want: "tls",
		},
		"TLS alert":     {err: fmt.Errorf("tls handshake: %w", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}), want: "tls"},
		"TLS version":   {err: fmt.Errorf("tls handshake: %w", errors.New("tls: client offered only unsupported versions: [303]")), want: "tls"},
		"deadline":      {err: fmt.Errorf("reading atls message: %w", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}), want: "timeout"},
		"hung up":       {err: fmt.Errorf("tls handshake: %w", io.EOF), want: "connection-closed"},
		"reset":         {err: fmt.Errorf("reading atls message: %w", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), want: "connection-closed"},
		"anything else": {err: errors.New("boom"), want: "other"},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, handshakeReason(tc.err))
		})
	}
}
