// Package keyhash writes the fields of a cache key into a hash, each
// length-prefixed, so that no two sequences of fields have the same
// encoding. The policy cache and the patch cache key by it.
package keyhash

import (
	"encoding/binary"
	"hash"
	"io"
)

// Writer writes fields into H.
type Writer struct{ H hash.Hash }

// Int writes n as 8 big-endian bytes.
func (w Writer) Int(n int) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n)) //nolint:gosec // lengths and counts are not negative
	w.H.Write(b[:])
}

// Bytes writes the length of b, then b.
func (w Writer) Bytes(b []byte) {
	w.Int(len(b))
	w.H.Write(b)
}

// Str writes the length of s, then s.
func (w Writer) Str(s string) {
	w.Int(len(s))
	_, _ = io.WriteString(w.H, s)
}

// Bool writes one byte, 1 or 0.
func (w Writer) Bool(b bool) {
	if b {
		w.H.Write([]byte{1})
	} else {
		w.H.Write([]byte{0})
	}
}
