package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// The standard gRPC health check (grpc.health.v1.Health/Check) as the
// kubelet's gRPC probe runs it, written against net/http rather than a
// gRPC library to keep the proxy small: one unary call over HTTP/2 in
// plaintext, a request and a response message of one field each.
//
//	message HealthCheckRequest { string service = 1; }
//	message HealthCheckResponse { ServingStatus status = 1; }
//
// Each message travels in gRPC's framing (a zero byte for "not
// compressed", the length as a 4-byte big-endian number, the protobuf
// encoding), and the call's outcome is the grpc-status trailer, or the
// header of a response without a body.
const (
	healthCheckPath = "/grpc.health.v1.Health/Check"
	// maxHealthResponse bounds the response body read; a real one has a
	// handful of bytes.
	maxHealthResponse = 4096
	// healthServing is ServingStatus SERVING.
	healthServing = 1
)

// healthStatusNames are the ServingStatus values, for messages.
var healthStatusNames = map[uint64]string{0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}

// grpcCodeNames are the gRPC status codes a health check answers with,
// for messages.
var grpcCodeNames = map[string]string{
	"1": "CANCELLED", "2": "UNKNOWN", "4": "DEADLINE_EXCEEDED", "5": "NOT_FOUND", "7": "PERMISSION_DENIED", //nolint:misspell // gRPC's own spelling of code 1
	"8": "RESOURCE_EXHAUSTED", "12": "UNIMPLEMENTED", "13": "INTERNAL", "14": "UNAVAILABLE", "16": "UNAUTHENTICATED",
}

// errNotServing means the application answered the health check with a
// status other than SERVING.
var errNotServing = errors.New("service unhealthy")

// grpcHealthCheck calls grpc.health.v1.Health/Check for service on base
// (http://host:port or https://host:port) through client, which must speak
// HTTP/2 to it. It returns nil only for a SERVING answer.
func grpcHealthCheck(ctx context.Context, client *http.Client, base, service string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+healthCheckPath,
		bytes.NewReader(healthCheckRequest(service)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", probeUserAgent)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health rpc: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health rpc: the application answered HTTP %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/grpc") {
		return fmt.Errorf("health rpc: the application answered content type %q, not gRPC", ct)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHealthResponse+1))
	if err != nil {
		return fmt.Errorf("health rpc: reading the response: %w", err)
	}
	if len(body) > maxHealthResponse {
		return fmt.Errorf("health rpc: response longer than %d bytes", maxHealthResponse)
	}
	// the trailers are complete once the body has been read to its end
	code, msg := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if code == "" {
		code, msg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	switch code {
	case "":
		return errors.New("health rpc: the response has no grpc-status")
	case "0":
	case "12":
		return fmt.Errorf("health rpc: the application does not implement grpc.health.v1.Health (UNIMPLEMENTED: %s)", grpcMessage(msg))
	default:
		name := grpcCodeNames[code]
		if name == "" {
			name = "code " + code
		}
		return fmt.Errorf("health rpc failed: %s: %s", name, grpcMessage(msg))
	}
	status, err := healthCheckStatus(body)
	if err != nil {
		return fmt.Errorf("health rpc: %w", err)
	}
	if status != healthServing {
		name, ok := healthStatusNames[status]
		if !ok {
			name = fmt.Sprint(status)
		}
		return fmt.Errorf("%w (responded with %s)", errNotServing, name)
	}
	return nil
}

// grpcMessage decodes the percent-encoded grpc-message value.
func grpcMessage(m string) string {
	if d, err := url.PathUnescape(m); err == nil {
		return d
	}
	return m
}

// healthCheckRequest is the framed HealthCheckRequest for service: field 1,
// length-delimited, left out when empty as protobuf does.
func healthCheckRequest(service string) []byte {
	var msg []byte
	if service != "" {
		msg = binary.AppendUvarint([]byte{1<<3 | 2}, uint64(len(service)))
		msg = append(msg, service...)
	}
	out := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg))) //nolint:gosec // a service name is far below 4 GiB
	return append(out, msg...)
}

// healthCheckStatus returns the status field of the one framed
// HealthCheckResponse in body (UNKNOWN, 0, when the field is absent, as
// protobuf reads it); fields it does not know are skipped.
func healthCheckStatus(body []byte) (uint64, error) {
	if len(body) < 5 {
		return 0, fmt.Errorf("response of %d bytes holds no message", len(body))
	}
	if body[0] != 0 {
		return 0, errors.New("the response message is compressed, which was not asked for")
	}
	n := binary.BigEndian.Uint32(body[1:5])
	msg := body[5:]
	if uint64(len(msg)) != uint64(n) {
		return 0, fmt.Errorf("the response message is %d bytes long but %d bytes follow its header", n, len(msg))
	}
	var status uint64
	for len(msg) > 0 {
		key, k := binary.Uvarint(msg)
		if k <= 0 {
			return 0, errors.New("malformed response message")
		}
		msg = msg[k:]
		var skip uint64
		switch key & 7 {
		case 0: // varint
			v, k := binary.Uvarint(msg)
			if k <= 0 {
				return 0, errors.New("malformed response message")
			}
			if key>>3 == 1 {
				status = v
			}
			skip = uint64(k)
		case 1: // 64 bits
			skip = 8
		case 2: // length-delimited
			l, k := binary.Uvarint(msg)
			if k <= 0 {
				return 0, errors.New("malformed response message")
			}
			msg = msg[k:]
			skip = l
		case 5: // 32 bits
			skip = 4
		default:
			return 0, fmt.Errorf("response message field of wire type %d", key&7)
		}
		if skip > uint64(len(msg)) {
			return 0, errors.New("truncated response message")
		}
		msg = msg[skip:]
	}
	return status, nil
}
