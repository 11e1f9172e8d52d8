package manifest

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/attest/tdx"
)

// ValidatorOptions configure the validators built from a manifest.
type ValidatorOptions struct {
	// Cache fetches and caches KDS/PCS artifacts; nil uses each
	// validator's default (online) cache.
	Cache *certcache.Cache
	// MaxCollateralAge bounds the age of CRLs, TCB info and QE identity;
	// zero means certcache.DefaultMaxAge.
	MaxCollateralAge time.Duration
	// Logger defaults to the validators' default.
	Logger *slog.Logger
}

// Validators returns one validator per platform with reference values:
// evidence is accepted if any of them (and, within one, any entry) accepts it.
func (m *Manifest) Validators(opts ValidatorOptions) ([]attest.Validator, error) {
	var vs []attest.Validator
	if len(m.ReferenceValues.SNP) > 0 {
		v, err := snp.NewValidator(snp.Config{ReferenceValues: m.ReferenceValues.SNP, Cache: opts.Cache, MaxCollateralAge: opts.MaxCollateralAge, Logger: opts.Logger})
		if err != nil {
			return nil, fmt.Errorf("SNP validator: %w", err)
		}
		vs = append(vs, v)
	}
	if len(m.ReferenceValues.TDX) > 0 {
		v, err := tdx.NewValidator(tdx.Config{ReferenceValues: m.ReferenceValues.TDX, Cache: opts.Cache, MaxCollateralAge: opts.MaxCollateralAge, Logger: opts.Logger})
		if err != nil {
			return nil, fmt.Errorf("TDX validator: %w", err)
		}
		vs = append(vs, v)
	}
	return vs, nil
}
