package images

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Classes of failed resolutions. A Registry returns an *Error whose Err
// wraps exactly one of them (errors.Is); its message is a fixed text chosen
// by the class, never text from a registry's response.
//
// Registries are named by pods, so a registry's answer is as good as
// attacker-controlled, and a registry host may be an internal service: what
// it answered must not reach the pod's author (the denial message) beyond
// the class and, for HTTP errors, the status code.
var (
	// ErrNotFound: the registry answered 404 (no such repository, tag or
	// digest).
	ErrNotFound = errors.New("image not found")
	// ErrAccessDenied: the registry answered 401 or 403.
	ErrAccessDenied = errors.New("registry denied access")
	// ErrRegistryStatus: the registry answered another HTTP error status.
	ErrRegistryStatus = errors.New("registry error")
	// ErrUnreachable: no HTTP answer (DNS, connection, TLS, or plain HTTP to
	// a registry not configured as insecure).
	ErrUnreachable = errors.New("registry unreachable")
	// ErrTimeout: the registry did not answer in time.
	ErrTimeout = errors.New("registry timeout")
	// ErrInvalidImage: the registry answered with something that is not a
	// usable image (malformed manifest or configuration, no image for the
	// platform, a digest other than the pinned one, unreadable layers).
	ErrInvalidImage = errors.New("invalid image")
	// ErrInvalidReference: the image is not a valid reference.
	ErrInvalidReference = errors.New("invalid image reference")
	// ErrNoEndpoint: the registry is only reached through mirrors and none
	// is configured.
	ErrNoEndpoint = errors.New("no registry endpoint")
)

// reason is the classified, printable cause of a failed resolution.
type reason struct {
	class error
	msg   string
	// rank orders the reasons of several endpoints: the highest is
	// reported (an answer of a registry tells more than no answer).
	rank int
}

func (r *reason) Error() string { return r.msg }

func (r *reason) Unwrap() error { return r.class }

func newReason(class error, rank int, format string, args ...any) *reason {
	return &reason{class: class, msg: fmt.Sprintf(format, args...), rank: rank}
}

// errPlainHTTP is returned by httpsOnly for plain-HTTP requests to hosts not
// configured as insecure.
var errPlainHTTP = errors.New("plain HTTP is used only for registries configured as insecure")

// classify reduces err, an error of go-containerregistry or of the network,
// to a reason. Only the status code of an HTTP error is kept.
func classify(err error) *reason {
	var terr *transport.Error
	var uerr *url.Error
	var nerr net.Error
	switch {
	case errors.As(err, &terr):
		code := terr.StatusCode
		switch code {
		case http.StatusNotFound:
			return newReason(ErrNotFound, 2, "not found")
		case http.StatusUnauthorized, http.StatusForbidden:
			return newReason(ErrAccessDenied, 4, "the registry denied access (HTTP %d %s); check the image pull secrets", code, http.StatusText(code))
		default:
			return newReason(ErrRegistryStatus, 3, "the registry returned HTTP %d %s", code, http.StatusText(code))
		}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return newReason(ErrTimeout, 1, "the registry did not answer in time")
	case errors.Is(err, context.Canceled):
		return newReason(context.Canceled, 1, "the resolution was canceled")
	case errors.As(err, &uerr), errors.As(err, &nerr), errors.Is(err, errPlainHTTP):
		return newReason(ErrUnreachable, 0, "the registry cannot be reached")
	}
	return newReason(ErrInvalidImage, 5, "the registry served no valid image")
}

// worst returns the reason of highest rank.
func worst(rs []*reason) *reason {
	var w *reason
	for _, r := range rs {
		if w == nil || r.rank > w.rank {
			w = r
		}
	}
	return w
}

// registryCodeRe matches error codes of the distribution spec
// (MANIFEST_UNKNOWN, ...); anything else a registry calls a code is not
// logged.
var registryCodeRe = regexp.MustCompile(`^[A-Z_]{1,32}$`)

// maxLoggedError bounds the text of errors that carry no HTTP response.
const maxLoggedError = 256

// logAttrs describes err for a debug log without anything a registry sent
// but its status code and spec error codes: the text of a
// *transport.Error, which quotes up to 64 KiB of the response body, is
// never used, and URLs lose their query (signed blob URLs).
func logAttrs(err error) []any {
	var terr *transport.Error
	if errors.As(err, &terr) {
		attrs := []any{"status", terr.StatusCode}
		if terr.Request != nil && terr.Request.URL != nil {
			attrs = append(attrs, "method", terr.Request.Method, "url", withoutQuery(terr.Request.URL))
		}
		var codes []string
		for _, d := range terr.Errors {
			if c := string(d.Code); registryCodeRe.MatchString(c) && len(codes) < 4 {
				codes = append(codes, c)
			}
		}
		if len(codes) > 0 {
			attrs = append(attrs, "registryCodes", codes)
		}
		return attrs
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		u, perr := url.Parse(uerr.URL)
		target := "(unparsable)"
		if perr == nil {
			target = withoutQuery(u)
		}
		return []any{"method", uerr.Op, "url", target, "error", bounded(uerr.Err.Error())}
	}
	return []any{"error", bounded(err.Error())}
}

func withoutQuery(u *url.URL) string {
	c := *u
	c.RawQuery, c.Fragment, c.User = "", "", nil
	return c.String()
}

func bounded(s string) string {
	if len(s) > maxLoggedError {
		return s[:maxLoggedError] + "..."
	}
	return s
}
