package initenv_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/initializer/initenv"
)

var (
	simOnce sync.Once
	simRV   snp.ReferenceValues
	simErr  error
)

func simulated(t testing.TB) snp.ReferenceValues {
	t.Helper()
	simOnce.Do(func() {
		a, err := sim.NewSNPAuthority()
		if err != nil {
			simErr = err
			return
		}
		d, err := a.NewDevice(sim.DefaultSNPDeviceConfig())
		if err != nil {
			simErr = err
			return
		}
		simRV = d.ReferenceValues()
	})
	require.NoError(t, simErr)
	return simRV
}

const hashA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func realRV(t testing.TB) snp.ReferenceValues {
	rv := simulated(t)
	rv.Platform, rv.SimulatedRoot, rv.Name = attest.PlatformSNP, "", "real"
	return rv
}

// refKey is the key under which tests keep the whole reference values JSON;
// envOf cuts it into the chunk variables, as the webhook does.
const refKey = initenv.EnvCoordinatorReferenceValues

func envOf(m map[string]string) func(string) (string, bool) {
	env := map[string]string{}
	for k, v := range m {
		if k != refKey {
			env[k] = v
		}
	}
	if v, ok := m[refKey]; ok {
		for i := 0; len(v) > 0; i++ {
			n := min(len(v), 100)
			env[fmt.Sprintf("%s_%d", refKey, i)] = v[:n]
			v = v[n:]
		}
	}
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func envFrom(vars []initenv.EnvVar) func(string) (string, bool) {
	env := map[string]string{}
	for _, e := range vars {
		env[e.Name] = e.Value
	}
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func rvJSON(t testing.TB, rvs ...snp.ReferenceValues) string {
	b, err := json.Marshal(initenv.ReferenceValues{SNP: rvs})
	require.NoError(t, err)
	return string(b)
}

func TestParse(t *testing.T) {
	simEnv := func() map[string]string {
		return map[string]string{
			initenv.EnvCoordinatorHost:            "coordinator.contrast-system.svc:7777",
			initenv.EnvPlatform:                   "snp-simulated",
			initenv.EnvCoordinatorPolicyHashes:    hashA,
			initenv.EnvCoordinatorReferenceValues: rvJSON(t, simulated(t)),
			initenv.EnvSimDeviceFile:              "/contrast-sim/device.json",
			initenv.EnvSimInitDataFile:            "/contrast-sim/initdata",
		}
	}
	cases := map[string]struct {
		mutate func(map[string]string)
		want   []string // fragments of the error; none: valid
	}{
		"simulated": {mutate: func(map[string]string) {}},
		"two policy hashes": {mutate: func(m map[string]string) {
			m[initenv.EnvCoordinatorPolicyHashes] = hashA + "," + strings.Repeat("b", 64)
		}},
		"real": {mutate: func(m map[string]string) {
			m[initenv.EnvPlatform] = "snp"
			m[initenv.EnvCoordinatorReferenceValues] = rvJSON(t, realRV(t))
			delete(m, initenv.EnvSimDeviceFile)
			delete(m, initenv.EnvSimInitDataFile)
		}},
		"no host":                         {mutate: func(m map[string]string) { delete(m, initenv.EnvCoordinatorHost) }, want: []string{initenv.EnvCoordinatorHost}},
		"host without port":               {mutate: func(m map[string]string) { m[initenv.EnvCoordinatorHost] = "coordinator" }, want: []string{initenv.EnvCoordinatorHost}},
		"bad port":                        {mutate: func(m map[string]string) { m[initenv.EnvCoordinatorHost] = "c:077777" }, want: []string{initenv.EnvCoordinatorHost}},
		"unknown platform":                {mutate: func(m map[string]string) { m[initenv.EnvPlatform] = "sev" }, want: []string{initenv.EnvPlatform, `"sev"`}},
		"tdx-simulated has no pod device": {mutate: func(m map[string]string) { m[initenv.EnvPlatform] = "tdx-simulated" }, want: []string{initenv.EnvPlatform, "snp-simulated"}},
		"no policy hash":                  {mutate: func(m map[string]string) { delete(m, initenv.EnvCoordinatorPolicyHashes) }, want: []string{initenv.EnvCoordinatorPolicyHashes, "at least one"}},
		"short policy hash":               {mutate: func(m map[string]string) { m[initenv.EnvCoordinatorPolicyHashes] = "abcd" }, want: []string{initenv.EnvCoordinatorPolicyHashes, "entry 0"}},
		"empty hash entry":                {mutate: func(m map[string]string) { m[initenv.EnvCoordinatorPolicyHashes] = hashA + "," }, want: []string{"entry 1"}},
		"no reference values":             {mutate: func(m map[string]string) { delete(m, initenv.EnvCoordinatorReferenceValues) }, want: []string{initenv.EnvCoordinatorReferenceValues, "at least one"}},
		"unknown field": {mutate: func(m map[string]string) {
			m[initenv.EnvCoordinatorReferenceValues] = `{"snp":[{"TrustedMeasurment":"00"}]}`
		}, want: []string{initenv.EnvCoordinatorReferenceValues, "TrustedMeasurment"}},
		"trailing data": {mutate: func(m map[string]string) { m[initenv.EnvCoordinatorReferenceValues] += "{}" }, want: []string{"trailing"}},
		"invalid reference value names the field": {mutate: func(m map[string]string) {
			rv := simulated(t)
			rv.TrustedMeasurement = []byte{1}
			m[initenv.EnvCoordinatorReferenceValues] = rvJSON(t, rv)
		}, want: []string{"snp[0].TrustedMeasurement"}},
		"real reference values, simulated platform": {mutate: func(m map[string]string) {
			m[initenv.EnvCoordinatorReferenceValues] = rvJSON(t, realRV(t))
		}, want: []string{"real reference values with the simulated platform"}},
		"simulated reference values, real platform": {mutate: func(m map[string]string) {
			m[initenv.EnvPlatform] = "snp"
			delete(m, initenv.EnvSimDeviceFile)
			delete(m, initenv.EnvSimInitDataFile)
		}, want: []string{"simulated reference values with the real platform"}},
		"mixed reference values": {mutate: func(m map[string]string) {
			m[initenv.EnvCoordinatorReferenceValues] = rvJSON(t, simulated(t), realRV(t))
		}, want: []string{"mixes simulated and real"}},
		"sim file with a real platform": {mutate: func(m map[string]string) {
			m[initenv.EnvPlatform] = "snp"
			m[initenv.EnvCoordinatorReferenceValues] = rvJSON(t, realRV(t))
		}, want: []string{initenv.EnvSimDeviceFile, "never mix"}},
		"simulated without device file": {mutate: func(m map[string]string) { delete(m, initenv.EnvSimDeviceFile) }, want: []string{initenv.EnvSimDeviceFile}},
		"relative initdata path":        {mutate: func(m map[string]string) { m[initenv.EnvSimInitDataFile] = "initdata" }, want: []string{initenv.EnvSimInitDataFile}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			m := simEnv()
			tc.mutate(m)
			c, err := initenv.Parse(envOf(m))
			if len(tc.want) == 0 {
				require.NoError(t, err)
				// Env round-trips
				env, err := c.Env()
				require.NoError(t, err)
				for _, e := range env {
					assert.LessOrEqual(t, len(e.Value), max(initenv.ReferenceValuesChunkSize, 512), e.Name)
				}
				c2, err := initenv.Parse(envFrom(env))
				require.NoError(t, err)
				assert.Equal(t, c, c2)
				return
			}
			require.ErrorIs(t, err, initenv.ErrInvalid)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// FuzzParse: the Initializer's environment never panics the parser, and
// whatever it accepts is valid and survives Env → Parse unchanged.
func FuzzParse(f *testing.F) {
	rv := rvJSON(f, simulated(f))
	f.Add("coordinator:7777", "snp-simulated", hashA, rv, "/d/device.json", "/d/initdata")
	f.Add("coordinator:7777", "snp", hashA, `{"snp":[{}]}`, "", "")
	f.Add("[::1]:7777", "tdx", hashA+","+hashA, `{"tdx":[{"MrTd":"00"}]}`, "", "")
	f.Fuzz(func(t *testing.T, host, platform, hashes, refs, dev, initdata string) {
		m := map[string]string{
			initenv.EnvCoordinatorHost: host, initenv.EnvPlatform: platform, initenv.EnvCoordinatorPolicyHashes: hashes,
			initenv.EnvCoordinatorReferenceValues: refs, initenv.EnvSimDeviceFile: dev, initenv.EnvSimInitDataFile: initdata,
		}
		c, err := initenv.Parse(envOf(m))
		if err != nil {
			require.ErrorIs(t, err, initenv.ErrInvalid)
			return
		}
		require.NoError(t, c.Validate())
		env, err := c.Env()
		require.NoError(t, err)
		c2, err := initenv.Parse(envFrom(env))
		require.NoError(t, err)
		require.Equal(t, c, c2)
	})
}
