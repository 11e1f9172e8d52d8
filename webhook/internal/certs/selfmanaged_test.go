package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// fakePatcher is the caBundle of the API servers: bundle is what they
// trust, cas every addition in order (a CA added again appears again).
type fakePatcher struct {
	mu     sync.Mutex
	bundle []*x509.Certificate
	cas    []*x509.Certificate
	// fail fails reading the configuration; failUpdate fails the update
	// of a missing CA, which is added anyway if addOnFailure.
	fail, failUpdate error
	addOnFailure     bool
}

func (p *fakePatcher) EnsureCAs(_ context.Context, cas ...*x509.Certificate) ([]*x509.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return nil, p.fail
	}
	var missing []*x509.Certificate
	for _, c := range cas {
		if !slices.ContainsFunc(p.bundle, c.Equal) {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 && p.failUpdate != nil && !p.addOnFailure {
		return missing, p.failUpdate
	}
	p.bundle = append(p.bundle, missing...)
	p.cas = append(p.cas, missing...)
	if len(missing) > 0 && p.failUpdate != nil {
		return missing, p.failUpdate
	}
	return missing, nil
}

// reset empties the caBundle, as a Helm upgrade or GitOps sync might.
func (p *fakePatcher) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bundle = nil
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
	p.mu.Lock()
	for _, ca := range p.bundle {
		pool.AddCert(ca)
	}
	p.mu.Unlock()
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
	require.Len(t, p.cas, 1)
	clock.t = clock.t.Add(s.cfg.Propagation) // TestSelfManagedFirstCAWaitsForPropagation
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, s.Ready(ctx))
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

	// after two thirds of the CA validity a new CA is published first;
	// meanwhile the expired certificate is replaced by one of the current CA
	clock.t = testStart.Add(61 * 24 * time.Hour)
	require.NoError(t, s.Rotate(ctx))
	require.Len(t, p.cas, 2)
	require.NoError(t, verify(t, s, p, clock.t).CheckSignatureFrom(p.cas[0]))
	require.NoError(t, s.Ready(ctx))
	clock.t = clock.t.Add(s.cfg.Propagation)
	require.NoError(t, s.Rotate(ctx))
	leaf := verify(t, s, p, clock.t)
	assert.Equal(t, p.cas[1].Subject.String(), leaf.Issuer.String())
	require.NoError(t, leaf.CheckSignatureFrom(p.cas[1]))

	// a failed publication of a later CA keeps serving a certificate of
	// the current CA, renewed as it is due
	p.fail = errors.New("forbidden")
	clock.t = clock.t.Add(61 * 24 * time.Hour)
	require.ErrorContains(t, s.Rotate(ctx), "publishing CA bundle: forbidden")
	require.NoError(t, verify(t, s, p, clock.t).CheckSignatureFrom(p.cas[1]))
	require.NoError(t, s.Ready(ctx))
}

func mkCA(t *testing.T, notBefore time.Time, validity time.Duration) *x509.Certificate {
	t.Helper()
	c, _, err := newCertificate(notBefore, validity, nil, nil, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	require.NoError(t, err)
	return c
}

func pemOf(cs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func TestMergeBundle(t *testing.T) {
	now := testStart
	expired := mkCA(t, now.Add(-48*time.Hour), time.Hour)
	other := mkCA(t, now.Add(-time.Hour), 24*time.Hour)
	ours := mkCA(t, now, 24*time.Hour)
	bundle := append(pemOf(expired, other), []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")...)

	got := ParseBundle(MergeBundle(bundle, now, ours))
	require.Len(t, got, 2, "expired and unparsable certificates are dropped")
	assert.True(t, got[0].Equal(ours))
	assert.True(t, got[1].Equal(other))

	again := ParseBundle(MergeBundle(MergeBundle(bundle, now, ours), now, ours))
	assert.Len(t, again, 2, "adding a CA twice keeps one copy")

	// unexpired CAs of other replicas are kept (the reason a long-running
	// replica's CA was evicted after 8 restarts of others)
	var others []*x509.Certificate
	for i := range 12 {
		others = append(others, mkCA(t, now.Add(time.Duration(i+1)*time.Minute), 24*time.Hour))
	}
	long := mkCA(t, now.Add(-time.Hour), 365*24*time.Hour) // the oldest
	merged := ParseBundle(MergeBundle(pemOf(others...), now.Add(time.Hour), long))
	assert.Len(t, merged, 13)
	assert.True(t, merged[12].Equal(long), "newest first")

	// beyond the cap the oldest that are not ours go, never ours
	var many []*x509.Certificate
	for i := range maxBundleCAs + 5 {
		many = append(many, mkCA(t, now.Add(-time.Duration(i+1)*time.Minute), 24*time.Hour))
	}
	oldest := mkCA(t, now.Add(-24*time.Hour), 365*24*time.Hour)
	merged = ParseBundle(MergeBundle(pemOf(many...), now, oldest, ours))
	require.Len(t, merged, maxBundleCAs)
	assert.True(t, slices.ContainsFunc(merged, oldest.Equal))
	assert.True(t, slices.ContainsFunc(merged, ours.Equal))
	assert.True(t, slices.ContainsFunc(merged, many[0].Equal), "the newest others are kept")
	assert.False(t, slices.ContainsFunc(merged, many[len(many)-1].Equal), "the oldest others are dropped")
}

func TestWebhookConfigPatcher(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "contrast-webhook"},
			Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.contrast.cc"}, {Name: "b.contrast.cc"}},
		},
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "contrast-webhook"},
			Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: "v.contrast.cc"}},
		},
	)
	mutating := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	validating := client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	p := &WebhookConfigPatcher{Client: mutating, Name: "contrast-webhook", Validating: validating}
	ca := mkCA(t, time.Now(), time.Hour)
	bundles := func() [][]byte {
		m, err := mutating.Get(ctx, "contrast-webhook", metav1.GetOptions{})
		require.NoError(t, err)
		v, err := validating.Get(ctx, "contrast-webhook", metav1.GetOptions{})
		require.NoError(t, err)
		return [][]byte{m.Webhooks[0].ClientConfig.CABundle, m.Webhooks[1].ClientConfig.CABundle, v.Webhooks[0].ClientConfig.CABundle}
	}

	missing, err := p.EnsureCAs(ctx, ca)
	require.NoError(t, err)
	require.Len(t, missing, 1)
	for i, b := range bundles() {
		got := ParseBundle(b)
		require.Len(t, got, 1, "webhook %d", i)
		assert.True(t, got[0].Equal(ca), "webhook %d", i)
	}

	// present everywhere: read, not written
	client.ClearActions()
	missing, err = p.EnsureCAs(ctx, ca)
	require.NoError(t, err)
	assert.Empty(t, missing)
	for _, a := range client.Actions() {
		assert.Equal(t, "get", a.GetVerb())
	}

	// removed from one webhook (a Helm upgrade): found missing, added again
	v, err := validating.Get(ctx, "contrast-webhook", metav1.GetOptions{})
	require.NoError(t, err)
	v.Webhooks[0].ClientConfig.CABundle = nil
	_, err = validating.Update(ctx, v, metav1.UpdateOptions{})
	require.NoError(t, err)
	missing, err = p.EnsureCAs(ctx, ca)
	require.NoError(t, err)
	require.Len(t, missing, 1)
	assert.True(t, missing[0].Equal(ca))
	for i, b := range bundles() {
		assert.Len(t, ParseBundle(b), 1, "webhook %d", i)
	}

	// no ValidatingWebhookConfiguration (yet): skipped
	require.NoError(t, validating.Delete(ctx, "contrast-webhook", metav1.DeleteOptions{}))
	missing, err = p.EnsureCAs(ctx, ca)
	require.NoError(t, err)
	assert.Empty(t, missing)

	missingCfg := &WebhookConfigPatcher{Client: mutating, Name: "nope"}
	missing, err = missingCfg.EnsureCAs(ctx, ca)
	require.ErrorContains(t, err, "MutatingWebhookConfiguration nope")
	assert.Empty(t, missing, "unknown, not missing")
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
	clock.t = start.Add(600 * time.Millisecond) // the propagation delay of the first CA
	require.NoError(t, s.Rotate(ctx))
	first := verify(t, s, p, clock.t)
	clock.t = start.Add(3 * time.Second)
	require.NoError(t, s.Rotate(ctx))
	assert.Equal(t, first.SerialNumber, verify(t, s, p, clock.t).SerialNumber, "not due before 4s (certificate times have whole seconds)")

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

// TestSelfManagedFirstCAWaitsForPropagation: a new replica publishes its
// first CA but neither serves a certificate of it nor reports ready before
// every API server has had time to see the new caBundle; otherwise, during
// a rollout, it would receive calls from API servers that cannot verify it
// and (failurePolicy Fail) pods would be rejected.
func TestSelfManagedFirstCAWaitsForPropagation(t *testing.T) {
	ctx := context.Background()
	p := &fakePatcher{}
	s, clock := newTestSelfManaged(t, p, SelfManagedConfig{
		CAValidity: 30 * 24 * time.Hour, LeafValidity: 3 * 24 * time.Hour, Propagation: 10 * time.Second,
	})
	require.NoError(t, s.Rotate(ctx))
	require.Len(t, p.cas, 1, "the CA is published at once")
	err := s.Ready(ctx)
	require.ErrorIs(t, err, ErrNotReady)
	require.ErrorContains(t, err, "when every API server has had time to see it")
	_, err = s.GetCertificate(nil)
	require.ErrorIs(t, err, ErrNotReady, "no certificate is served that API servers may not trust yet")

	clock.t = clock.t.Add(9 * time.Second)
	require.NoError(t, s.Rotate(ctx))
	require.ErrorIs(t, s.Ready(ctx), ErrNotReady)

	clock.t = clock.t.Add(time.Second)
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, s.Ready(ctx))
	require.NoError(t, verify(t, s, p, clock.t).CheckSignatureFrom(p.cas[0]))
	assert.Len(t, p.cas, 1)
}

// TestSelfManagedReaddsMissingCA: the CA of a running replica is removed
// from the caBundle (a Helm upgrade or GitOps sync resetting it, or other
// replicas pushing it out). The next check adds it again; the replica is
// unready while it is missing and until every API server has had time to
// see it again.
func TestSelfManagedReaddsMissingCA(t *testing.T) {
	ctx := context.Background()
	p := &fakePatcher{}
	s, clock := newTestSelfManaged(t, p, SelfManagedConfig{
		CAValidity: 30 * 24 * time.Hour, LeafValidity: 3 * 24 * time.Hour, Propagation: 10 * time.Second,
	})
	require.NoError(t, s.Rotate(ctx))
	clock.t = clock.t.Add(10 * time.Second)
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, s.Ready(ctx))
	served := verify(t, s, p, clock.t)

	p.reset()
	clock.t = clock.t.Add(time.Minute)
	require.NoError(t, s.Rotate(ctx))
	require.Len(t, p.cas, 2, "added again")
	assert.True(t, p.cas[1].Equal(p.cas[0]), "the same CA")
	require.ErrorContains(t, s.Ready(ctx), "waiting until")
	assert.Equal(t, served.SerialNumber, verify(t, s, p, clock.t).SerialNumber, "the certificate is kept")
	clock.t = clock.t.Add(10 * time.Second)
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, s.Ready(ctx))
	assert.Len(t, p.cas, 2, "present: not added again")

	// adding it fails: unready, saying why
	p.reset()
	p.failUpdate = errors.New("forbidden")
	require.ErrorContains(t, s.Rotate(ctx), "forbidden")
	err := s.Ready(ctx)
	require.ErrorContains(t, err, "webhook CA missing from the caBundle")
	require.ErrorContains(t, err, "forbidden")

	// the configuration cannot be read: the last known state stands
	p.failUpdate, p.fail = nil, errors.New("API server unreachable")
	require.ErrorContains(t, s.Rotate(ctx), "unreachable")
	require.ErrorContains(t, s.Ready(ctx), "webhook CA missing from the caBundle")

	p.fail = nil
	require.NoError(t, s.Rotate(ctx))
	require.ErrorContains(t, s.Ready(ctx), "waiting until")
	clock.t = clock.t.Add(10 * time.Second)
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, s.Ready(ctx))
	assert.Len(t, p.cas, 3)
}

// TestSelfManagedPendingCAMissing: a new CA waiting for propagation is
// removed from the caBundle; it is added again and the wait starts anew.
func TestSelfManagedPendingCAMissing(t *testing.T) {
	ctx := context.Background()
	start := testStart
	p := &fakePatcher{}
	s, clock := newTestSelfManaged(t, p, SelfManagedConfig{
		CAValidity: 30 * 24 * time.Hour, LeafValidity: 3 * 24 * time.Hour, Propagation: time.Hour,
	})
	require.NoError(t, s.Rotate(ctx))
	clock.t = start.Add(19 * 24 * time.Hour)
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, s.Ready(ctx))

	clock.t = start.Add(20 * 24 * time.Hour) // the CA is due
	require.NoError(t, s.Rotate(ctx))
	require.Len(t, p.cas, 2)
	clock.t = clock.t.Add(30 * time.Minute)
	p.reset()
	require.NoError(t, s.Rotate(ctx))
	require.Len(t, p.cas, 4, "the current and the new CA added again")
	require.Error(t, s.Ready(ctx))

	clock.t = clock.t.Add(59 * time.Minute) // past the first publication's hour
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, verify(t, s, p, clock.t).CheckSignatureFrom(p.cas[0]), "still the old CA")
	require.Error(t, s.Ready(ctx), "the old CA was missing too")
	clock.t = clock.t.Add(time.Minute)
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, verify(t, s, p, clock.t).CheckSignatureFrom(p.cas[1]))
	require.NoError(t, s.Ready(ctx))
}

// TestSelfManagedPublicationOutcomeUnknown: the update publishing the first
// CA reports failure but went through. The next check finds the CA present
// and counts the propagation from the failed attempt.
func TestSelfManagedPublicationOutcomeUnknown(t *testing.T) {
	ctx := context.Background()
	start := testStart
	p := &fakePatcher{failUpdate: errors.New("timeout"), addOnFailure: true}
	s, clock := newTestSelfManaged(t, p, SelfManagedConfig{
		CAValidity: 30 * 24 * time.Hour, LeafValidity: 3 * 24 * time.Hour, Propagation: 10 * time.Second,
	})
	require.ErrorContains(t, s.Rotate(ctx), "publishing CA bundle: timeout")
	require.ErrorIs(t, s.Ready(ctx), ErrNotReady)

	p.failUpdate = nil
	clock.t = start.Add(3 * time.Second)
	require.NoError(t, s.Rotate(ctx))
	require.ErrorIs(t, s.Ready(ctx), ErrNotReady)
	clock.t = start.Add(10 * time.Second)
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, s.Ready(ctx))
	assert.Len(t, p.cas, 1)
}

// TestSelfManagedKeepsItsCAInTheConfiguration runs SelfManaged against a
// MutatingWebhookConfiguration of the fake clientset while other replicas
// restart and add their CAs: unexpired CAs are no longer pushed out after
// a few restarts, and if ours is pushed out anyway (more restarts than the
// cap) or the caBundle is reset, the next check adds it again.
func TestSelfManagedKeepsItsCAInTheConfiguration(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "contrast-webhook"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "pods.contrast.cc"}},
	})
	configs := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	clock := &fakeClock{t: testStart}
	patcher := func() *WebhookConfigPatcher {
		return &WebhookConfigPatcher{Client: configs, Name: "contrast-webhook", Now: clock.Now}
	}
	s, err := NewSelfManaged(SelfManagedConfig{
		DNSNames: []string{"contrast-webhook.contrast-system.svc"}, Patcher: patcher(), Now: clock.Now,
		Propagation: 10 * time.Second,
	})
	require.NoError(t, err)
	bundle := func() []*x509.Certificate {
		cfg, err := configs.Get(ctx, "contrast-webhook", metav1.GetOptions{})
		require.NoError(t, err)
		return ParseBundle(cfg.Webhooks[0].ClientConfig.CABundle)
	}
	ours := func() *x509.Certificate {
		b, _ := pem.Decode(s.CAPEM())
		require.NotNil(t, b)
		c, err := x509.ParseCertificate(b.Bytes)
		require.NoError(t, err)
		return c
	}
	restarts := func(n int) {
		for range n {
			clock.t = clock.t.Add(time.Minute)
			_, err := patcher().EnsureCAs(ctx, mkCA(t, clock.t, 365*24*time.Hour))
			require.NoError(t, err)
		}
	}

	require.NoError(t, s.Rotate(ctx))
	clock.t = clock.t.Add(10 * time.Second)
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, s.Ready(ctx))

	restarts(10)
	assert.True(t, slices.ContainsFunc(bundle(), ours().Equal), "ten restarts of other replicas keep our CA")

	restarts(maxBundleCAs)
	require.False(t, slices.ContainsFunc(bundle(), ours().Equal), "pushed out beyond the cap")
	require.NoError(t, s.Rotate(ctx))
	assert.True(t, slices.ContainsFunc(bundle(), ours().Equal), "added again")
	assert.Len(t, bundle(), maxBundleCAs)
	require.Error(t, s.Ready(ctx))
	clock.t = clock.t.Add(10 * time.Second)
	require.NoError(t, s.Rotate(ctx))
	require.NoError(t, s.Ready(ctx))

	// a Helm upgrade resets the caBundle
	cfg, err := configs.Get(ctx, "contrast-webhook", metav1.GetOptions{})
	require.NoError(t, err)
	cfg.Webhooks[0].ClientConfig.CABundle = nil
	_, err = configs.Update(ctx, cfg, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, s.Rotate(ctx))
	got := bundle()
	require.Len(t, got, 1)
	assert.True(t, got[0].Equal(ours()))
	require.Error(t, s.Ready(ctx))
}
