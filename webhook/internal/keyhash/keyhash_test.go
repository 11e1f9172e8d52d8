package keyhash

import (
	"crypto/sha256"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestWriterIsPrefixFree: fields that concatenate to the same bytes give
// different digests, because each carries its length.
func TestWriterIsPrefixFree(t *testing.T) {
	sum := func(fields ...string) [32]byte {
		h := sha256.New()
		w := Writer{H: h}
		for _, f := range fields {
			w.Str(f)
		}
		var out [32]byte
		h.Sum(out[:0])
		return out
	}
	assert.NotEqual(t, sum("ab", "c"), sum("a", "bc"))
	assert.NotEqual(t, sum("abc"), sum("abc", ""))

	h1, h2 := sha256.New(), sha256.New()
	Writer{H: h1}.Bytes([]byte("x"))
	Writer{H: h2}.Str("x")
	assert.Equal(t, h1.Sum(nil), h2.Sum(nil), "Bytes and Str encode alike")
	h1.Reset()
	h2.Reset()
	Writer{H: h1}.Bool(true)
	Writer{H: h2}.Bool(false)
	assert.NotEqual(t, h1.Sum(nil), h2.Sum(nil))
}
