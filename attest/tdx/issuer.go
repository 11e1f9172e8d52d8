// Package tdx issues and validates Intel TDX evidence (quote v4) with
// go-tdx-guest.
//
// The issuer asks configfs-tsm for a quote (falling back to /dev/tdx_guest)
// and frames it with collateral where reachable. The validator checks the
// quote signature, the PCK chain to the Intel root (or the simulated root
// for tdx-simulated reference values) and, when available, the collateral
// (TCB info, QE identity, CRLs) with go-tdx-guest verify, then every
// reference-value field, with go-tdx-guest validate as the backstop.
package tdx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-tdx-guest/client"
	"github.com/google/go-tdx-guest/pcs"

	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/evidence"
)

// IssuerConfig configures an Issuer.
type IssuerConfig struct {
	// TSM is the configfs-tsm client; nil uses the kernel's. Tests plug in
	// the simulated device here.
	TSM configfsi.Client
	// DisableDeviceFallback disables the /dev/tdx_guest fallback.
	DisableDeviceFallback bool
	// Cache, if set, is used to attach collateral (TCB info, QE identity, CRLs).
	Cache *certcache.Cache
	// Artifacts are attached to every evidence frame (e.g. pre-fetched collateral).
	Artifacts []evidence.Artifact
	// ArtifactSource, if set, returns artifacts attached to every evidence
	// frame after Artifacts, e.g. the simulated collateral, reissued while
	// the issuer runs.
	ArtifactSource func() []evidence.Artifact
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Issuer produces TDX evidence in the guest.
type Issuer struct{ cfg IssuerConfig }

// NewIssuer returns an Issuer with defaults filled in.
func NewIssuer(cfg IssuerConfig) *Issuer {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Issuer{cfg: cfg}
}

// ErrNoDevice is returned when neither configfs-tsm nor /dev/tdx_guest works.
var ErrNoDevice = errors.New("no TDX guest device")

// Issue implements attest.Issuer.
func (i *Issuer) Issue(ctx context.Context, reportData [64]byte) ([]byte, error) {
	quote, err := i.fromTSM(reportData)
	if err != nil {
		if i.cfg.DisableDeviceFallback {
			return nil, fmt.Errorf("%w: configfs-tsm: %w", ErrNoDevice, err)
		}
		dev, derr := client.OpenDevice()
		if derr != nil {
			return nil, fmt.Errorf("%w: configfs-tsm: %w; /dev/tdx_guest: %w", ErrNoDevice, err, derr)
		}
		defer func() { _ = dev.Close() }()
		if quote, derr = client.GetRawQuote(dev, reportData); derr != nil {
			return nil, fmt.Errorf("%w: configfs-tsm: %w; /dev/tdx_guest: %w", ErrNoDevice, err, derr)
		}
	}
	frame := &evidence.Frame{Kind: evidence.KindTDX, Evidence: quote, Artifacts: append([]evidence.Artifact(nil), i.cfg.Artifacts...)}
	if i.cfg.ArtifactSource != nil {
		frame.Artifacts = append(frame.Artifacts, i.cfg.ArtifactSource()...)
	}
	if i.cfg.Cache != nil && len(frame.Artifacts) == 0 {
		frame.Artifacts = i.attach(ctx, quote)
	}
	return evidence.Marshal(frame)
}

func (i *Issuer) fromTSM(reportData [64]byte) ([]byte, error) {
	c := i.cfg.TSM
	if c == nil {
		var err error
		if c, err = linuxtsm.MakeClient(); err != nil {
			return nil, fmt.Errorf("opening configfs-tsm: %w", err)
		}
	}
	resp, err := report.Get(c, &report.Request{InBlob: reportData[:]})
	if err != nil {
		return nil, fmt.Errorf("getting quote: %w", err)
	}
	if p := strings.TrimSpace(resp.Provider); p != "tdx_guest" {
		return nil, fmt.Errorf("configfs-tsm provider is %q, want tdx_guest", p)
	}
	return resp.OutBlob, nil
}

// attach fetches collateral for the quote's platform, best effort.
func (i *Issuer) attach(ctx context.Context, quote []byte) []evidence.Artifact {
	q, err := parseQuote(quote)
	if err != nil {
		return nil
	}
	chain, err := parseChain(q)
	if err != nil {
		return nil
	}
	exts, err := pcs.PckCertificateExtensions(chain.pck)
	if err != nil {
		return nil
	}
	var out []evidence.Artifact
	for _, d := range []struct {
		url  string
		kind certcache.Kind
	}{
		{pcs.TcbInfoURL(exts.FMSPC), certcache.KindTCBInfo}, {pcs.QeIdentityURL(), certcache.KindQEIdentity},
		{pcs.PckCrlURL(caType(chain.pck)), certcache.KindCRL}, {intelRootCRL, certcache.KindCRL},
	} {
		url := d.url
		a, err := i.cfg.Cache.Get(ctx, "", url, d.kind)
		if err != nil {
			i.cfg.Logger.Info("collateral not attached", "error", err)
			continue
		}
		hdr := map[string]string{}
		for k, v := range a.Header {
			if strings.HasSuffix(k, "-Issuer-Chain") {
				hdr[k] = v
			}
		}
		out = append(out, evidence.Artifact{URL: url, Header: hdr, Body: a.Body})
	}
	return out
}
