package certcache

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCacheFetchesOnceAndServesOffline(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Tcb-Info-Issuer-Chain", "chain")
		_, _ = w.Write([]byte("body"))
	}))
	defer srv.Close()
	now := time.Unix(1000, 0)
	c := New(Config{Client: srv.Client(), Now: func() time.Time { return now }})
	ctx := context.Background()
	url := srv.URL + "/vcek/cert"
	for range 3 {
		a, err := c.Get(ctx, "", url, KindCertificate)
		require.NoError(t, err)
		assert.Equal(t, []byte("body"), a.Body)
		assert.Equal(t, "chain", a.Header["Tcb-Info-Issuer-Chain"])
	}
	assert.Equal(t, int32(1), hits.Load())

	// Mutable documents are refetched after the TTL.
	crl := srv.URL + "/crl"
	_, err := c.Get(ctx, "", crl, KindCRL)
	require.NoError(t, err)
	now = now.Add(2 * time.Hour)
	_, err = c.Get(ctx, "", crl, KindCRL)
	require.NoError(t, err)
	assert.Equal(t, int32(3), hits.Load())
}

func TestOfflineMissingNamesURL(t *testing.T) {
	c := New(Config{Offline: true})
	_, err := c.Get(context.Background(), "", "https://kdsintf.amd.com/vcek/v1/Milan/cert_chain", KindCertificate)
	var me *MissingError
	require.ErrorAs(t, err, &me)
	assert.Equal(t, "https://kdsintf.amd.com/vcek/v1/Milan/cert_chain", me.URL)
	require.ErrorContains(t, err, "https://kdsintf.amd.com/vcek/v1/Milan/cert_chain")
	require.ErrorIs(t, err, ErrOffline)
}

func TestOverlayAndNamespaces(t *testing.T) {
	c := New(Config{})
	g := &SEVGetter{Cache: c, NS: "sim", Overlay: map[string]Artifact{"u": {URL: "u", Body: []byte("x")}}}
	b, err := g.Get("u")
	require.NoError(t, err)
	assert.Equal(t, []byte("x"), b)
	// A simulated namespace never reaches the network.
	_, err = c.Get(context.Background(), "sim", "https://kdsintf.amd.com/x", KindCertificate)
	require.ErrorIs(t, err, ErrOffline)
	c.Put("sim", Artifact{URL: "v", Body: []byte("s")})
	_, err = c.Get(context.Background(), "", "v", KindCertificate)
	require.Error(t, err, "real namespace must not see simulated artifacts")
}

func TestFetchErrorNamesURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	c := New(Config{Client: srv.Client()})
	_, err := c.Get(context.Background(), "", srv.URL+"/x", KindCertificate)
	var me *MissingError
	require.ErrorAs(t, err, &me)
	require.ErrorContains(t, err, srv.URL+"/x")
}

func TestDiskPersistence(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("vcek"))
	}))
	url := srv.URL + "/vcek/v1/Milan/abc"
	online := New(Config{Client: srv.Client(), Dir: dir})
	_, err := online.Get(context.Background(), "", url, KindCertificate)
	require.NoError(t, err)
	srv.Close()

	offline := New(Config{Offline: true, Dir: dir})
	a, err := offline.Get(context.Background(), "", url, KindCertificate)
	require.NoError(t, err)
	assert.Equal(t, []byte("vcek"), a.Body)

	offline.Seed(Artifact{URL: "https://seeded/crl", Body: []byte("crl")})
	again := New(Config{Offline: true, Dir: dir})
	a, err = again.Get(context.Background(), "", "https://seeded/crl", KindCRL)
	require.NoError(t, err)
	assert.Equal(t, []byte("crl"), a.Body)
}
