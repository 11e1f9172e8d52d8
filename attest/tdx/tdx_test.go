package tdx_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	tdxtest "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
	"github.com/google/go-tdx-guest/verify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/evidence"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/tdx"
)

// sampleTime is inside the validity of the sample's collateral.
var sampleTime = time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)

func realQuote(t testing.TB) *pb.QuoteV4 {
	t.Helper()
	q, err := abi.QuoteToProto(testdata.RawQuote)
	require.NoError(t, err)
	return q.(*pb.QuoteV4)
}

// realSample frames the Sapphire Rapids quote shipped in go-tdx-guest with
// its collateral (TCB info, QE identity, CRLs) as artifacts.
func realSample(t testing.TB, raw []byte, withCollateral bool) []byte {
	t.Helper()
	fr := &evidence.Frame{Kind: evidence.KindTDX, Evidence: raw}
	if withCollateral {
		for url, r := range tdxtest.TestGetter.Responses {
			hdr := map[string]string{}
			for k, v := range r.Header {
				hdr[k] = v[0]
			}
			fr.Artifacts = append(fr.Artifacts, evidence.Artifact{URL: url, Header: hdr, Body: r.Body})
		}
	}
	ev, err := evidence.Marshal(fr)
	require.NoError(t, err)
	return ev
}

func realRefVals(t testing.TB) tdx.ReferenceValues {
	t.Helper()
	b := realQuote(t).GetTdQuoteBody()
	var rtmrs [4]attest.HexBytes
	for i := range rtmrs {
		rtmrs[i] = b.GetRtmrs()[i]
	}
	qe := uint16(0)
	return tdx.ReferenceValues{
		Name: "spr-sample", MrTd: b.GetMrTd(), MrSeam: b.GetMrSeam(), Rtmrs: rtmrs, Xfam: b.GetXfam(),
		TdAttributes: b.GetTdAttributes(), MinimumTeeTcbSvn: b.GetTeeTcbSvn(), MinimumQeSvn: &qe,
	}
}

func realReportData(t testing.TB) [64]byte {
	var rd [64]byte
	copy(rd[:], realQuote(t).GetTdQuoteBody().GetReportData())
	return rd
}

// validator is the validator the Coordinator builds from a manifest
// (manifest.Validators sets reference values, cache and logger; every other
// setting is the default) with --offline and the clock at now.
func validator(t testing.TB, rvs []tdx.ReferenceValues, now time.Time) *tdx.Validator {
	t.Helper()
	return validatorWith(t, rvs, now, certcache.New(certcache.Config{Offline: true, Now: func() time.Time { return now }}))
}

func validatorWith(t testing.TB, rvs []tdx.ReferenceValues, now time.Time, cache *certcache.Cache) *tdx.Validator {
	t.Helper()
	v, err := tdx.NewValidator(tdx.Config{
		ReferenceValues: rvs, Cache: cache,
		Now:    func() time.Time { return now },
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	return v
}

// bundled returns an offline cache seeded, at now, with the collateral
// go-tdx-guest ships beside its sample quote, as an operator bundles it.
func bundled(now time.Time) *certcache.Cache {
	c := certcache.New(certcache.Config{Offline: true, Now: func() time.Time { return now }})
	for url, r := range tdxtest.TestGetter.Responses {
		hdr := map[string]string{}
		for k, v := range r.Header {
			hdr[k] = v[0]
		}
		c.Put("", certcache.Artifact{URL: url, Header: hdr, Body: r.Body, FetchedAt: now})
	}
	return c
}

func requireCheck(t *testing.T, err error, want attest.Check) {
	t.Helper()
	require.Error(t, err)
	got, ok := attest.FailedCheck(err)
	require.True(t, ok, "not a CheckError: %v", err)
	assert.Equal(t, want, got, "error: %v", err)
}

func TestRealSapphireRapidsQuoteOffline(t *testing.T) {
	// Quote signature, QE report and PCK chain against the real embedded
	// Intel root, offline, with the collateral go-tdx-guest ships bundled
	// at the sample's time: the collateral's signatures verify against the
	// real root, nothing is revoked, the QE identity matches (MRSIGNER,
	// ISVPRODID, masks; ISVSVN 4 is UpToDate), but the PCK certificate's
	// CPU SVNs (03 03 02 02 02 01 00 02 …) are below both TCB levels of the
	// shipped TCB info (05 05 02 02 03 01 00 03 …), so Intel's algorithm
	// finds no TCB level: the TCB is not supported, and the quote is
	// refused at the last check. Real collateral acceptance cannot be shown
	// on this sample; the simulated platform runs the same code to the end.
	v := validatorWith(t, []tdx.ReferenceValues{realRefVals(t)}, sampleTime, bundled(sampleTime))
	_, err := v.Validate(context.Background(), realSample(t, testdata.RawQuote, false), realReportData(t))
	requireCheck(t, err, attest.CheckTCBStatus)
	require.ErrorContains(t, err, "TCB not supported")

	// Every status opt-in changes nothing: there is no status to allow.
	rv := realRefVals(t)
	rv.AllowedTCBStatuses = []string{tdx.StatusUpToDate, tdx.StatusOutOfDate, tdx.StatusOutOfDateConfigurationNeeded}
	_, err = validatorWith(t, []tdx.ReferenceValues{rv}, sampleTime, bundled(sampleTime)).
		Validate(context.Background(), realSample(t, testdata.RawQuote, false), realReportData(t))
	requireCheck(t, err, attest.CheckTCBStatus)

	// The same collateral carried by the evidence only: the root CA CRL
	// (issued 2023-04-03) is older than the maximum age at the sample's
	// time, and an evidence copy is as old as its issue date says.
	_, err = validator(t, []tdx.ReferenceValues{realRefVals(t)}, sampleTime).
		Validate(context.Background(), realSample(t, testdata.RawQuote, true), realReportData(t))
	requireCheck(t, err, attest.CheckRevocation)
	require.ErrorContains(t, err, "older than the maximum age")

	// No collateral offline: the error names the URL that was needed.
	_, err = validator(t, []tdx.ReferenceValues{realRefVals(t)}, sampleTime).
		Validate(context.Background(), realSample(t, testdata.RawQuote, false), realReportData(t))
	requireCheck(t, err, attest.CheckRevocation)
	require.ErrorContains(t, err, "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der")
}

// TestEmbeddedIntelRootIsGoTDXGuests: the root this package trusts is the
// one go-tdx-guest embeds (the sample's chain verifies with either).
func TestEmbeddedIntelRootIsGoTDXGuests(t *testing.T) {
	q := realQuote(t)
	require.NoError(t, verify.TdxQuote(q, &verify.Options{Now: sampleTime}))
	pool := x509.NewCertPool()
	pool.AddCert(tdx.IntelRoot())
	require.NoError(t, verify.TdxQuote(q, &verify.Options{Now: sampleTime, TrustedRoots: pool}))
	chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	var last []byte
	for b, rest := pem.Decode(chain); b != nil; b, rest = pem.Decode(rest) {
		last = b.Bytes
	}
	assert.Equal(t, tdx.IntelRoot().Raw, last)
}

func TestRealQuoteFlippedByte(t *testing.T) {
	for name, off := range map[string]int{"mrtd": 48 + 136, "report data": 48 + 520 + 5, "signature": 48 + 584 + 4 + 10} {
		t.Run(name, func(t *testing.T) {
			raw := append([]byte(nil), testdata.RawQuote...)
			raw[off] ^= 1
			v := validator(t, []tdx.ReferenceValues{realRefVals(t)}, sampleTime)
			_, err := v.Validate(context.Background(), realSample(t, raw, false), realReportData(t))
			requireCheck(t, err, attest.CheckSignature)
		})
	}
}

func TestRealQuoteNegative(t *testing.T) {
	tests := map[string]struct {
		mutate func(*tdx.ReferenceValues)
		now    time.Time
		want   attest.Check
	}{
		"wrong mrtd":    {mutate: func(r *tdx.ReferenceValues) { r.MrTd = make([]byte, 48) }, want: attest.CheckMeasurement},
		"wrong mrseam":  {mutate: func(r *tdx.ReferenceValues) { r.MrSeam = make([]byte, 48) }, want: attest.CheckMRSEAM},
		"wrong rtmr":    {mutate: func(r *tdx.ReferenceValues) { r.Rtmrs[2] = make([]byte, 48) }, want: attest.CheckRTMR},
		"wrong xfam":    {mutate: func(r *tdx.ReferenceValues) { r.Xfam = make([]byte, 8) }, want: attest.CheckXFAM},
		"tcb below min": {mutate: func(r *tdx.ReferenceValues) { r.MinimumTeeTcbSvn = append([]byte{0xff}, make([]byte, 15)...) }, want: attest.CheckTCB},
		"qe svn below":  {mutate: func(r *tdx.ReferenceValues) { q := uint16(0xffff); r.MinimumQeSvn = &q }, want: attest.CheckQESVN},
		"wrong piid":    {mutate: func(r *tdx.ReferenceValues) { r.AllowedPIIDs = []attest.HexBytes{make([]byte, 16)} }, want: attest.CheckChipID},
		"expired chain": {now: time.Date(2060, 1, 1, 0, 0, 0, 0, time.UTC), want: attest.CheckChain},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rv := realRefVals(t)
			if tc.mutate != nil {
				tc.mutate(&rv)
			}
			now := sampleTime
			if !tc.now.IsZero() {
				now = tc.now
			}
			_, err := validator(t, []tdx.ReferenceValues{rv}, now).Validate(context.Background(), realSample(t, testdata.RawQuote, false), realReportData(t))
			requireCheck(t, err, tc.want)
		})
	}
	// Relay: the right quote for another session.
	rd := realReportData(t)
	rd[0] ^= 1
	_, err := validator(t, []tdx.ReferenceValues{realRefVals(t)}, sampleTime).Validate(context.Background(), realSample(t, testdata.RawQuote, false), rd)
	requireCheck(t, err, attest.CheckReportData)
	// Expired collateral: bundled at the sample's time, used in 2025 (the
	// CRLs' next updates and the maximum age have passed).
	late := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	_, err = validatorWith(t, []tdx.ReferenceValues{realRefVals(t)}, late, bundled(sampleTime)).
		Validate(context.Background(), realSample(t, testdata.RawQuote, true), realReportData(t))
	requireCheck(t, err, attest.CheckRevocation)
}

type simEnv struct {
	auth *sim.TDXAuthority
	dev  *sim.TDXDevice
}

func newSimEnv(t testing.TB, mutate func(*sim.TDXDeviceConfig)) *simEnv {
	t.Helper()
	auth, err := sim.NewTDXAuthority()
	require.NoError(t, err)
	cfg := sim.DefaultTDXDeviceConfig()
	cfg.MrConfigID[0] = 0xcc
	if mutate != nil {
		mutate(&cfg)
	}
	dev, err := auth.NewDevice(cfg)
	require.NoError(t, err)
	return &simEnv{auth: auth, dev: dev}
}

func (e *simEnv) issue(t testing.TB, dev *sim.TDXDevice, rd [64]byte) []byte {
	t.Helper()
	ev, err := tdx.NewIssuer(tdx.IssuerConfig{TSM: dev.TSM(), DisableDeviceFallback: true, Artifacts: dev.Artifacts()}).Issue(context.Background(), rd)
	require.NoError(t, err)
	return ev
}

func TestSimulatedQuoteParsesWithGoTDXGuest(t *testing.T) {
	e := newSimEnv(t, nil)
	var rd [64]byte
	raw, err := e.dev.Quote(rd)
	require.NoError(t, err)
	q, err := abi.QuoteToProto(raw)
	require.NoError(t, err)
	require.NoError(t, abi.CheckQuoteV4(q.(*pb.QuoteV4)))
}

func TestSimulatedRoundTrip(t *testing.T) {
	e := newSimEnv(t, nil)
	var rd [64]byte
	rd[3] = 3
	v := validator(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
	for range 2 {
		res, err := v.Validate(context.Background(), e.issue(t, e.dev, rd), rd)
		require.NoError(t, err)
		assert.Equal(t, attest.PlatformSimulatedTDX, res.Platform)
		assert.Equal(t, byte(0xcc), res.PolicyDigest[0])
	}
}

func TestSimulatedNegative(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, nil)
	rv := e.dev.ReferenceValues()
	var rd [64]byte
	good := e.issue(t, e.dev, rd)
	tests := map[string]struct {
		mutate func(*sim.TDXDeviceConfig)
		want   attest.Check
	}{
		"debug":           {func(c *sim.TDXDeviceConfig) { c.TdAttributes[0] |= 1 }, attest.CheckDebug},
		"mrtd":            {func(c *sim.TDXDeviceConfig) { c.MrTd[0] ^= 1 }, attest.CheckMeasurement},
		"rtmr3":           {func(c *sim.TDXDeviceConfig) { c.Rtmrs[3][0] ^= 1 }, attest.CheckRTMR},
		"low tee tcb":     {func(c *sim.TDXDeviceConfig) { c.TeeTcbSvn[0] = 1 }, attest.CheckTCB},
		"low qe svn":      {func(c *sim.TDXDeviceConfig) { c.QeSvn = 1 }, attest.CheckQESVN},
		"ppid":            {func(c *sim.TDXDeviceConfig) { c.PPID[0] ^= 1 }, attest.CheckChipID},
		"tcb out of date": {func(c *sim.TDXDeviceConfig) { c.TCBOutOfDate = true }, attest.CheckTCBStatus},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := e.dev.Config()
			tc.mutate(&cfg)
			dev, err := e.auth.NewDevice(cfg)
			require.NoError(t, err)
			_, err = validator(t, []tdx.ReferenceValues{rv}, time.Now()).Validate(ctx, e.issue(t, dev, rd), rd)
			requireCheck(t, err, tc.want)
		})
	}
	t.Run("wrong mrconfigid", func(t *testing.T) {
		v, err := tdx.NewValidator(tdx.Config{ReferenceValues: []tdx.ReferenceValues{rv}, ExpectedMrConfigID: make([]byte, 48), Cache: certcache.New(certcache.Config{Offline: true})})
		require.NoError(t, err)
		_, err = v.Validate(ctx, good, rd)
		requireCheck(t, err, attest.CheckPolicyDigest)
	})
	t.Run("replayed", func(t *testing.T) {
		var other [64]byte
		other[0] = 1
		_, err := validator(t, []tdx.ReferenceValues{rv}, time.Now()).Validate(ctx, good, other)
		requireCheck(t, err, attest.CheckReportData)
	})
	t.Run("simulated against real", func(t *testing.T) {
		realRV := rv
		realRV.Platform, realRV.SimulatedRoot = attest.PlatformTDX, ""
		_, err := validator(t, []tdx.ReferenceValues{realRV}, time.Now()).Validate(ctx, good, rd)
		requireCheck(t, err, attest.CheckChain)
		_, err = tdx.NewValidator(tdx.Config{ReferenceValues: []tdx.ReferenceValues{realRefVals(t), rv}})
		require.Error(t, err)
	})
	t.Run("real against simulated", func(t *testing.T) {
		_, err := validator(t, []tdx.ReferenceValues{rv}, sampleTime).Validate(ctx, realSample(t, testdata.RawQuote, true), realReportData(t))
		require.Error(t, err)
	})
	t.Run("foreign root", func(t *testing.T) {
		other := newSimEnv(t, func(c *sim.TDXDeviceConfig) { *c = e.dev.Config() })
		_, err := validator(t, []tdx.ReferenceValues{rv}, time.Now()).Validate(ctx, other.issue(t, other.dev, rd), rd)
		requireCheck(t, err, attest.CheckChain)
	})
	t.Run("truncated and oversized", func(t *testing.T) {
		v := validator(t, []tdx.ReferenceValues{rv}, time.Now())
		for _, n := range []int{0, 11, 100, len(good) / 2, len(good) - 1} {
			_, err := v.Validate(ctx, good[:n], rd)
			requireCheck(t, err, attest.CheckFormat)
		}
		_, err := v.Validate(ctx, append(good, make([]byte, evidence.MaxSize)...), rd)
		requireCheck(t, err, attest.CheckFormat)
	})
	t.Run("no collateral offline", func(t *testing.T) {
		ev, err := tdx.NewIssuer(tdx.IssuerConfig{TSM: e.dev.TSM(), DisableDeviceFallback: true}).Issue(ctx, rd)
		require.NoError(t, err)
		_, err = validator(t, []tdx.ReferenceValues{rv}, time.Now()).Validate(ctx, ev, rd)
		requireCheck(t, err, attest.CheckRevocation)
		require.ErrorContains(t, err, "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der")
	})
}

func TestReferenceValuesJSON(t *testing.T) {
	rv := realRefVals(t)
	b, err := json.Marshal(rv)
	require.NoError(t, err)
	var back tdx.ReferenceValues
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, rv, back)
	rv.TdAttributes = []byte{1, 0, 0, 0, 0, 0, 0, 0}
	var fe *attest.FieldError
	require.ErrorAs(t, rv.Validate(), &fe)
	assert.Equal(t, "TdAttributes", fe.Path)
}

func BenchmarkTDXValidate(b *testing.B) {
	e := newSimEnv(b, nil)
	var rd [64]byte
	ev := e.issue(b, e.dev, rd)
	v := validator(b, []tdx.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
	_, err := v.Validate(context.Background(), ev, rd)
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Validate(context.Background(), ev, rd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkP256VerifyFloor is the raw floor for TDX: one ECDSA P-256
// SHA-256 verification of a quote-sized message.
func BenchmarkP256VerifyFloor(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(b, err)
	msg := make([]byte, 48+584)
	d := sha256.Sum256(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	require.NoError(b, err)
	for b.Loop() {
		d := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(&key.PublicKey, d[:], sig) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkTDXValidateVsFloor interleaves one validation (warm cache) and
// one raw P-256 verification per iteration, so both see the same machine
// load, and reports validations per second and floor/validate.
func BenchmarkTDXValidateVsFloor(b *testing.B) {
	e := newSimEnv(b, nil)
	var rd [64]byte
	ev := e.issue(b, e.dev, rd)
	v := validator(b, []tdx.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
	_, err := v.Validate(context.Background(), ev, rd)
	require.NoError(b, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(b, err)
	msg := make([]byte, 48+584)
	d := sha256.Sum256(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	require.NoError(b, err)
	var tv, tf time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := v.Validate(context.Background(), ev, rd); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		d := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(&key.PublicKey, d[:], sig) {
			b.Fatal("verify failed")
		}
		tv, tf = tv+t1.Sub(t0), tf+time.Since(t1)
	}
	b.ReportMetric(float64(b.N)/tv.Seconds(), "validations/s")
	b.ReportMetric(float64(b.N)/tf.Seconds(), "floor-verifies/s")
	b.ReportMetric(tf.Seconds()/tv.Seconds(), "ratio-to-floor")
}

func TestWarmCacheStillChecksEveryQuote(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, nil)
	var rd [64]byte
	v := validator(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
	good := e.issue(t, e.dev, rd)
	_, err := v.Validate(ctx, good, rd)
	require.NoError(t, err)
	fr, err := evidence.Unmarshal(good)
	require.NoError(t, err)
	for name, off := range map[string]int{
		"mrtd":          48 + 136,
		"mrconfigid":    48 + 184,
		"quote sig":     48 + 584 + 4 + 3,
		"QE report":     48 + 584 + 4 + 64 + 64 + 6 + 10,
		"PCK chain end": len(fr.Evidence) - 40,
	} {
		t.Run(name, func(t *testing.T) {
			raw := append([]byte(nil), fr.Evidence...)
			raw[off] ^= 1
			ev, err := evidence.Marshal(&evidence.Frame{Kind: evidence.KindTDX, Evidence: raw, Artifacts: fr.Artifacts})
			require.NoError(t, err)
			_, err = v.Validate(ctx, ev, rd)
			require.Error(t, err)
		})
	}
}

func TestConcurrentValidation(t *testing.T) {
	e := newSimEnv(t, nil)
	v := validator(t, []tdx.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			var rd [64]byte
			rd[0] = byte(i)
			ev := e.issue(t, e.dev, rd)
			for range 5 {
				_, err := v.Validate(context.Background(), ev, rd)
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
}
