package certcache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// vendorTransport answers every request in-process, as AMD KDS and Intel PCS
// would, counting requests per host; block, if set, holds each response.
type vendorTransport struct {
	mu     sync.Mutex
	hits   map[string]int
	status int
	block  chan struct{}
}

func (v *vendorTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	v.mu.Lock()
	if v.hits == nil {
		v.hits = map[string]int{}
	}
	v.hits[r.URL.String()]++
	status := v.status
	v.mu.Unlock()
	if v.block != nil {
		<-v.block
	}
	if status == 0 {
		status = http.StatusOK
	}
	return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: http.Header{},
		Body: io.NopCloser(strings.NewReader("doc")), Request: r}, nil
}

func (v *vendorTransport) total() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, h := range v.hits {
		n += h
	}
	return n
}

// TestRootCRLRefreshed: Intel's root CA CRL (IntelSGXRootCA.der) is a CRL
// and must be refetched after the TTL like every other mutable document.
func TestRootCRLRefreshed(t *testing.T) {
	vt := &vendorTransport{}
	now := time.Unix(1000, 0)
	c := New(Config{Client: &http.Client{Transport: vt}, Now: func() time.Time { return now }})
	const url = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
	_, err := c.Get(context.Background(), "", url, KindCRL)
	require.NoError(t, err)
	now = now.Add(2 * time.Hour)
	_, err = c.Get(context.Background(), "", url, KindCRL)
	require.NoError(t, err)
	assert.Equal(t, 2, vt.total(), "the root CRL was not refetched after the TTL")
}

// TestConcurrentGetsShareOneFetch: many handshakes naming the same
// document cause one request to the vendor.
func TestConcurrentGetsShareOneFetch(t *testing.T) {
	vt := &vendorTransport{block: make(chan struct{})}
	c := New(Config{Client: &http.Client{Transport: vt}})
	const url = "https://kdsintf.amd.com/vcek/v1/Milan/abcd?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 16 {
		wg.Go(func() {
			if _, err := c.Get(context.Background(), "", url, KindCertificate); err == nil {
				ok.Add(1)
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	close(vt.block)
	wg.Wait()
	assert.Equal(t, int32(16), ok.Load())
	assert.Equal(t, 1, vt.total(), "concurrent requests for one URL were not shared")
}

// TestFailedFetchNegativelyCached: a document the vendor does not serve is
// not requested again on the next handshake.
func TestFailedFetchNegativelyCached(t *testing.T) {
	vt := &vendorTransport{status: http.StatusNotFound}
	now := time.Unix(1000, 0)
	c := New(Config{Client: &http.Client{Transport: vt}, Now: func() time.Time { return now }})
	const url = "https://kdsintf.amd.com/vcek/v1/Milan/ffff?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"
	for range 5 {
		_, err := c.Get(context.Background(), "", url, KindCertificate)
		var me *MissingError
		require.ErrorAs(t, err, &me)
	}
	assert.Equal(t, 1, vt.total(), "a failed fetch was repeated")
	_, err := c.Get(context.Background(), "", url, KindCertificate)
	require.ErrorIs(t, err, ErrRecentlyFailed)
}

// TestFetchesRateLimitedPerSource: a client naming ever new chip IDs cannot
// make the verifier send more than the burst to AMD KDS, and Intel PCS is
// limited separately.
func TestFetchesRateLimitedPerSource(t *testing.T) {
	vt := &vendorTransport{}
	now := time.Unix(1000, 0)
	obs := &countingObserver{}
	c := New(Config{Client: &http.Client{Transport: vt}, Now: func() time.Time { return now }, Observer: obs})
	for i := range 100 {
		_, _ = c.Get(context.Background(), "", fmt.Sprintf("https://kdsintf.amd.com/vcek/v1/Milan/%04x?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115", i), KindCertificate)
	}
	kds := vt.total()
	assert.LessOrEqual(t, kds, 20, "AMD KDS requests were not rate-limited")
	assert.Equal(t, 10, kds, "the default burst is 10")
	assert.Equal(t, 10, obs.get(SourceKDS, FetchOK))
	assert.Equal(t, 90, obs.get(SourceKDS, FetchRateLimited))
	// The budget refills at FetchRate (1/s by default).
	now = now.Add(3 * time.Second)
	for i := range 10 {
		_, _ = c.Get(context.Background(), "", fmt.Sprintf("https://kdsintf.amd.com/vcek/v1/Milan/%04x?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115", 1000+i), KindCertificate)
	}
	assert.Equal(t, 13, vt.total())
	_, err := c.Get(context.Background(), "", "https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity", KindQEIdentity)
	require.NoError(t, err, "PCS has its own budget")
}

func TestFailedFetchRetriedAfterNegativeTTL(t *testing.T) {
	vt := &vendorTransport{status: http.StatusServiceUnavailable}
	now := time.Unix(1000, 0)
	c := New(Config{Client: &http.Client{Transport: vt}, Now: func() time.Time { return now }, NegativeTTL: time.Minute})
	const url = "https://kdsintf.amd.com/vcek/v1/Milan/crl"
	_, err := c.Get(context.Background(), "", url, KindCRL)
	require.Error(t, err)
	now = now.Add(61 * time.Second)
	vt.mu.Lock()
	vt.status = http.StatusOK
	vt.mu.Unlock()
	a, err := c.Get(context.Background(), "", url, KindCRL)
	require.NoError(t, err)
	assert.Equal(t, []byte("doc"), a.Body)
	assert.Equal(t, 2, vt.total())
}

func TestCertificatesNeverRefetched(t *testing.T) {
	vt := &vendorTransport{}
	now := time.Unix(1000, 0)
	c := New(Config{Client: &http.Client{Transport: vt}, Now: func() time.Time { return now }})
	const url = "https://kdsintf.amd.com/vcek/v1/Milan/cert_chain"
	for range 3 {
		_, err := c.Get(context.Background(), "", url, KindCertificate)
		require.NoError(t, err)
		now = now.Add(48 * time.Hour)
	}
	assert.Equal(t, 1, vt.total())
}

func TestSourceOf(t *testing.T) {
	for url, want := range map[string]Source{
		"https://kdsintf.amd.com/vcek/v1/Milan/crl":                              SourceKDS,
		"https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity": SourcePCS,
		"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der":      SourcePCS,
		"https://kdsintf.amd.com.example/vcek":                                   SourceOther,
		"http://127.0.0.1:1234/x":                                                SourceOther,
		"::not a url":                                                            SourceOther,
	} {
		assert.Equal(t, want, SourceOf(url), url)
	}
}

type countingObserver struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *countingObserver) ObserveFetch(s Source, r FetchResult) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[string(s)+"/"+string(r)]++
}

func (o *countingObserver) get(s Source, r FetchResult) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[string(s)+"/"+string(r)]
}
