package snp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/certcache"
	"github.com/contrast-cc/contrast/attest/evidence"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
)

type simEnv struct {
	auth *sim.SNPAuthority
	dev  *sim.SNPDevice
	iss  *snp.Issuer
}

var (
	authOnce   sync.Once
	sharedAuth *sim.SNPAuthority
	authErr    error
)

// newSimEnv returns a device under a simulated root shared by the tests
// (RSA key generation is slow); fresh gives the test its own root.
func newSimEnv(t testing.TB, fresh ...bool) *simEnv {
	t.Helper()
	authOnce.Do(func() { sharedAuth, authErr = sim.NewSNPAuthority() })
	require.NoError(t, authErr)
	auth := sharedAuth
	if len(fresh) > 0 && fresh[0] {
		var err error
		auth, err = sim.NewSNPAuthority()
		require.NoError(t, err)
	}
	cfg := sim.DefaultSNPDeviceConfig()
	cfg.HostData[0] = 0xaa
	dev, err := auth.NewDevice(cfg)
	require.NoError(t, err)
	return &simEnv{auth: auth, dev: dev, iss: snp.NewIssuer(dev.IssuerConfig())}
}

func (e *simEnv) issue(t testing.TB, rd [64]byte) []byte {
	t.Helper()
	ev, err := e.iss.Issue(context.Background(), rd)
	require.NoError(t, err)
	return ev
}

func TestSimulatedRoundTrip(t *testing.T) {
	e := newSimEnv(t)
	var rd [64]byte
	rd[0] = 7
	v := offlineValidator(t, []snp.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
	for range 2 { // second time exercises the chain cache
		res, err := v.Validate(context.Background(), e.issue(t, rd), rd)
		require.NoError(t, err)
		assert.Equal(t, attest.PlatformSimulatedSNP, res.Platform)
		assert.Equal(t, byte(0xaa), res.PolicyDigest[0])
	}
}

func TestSimulatedNegative(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t)
	var rd [64]byte
	rd[1] = 9
	good := e.issue(t, rd)

	t.Run("tampered signature", func(t *testing.T) {
		v := offlineValidator(t, []snp.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
		// Warm the chain cache first, then tamper: both paths must reject.
		_, err := v.Validate(ctx, good, rd)
		require.NoError(t, err)
		fr, err := evidence.Unmarshal(good)
		require.NoError(t, err)
		att, raw, err := snp.ParseAttestation(fr.Evidence)
		require.NoError(t, err)
		raw[0x90] ^= 1
		att.Report, err = abi.ReportToProto(raw)
		require.NoError(t, err)
		bad := reframe(t, att)
		_, err = v.Validate(ctx, bad, rd)
		requireCheck(t, err, attest.CheckSignature)
		cold := offlineValidator(t, []snp.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
		_, err = cold.Validate(ctx, bad, rd)
		requireCheck(t, err, attest.CheckSignature)
	})
	t.Run("foreign VCEK", func(t *testing.T) {
		other, err := sim.NewSNPAuthority()
		require.NoError(t, err)
		dev2, err := other.NewDevice(e.dev.Config())
		require.NoError(t, err)
		ev, err := snp.NewIssuer(dev2.IssuerConfig()).Issue(ctx, rd)
		require.NoError(t, err)
		v := offlineValidator(t, []snp.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
		_, err = v.Validate(ctx, ev, rd)
		requireCheck(t, err, attest.CheckChain)
	})
	t.Run("wrong host data", func(t *testing.T) {
		v, err := snp.NewValidator(snp.Config{
			ReferenceValues: []snp.ReferenceValues{e.dev.ReferenceValues()}, ExpectedHostData: make([]byte, 32),
			Cache: certcache.New(certcache.Config{Offline: true}),
		})
		require.NoError(t, err)
		_, err = v.Validate(ctx, good, rd)
		requireCheck(t, err, attest.CheckPolicyDigest)
	})
	t.Run("replayed evidence", func(t *testing.T) {
		v := offlineValidator(t, []snp.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
		var session2 [64]byte
		session2[1] = 10
		_, err := v.Validate(ctx, good, session2)
		requireCheck(t, err, attest.CheckReportData)
	})
	t.Run("truncated", func(t *testing.T) {
		v := offlineValidator(t, []snp.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
		for _, n := range []int{0, 5, 12, len(good) / 2, len(good) - 1} {
			_, err := v.Validate(ctx, good[:n], rd)
			requireCheck(t, err, attest.CheckFormat)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		v := offlineValidator(t, []snp.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
		_, err := v.Validate(ctx, append(good, make([]byte, evidence.MaxSize)...), rd)
		requireCheck(t, err, attest.CheckFormat)
	})
	t.Run("device negatives", func(t *testing.T) {
		tests := map[string]struct {
			mutate func(*sim.SNPDeviceConfig)
			want   attest.Check
		}{
			"wrong vmpl":   {func(c *sim.SNPDeviceConfig) { c.VMPL = 1 }, attest.CheckVMPL},
			"debug":        {func(c *sim.SNPDeviceConfig) { c.Policy.Debug = true }, attest.CheckDebug},
			"low tcb":      {func(c *sim.SNPDeviceConfig) { c.TCB.SnpSpl = 1 }, attest.CheckTCB},
			"chip id":      {func(c *sim.SNPDeviceConfig) { c.ChipID[0] ^= 1 }, attest.CheckChipID},
			"measurement":  {func(c *sim.SNPDeviceConfig) { c.Measurement[0] ^= 1 }, attest.CheckMeasurement},
			"SMT disallow": {func(c *sim.SNPDeviceConfig) { c.Policy.MigrateMA = true }, attest.CheckReportFields},
		}
		rv := e.dev.ReferenceValues()
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				cfg := e.dev.Config()
				tc.mutate(&cfg)
				dev, err := e.auth.NewDevice(cfg)
				require.NoError(t, err)
				ev, err := snp.NewIssuer(dev.IssuerConfig()).Issue(ctx, rd)
				require.NoError(t, err)
				v := offlineValidator(t, []snp.ReferenceValues{rv}, time.Now())
				_, err = v.Validate(ctx, ev, rd)
				requireCheck(t, err, tc.want)
			})
		}
	})
}

func TestSimulatedRevocationAndMissingVCEK(t *testing.T) {
	ctx := context.Background()
	e := newSimEnv(t, true)
	var rd [64]byte
	// CRL carried as an artifact revoking the ASK.
	require.NoError(t, e.auth.RevokeASK())
	fr, err := evidence.Unmarshal(e.issue(t, rd))
	require.NoError(t, err)
	fr.Artifacts = []evidence.Artifact{{URL: kds.CrlLinkByRole(sim.SNPProductLine, "ASK"), Body: e.auth.CRL()}}
	ev, err := evidence.Marshal(fr)
	require.NoError(t, err)
	v := offlineValidator(t, []snp.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
	_, err = v.Validate(ctx, ev, rd)
	requireCheck(t, err, attest.CheckRevocation)
	require.ErrorContains(t, err, "was revoked")

	// A host that did not provision the VCEK: offline validation names the KDS URL.
	cfg := e.dev.Config()
	cfg.OmitCertificates = true
	dev, err := e.auth.NewDevice(cfg)
	require.NoError(t, err)
	ev, err = snp.NewIssuer(dev.IssuerConfig()).Issue(ctx, rd)
	require.NoError(t, err)
	_, err = v.Validate(ctx, ev, rd)
	requireCheck(t, err, attest.CheckChain)
	require.ErrorContains(t, err, "https://kdsintf.amd.com/vcek/v1/Milan/")
}

func reframe(t testing.TB, att *spb.Attestation) []byte {
	t.Helper()
	b, err := proto.Marshal(att)
	require.NoError(t, err)
	ev, err := evidence.Marshal(&evidence.Frame{Kind: evidence.KindSNP, Evidence: b})
	require.NoError(t, err)
	return ev
}

func BenchmarkSNPValidate(b *testing.B) {
	e := newSimEnv(b)
	var rd [64]byte
	ev := e.issue(b, rd)
	v := offlineValidator(b, []snp.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
	_, err := v.Validate(context.Background(), ev, rd)
	require.NoError(b, err)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Validate(context.Background(), ev, rd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSNPValidateRealSample(b *testing.B) {
	v := offlineValidator(b, []snp.ReferenceValues{realRefVals(b)}, sampleTime)
	ev := realSample(b, nil)
	for b.Loop() {
		if _, err := v.Validate(context.Background(), ev, realReportData()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkP384VerifyFloor is the raw signature-verification floor for SNP:
// one ECDSA P-384 SHA-384 verification of a report-sized message.
func BenchmarkP384VerifyFloor(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(b, err)
	msg := make([]byte, 0x2A0)
	digest := sha512.Sum384(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	require.NoError(b, err)
	for b.Loop() {
		d := sha512.Sum384(msg)
		if !ecdsa.VerifyASN1(&key.PublicKey, d[:], sig) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkSNPValidateVsFloor interleaves one validation (warm cache) and
// one raw P-384 verification per iteration, so both see the same machine
// load, and reports validations per second and floor/validate.
func BenchmarkSNPValidateVsFloor(b *testing.B) {
	e := newSimEnv(b)
	var rd [64]byte
	ev := e.issue(b, rd)
	v := offlineValidator(b, []snp.ReferenceValues{e.dev.ReferenceValues()}, time.Now())
	_, err := v.Validate(context.Background(), ev, rd)
	require.NoError(b, err)
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(b, err)
	msg := make([]byte, 0x2A0)
	d := sha512.Sum384(msg)
	sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	require.NoError(b, err)
	var tv, tf time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := v.Validate(context.Background(), ev, rd); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		d := sha512.Sum384(msg)
		if !ecdsa.VerifyASN1(&key.PublicKey, d[:], sig) {
			b.Fatal("verify failed")
		}
		tv, tf = tv+t1.Sub(t0), tf+time.Since(t1)
	}
	b.ReportMetric(float64(b.N)/tv.Seconds(), "validations/s")
	b.ReportMetric(float64(b.N)/tf.Seconds(), "floor-verifies/s")
	b.ReportMetric(tf.Seconds()/tv.Seconds(), "ratio-to-floor")
}
