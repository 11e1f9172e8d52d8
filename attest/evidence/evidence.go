// Package evidence defines the framed, versioned wire format in which
// attestation evidence travels: a fixed header naming the platform, the
// platform's evidence bytes, and optional artifacts (certificates, CRLs,
// collateral) keyed by the URL a verifier would otherwise fetch them from.
//
// Layout (all integers big-endian):
//
//	magic   [4]byte  "CTEV"
//	version uint8    1
//	kind    uint8    1 = SNP, 2 = TDX
//	count   uint16   number of artifacts (≤ MaxArtifacts)
//	evLen   uint32   length of the evidence bytes (≤ MaxSize)
//	evidence [evLen]byte
//	count × artifact:
//	  urlLen  uint16, url [urlLen]byte
//	  hdrCount uint8, hdrCount × (keyLen uint16, key, valLen uint16, val)
//	  bodyLen uint32, body [bodyLen]byte
//
// The whole frame must not exceed MaxSize; trailing bytes are rejected.
// Artifacts are untrusted hints: a validator verifies every one of them
// against its trusted root before use.
package evidence

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind is the evidence format in a frame.
type Kind uint8

const (
	// KindSNP is a protobuf-encoded sevsnp.Attestation (report and certificate chain).
	KindSNP Kind = 1
	// KindTDX is a raw TDX quote (version 4).
	KindTDX Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindSNP:
		return "snp"
	case KindTDX:
		return "tdx"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

const (
	// Version is the frame version this package writes and reads.
	Version = 1
	// MaxSize bounds a whole frame.
	MaxSize = 256 << 10
	// MaxArtifacts bounds the number of artifacts in a frame.
	MaxArtifacts = 16
	// MaxURLLen bounds an artifact URL.
	MaxURLLen = 2048
	// MaxHeaders bounds the headers of one artifact.
	MaxHeaders = 8

	headerLen = 12
)

var magic = [4]byte{'C', 'T', 'E', 'V'}

// ErrTooLarge is returned for frames or fields over their limits.
var ErrTooLarge = errors.New("evidence too large")

// ErrMalformed is returned for frames that do not parse.
var ErrMalformed = errors.New("malformed evidence frame")

// Artifact is a document a verifier may need, as served at URL.
type Artifact struct {
	URL    string
	Header map[string]string
	Body   []byte
}

// Frame is a decoded evidence frame.
type Frame struct {
	Kind      Kind
	Evidence  []byte
	Artifacts []Artifact
}

// Marshal encodes f, enforcing every limit Unmarshal enforces.
func Marshal(f *Frame) ([]byte, error) {
	if f.Kind != KindSNP && f.Kind != KindTDX {
		return nil, fmt.Errorf("%w: unknown kind %d", ErrMalformed, f.Kind)
	}
	if len(f.Artifacts) > MaxArtifacts {
		return nil, fmt.Errorf("%w: %d artifacts, limit %d", ErrTooLarge, len(f.Artifacts), MaxArtifacts)
	}
	if len(f.Evidence) > MaxSize {
		return nil, fmt.Errorf("%w: evidence of %d bytes", ErrTooLarge, len(f.Evidence))
	}
	out := make([]byte, headerLen, headerLen+len(f.Evidence))
	copy(out, magic[:])
	out[4] = Version
	out[5] = byte(f.Kind)
	binary.BigEndian.PutUint16(out[6:], uint16(len(f.Artifacts))) //nolint:gosec // bounded above
	binary.BigEndian.PutUint32(out[8:], uint32(len(f.Evidence)))  //nolint:gosec // bounded above
	out = append(out, f.Evidence...)
	for _, a := range f.Artifacts {
		if len(a.URL) > MaxURLLen || len(a.Header) > MaxHeaders {
			return nil, fmt.Errorf("%w: artifact %q", ErrTooLarge, a.URL)
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(a.URL))) //nolint:gosec // bounded above
		out = append(out, a.URL...)
		out = append(out, byte(len(a.Header))) //nolint:gosec // bounded by MaxHeaders above
		for k, v := range a.Header {
			if len(k) > MaxURLLen || len(v) > 1<<15 {
				return nil, fmt.Errorf("%w: artifact header %q", ErrTooLarge, k)
			}
			out = binary.BigEndian.AppendUint16(out, uint16(len(k))) //nolint:gosec // bounded above
			out = append(out, k...)
			out = binary.BigEndian.AppendUint16(out, uint16(len(v))) //nolint:gosec // bounded above
			out = append(out, v...)
		}
		if len(a.Body) > MaxSize {
			return nil, fmt.Errorf("%w: artifact %q body", ErrTooLarge, a.URL)
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(a.Body))) //nolint:gosec // bounded above
		out = append(out, a.Body...)
		if len(out) > MaxSize {
			return nil, fmt.Errorf("%w: frame over %d bytes", ErrTooLarge, MaxSize)
		}
	}
	if len(out) > MaxSize {
		return nil, fmt.Errorf("%w: frame over %d bytes", ErrTooLarge, MaxSize)
	}
	return out, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = fmt.Errorf("%w: truncated", ErrMalformed)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.take(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

func (r *reader) u32() int {
	v := r.take(4)
	if v == nil {
		return 0
	}
	n := binary.BigEndian.Uint32(v)
	if n > MaxSize {
		r.err = fmt.Errorf("%w: field of %d bytes", ErrTooLarge, n)
		return 0
	}
	return int(n)
}

// Unmarshal decodes a frame. The returned slices alias data.
func Unmarshal(data []byte) (*Frame, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxSize)
	}
	if len(data) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", ErrMalformed, len(data))
	}
	if [4]byte(data[:4]) != magic {
		return nil, fmt.Errorf("%w: bad magic", ErrMalformed)
	}
	if data[4] != Version {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrMalformed, data[4])
	}
	f := &Frame{Kind: Kind(data[5])}
	if f.Kind != KindSNP && f.Kind != KindTDX {
		return nil, fmt.Errorf("%w: unknown kind %d", ErrMalformed, data[5])
	}
	count := int(binary.BigEndian.Uint16(data[6:]))
	if count > MaxArtifacts {
		return nil, fmt.Errorf("%w: %d artifacts, limit %d", ErrTooLarge, count, MaxArtifacts)
	}
	r := &reader{b: data[8:]}
	f.Evidence = r.take(r.u32())
	for range count {
		var a Artifact
		urlLen := r.u16()
		if urlLen > MaxURLLen {
			return nil, fmt.Errorf("%w: artifact URL of %d bytes", ErrTooLarge, urlLen)
		}
		a.URL = string(r.take(urlLen))
		n := r.u8()
		if n > MaxHeaders {
			return nil, fmt.Errorf("%w: %d artifact headers", ErrTooLarge, n)
		}
		if n > 0 {
			a.Header = make(map[string]string, n)
		}
		for range n {
			k := string(r.take(r.u16()))
			a.Header[k] = string(r.take(r.u16()))
		}
		a.Body = r.take(r.u32())
		if r.err != nil {
			return nil, r.err
		}
		f.Artifacts = append(f.Artifacts, a)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b))
	}
	if len(f.Evidence) == 0 {
		return nil, fmt.Errorf("%w: empty evidence", ErrMalformed)
	}
	return f, nil
}
