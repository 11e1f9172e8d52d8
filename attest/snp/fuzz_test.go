package snp_test

import (
	"context"
	"testing"

	"github.com/contrast-cc/contrast/attest/evidence"
	"github.com/contrast-cc/contrast/attest/snp"
)

// FuzzParseAttestation fuzzes the SNP evidence payload parser.
func FuzzParseAttestation(f *testing.F) {
	fr, err := evidence.Unmarshal(realSample(f, nil))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(fr.Evidence)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		att, raw, err := snp.ParseAttestation(b)
		if err != nil {
			return
		}
		if att.GetReport() == nil || len(raw) == 0 {
			t.Fatal("accepted attestation without report")
		}
	})
}

// FuzzValidate fuzzes the whole SNP validation path with framed input; it
// must never panic and never accept.
func FuzzValidate(f *testing.F) {
	v := offlineValidator(f, []snp.ReferenceValues{realRefVals(f)}, sampleTime)
	good := realSample(f, nil)
	f.Add(good)
	f.Add(good[:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := v.Validate(context.Background(), b, realReportData())
		if err == nil && res == nil {
			t.Fatal("nil result without error")
		}
	})
}
