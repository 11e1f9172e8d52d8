package meshconfig

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseProbes(t *testing.T) {
	cases := map[string]struct {
		in      string
		want    []Probe
		wantErr string
	}{
		"empty": {in: ""},
		"http, https and tcp": {
			in: "web-readiness#http#8080#/healthz?full=1##web-liveness#https#8443#/##db-startup#tcp#5432",
			want: []Probe{
				{Name: "web-readiness", Kind: ProbeHTTP, Port: 8080, Path: "/healthz?full=1"},
				{Name: "web-liveness", Kind: ProbeHTTPS, Port: 8443, Path: "/"},
				{Name: "db-startup", Kind: ProbeTCP, Port: 5432},
			},
		},
		"63-character container name": {
			in:   strings.Repeat("a", 63) + "-readiness#tcp#1",
			want: []Probe{{Name: strings.Repeat("a", 63) + "-readiness", Kind: ProbeTCP, Port: 1}},
		},
		"duplicate name":    {in: "a#tcp#1##a#tcp#2", wantErr: `name "a" appears twice`},
		"unknown kind":      {in: "a#grpc#1", wantErr: `kind "grpc"`},
		"tcp with path":     {in: "a#tcp#1#/x", wantErr: "a tcp probe has no path"},
		"http without path": {in: "a#http#1", wantErr: "needs a path"},
		"relative path":     {in: "a#http#1#healthz", wantErr: "must start with /"},
		"space in path":     {in: "a#http#1#/a b", wantErr: "white space"},
		"control in path":   {in: "a#http#1#/a\x01", wantErr: "control characters"},
		"port 0":            {in: "a#tcp#0", wantErr: "a#tcp#0"},
		"bad name":          {in: "-a#tcp#1", wantErr: `name "-a"`},
		"too few fields":    {in: "a#1", wantErr: "want name#kind#port[#path]"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParseProbes(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.ErrorIs(t, err, ErrMalformed)
				assert.Contains(t, err.Error(), EnvProbes, "the error names the variable")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			back, err := ParseProbes((&Config{Probes: got}).ProbesString())
			require.NoError(t, err)
			assert.Equal(t, got, back, "canonical form round-trips")
		})
	}
}

func TestParseEnvProbePortReserved(t *testing.T) {
	env := map[string]string{EnvIngress: "x#15021#false", EnvProbes: "a#tcp#1"}
	_, err := ParseEnv(func(k string) string { return env[k] })
	require.ErrorContains(t, err, "port 15021 is the proxy's probe port")
	env = map[string]string{EnvAdminPort: "15021", EnvProbes: "a#tcp#1"}
	_, err = ParseEnv(func(k string) string { return env[k] })
	require.ErrorContains(t, err, "port 15021 is the proxy's probe port")
	env = map[string]string{EnvAdminPort: "15021"}
	_, err = ParseEnv(func(k string) string { return env[k] })
	require.NoError(t, err, "without probes the port is free")
}

func FuzzParseProbes(f *testing.F) {
	f.Add("web-readiness#http#8080#/healthz?full=1##db-startup#tcp#5432")
	f.Add("a#https#1#/")
	f.Add("##")
	f.Add("a#http#1#/#")
	f.Fuzz(func(t *testing.T, v string) {
		ps, err := ParseProbes(v)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		back, err := ParseProbes((&Config{Probes: ps}).ProbesString())
		if err != nil {
			t.Fatalf("canonical form does not parse: %v", err)
		}
		if len(back) != len(ps) {
			t.Fatalf("canonical form has %d probes, want %d", len(back), len(ps))
		}
		for i := range ps {
			if back[i] != ps[i] {
				t.Fatalf("probe %d: %+v after a round trip, want %+v", i, back[i], ps[i])
			}
		}
	})
}
