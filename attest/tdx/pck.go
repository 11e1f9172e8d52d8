package tdx

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
)

// Object identifiers of Intel's SGX PCK certificate extension (Intel SGX
// PCK Certificate and CRL Profile): the extension is a sequence of
// (OID, value) pairs under oidSGXExtension.
var (
	oidSGXExtension    = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oidSGXType         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 5}
	oidConfiguration   = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7}
	oidDynamicPlatform = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7, 1}
	oidSMTEnabled      = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7, 3}
)

// SGX types of a PCK certificate.
const (
	sgxTypeStandard              = 0
	sgxTypeScalable              = 1
	sgxTypeScalableWithIntegrity = 2
)

// pckPlatform is what a PCK certificate says about its platform beyond
// what go-tdx-guest parses. Only certificates of the PCK Platform CA carry
// the configuration; a processor CA certificate has none.
type pckPlatform struct {
	sgxType         int // -1 if absent
	hasConfig       bool
	dynamicPlatform bool
	smtEnabled      bool
}

func sgxTypeName(t int) string {
	switch t {
	case sgxTypeStandard:
		return "standard"
	case sgxTypeScalable:
		return "scalable"
	case sgxTypeScalableWithIntegrity:
		return "scalable with integrity"
	case -1:
		return "absent"
	default:
		return fmt.Sprintf("unknown (%d)", t)
	}
}

type sgxPair struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// parsePCKPlatform reads the SGX type and the platform configuration
// (dynamic platform, SMT) from a PCK certificate.
func parsePCKPlatform(pck *x509.Certificate) (pckPlatform, error) {
	p := pckPlatform{sgxType: -1}
	var ext []byte
	for _, e := range pck.Extensions {
		if e.Id.Equal(oidSGXExtension) {
			ext = e.Value
		}
	}
	if ext == nil {
		return p, errors.New("PCK certificate has no SGX extension")
	}
	var pairs []sgxPair
	if rest, err := asn1.Unmarshal(ext, &pairs); err != nil || len(rest) != 0 {
		return p, fmt.Errorf("parsing the PCK certificate's SGX extension: %w", errOrTrailing(err))
	}
	for _, kv := range pairs {
		switch {
		case kv.ID.Equal(oidSGXType):
			var t asn1.Enumerated
			if rest, err := asn1.Unmarshal(kv.Value.FullBytes, &t); err != nil || len(rest) != 0 {
				return p, fmt.Errorf("parsing the PCK certificate's SGX type: %w", errOrTrailing(err))
			}
			p.sgxType = int(t)
		case kv.ID.Equal(oidConfiguration):
			var cfg []sgxPair
			if rest, err := asn1.Unmarshal(kv.Value.FullBytes, &cfg); err != nil || len(rest) != 0 {
				return p, fmt.Errorf("parsing the PCK certificate's configuration: %w", errOrTrailing(err))
			}
			p.hasConfig = true
			for _, c := range cfg {
				var b bool
				if !c.ID.Equal(oidDynamicPlatform) && !c.ID.Equal(oidSMTEnabled) {
					continue
				}
				if rest, err := asn1.Unmarshal(c.Value.FullBytes, &b); err != nil || len(rest) != 0 {
					return p, fmt.Errorf("parsing the PCK certificate's configuration %v: %w", c.ID, errOrTrailing(err))
				}
				if c.ID.Equal(oidDynamicPlatform) {
					p.dynamicPlatform = b
				} else {
					p.smtEnabled = b
				}
			}
		}
	}
	return p, nil
}

// errOrTrailing returns err, or an error about trailing data when err is nil
// (asn1.Unmarshal succeeded but left bytes over).
func errOrTrailing(err error) error {
	if err != nil {
		return err
	}
	return errors.New("trailing data")
}

// check enforces the reference value's platform requirements.
func (p pckPlatform) check(rv *ReferenceValues) error {
	if rv.MemoryIntegrity && p.sgxType != sgxTypeScalableWithIntegrity {
		return fmt.Errorf("the PCK certificate's SGX type is %s, MemoryIntegrity requires scalable with integrity", sgxTypeName(p.sgxType))
	}
	if (rv.SMTDisabled || rv.StaticPlatform) && !p.hasConfig {
		return errors.New("the PCK certificate has no platform configuration (a PCK Processor CA certificate); SMTDisabled and StaticPlatform need one")
	}
	if rv.SMTDisabled && p.smtEnabled {
		return errors.New("the PCK certificate says SMT is enabled on this platform, SMTDisabled requires it disabled")
	}
	if rv.StaticPlatform && p.dynamicPlatform {
		return errors.New("the PCK certificate says this is a dynamic platform (packages can be added), StaticPlatform requires a static one")
	}
	return nil
}
