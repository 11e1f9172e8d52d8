package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// handshakeReason maps a TLS handshake error to one of the bounded reasons
// of contrast_meshproxy_handshake_failures_total. It branches on error
// types only.
func handshakeReason(err error) string {
	var (
		hostErr    x509.HostnameError
		unknown    x509.UnknownAuthorityError
		invalid    x509.CertificateInvalidError
		verifyErr  *tls.CertificateVerificationError
		recordErr  tls.RecordHeaderError
		opErr      *net.OpError
		netErr     net.Error
		alertError tls.AlertError
	)
	switch {
	case errors.Is(err, errNoClientCertificate):
		return ReasonNoClientCertificate
	case errors.As(err, &hostErr):
		return ReasonNameMismatch
	case errors.As(err, &unknown):
		return ReasonUnknownAuthority
	case errors.As(err, &invalid):
		if invalid.Reason == x509.Expired {
			return ReasonExpired
		}
		return ReasonBadCertificate
	case errors.As(err, &verifyErr):
		return ReasonBadCertificate
	case errors.As(err, &alertError),
		// crypto/tls reports an alert from the peer as a *net.OpError
		// with Op "remote error" around an unexported alert type.
		errors.As(err, &opErr) && opErr.Op == "remote error":
		return ReasonRejectedByPeer
	case errors.As(err, &recordErr):
		return ReasonProtocol
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return ReasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return ReasonConnectionClosed
	default:
		return ReasonOther
	}
}

// isRemoteAlert reports whether err is a TLS alert sent by the peer.
func isRemoteAlert(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "remote error"
}
