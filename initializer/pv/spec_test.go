package pv

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	vols := []Volume{{Name: "data", Claim: "data"}, {Name: "logs", Claim: "team.logs-1"}}
	got, err := Parse(Format(vols))
	require.NoError(t, err)
	assert.Equal(t, vols, got)
	assert.Equal(t, "/dev/contrast-pv/data", got[0].DevicePath())
	assert.Equal(t, "/contrast-pv/data", got[0].MountPath())
	assert.Equal(t, "contrast-pv-data", got[0].SharedVolumeName())
	assert.Equal(t, "PV: team.logs-1", got[1].KeyLabel())

	none, err := Parse("")
	require.NoError(t, err)
	assert.Empty(t, none)

	for name, tc := range map[string]struct{ in, want string }{
		"no claim":            {"data", "want volume:claim"},
		"empty name":          {":c", `volume ""`},
		"upper case":          {"Data:c", `volume "Data"`},
		"path in name":        {"../x:c", `volume "../x"`},
		"name too long":       {strings.Repeat("a", 52) + ":c", "DNS label"},
		"claim not subdomain": {"data:a/b", `claim "a/b"`},
		"twice":               {"data:a,data:b", "listed twice"},
		"trailing comma":      {"data:a,", "entry 1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tc.in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), EnvVolumes)
		})
	}
}

func TestParseFSGroup(t *testing.T) {
	g, err := ParseFSGroup("")
	require.NoError(t, err)
	assert.Nil(t, g)
	g, err = ParseFSGroup("1000")
	require.NoError(t, err)
	assert.Equal(t, int64(1000), *g)
	for _, bad := range []string{"-1", "x", "1.5", "4294967295", " 1"} {
		_, err := ParseFSGroup(bad)
		require.ErrorContains(t, err, EnvFSGroup, bad)
	}
}

// FuzzParse: whatever Parse accepts has names that are safe as path
// elements and device-mapper names (DNS labels, no "/" or ".."), and
// formats back to what parses to the same volumes.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "data:data", "data:a,logs:team.logs-1", "../x:y", "a:b,a:c", "a:", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		vols, err := Parse(s)
		if err != nil {
			return
		}
		for _, v := range vols {
			require.NoError(t, Check(v))
			require.NotContains(t, v.Name, "/")
			require.NotContains(t, v.Name, "..")
			require.Equal(t, DeviceDir+"/"+v.Name, v.DevicePath())
		}
		again, err := Parse(Format(vols))
		require.NoError(t, err)
		require.Equal(t, vols, again)
	})
}
