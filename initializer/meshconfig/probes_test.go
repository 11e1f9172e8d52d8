package meshconfig

import (
	"errors"
	"reflect"
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
		"headers": {
			in: "web-readiness#http#8080#/healthz#Accept:,Host:example.com,X-Auth:a%20b%23c%25d%2Ce%22f%5Cg:h%24(X)%24%24,X-Auth:%09%C3%A9",
			want: []Probe{{Name: "web-readiness", Kind: ProbeHTTP, Port: 8080, Path: "/healthz", Headers: []ProbeHeader{
				{"Accept", ""}, {"Host", "example.com"}, {"X-Auth", "a b#c%d,e\"f\\g:h$(X)$$"}, {"X-Auth", "\té"},
			}}},
		},
		"grpc": {
			in: "api-liveness#grpc#7070##api-readiness#grpc#7070#grpc.health.v1.Health##x-startup#grpc#1#a%23b%20c##tls-readiness#grpcs#443",
			want: []Probe{
				{Name: "api-liveness", Kind: ProbeGRPC, Port: 7070},
				{Name: "api-readiness", Kind: ProbeGRPC, Port: 7070, Service: "grpc.health.v1.Health"},
				{Name: "x-startup", Kind: ProbeGRPC, Port: 1, Service: "a#b c"},
				{Name: "tls-readiness", Kind: ProbeGRPCS, Port: 443},
			},
		},
		"duplicate name":                {in: "a#tcp#1##a#tcp#2", wantErr: `name "a" appears twice`},
		"unknown kind":                  {in: "a#exec#1", wantErr: `kind "exec"`},
		"tcp with path":                 {in: "a#tcp#1#/x", wantErr: "a tcp probe has no path"},
		"http without path":             {in: "a#http#1", wantErr: "needs a path"},
		"relative path":                 {in: "a#http#1#healthz", wantErr: "must start with /"},
		"space in path":                 {in: "a#http#1#/a b", wantErr: "white space"},
		"control in path":               {in: "a#http#1#/a\x01", wantErr: "control characters"},
		"port 0":                        {in: "a#tcp#0", wantErr: "a#tcp#0"},
		"bad name":                      {in: "-a#tcp#1", wantErr: `name "-a"`},
		"too few fields":                {in: "a#1", wantErr: "want name#kind#port"},
		"too many fields":               {in: "a#http#1#/#X:1#Y:2", wantErr: "want name#kind#port"},
		"empty header list":             {in: "a#http#1#/#", wantErr: "empty header list"},
		"header without colon":          {in: "a#http#1#/#X-A", wantErr: `header "X-A": want Name:value`},
		"header name not canonical":     {in: "a#http#1#/#x-a:1", wantErr: `not in canonical form "X-A"`},
		"header name with underscore":   {in: "a#http#1#/#X_a:1", wantErr: `header name "X_a" must be letters, digits and '-'`},
		"empty header name":             {in: "a#http#1#/#:1", wantErr: `header name "" must be`},
		"headers not sorted":            {in: "a#http#1#/#X-B:1,X-A:2", wantErr: "header X-A after X-B: want the names sorted"},
		"header value with a space":     {in: "a#http#1#/#X-A:a b", wantErr: `byte ' ' must be percent-encoded`},
		"header value lower-case hex":   {in: "a#http#1#/#X-A:%2c", wantErr: "upper-case hex digits"},
		"header value over-escaped":     {in: "a#http#1#/#X-A:%41", wantErr: "is written as itself"},
		"header value cut escape":       {in: "a#http#1#/#X-A:%2", wantErr: "incomplete percent-encoding"},
		"header value with newline":     {in: "a#http#1#/#X-A:a%0Ab", wantErr: "control characters other than tab"},
		"header value with DEL":         {in: "a#http#1#/#X-A:%7F", wantErr: "control characters other than tab"},
		"headers on tcp":                {in: "a#tcp#1#/#X-A:1", wantErr: "a tcp probe has no path"},
		"grpc with two fields":          {in: "a#grpc#1#s#t", wantErr: "want name#grpc#port[#service]"},
		"grpcs with a path":             {in: "a#grpcs#1#/#X-A:1", wantErr: "want name#grpcs#port[#service]"},
		"grpc with empty service":       {in: "a#grpc#1#", wantErr: "empty service"},
		"grpc service not UTF-8":        {in: "a#grpc#1#%FF", wantErr: "not valid UTF-8"},
		"grpc service with a space":     {in: "a#grpc#1#a b", wantErr: "service: byte ' ' must be percent-encoded"},
		"grpc service with raw percent": {in: "a#grpc#1#50%", wantErr: "incomplete percent-encoding"},
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
	f.Add("a#http#1#/#Host:example.com,X-A:%20%23%25,X-A:%09")
	f.Add("a#grpc#1##b#grpc#2#grpc.health.v1.Health%2C")
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
		if !reflect.DeepEqual(back, ps) {
			t.Fatalf("%+v after a round trip, want %+v", back, ps)
		}
		if again := (&Config{Probes: back}).ProbesString(); again != v {
			t.Fatalf("canonical form %q of an accepted value %q differs: the encoding is not canonical", again, v)
		}
	})
}

func TestCanonicalHeaders(t *testing.T) {
	cases := map[string]struct {
		in, want []ProbeHeader
	}{
		"none": {},
		"names canonical, sorted, values of one name in order": {
			in:   []ProbeHeader{{"x-b", "1"}, {"host", "h"}, {"X-B", "2"}, {"accept", ""}, {"x-b", "3"}},
			want: []ProbeHeader{{"Accept", ""}, {"Host", "h"}, {"X-B", "1"}, {"X-B", "2"}, {"X-B", "3"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := CanonicalHeaders(tc.in)
			assert.Equal(t, tc.want, got)
			if len(got) == 0 {
				return
			}
			entry := Probe{Name: "a", Kind: ProbeHTTP, Port: 1, Path: "/", Headers: got}.String()
			back, err := ParseProbes(entry)
			require.NoError(t, err, "the parser accepts canonical headers")
			assert.Equal(t, got, back[0].Headers)
		})
	}
}

func TestCheckProbeHeader(t *testing.T) {
	cases := map[string]struct {
		name, value, wantErr string
	}{
		"plain":             {name: "X-Forwarded-Proto", value: "https"},
		"tab and non-ASCII": {name: "X-A", value: "\tä ü"},
		"empty value":       {name: "Accept"},
		"colon in name":     {name: "X:A", wantErr: `header name "X:A" must be letters, digits and '-'`},
		"empty name":        {name: "", wantErr: `header name "" must be`},
		"CR in value":       {name: "X-A", value: "a\rb", wantErr: "value of header X-A must not contain control characters other than tab"},
		"NUL in value":      {name: "X-A", value: "\x00", wantErr: "control characters"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := CheckProbeHeader(tc.name, tc.value)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
		})
	}
}
