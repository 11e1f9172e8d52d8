package tdx_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest/evidence"
	"github.com/contrast-cc/contrast/attest/tdx"
)

// signedParts returns what the quote's signatures cover: header and TD
// quote body, attestation key, QE report (with the hash binding the key).
// Nil if the layout does not hold them.
func signedParts(raw []byte) []byte {
	const headerBody = 48 + 584
	const qeReport = headerBody + 4 + 64 + 64 + 6
	if len(raw) < qeReport+384 {
		return nil
	}
	return bytes.Join([][]byte{raw[:headerBody], raw[headerBody+4+64 : headerBody+4+128], raw[qeReport : qeReport+384]}, nil)
}

// FuzzValidate mutates accepted evidence of the simulated TD (quote and
// collateral, framed) and asserts the property the validator exists for:
// evidence whose quote's signed parts differ from the original is never
// accepted, and whatever is accepted yields the original result. It must
// also never panic.
func FuzzValidate(f *testing.F) {
	e := newSimEnv(f, nil)
	now := time.Now()
	var rd [64]byte
	rd[7] = 7
	good := e.issue(f, e.dev, rd)
	v := validator(f, []tdx.ReferenceValues{e.dev.ReferenceValues()}, now)
	want, err := v.Validate(context.Background(), good, rd)
	require.NoError(f, err)
	fr, err := evidence.Unmarshal(good)
	require.NoError(f, err)
	wantSigned := signedParts(fr.Evidence)
	f.Add(good)
	f.Add(good[:700])
	f.Add(realSample(f, testdata.RawQuote, true))
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := v.Validate(context.Background(), b, rd)
		if err != nil {
			return
		}
		if res == nil {
			t.Fatal("nil result without error")
		}
		got, uerr := evidence.Unmarshal(b)
		if uerr != nil {
			t.Fatalf("accepted evidence that does not unmarshal: %v", uerr)
		}
		if !bytes.Equal(signedParts(got.Evidence), wantSigned) {
			t.Fatalf("accepted a quote whose signed parts were mutated")
		}
		if !bytes.Equal(res.PolicyDigest, want.PolicyDigest) || !bytes.Equal(res.Measurement, want.Measurement) ||
			!bytes.Equal(res.ChipID, want.ChipID) || res.TCB != want.TCB || res.TCBStatus != want.TCBStatus || res.ReportData != want.ReportData {
			t.Fatalf("accepted mutated evidence with a different result: %+v, want %+v", res, want)
		}
	})
}

// FuzzQuoteParse fuzzes the raw quote parser through a frame; the real
// sample is never accepted (its TCB is not supported by the shipped
// collateral), so nothing derived from it may be either.
func FuzzQuoteParse(f *testing.F) {
	v := validatorWith(f, []tdx.ReferenceValues{realRefVals(f)}, sampleTime, bundled(sampleTime))
	f.Add(testdata.RawQuote)
	rd := realReportData(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if _, err := v.Validate(context.Background(), realSample(t, raw, false), rd); err == nil {
			t.Fatal("accepted a quote derived from the unsupported sample")
		}
	})
}
