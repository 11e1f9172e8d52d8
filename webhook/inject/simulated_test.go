package inject

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/attest/snp"
	"github.com/contrast-cc/contrast/initializer/initenv"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

func simulatedConfig(t *testing.T, base Config) Config {
	t.Helper()
	a, err := sim.NewSNPAuthority()
	require.NoError(t, err)
	dev, err := a.NewDevice(sim.DefaultSNPDeviceConfig())
	require.NoError(t, err)
	cfg := base
	cfg.Platform = attest.PlatformSimulatedSNP
	cfg.CoordinatorReferenceValues = initenv.ReferenceValues{SNP: []snp.ReferenceValues{dev.ReferenceValues()}}
	require.NoError(t, cfg.Validate())
	return cfg
}

// TestInjectSimulated: for a simulated platform the Initializer gets the
// pod's initdata annotation through the downward API and the simulated
// device file from the Secret, and the policy is computed over all of it.
func TestInjectSimulated(t *testing.T) {
	m := testMutator(t)
	m.Config = simulatedConfig(t, m.Config)
	assert.Equal(t, DefaultSimDeviceSecret, m.Config.SimDeviceSecret)

	out, res, err := m.MutatePod(t.Context(), basePod(), nil)
	require.NoError(t, err)
	init := out.Spec.InitContainers[0]
	require.Equal(t, InitializerName, init.Name)
	env := map[string]string{}
	for _, e := range init.Env {
		env[e.Name] = e.Value
	}
	ic, err := initenv.Parse(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(t, err, "the injected environment is what the Initializer accepts")
	assert.Equal(t, attest.PlatformSimulatedSNP, ic.Platform)
	assert.Equal(t, SimInitDataFile, ic.SimInitDataFile)
	assert.Equal(t, SimDeviceFile, ic.SimDeviceFile)
	assert.Equal(t, []corev1.VolumeMount{
		{Name: VolumeName, MountPath: MountPath},
		{Name: SimInitDataVolumeName, MountPath: SimInitDataMountPath, ReadOnly: true},
		{Name: SimDeviceVolumeName, MountPath: SimDeviceMountPath, ReadOnly: true},
	}, init.VolumeMounts)
	vols := map[string]corev1.Volume{}
	for _, v := range out.Spec.Volumes {
		vols[v.Name] = v
	}
	da := vols[SimInitDataVolumeName].DownwardAPI
	require.NotNil(t, da)
	require.Len(t, da.Items, 1)
	assert.Equal(t, "metadata.annotations['"+policy.AnnotationInitData+"']", da.Items[0].FieldRef.FieldPath)
	sec := vols[SimDeviceVolumeName].Secret
	require.NotNil(t, sec)
	assert.Equal(t, DefaultSimDeviceSecret, sec.SecretName)
	assert.Equal(t, []corev1.KeyToPath{{Key: SimDeviceSecretKey, Path: SimDeviceSecretKey}}, sec.Items)
	// only the Initializer sees the device file and the annotation
	for _, c := range append(out.Spec.InitContainers[1:], out.Spec.Containers...) {
		for _, vm := range c.VolumeMounts {
			assert.NotContains(t, []string{SimInitDataVolumeName, SimDeviceVolumeName}, vm.Name, c.Name)
		}
	}
	require.NotEmpty(t, res.Digest)

	// re-injection strips and re-adds the simulated volumes
	again, _, err := m.MutatePod(t.Context(), out, nil)
	require.NoError(t, err)
	assert.Equal(t, out.Spec, again.Spec)

	// the same pod injected for a real platform has another policy hash:
	// the webhook cannot switch a pod between real and simulated unseen
	real := testMutator(t)
	_, realRes, err := real.MutatePod(t.Context(), basePod(), nil)
	require.NoError(t, err)
	assert.NotEqual(t, realRes.Digest, res.Digest)
}

func TestSimulatedConfigRejects(t *testing.T) {
	simCfg := simulatedConfig(t, testConfig)
	cases := map[string]struct {
		mutate func(*Config)
		want   string
	}{
		"device secret with a real platform": {func(c *Config) {
			c.Platform = attest.PlatformSNP
			c.CoordinatorReferenceValues = injecttest.CoordinatorReferenceValues()
			c.SimDeviceSecret = "sim"
		}, "never mix"},
		"simulated reference values with a real platform": {func(c *Config) { c.Platform = attest.PlatformSNP; c.SimDeviceSecret = "" }, "simulated reference values with the real platform"},
		"real reference values with a simulated platform": {func(c *Config) { c.CoordinatorReferenceValues = injecttest.CoordinatorReferenceValues() }, "real reference values with the simulated platform"},
		"bad secret name":            {func(c *Config) { c.SimDeviceSecret = "Not_A_Name" }, "simulated device Secret"},
		"no coordinator policy hash": {func(c *Config) { c.CoordinatorPolicyHashes = nil }, initenv.EnvCoordinatorPolicyHashes},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := simCfg
			tc.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("pod volume with a reserved name", func(t *testing.T) {
		pod := basePod()
		pod.Spec.Volumes = []corev1.Volume{{Name: SimDeviceVolumeName}}
		_, err := Inject(pod, simCfg)
		var de *DenyError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, DenyReserved, de.Code)
		assert.Equal(t, "spec.volumes[0].name", de.Field)
	})
}
