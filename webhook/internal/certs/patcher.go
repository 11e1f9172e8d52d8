package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"sort"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	admissionregistrationv1client "k8s.io/client-go/kubernetes/typed/admissionregistration/v1"
	"k8s.io/client-go/util/retry"
)

// maxBundleCAs bounds the CAs kept in a caBundle. Every replica (and every
// restart) adds a CA that stays until it expires; only beyond this many are
// unexpired CAs dropped, the oldest first, never the caller's. A replica
// whose CA was dropped anyway (or removed by someone resetting the caBundle)
// adds it again on its next check (SelfManaged).
const maxBundleCAs = 32

// WebhookConfigPatcher keeps CAs in the caBundle of every webhook of a
// MutatingWebhookConfiguration (and of the ValidatingWebhookConfiguration of
// the same webhook server, if configured), dropping expired ones.
type WebhookConfigPatcher struct {
	Client admissionregistrationv1client.MutatingWebhookConfigurationInterface
	Name   string
	// Validating, if set, is the client of the ValidatingWebhookConfiguration
	// ValidatingName (default Name): the webhook's /validate endpoint, served
	// with the same certificate, needs the same CAs. A missing
	// ValidatingWebhookConfiguration is skipped; once it is created the CAs
	// are added by the next EnsureCAs.
	Validating     admissionregistrationv1client.ValidatingWebhookConfigurationInterface
	ValidatingName string
	Now            func() time.Time
}

// EnsureCAs implements CABundlePatcher: it reads the configuration(s) and,
// if a CA of cas is missing from a webhook's caBundle (or an expired CA is
// there), updates them.
func (p *WebhookConfigPatcher) EnsureCAs(ctx context.Context, cas ...*x509.Certificate) ([]*x509.Certificate, error) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	var missing []*x509.Certificate
	add := func(found []*x509.Certificate) {
		for _, c := range found {
			if !slices.ContainsFunc(missing, c.Equal) {
				missing = append(missing, c)
			}
		}
	}
	ensure := func(bundles []*[]byte) bool {
		found, changed := ensureBundles(bundles, cas, now())
		add(found)
		return changed
	}
	err := ensureConfig(ctx, "MutatingWebhookConfiguration", p.Name, false,
		p.Client.Get, p.Client.Update, mutatingBundles, ensure)
	if err != nil || p.Validating == nil {
		return missing, err
	}
	name := p.ValidatingName
	if name == "" {
		name = p.Name
	}
	err = ensureConfig(ctx, "ValidatingWebhookConfiguration", name, true,
		p.Validating.Get, p.Validating.Update, validatingBundles, ensure)
	return missing, err
}

// ensureConfig reads the webhook configuration name of the given kind,
// passes the caBundles of its webhooks to ensure and updates the
// configuration if ensure changed one, retrying on conflicts. A missing
// configuration is skipped if optional.
func ensureConfig[T any](ctx context.Context, kind, name string, optional bool,
	get func(context.Context, string, metav1.GetOptions) (T, error),
	update func(context.Context, T, metav1.UpdateOptions) (T, error),
	bundles func(T) []*[]byte, ensure func([]*[]byte) bool,
) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cfg, err := get(ctx, name, metav1.GetOptions{})
		if optional && apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s %s: %w", kind, name, err)
		}
		if !ensure(bundles(cfg)) {
			return nil
		}
		if _, err := update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating %s %s: %w", kind, name, err)
		}
		return nil
	})
}

func mutatingBundles(cfg *admissionregistrationv1.MutatingWebhookConfiguration) []*[]byte {
	bundles := make([]*[]byte, len(cfg.Webhooks))
	for i := range cfg.Webhooks {
		bundles[i] = &cfg.Webhooks[i].ClientConfig.CABundle
	}
	return bundles
}

func validatingBundles(cfg *admissionregistrationv1.ValidatingWebhookConfiguration) []*[]byte {
	bundles := make([]*[]byte, len(cfg.Webhooks))
	for i := range cfg.Webhooks {
		bundles[i] = &cfg.Webhooks[i].ClientConfig.CABundle
	}
	return bundles
}

// ensureBundles merges cas into every bundle and returns the CAs that were
// missing from at least one, and whether a bundle changed.
func ensureBundles(bundles []*[]byte, cas []*x509.Certificate, now time.Time) (missing []*x509.Certificate, changed bool) {
	for _, b := range bundles {
		present := ParseBundle(*b)
		for _, c := range cas {
			if !slices.ContainsFunc(present, c.Equal) && !slices.ContainsFunc(missing, c.Equal) {
				missing = append(missing, c)
			}
		}
		merged := MergeBundle(*b, now, cas...)
		if !bytes.Equal(merged, *b) {
			*b = merged
			changed = true
		}
	}
	return missing, changed
}

// ParseBundle returns the certificates of a PEM bundle, skipping what does
// not parse.
func ParseBundle(bundle []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// MergeBundle returns bundle with the CAs ours added: unparsable, duplicate
// and expired certificates dropped, newest first. Beyond maxBundleCAs the
// oldest certificates that are not ours are dropped.
func MergeBundle(bundle []byte, now time.Time, ours ...*x509.Certificate) []byte {
	var certs []*x509.Certificate
	for _, c := range append(slices.Clone(ours), ParseBundle(bundle)...) {
		if now.Before(c.NotAfter) && !slices.ContainsFunc(certs, c.Equal) {
			certs = append(certs, c)
		}
	}
	sort.SliceStable(certs, func(i, j int) bool { return certs[i].NotBefore.After(certs[j].NotBefore) })
	for i := len(certs) - 1; i >= 0 && len(certs) > maxBundleCAs; i-- {
		if !slices.ContainsFunc(ours, certs[i].Equal) {
			certs = slices.Delete(certs, i, i+1)
		}
	}
	var out bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return out.Bytes()
}
