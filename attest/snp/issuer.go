// Package snp issues and validates AMD SEV-SNP evidence with go-sev-guest.
//
// The issuer runs in the guest: it asks configfs-tsm for an extended report
// (falling back to /dev/sev-guest), and frames it as a sevsnp.Attestation
// with the VCEK/VLEK chain and, where reachable, the CRL. The validator runs
// in the verifier: go-sev-guest verify for the chain and signature (against
// the embedded AMD roots, or the simulated root for snp-simulated reference
// values), then every reference-value field, with go-sev-guest validate as
// the backstop.
package snp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"google.golang.org/protobuf/proto"

	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/evidence"
)

// IssuerConfig configures an Issuer.
type IssuerConfig struct {
	// TSM is the configfs-tsm client; nil uses the kernel's
	// /sys/kernel/config/tsm. Tests plug in the simulated device here.
	TSM configfsi.Client
	// DisableDeviceFallback disables the /dev/sev-guest fallback.
	DisableDeviceFallback bool
	// Cache, if set, is used to attach missing certificates and the CRL.
	Cache *certcache.Cache
	// ArtifactSource, if set, returns artifacts attached to every evidence
	// frame, e.g. the simulated ARK's current CRL.
	ArtifactSource func() []evidence.Artifact
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Issuer produces SNP evidence in the guest.
type Issuer struct {
	cfg IssuerConfig
}

// NewIssuer returns an Issuer with defaults filled in.
func NewIssuer(cfg IssuerConfig) *Issuer {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Issuer{cfg: cfg}
}

// ErrNoDevice is returned when neither configfs-tsm nor /dev/sev-guest works.
var ErrNoDevice = errors.New("no SEV-SNP guest device")

// Issue implements attest.Issuer.
func (i *Issuer) Issue(ctx context.Context, reportData [64]byte) ([]byte, error) {
	att, err := i.fromTSM(reportData)
	if err != nil {
		if i.cfg.DisableDeviceFallback {
			return nil, fmt.Errorf("%w: configfs-tsm: %w", ErrNoDevice, err)
		}
		i.cfg.Logger.Debug("configfs-tsm unavailable, trying /dev/sev-guest", "error", err)
		var derr error
		att, derr = fromDevice(reportData)
		if derr != nil {
			return nil, fmt.Errorf("%w: configfs-tsm: %w; /dev/sev-guest: %w", ErrNoDevice, err, derr)
		}
	}
	frame := &evidence.Frame{Kind: evidence.KindSNP}
	if i.cfg.ArtifactSource != nil {
		frame.Artifacts = append(frame.Artifacts, i.cfg.ArtifactSource()...)
	}
	if i.cfg.Cache != nil {
		frame.Artifacts = append(frame.Artifacts, i.attach(ctx, att)...)
	}
	frame.Evidence, err = proto.Marshal(att)
	if err != nil {
		return nil, fmt.Errorf("encoding attestation: %w", err)
	}
	return evidence.Marshal(frame)
}

func (i *Issuer) fromTSM(reportData [64]byte) (*spb.Attestation, error) {
	c := i.cfg.TSM
	if c == nil {
		var err error
		if c, err = linuxtsm.MakeClient(); err != nil {
			return nil, fmt.Errorf("opening configfs-tsm: %w", err)
		}
	}
	resp, err := report.Get(c, &report.Request{InBlob: reportData[:], GetAuxBlob: true})
	if err != nil {
		return nil, fmt.Errorf("getting report: %w", err)
	}
	if p := strings.TrimSpace(resp.Provider); p != "sev_guest" {
		return nil, fmt.Errorf("configfs-tsm provider is %q, want sev_guest", p)
	}
	rep, err := abi.ReportToProto(resp.OutBlob)
	if err != nil {
		return nil, fmt.Errorf("parsing report: %w", err)
	}
	chain := &spb.CertificateChain{}
	if len(resp.AuxBlob) > 0 {
		certs := new(abi.CertTable)
		if err := certs.Unmarshal(resp.AuxBlob); err != nil {
			return nil, fmt.Errorf("parsing certificate table: %w", err)
		}
		chain = certs.Proto()
	}
	return &spb.Attestation{Report: rep, CertificateChain: chain}, nil
}

func fromDevice(reportData [64]byte) (*spb.Attestation, error) {
	qp := &client.LinuxIoctlQuoteProvider{}
	if !qp.IsSupported() {
		return nil, errors.New("/dev/sev-guest not supported")
	}
	raw, err := qp.GetRawQuote(reportData)
	if err != nil {
		return nil, fmt.Errorf("getting extended report: %w", err)
	}
	att, err := abi.ReportCertsToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing extended report: %w", err)
	}
	return att, nil
}

// attach fetches what the host did not provide (VCEK, ASK/ARK) into the
// chain and the CRL as an artifact, best effort.
func (i *Issuer) attach(ctx context.Context, att *spb.Attestation) []evidence.Artifact {
	info, err := abi.ParseSignerInfo(att.GetReport().GetSignerInfo())
	if err != nil {
		return nil
	}
	line := productLine(att, info.SigningKey)
	if line == "" {
		return nil
	}
	chain := att.GetCertificateChain()
	if info.SigningKey == abi.VcekReportSigner && len(chain.GetVcekCert()) == 0 {
		url := kds.VCEKCertURL(line, att.GetReport().GetChipId(), kds.TCBVersion(att.GetReport().GetReportedTcb()))
		if a, err := i.cfg.Cache.Get(ctx, "", url, certcache.KindCertificate); err == nil {
			chain.VcekCert = a.Body
		} else {
			i.cfg.Logger.Warn("fetching VCEK failed", "error", err)
		}
	}
	if len(chain.GetAskCert()) == 0 || len(chain.GetArkCert()) == 0 {
		if a, err := i.cfg.Cache.Get(ctx, "", kds.ProductCertChainURL(info.SigningKey, line), certcache.KindCertificate); err == nil {
			if ask, ark, err := kds.ParseProductCertChain(a.Body); err == nil {
				chain.AskCert, chain.ArkCert = ask, ark
			}
		}
	}
	url := kds.CrlLinkByKey(line, info.SigningKey)
	a, err := i.cfg.Cache.Get(ctx, "", url, certcache.KindCRL)
	if err != nil {
		i.cfg.Logger.Info("CRL not attached", "error", err)
		return nil
	}
	return []evidence.Artifact{{URL: url, Body: a.Body}}
}
