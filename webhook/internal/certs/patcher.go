package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	admissionregistrationv1client "k8s.io/client-go/kubernetes/typed/admissionregistration/v1"
	"k8s.io/client-go/util/retry"
)

// maxBundleCAs bounds the CAs kept in a caBundle (replicas and restarts add
// one each until they expire).
const maxBundleCAs = 8

// WebhookConfigPatcher adds CAs to the caBundle of every webhook of a
// MutatingWebhookConfiguration, dropping expired ones and keeping the
// newest maxBundleCAs.
type WebhookConfigPatcher struct {
	Client admissionregistrationv1client.MutatingWebhookConfigurationInterface
	Name   string
	Now    func() time.Time
}

// AddCA implements CABundlePatcher.
func (p *WebhookConfigPatcher) AddCA(ctx context.Context, ca *x509.Certificate) error {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cfg, err := p.Client.Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", p.Name, err)
		}
		changed := false
		for i := range cfg.Webhooks {
			merged := MergeBundle(cfg.Webhooks[i].ClientConfig.CABundle, ca, now())
			if !bytes.Equal(merged, cfg.Webhooks[i].ClientConfig.CABundle) {
				cfg.Webhooks[i].ClientConfig.CABundle = merged
				changed = true
			}
		}
		if !changed {
			return nil
		}
		_, err = p.Client.Update(ctx, cfg, metav1.UpdateOptions{})
		return err
	})
}

// MergeBundle returns bundle with ca added, unparsable and expired
// certificates dropped, newest first, at most maxBundleCAs.
func MergeBundle(bundle []byte, ca *x509.Certificate, now time.Time) []byte {
	certs := []*x509.Certificate{ca}
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil || !now.Before(c.NotAfter) || c.Equal(ca) {
			continue
		}
		certs = append(certs, c)
	}
	sort.SliceStable(certs[1:], func(i, j int) bool { return certs[1+i].NotBefore.After(certs[1+j].NotBefore) })
	certs = certs[:min(len(certs), maxBundleCAs)]
	var out bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return out.Bytes()
}
