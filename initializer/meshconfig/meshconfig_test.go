package meshconfig

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	testCases := map[string]struct {
		annotations map[string]string
		want        *Config
		// wantErr is a substring of the error; it must quote the entry.
		wantErr string
	}{
		"no annotations": {
			want: &Config{},
		},
		"ingress and egress": {
			annotations: map[string]string{
				AnnotationIngress:   "web#8080#false##metrics#9090#true",
				AnnotationEgress:    "emoji#127.137.0.1:8081#emoji-svc:8080##db#127.0.0.2:5432#10.0.0.7:5432",
				AnnotationAdminPort: "9901",
			},
			want: &Config{
				Ingress: []Ingress{{Name: "web", Port: 8080, Mode: IngressTLS}, {Name: "metrics", Port: 9090, Mode: IngressPlain}},
				Egress: []Egress{
					{Name: "emoji", Listen: netip.MustParseAddrPort("127.137.0.1:8081"), Remote: "emoji-svc:8080"},
					{Name: "db", Listen: netip.MustParseAddrPort("127.0.0.2:5432"), Remote: "10.0.0.7:5432"},
				},
				AdminPort: 9901,
			},
		},
		"legacy alias": {
			annotations: map[string]string{"contrast.edgeless.systems/servicemesh-ingress": "web#443#false"},
			want:        &Config{Ingress: []Ingress{{Name: "web", Port: 443, Mode: IngressTLS}}},
		},
		"alias equal to canonical": {
			annotations: map[string]string{AnnotationIngress: "web#443#false", "contrast.edgeless.systems/servicemesh-ingress": "web#443#false"},
			want:        &Config{Ingress: []Ingress{{Name: "web", Port: 443, Mode: IngressTLS}}},
		},
		"alias conflicts": {
			annotations: map[string]string{AnnotationIngress: "web#443#false", "contrast.edgeless.systems/servicemesh-ingress": "web#443#true"},
			wantErr:     "conflicts with its alias contrast.edgeless.systems/servicemesh-ingress",
		},
		"disabled": {
			annotations: map[string]string{AnnotationServiceMesh: "disabled"},
			want:        &Config{Disabled: true},
		},
		"explicitly enabled": {
			annotations: map[string]string{AnnotationServiceMesh: "enabled"},
			want:        &Config{},
		},
		"disabled with ingress": {
			annotations: map[string]string{AnnotationServiceMesh: "disabled", AnnotationIngress: "web#443#false"},
			wantErr:     `annotation contrast.cc/servicemesh-ingress: set although contrast.cc/servicemesh is "disabled"`,
		},
		"unknown servicemesh value": {
			annotations: map[string]string{AnnotationServiceMesh: "off"},
			wantErr:     `entry "off": must be "enabled" or "disabled"`,
		},
		"ingress two fields": {
			annotations: map[string]string{AnnotationIngress: "web#443#false##web2#443"},
			wantErr:     `annotation contrast.cc/servicemesh-ingress: entry "web2#443": want name#port#true`,
		},
		"ingress bad port": {
			annotations: map[string]string{AnnotationIngress: "web#70000#false"},
			wantErr:     `entry "web#70000#false": port "70000" is not a number from 1 to 65535`,
		},
		"ingress port zero": {
			annotations: map[string]string{AnnotationIngress: "web#0#false"},
			wantErr:     `entry "web#0#false": port "0"`,
		},
		"ingress leading zero port": {
			annotations: map[string]string{AnnotationIngress: "web#0443#false"},
			wantErr:     `entry "web#0443#false": port "0443"`,
		},
		"ingress bad flag": {
			annotations: map[string]string{AnnotationIngress: "web#443#yes"},
			wantErr:     `entry "web#443#yes": third field "yes"`,
		},
		"ingress empty entry": {
			annotations: map[string]string{AnnotationIngress: "web#443#false##"},
			wantErr:     `annotation contrast.cc/servicemesh-ingress: empty entry (stray "##")`,
		},
		"ingress duplicate port": {
			annotations: map[string]string{AnnotationIngress: "a#443#false##b#443#true"},
			wantErr:     `entry "b#443#true": port 443 already listed by "a"`,
		},
		"ingress duplicate name": {
			annotations: map[string]string{AnnotationIngress: "a#443#false##a#444#true"},
			wantErr:     `entry "a#444#true": duplicate name "a"`,
		},
		"ingress bad name": {
			annotations: map[string]string{AnnotationIngress: "we b#443#false"},
			wantErr:     `entry "we b#443#false": name "we b"`,
		},
		"egress not loopback": {
			annotations: map[string]string{AnnotationEgress: "emoji#10.0.0.1:8081#emoji-svc:8080"},
			wantErr:     `annotation contrast.cc/servicemesh-egress: entry "emoji#10.0.0.1:8081#emoji-svc:8080": listen address "10.0.0.1:8081": must be an IPv4 loopback`,
		},
		"egress ipv6 loopback": {
			annotations: map[string]string{AnnotationEgress: "emoji#[::1]:8081#emoji-svc:8080"},
			wantErr:     `listen address "[::1]:8081": must be an IPv4 loopback`,
		},
		"egress no listen port": {
			annotations: map[string]string{AnnotationEgress: "emoji#127.0.0.1#emoji-svc:8080"},
			wantErr:     `listen address "127.0.0.1": want 127.x.y.z:port`,
		},
		"egress bad remote": {
			annotations: map[string]string{AnnotationEgress: "emoji#127.0.0.1:80#emoji_svc:8080"},
			wantErr:     `remote "emoji_svc:8080": host "emoji_svc"`,
		},
		"egress remote without port": {
			annotations: map[string]string{AnnotationEgress: "emoji#127.0.0.1:80#emoji-svc"},
			wantErr:     `remote "emoji-svc": want host:port`,
		},
		"egress duplicate listener": {
			annotations: map[string]string{AnnotationEgress: "a#127.0.0.1:80#a:1##b#127.0.0.1:80#b:1"},
			wantErr:     `entry "b#127.0.0.1:80#b:1": listen address 127.0.0.1:80 already used by "a"`,
		},
		"admin port not a number": {
			annotations: map[string]string{AnnotationAdminPort: "admin"},
			wantErr:     `annotation contrast.cc/servicemesh-admin-port: entry "admin": port "admin"`,
		},
		"admin port collides with ingress": {
			annotations: map[string]string{AnnotationAdminPort: "8080", AnnotationIngress: "web#8080#false"},
			wantErr:     `entry "8080": port is also the ingress port of "web"`,
		},
		"legacy alias error names the canonical annotation": {
			annotations: map[string]string{"contrast.edgeless.systems/servicemesh-egress": "x"},
			wantErr:     `annotation contrast.cc/servicemesh-egress: entry "x"`,
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.annotations)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("Parse() = %+v, want error containing %q", got, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse() error = %q, want it to contain %q", err, tc.wantErr)
				}
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("errors.Is(%v, ErrMalformed) = false", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			if !equal(got, tc.want) {
				t.Fatalf("Parse() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	in := map[string]string{
		AnnotationIngress:   "web#8080#false##metrics#9090#true",
		AnnotationEgress:    "emoji#127.137.0.1:8081#emoji-svc:8080",
		AnnotationAdminPort: "9901",
	}
	cfg, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IngressString() != in[AnnotationIngress] || cfg.EgressString() != in[AnnotationEgress] || cfg.AdminPortString() != in[AnnotationAdminPort] {
		t.Fatalf("canonical form differs: %q %q %q", cfg.IngressString(), cfg.EgressString(), cfg.AdminPortString())
	}
	env := map[string]string{EnvIngress: cfg.IngressString(), EnvEgress: cfg.EgressString(), EnvAdminPort: cfg.AdminPortString()}
	back, err := ParseEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !equal(back, cfg) {
		t.Fatalf("ParseEnv() = %+v, want %+v", back, cfg)
	}
}

func TestParseEnvNamesVariable(t *testing.T) {
	_, err := ParseEnv(func(k string) string {
		if k == EnvEgress {
			return "bad"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), `annotation `+EnvEgress+`: entry "bad"`) {
		t.Fatalf("ParseEnv() error = %v, want it to name %s", err, EnvEgress)
	}
}

func equal(a, b *Config) bool {
	if a.Disabled != b.Disabled || a.AdminPort != b.AdminPort || len(a.Ingress) != len(b.Ingress) || len(a.Egress) != len(b.Egress) {
		return false
	}
	for i := range a.Ingress {
		if a.Ingress[i] != b.Ingress[i] {
			return false
		}
	}
	for i := range a.Egress {
		if a.Egress[i] != b.Egress[i] {
			return false
		}
	}
	return true
}

// FuzzParse checks that Parse never panics, that every error quotes
// something from the input and wraps ErrMalformed, and that the canonical
// form of an accepted configuration parses to the same configuration.
func FuzzParse(f *testing.F) {
	f.Add("web#8080#false##metrics#9090#true", "emoji#127.137.0.1:8081#emoji-svc:8080", "9901", "")
	f.Add("", "", "", "disabled")
	f.Add("a#1#true", "x#127.0.0.1:1#[::1]:5", "", "enabled")
	f.Add("##", "#", "0", "x")
	f.Fuzz(func(t *testing.T, ing, eg, admin, mesh string) {
		ann := map[string]string{}
		for k, v := range map[string]string{AnnotationIngress: ing, AnnotationEgress: eg, AnnotationAdminPort: admin, AnnotationServiceMesh: mesh} {
			if v != "" {
				ann[k] = v
			}
		}
		cfg, err := Parse(ann)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if cfg.Disabled {
			return
		}
		back, err := Parse(map[string]string{AnnotationIngress: cfg.IngressString(), AnnotationEgress: cfg.EgressString(), AnnotationAdminPort: cfg.AdminPortString()})
		if err != nil {
			t.Fatalf("canonical form does not parse: %v", err)
		}
		if !equal(back, cfg) {
			t.Fatalf("canonical round trip: %+v != %+v", back, cfg)
		}
	})
}
