package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

type fakePatcher struct {
	mu   sync.Mutex
	cas  []*x509.Certificate
	fail error
}

func (p *fakePatcher) AddCA(_ context.Context, ca *x509.Certificate) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.cas = append(p.cas, ca)
	return nil
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

// verify checks that the served certificate chains to the published CA for
// the DNS name.
func verify(t *testing.T, s *SelfManaged, p *fakePatcher, now time.Time) *x509.Certificate {
	t.Helper()
	c, err := s.GetCertificate(nil)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	for _, ca := range p.cas {
		pool.AddCert(ca)
	}
	_, err = c.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "contrast-webhook.contrast-system.svc", CurrentTime: now})
	require.NoError(t, err)
	return c.Leaf
}

// testStart is when the fake clocks of these tests start.
var testStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// newTestSelfManaged returns a SelfManaged for the webhook Service's name,
// publishing to p, on a fake clock starting at testStart.
func newTestSelfManaged(t *testing.T, p *fakePatcher, cfg SelfManagedConfig) (*SelfManaged, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: testStart}
	cfg.DNSNames, cfg.Patcher, cfg.Now = []string{"contrast-webhook.contrast-system.svc"}, p, clock.Now
	s, err := NewSelfManaged(cfg)
	require.NoError(t, err)
	return s, clock
}

func TestSelfManagedRotation(t *testing.T) {
	ctx := context.Background()
	p := &fakePatcher{fail: errors.New("API server unreachable")}
	s, clock := newTestSelfManaged(t, p, SelfManagedConfig{CAValidity: 90 * 24 * time.Hour, LeafValidity: 9 * 24 * time.Hour})

	// unready until the CA is published
	require.ErrorIs(t, s.Ready(ctx), ErrNotReady)
	require.ErrorContains(t, s.Rotate(ctx), "API server unreachable")
	require.ErrorContains(t, s.Ready(ctx), "API server unreachable")
	_, err := s.GetCertificate(nil)
	require.ErrorIs(t, err, ErrNotReady)

	p.fail = nil
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, s.Ready(ctx))
	require.Len(t, p.cas, 1)
	first := verify(t, s, p, clock.t)
	assert.Equal(t, string(s.CAPEM()), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.cas[0].Raw})))

	// before two thirds of the leaf validity nothing changes
	clock.t = clock.t.Add(5 * 24 * time.Hour)
	require.NoError(t, s.Rotate(ctx))
	assert.Equal(t, first.SerialNumber, verify(t, s, p, clock.t).SerialNumber)

	// after two thirds the leaf is replaced by the same CA
	clock.t = clock.t.Add(2 * 24 * time.Hour)
	require.NoError(t, s.Rotate(ctx))
	second := verify(t, s, p, clock.t)
	assert.NotEqual(t, first.SerialNumber, second.SerialNumber)
	assert.Len(t, p.cas, 1)

	// after two thirds of the CA validity a new CA is published first
	clock.t = testStart.Add(61 * 24 * time.Hour)
	require.NoError(t, s.Rotate(ctx))
	require.Len(t, p.cas, 2)
	leaf := verify(t, s, p, clock.t)
	assert.Equal(t, p.cas[1].Subject.String(), leaf.Issuer.String())
	require.NoError(t, leaf.CheckSignatureFrom(p.cas[1]))

	// a failed publication of a later CA keeps serving the current leaf
	p.fail = errors.New("forbidden")
	clock.t = clock.t.Add(61 * 24 * time.Hour)
	require.Error(t, s.Rotate(ctx))
	_, err = s.GetCertificate(nil)
	require.NoError(t, err)
}

func TestMergeBundle(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(notBefore time.Time, validity time.Duration) *x509.Certificate {
		c, _, err := newCertificate(notBefore, validity, nil, nil, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
		require.NoError(t, err)
		return c
	}
	parse := func(b []byte) []*x509.Certificate {
		var out []*x509.Certificate
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				return out
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			require.NoError(t, err)
			out = append(out, c)
		}
	}
	expired := mk(now.Add(-48*time.Hour), time.Hour)
	other := mk(now.Add(-time.Hour), 24*time.Hour)
	ours := mk(now, 24*time.Hour)
	var bundle []byte
	for _, c := range []*x509.Certificate{expired, other} {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	bundle = append(bundle, []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")...)

	got := parse(MergeBundle(bundle, ours, now))
	require.Len(t, got, 2, "expired and unparsable certificates are dropped")
	assert.True(t, got[0].Equal(ours))
	assert.True(t, got[1].Equal(other))

	again := parse(MergeBundle(MergeBundle(bundle, ours, now), ours, now))
	assert.Len(t, again, 2, "adding a CA twice keeps one copy")

	var many []byte
	for i := range 12 {
		c := mk(now.Add(-time.Duration(i+1)*time.Minute), 24*time.Hour)
		many = append(many, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	assert.Len(t, parse(MergeBundle(many, ours, now)), maxBundleCAs)
}

func TestWebhookConfigPatcher(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "contrast-webhook"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.contrast.cc"}, {Name: "b.contrast.cc"}},
	})
	p := &WebhookConfigPatcher{Client: client.AdmissionregistrationV1().MutatingWebhookConfigurations(), Name: "contrast-webhook"}
	ca, _, err := newCertificate(time.Now(), time.Hour, nil, nil, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	require.NoError(t, err)
	require.NoError(t, p.AddCA(ctx, ca))
	cfg, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "contrast-webhook", metav1.GetOptions{})
	require.NoError(t, err)
	for _, wh := range cfg.Webhooks {
		blk, _ := pem.Decode(wh.ClientConfig.CABundle)
		require.NotNil(t, blk, wh.Name)
		assert.Equal(t, ca.Raw, blk.Bytes, wh.Name)
	}
	missing := &WebhookConfigPatcher{Client: client.AdmissionregistrationV1().MutatingWebhookConfigurations(), Name: "nope"}
	require.ErrorContains(t, missing.AddCA(ctx, ca), "MutatingWebhookConfiguration nope")
}

// TestSelfManagedShortValidity checks that rotation counts two thirds from
// issuance, not from the NotBefore backdated for clock skew: with
// validities of seconds (as the integration test uses) nothing is due
// right after issuance.
func TestSelfManagedShortValidity(t *testing.T) {
	ctx := context.Background()
	start := testStart
	p := &fakePatcher{}
	s, clock := newTestSelfManaged(t, p, SelfManagedConfig{CAValidity: 12 * time.Second, LeafValidity: 6 * time.Second})
	assert.Equal(t, 600*time.Millisecond, s.cfg.Interval, "checked ten times per leaf validity")

	require.NoError(t, s.Rotate(ctx))
	first := verify(t, s, p, clock.t)
	clock.t = start.Add(3 * time.Second)
	require.NoError(t, s.Rotate(ctx))
	assert.Equal(t, first.SerialNumber, verify(t, s, p, clock.t).SerialNumber, "not due before 4s")

	clock.t = start.Add(4100 * time.Millisecond)
	require.NoError(t, s.Rotate(ctx))
	second := verify(t, s, p, clock.t)
	assert.NotEqual(t, first.SerialNumber, second.SerialNumber)
	require.Len(t, p.cas, 1)

	// the new CA is published at 8s but used only after the propagation
	// delay (a tenth of the leaf validity); meanwhile the old CA serves
	clock.t = start.Add(8100 * time.Millisecond)
	require.NoError(t, s.Rotate(ctx))
	require.Len(t, p.cas, 2)
	require.NoError(t, verify(t, s, p, clock.t).CheckSignatureFrom(p.cas[0]))
	clock.t = start.Add(8700 * time.Millisecond)
	require.NoError(t, s.Rotate(ctx))
	third := verify(t, s, p, clock.t)
	require.NoError(t, third.CheckSignatureFrom(p.cas[1]))
	assert.LessOrEqual(t, third.NotAfter, p.cas[1].NotAfter)
}

// TestSelfManagedWaitsForPropagation: a new CA is published, but its first
// certificate is served only after Propagation, so an API server that has
// not yet seen the new caBundle keeps verifying the webhook.
func TestSelfManagedWaitsForPropagation(t *testing.T) {
	ctx := context.Background()
	start := testStart
	p := &fakePatcher{}
	s, clock := newTestSelfManaged(t, p, SelfManagedConfig{
		CAValidity: 30 * 24 * time.Hour, LeafValidity: 3 * 24 * time.Hour, Propagation: time.Hour,
	})
	require.NoError(t, s.Rotate(ctx))
	clock.t = start.Add(19 * 24 * time.Hour) // a fresh leaf, valid until day 22
	require.NoError(t, s.Rotate(ctx))
	old := verify(t, s, p, clock.t)

	clock.t = start.Add(20 * 24 * time.Hour) // the CA is due
	require.NoError(t, s.Rotate(ctx))
	require.Len(t, p.cas, 2, "the new CA is published at once")
	assert.Equal(t, old.SerialNumber, verify(t, s, p, clock.t).SerialNumber, "the old certificate is still served")
	assert.Contains(t, string(s.CAPEM()), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.cas[0].Raw})))

	clock.t = clock.t.Add(59 * time.Minute)
	require.NoError(t, s.Rotate(ctx))
	assert.Equal(t, old.SerialNumber, verify(t, s, p, clock.t).SerialNumber)
	require.Len(t, p.cas, 2, "published once, not again while waiting")

	clock.t = clock.t.Add(time.Minute)
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, verify(t, s, p, clock.t).CheckSignatureFrom(p.cas[1]))
	require.Len(t, p.cas, 2)
}

func TestSelfManagedIntervalDefault(t *testing.T) {
	for leaf, want := range map[time.Duration]time.Duration{
		0:                      time.Minute, // 30 days
		time.Hour:              time.Minute,
		5 * time.Minute:        30 * time.Second,
		500 * time.Millisecond: 100 * time.Millisecond,
	} {
		s, err := NewSelfManaged(SelfManagedConfig{DNSNames: []string{"a"}, Patcher: &fakePatcher{}, LeafValidity: leaf})
		require.NoError(t, err)
		assert.Equal(t, want, s.cfg.Interval, "leaf validity %v", leaf)
	}
}
