package snp_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify/testdata"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/evidence"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
)

func u8(v uint8) *uint8 { return &v }

// realSample frames the Milan report and VCEK shipped in go-sev-guest.
func realSample(t testing.TB, mutate func(raw []byte)) []byte {
	t.Helper()
	raw := append([]byte(nil), testdata.AttestationBytes...)
	if mutate != nil {
		mutate(raw)
	}
	rep, err := abi.ReportToProto(raw)
	require.NoError(t, err)
	ask, ark, err := kds.ParseProductCertChain(trust.AskArkMilanVcekBytes)
	require.NoError(t, err)
	b, err := proto.Marshal(&spb.Attestation{Report: rep, CertificateChain: &spb.CertificateChain{
		VcekCert: testdata.VcekBytes, AskCert: ask, ArkCert: ark,
	}})
	require.NoError(t, err)
	ev, err := evidence.Marshal(&evidence.Frame{Kind: evidence.KindSNP, Evidence: b})
	require.NoError(t, err)
	return ev
}

func realReportData() [64]byte {
	var rd [64]byte
	copy(rd[:], []byte{1, 2, 3, 4, 5})
	return rd
}

func realRefVals(t testing.TB) snp.ReferenceValues {
	t.Helper()
	rep, err := abi.ReportToProto(testdata.AttestationBytes)
	require.NoError(t, err)
	return snp.ReferenceValues{
		Name:               "milan-sample",
		ProductName:        "Milan",
		TrustedMeasurement: rep.GetMeasurement(),
		MinimumTCB:         snp.TCB{BootloaderVersion: u8(2), TEEVersion: u8(0), SNPVersion: u8(5), MicrocodeVersion: u8(68)},
		GuestPolicy:        abi.SnpPolicy{SMT: true, Debug: true},
		AllowDebug:         true, // the sample was taken from a debug-enabled VM
		PlatformInfo:       &abi.SnpPlatformInfo{SMTEnabled: true},
		AllowedChipIDs:     []attest.HexBytes{rep.GetChipId()},
	}
}

// sampleTime lies inside the validity of the sample's VCEK (2022-09-24 .. 2029-09-24).
var sampleTime = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func offlineValidator(t testing.TB, rvs []snp.ReferenceValues, now time.Time) *snp.Validator {
	t.Helper()
	v, err := snp.NewValidator(snp.Config{
		ReferenceValues: rvs,
		Cache:           certcache.New(certcache.Config{Offline: true}),
		Now:             func() time.Time { return now },
		Logger:          slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	return v
}

func requireCheck(t *testing.T, err error, want attest.Check) {
	t.Helper()
	require.Error(t, err)
	got, ok := attest.FailedCheck(err)
	require.True(t, ok, "error is not a CheckError: %v", err)
	assert.Equal(t, want, got, "error: %v", err)
}

// TestRealMilanSampleOffline: the Milan report and VCEK shipped in
// go-sev-guest verify against the real embedded AMD roots (chain and report
// signature) and pass every reference-value check, offline; the ARK's CRL,
// which the production path requires, is not shipped with the sample and
// cannot be made for the real ARK, so the report is refused at the last
// check, revocation, naming the KDS URL. The simulated platform shows the
// same code accepting with a CRL.
func TestRealMilanSampleOffline(t *testing.T) {
	v := offlineValidator(t, []snp.ReferenceValues{realRefVals(t)}, sampleTime)
	_, err := v.Validate(context.Background(), realSample(t, nil), realReportData())
	requireCheck(t, err, attest.CheckRevocation)
	require.ErrorContains(t, err, "https://kdsintf.amd.com/vcek/v1/Milan/crl")
	// A CRL carried by the evidence must be signed by the real ARK: one of
	// a simulated ARK is refused.
	crl, err := newSimEnv(t).auth.SignCRL(sampleTime.Add(-time.Hour), sampleTime.Add(24*time.Hour), false)
	require.NoError(t, err)
	_, err = v.Validate(context.Background(), withArtifacts(t, realSample(t, nil), evidence.Artifact{URL: crlURL, Body: crl}), realReportData())
	requireCheck(t, err, attest.CheckRevocation)
	require.ErrorContains(t, err, "CRL is not issued by the ARK")
}

func TestRealMilanSampleFlippedByte(t *testing.T) {
	v := offlineValidator(t, []snp.ReferenceValues{realRefVals(t)}, sampleTime)
	// Flip a byte of the measurement (signed) and of the signature itself.
	for name, off := range map[string]int{"measurement": 0x90, "signature": 0x2A0 + 3, "report_data": 0x50 + 40} {
		t.Run(name, func(t *testing.T) {
			ev := realSample(t, func(raw []byte) { raw[off] ^= 0x01 })
			_, err := v.Validate(context.Background(), ev, realReportData())
			requireCheck(t, err, attest.CheckSignature)
		})
	}
}

func TestRealSampleNegative(t *testing.T) {
	ctx := context.Background()
	base := realRefVals(t)
	tests := map[string]struct {
		mutate func(*snp.ReferenceValues)
		now    time.Time
		rd     func([64]byte) [64]byte
		want   attest.Check
	}{
		"debug policy not allowed": {mutate: func(r *snp.ReferenceValues) { r.AllowDebug, r.GuestPolicy.Debug = false, false }, want: attest.CheckDebug},
		"wrong measurement":        {mutate: func(r *snp.ReferenceValues) { r.TrustedMeasurement = make([]byte, 48) }, want: attest.CheckMeasurement},
		"tcb below minimum":        {mutate: func(r *snp.ReferenceValues) { r.MinimumTCB.MicrocodeVersion = u8(200) }, want: attest.CheckTCB},
		"launch tcb below minimum": {mutate: func(r *snp.ReferenceValues) { r.MinimumLaunchTCB = &snp.TCB{u8(9), u8(0), u8(0), u8(0)} }, want: attest.CheckTCB},
		"wrong chip id":            {mutate: func(r *snp.ReferenceValues) { r.AllowedChipIDs = []attest.HexBytes{make([]byte, 64)} }, want: attest.CheckChipID},
		"wrong product":            {mutate: func(r *snp.ReferenceValues) { r.ProductName = "Genoa" }, want: attest.CheckProduct},
		"platform info":            {mutate: func(r *snp.ReferenceValues) { r.PlatformInfo = &abi.SnpPlatformInfo{} }, want: attest.CheckPlatformInfo},
		"expired chain":            {now: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), want: attest.CheckChain},
		"not yet valid":            {now: time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC), want: attest.CheckChain},
		"relayed report data": {rd: func(rd [64]byte) [64]byte {
			rd[63] ^= 1
			return rd
		}, want: attest.CheckReportData},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rv := base
			if tc.mutate != nil {
				tc.mutate(&rv)
			}
			now := sampleTime
			if !tc.now.IsZero() {
				now = tc.now
			}
			v := offlineValidator(t, []snp.ReferenceValues{rv}, now)
			rd := realReportData()
			if tc.rd != nil {
				rd = tc.rd(rd)
			}
			_, err := v.Validate(ctx, realSample(t, nil), rd)
			requireCheck(t, err, tc.want)
		})
	}
}

func TestRealValidatorRejectsSimulatedEvidence(t *testing.T) {
	auth, err := sim.NewSNPAuthority()
	require.NoError(t, err)
	dev, err := auth.NewDevice(sim.DefaultSNPDeviceConfig())
	require.NoError(t, err)
	rv := dev.ReferenceValues()
	var rd [64]byte
	ev, err := snp.NewIssuer(dev.IssuerConfig()).Issue(context.Background(), rd)
	require.NoError(t, err)

	// A real reference value with the simulated device's exact values.
	rv.Platform, rv.SimulatedRoot = attest.PlatformSNP, ""
	v := offlineValidator(t, []snp.ReferenceValues{rv}, time.Now())
	_, err = v.Validate(context.Background(), ev, rd)
	requireCheck(t, err, attest.CheckChain)

	// A simulated validator rejects the real sample.
	sv := offlineValidator(t, []snp.ReferenceValues{dev.ReferenceValues()}, sampleTime)
	_, err = sv.Validate(context.Background(), realSample(t, nil), realReportData())
	require.Error(t, err)

	// Mixing is refused at construction.
	_, err = snp.NewValidator(snp.Config{ReferenceValues: []snp.ReferenceValues{realRefVals(t), dev.ReferenceValues()}})
	require.Error(t, err)
}

func TestReferenceValuesJSONAndValidation(t *testing.T) {
	rv := realRefVals(t)
	b, err := json.Marshal(rv)
	require.NoError(t, err)
	var back snp.ReferenceValues
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, rv, back)

	tests := map[string]struct {
		mutate func(*snp.ReferenceValues)
		path   string
	}{
		"debug without allow": {func(r *snp.ReferenceValues) { r.AllowDebug = false }, "GuestPolicy.Debug"},
		"short measurement":   {func(r *snp.ReferenceValues) { r.TrustedMeasurement = []byte{1} }, "TrustedMeasurement"},
		"missing tcb part":    {func(r *snp.ReferenceValues) { r.MinimumTCB.SNPVersion = nil }, "MinimumTCB.SNPVersion"},
		"unknown product":     {func(r *snp.ReferenceValues) { r.ProductName = "Naples" }, "ProductName"},
		"missing platform":    {func(r *snp.ReferenceValues) { r.PlatformInfo = nil }, "PlatformInfo"},
		"bad chip id":         {func(r *snp.ReferenceValues) { r.AllowedChipIDs = []attest.HexBytes{{1}} }, "AllowedChipIDs[0]"},
		"root on real":        {func(r *snp.ReferenceValues) { r.SimulatedRoot = "x" }, "SimulatedRoot"},
		"sim without root":    {func(r *snp.ReferenceValues) { r.Platform = attest.PlatformSimulatedSNP }, "SimulatedRoot"},
		"unknown platform":    {func(r *snp.ReferenceValues) { r.Platform = "sgx" }, "Platform"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := realRefVals(t)
			tc.mutate(&r)
			var fe *attest.FieldError
			require.ErrorAs(t, r.Validate(), &fe)
			assert.Equal(t, tc.path, fe.Path)
		})
	}
}

func TestNewValidatorNamesFieldPath(t *testing.T) {
	good, bad := realRefVals(t), realRefVals(t)
	bad.PlatformInfo = nil
	_, err := snp.NewValidator(snp.Config{ReferenceValues: []snp.ReferenceValues{good, bad}})
	var fe *attest.FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "[1].PlatformInfo", fe.Path)
}
