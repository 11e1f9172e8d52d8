package tdx_test

import (
	"context"
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/contrast-cc/contrast/attest/tdx"
)

// FuzzValidate fuzzes TDX evidence parsing and validation (frame, quote
// ABI, PCK chain) with the real sample as seed; it must never panic.
func FuzzValidate(f *testing.F) {
	v := validator(f, []tdx.ReferenceValues{realRefVals(f)}, sampleTime, false)
	f.Add(realSample(f, testdata.RawQuote, false))
	f.Add(realSample(f, testdata.RawQuote[:700], false))
	rd := realReportData(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := v.Validate(context.Background(), b, rd)
		if err == nil && res == nil {
			t.Fatal("nil result without error")
		}
	})
}

// FuzzQuoteParse fuzzes the raw quote parser through a frame.
func FuzzQuoteParse(f *testing.F) {
	v := validator(f, []tdx.ReferenceValues{realRefVals(f)}, sampleTime, false)
	f.Add(testdata.RawQuote)
	rd := realReportData(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _ = v.Validate(context.Background(), realSample(t, raw, false), rd)
	})
}
