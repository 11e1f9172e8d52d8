package rules

import (
	"slices"
	"testing"

	"github.com/google/nftables/expr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

const ingressPort = 15006

func envProbes(ingress, egress, admin, probes string) func(string) string {
	return func(k string) string {
		switch k {
		case meshconfig.EnvProbes:
			return probes
		case meshconfig.EnvIngress:
			return ingress
		case meshconfig.EnvEgress:
			return egress
		case meshconfig.EnvAdminPort:
			return admin
		}
		return ""
	}
}

func TestCompute(t *testing.T) {
	testCases := map[string]struct {
		ingress, egress, admin, probes string
		want                           string
	}{
		"probes: the probe port is skipped": {
			ingress: "web#8080#false",
			probes:  "web-readiness#http#8080#/healthz",
			want: `table inet contrast_mesh {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "lo" return comment "loopback: never redirected"
		tcp dport 15021 return comment "mesh proxy probe port (kubelet probes)"
		meta l4proto tcp redirect to :15006 comment "inbound TCP to the mesh proxy"
	}
}
`,
		},
		"no configuration: every inbound TCP port to the proxy": {
			want: `table inet contrast_mesh {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "lo" return comment "loopback: never redirected"
		meta l4proto tcp redirect to :15006 comment "inbound TCP to the mesh proxy"
	}
}
`,
		},
		"plain ports and admin port skipped, TLS-only port redirected": {
			ingress: "web#8080#false##metrics#9090#true##health#8081#true",
			egress:  "db#127.0.0.2:5432#db.default:5432",
			admin:   "9901",
			want: `table inet contrast_mesh {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "lo" return comment "loopback: never redirected"
		tcp dport 9090 return comment "plain ingress metrics"
		tcp dport 8081 return comment "plain ingress health"
		tcp dport 9901 return comment "mesh proxy admin port"
		meta l4proto tcp redirect to :15006 comment "inbound TCP to the mesh proxy"
	}
}
`,
		},
		"egress entries add no rule": {
			egress: "a#127.0.0.2:80#a:443##b#127.0.0.3:80#10.0.0.1:443",
			want: `table inet contrast_mesh {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "lo" return comment "loopback: never redirected"
		meta l4proto tcp redirect to :15006 comment "inbound TCP to the mesh proxy"
	}
}
`,
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			cfg, err := meshconfig.ParseEnv(envProbes(tc.ingress, tc.egress, tc.admin, tc.probes))
			require.NoError(t, err)
			s, err := Compute(cfg, ingressPort)
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.String())
			checkInvariants(t, cfg, s)
		})
	}
}

func TestComputeRejects(t *testing.T) {
	testCases := map[string]struct {
		cfg     *meshconfig.Config
		port    uint16
		wantErr error
	}{
		"plain ingress port is the listener port": {
			cfg:     &meshconfig.Config{Ingress: []meshconfig.Ingress{{Name: "x", Port: ingressPort, Mode: meshconfig.IngressPlain}}},
			port:    ingressPort,
			wantErr: ErrPortConflict,
		},
		"TLS ingress port is the listener port": {
			cfg:     &meshconfig.Config{Ingress: []meshconfig.Ingress{{Name: "x", Port: ingressPort, Mode: meshconfig.IngressTLS}}},
			port:    ingressPort,
			wantErr: ErrPortConflict,
		},
		"probe port is the listener port": {
			cfg:     &meshconfig.Config{Probes: []meshconfig.Probe{{Name: "a", Kind: meshconfig.ProbeTCP, Port: 1}}},
			port:    meshconfig.ProbePort,
			wantErr: ErrPortConflict,
		},
		"admin port is the listener port": {
			cfg:     &meshconfig.Config{AdminPort: ingressPort},
			port:    ingressPort,
			wantErr: ErrPortConflict,
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			_, err := Compute(tc.cfg, tc.port)
			require.ErrorIs(t, err, tc.wantErr)
		})
	}
	_, err := Compute(&meshconfig.Config{}, 0)
	require.Error(t, err, "listener port 0")
	_, err = Compute(&meshconfig.Config{Disabled: true}, ingressPort)
	require.Error(t, err, "disabled mesh")
}

func TestExprs(t *testing.T) {
	s, err := Compute(&meshconfig.Config{AdminPort: 9901}, ingressPort)
	require.NoError(t, err)
	require.Len(t, s.Rules, 3)

	lo, err := s.Rules[0].Exprs()
	require.NoError(t, err)
	assert.Equal(t, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{'l', 'o', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}, lo)

	skip, err := s.Rules[1].Exprs()
	require.NoError(t, err)
	assert.Equal(t, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{9901 >> 8, 9901 & 0xff}},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}, skip)

	redir, err := s.Rules[2].Exprs()
	require.NoError(t, err)
	assert.Equal(t, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}},
		&expr.Immediate{Register: 1, Data: []byte{ingressPort >> 8, ingressPort & 0xff}},
		&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: 2},
	}, redir)

	_, err = Rule{Kind: 0, Comment: "bad"}.Exprs()
	require.Error(t, err)
}

// checkInvariants asserts the security properties of a rule set computed
// from cfg: loopback first, the redirect last and only once, exactly the
// plain ingress ports and the admin port skipped, and no port that needs TLS
// (mTLS or TLS-only) left out of the redirect.
func checkInvariants(t *testing.T, cfg *meshconfig.Config, s *Set) {
	t.Helper()
	require.GreaterOrEqual(t, len(s.Rules), 2)
	assert.Equal(t, SkipLoopback, s.Rules[0].Kind, "first rule")
	last := s.Rules[len(s.Rules)-1]
	assert.Equal(t, Rule{Kind: Redirect, Port: ingressPort, Comment: "inbound TCP to the mesh proxy"}, last, "last rule")
	var wantSkipped []uint16
	for _, in := range cfg.Ingress {
		if in.Mode == meshconfig.IngressPlain {
			wantSkipped = append(wantSkipped, in.Port)
		}
	}
	if cfg.AdminPort != 0 {
		wantSkipped = append(wantSkipped, cfg.AdminPort)
	}
	if len(cfg.Probes) > 0 {
		wantSkipped = append(wantSkipped, meshconfig.ProbePort)
	}
	assert.Equal(t, wantSkipped, s.SkippedPorts())
	for _, in := range cfg.Ingress {
		if in.Mode == meshconfig.IngressTLS {
			assert.NotContains(t, s.SkippedPorts(), in.Port, "TLS port %d must be redirected", in.Port)
		}
	}
	for _, r := range s.Rules[1 : len(s.Rules)-1] {
		assert.Equal(t, SkipPort, r.Kind)
	}
}

// FuzzCompute feeds the proxy's environment (what the webhook injects, or
// anything a host puts there) through meshconfig.ParseEnv and Compute and
// checks the rule set's invariants on every accepted input.
func FuzzCompute(f *testing.F) {
	f.Add("web#8080#false##metrics#9090#true", "db#127.0.0.2:5432#db.default:5432", "9901", "web-readiness#http#8080#/healthz")
	f.Add("", "", "", "")
	f.Add("a#15006#true", "", "", "")
	f.Add("a#1#true##b#2#false##c#3#true", "x#127.1.2.3:4#[::1]:5", "65535", "a-startup#tcp#1")
	f.Add("a#80#true##a#81#true", "", "80", "")
	f.Fuzz(func(t *testing.T, ingress, egress, admin, probes string) {
		cfg, err := meshconfig.ParseEnv(envProbes(ingress, egress, admin, probes))
		if err != nil {
			var me *meshconfig.Error
			require.ErrorAs(t, err, &me)
			return
		}
		s, err := Compute(cfg, ingressPort)
		if err != nil {
			require.ErrorIs(t, err, ErrPortConflict)
			conflict := cfg.AdminPort == ingressPort || slices.ContainsFunc(cfg.Ingress, func(in meshconfig.Ingress) bool { return in.Port == ingressPort })
			require.True(t, conflict, "rejected without a conflict: %v", err)
			return
		}
		checkInvariants(t, cfg, s)
		for _, r := range s.Rules {
			_, err := r.Exprs()
			require.NoError(t, err)
		}
		// Same input, same rules.
		again, err := Compute(cfg, ingressPort)
		require.NoError(t, err)
		require.Equal(t, s, again)
	})
}
