package tdx

import (
	"math/rand/v2"
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/stretchr/testify/require"
)

// TestParseQuoteNeverPanics mutates the real quote's length fields and
// bytes; go-tdx-guest's parser alone panics on some of these.
func TestParseQuoteNeverPanics(t *testing.T) {
	_, err := parseQuote(testdata.RawQuote)
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(1, 2)) //nolint:gosec // deterministic test input
	for range 20000 {
		raw := append([]byte(nil), testdata.RawQuote...)
		for range 1 + r.IntN(4) {
			raw[r.IntN(len(raw))] = byte(r.IntN(256))
		}
		if r.IntN(4) == 0 {
			raw = raw[:r.IntN(len(raw))]
		}
		_, _ = parseQuote(raw)
	}
}
