package snp_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest/certcache"
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

// signedReport returns the signed part of the report framed in ev, or nil.
func signedReport(ev []byte) []byte {
	fr, err := evidence.Unmarshal(ev)
	if err != nil {
		return nil
	}
	_, raw, err := snp.ParseAttestation(fr.Evidence)
	if err != nil {
		return nil
	}
	return abi.SignedComponent(raw)
}

// FuzzValidate mutates accepted evidence of the simulated SNP device
// (report, certificates and CRL, framed) and asserts the property the
// validator exists for: evidence whose report's signed part differs from
// the original is never accepted, and whatever is accepted yields the
// original result. It must also never panic.
func FuzzValidate(f *testing.F) {
	e := newSimEnv(f)
	now := time.Now()
	var rd [64]byte
	rd[5] = 5
	good := e.issue(f, rd)
	v := productionValidator(f, e.dev.ReferenceValues(), certcache.New(certcache.Config{Offline: true}), now)
	want, err := v.Validate(context.Background(), good, rd)
	require.NoError(f, err)
	wantSigned := signedReport(good)
	f.Add(good)
	f.Add(good[:100])
	f.Add(realSample(f, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := v.Validate(context.Background(), b, rd)
		if err != nil {
			return
		}
		if res == nil {
			t.Fatal("nil result without error")
		}
		if !bytes.Equal(signedReport(b), wantSigned) {
			t.Fatal("accepted a report whose signed part was mutated")
		}
		if !bytes.Equal(res.PolicyDigest, want.PolicyDigest) || !bytes.Equal(res.Measurement, want.Measurement) ||
			!bytes.Equal(res.ChipID, want.ChipID) || res.TCB != want.TCB || res.ReportData != want.ReportData {
			t.Fatalf("accepted mutated evidence with a different result: %+v, want %+v", res, want)
		}
	})
}
