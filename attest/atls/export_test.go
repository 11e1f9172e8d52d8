package atls

import (
	"crypto"
	"crypto/tls"
	"testing"
)

// SelfSignedForTest exposes selfSigned to the external test package.
func SelfSignedForTest(tb testing.TB, key crypto.Signer) tls.Certificate {
	tb.Helper()
	c, err := selfSigned(key)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
