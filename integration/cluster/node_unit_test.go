package cluster

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSplitRule(t *testing.T) {
	testCases := map[string]struct {
		rule string
		want []string
	}{
		"plain": {
			rule: "KUBE-SERVICES -d 10.217.1.1/32 -p tcp -j KUBE-SVC-NPX46M4PTMTKRN6Y",
			want: []string{"KUBE-SERVICES", "-d", "10.217.1.1/32", "-p", "tcp", "-j", "KUBE-SVC-NPX46M4PTMTKRN6Y"},
		},
		"quoted comment": {
			rule: `PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
			want: []string{"PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"},
		},
		"escaped quote": {
			rule: `X -m comment --comment "a \"b\" c" -j ACCEPT`,
			want: []string{"X", "-m", "comment", "--comment", `a "b" c`, "-j", "ACCEPT"},
		},
		"empty comment": {
			rule: `X -m comment --comment "" -j ACCEPT`,
			want: []string{"X", "-m", "comment", "--comment", "", "-j", "ACCEPT"},
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, splitRule(tc.rule))
		})
	}
}

func TestHostStateDiff(t *testing.T) {
	before := &HostState{
		Iptables: []string{"ip4 filter :KUBE-FIREWALL - [0:0]"},
		Sysctls:  map[string]string{"net/ipv4/ip_forward": "0"},
		Links:    []string{"lo", "eth0"},
		Paths:    map[string]bool{"/var/lib/cni": false},
	}
	same := &HostState{
		Iptables: []string{"ip4 filter :KUBE-FIREWALL - [0:0]"},
		Sysctls:  map[string]string{"net/ipv4/ip_forward": "0"},
		Links:    []string{"lo", "eth0"},
		Paths:    map[string]bool{"/var/lib/cni": false},
	}
	assert.Empty(t, before.Diff(same))

	after := &HostState{
		Iptables: []string{"ip4 nat :KUBE-SERVICES - [0:0]"},
		Sysctls:  map[string]string{"net/ipv4/ip_forward": "1"},
		Links:    []string{"lo", "eth0", "ctrst123456"},
		Netns:    []string{"cni-1"},
		Paths:    map[string]bool{"/var/lib/cni": true},
	}
	assert.Equal(t, []string{
		"iptables added: ip4 nat :KUBE-SERVICES - [0:0]",
		"iptables removed: ip4 filter :KUBE-FIREWALL - [0:0]",
		"network interface added: ctrst123456",
		"network namespace added: cni-1",
		"path /var/lib/cni: exists=false before, true after",
		`sysctl net/ipv4/ip_forward: "0" before, "1" after`,
	}, before.Diff(after))
}

func TestWriteHostsConfig(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, writeHostsConfig(dir, "127.0.0.1:5000", []string{"docker.l5d.io", "*"}))

	local, err := os.ReadFile(filepath.Join(dir, "127.0.0.1:5000", "hosts.toml"))
	require.NoError(t, err)
	assert.Contains(t, string(local), `server = "http://127.0.0.1:5000"`)
	assert.Contains(t, string(local), `[host."http://127.0.0.1:5000"]`)

	mirror, err := os.ReadFile(filepath.Join(dir, "docker.l5d.io", "hosts.toml"))
	require.NoError(t, err)
	assert.Contains(t, string(mirror), `server = "https://docker.l5d.io"`)
	assert.Contains(t, string(mirror), `[host."http://127.0.0.1:5000"]`)
	assert.Contains(t, string(mirror), `capabilities = ["pull", "resolve"]`)

	all, err := os.ReadFile(filepath.Join(dir, "_default", "hosts.toml"))
	require.NoError(t, err)
	assert.NotContains(t, string(all), "server =", "every host keeps its own upstream as fallback")
	assert.Contains(t, string(all), `[host."http://127.0.0.1:5000"]`)

	require.Error(t, writeHostsConfig(t.TempDir(), "127.0.0.1:5000", []string{"docker.io/library"}))
}

func TestMissingPrerequisitesMessage(t *testing.T) {
	err := &MissingPrerequisitesError{Packages: []string{"runc", "containernetworking-plugins"}}
	assert.Contains(t, err.Error(), "runc, containernetworking-plugins")
	assert.Contains(t, err.Error(), "apt-get install runc containernetworking-plugins")
	assert.Contains(t, err.Error(), ".ci/run")

	// Missing node binaries are reported before host tools, with the make target.
	dir := t.TempDir()
	for _, b := range requiredBinaries {
		require.NoError(t, os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), 0o755))
	}
	var missing *MissingBinariesError
	require.ErrorAs(t, checkNodePrerequisites(dir), &missing)
	assert.Equal(t, nodeBinaries, missing.Missing)
	assert.Contains(t, missing.Error(), "make k8s-bins")
}

func TestIptablesRulesIgnoresUnusedBuiltinChains(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\ncat <<'EOF'\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT DROP [1:2]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\nEOF\n"
	require.NoError(t, os.WriteFile(filepath.Join(bin, "fake-save"), []byte(script), 0o755))
	rules, err := iptablesRules(t.Context(), filepath.Join(bin, "fake-save"))
	require.NoError(t, err)
	assert.Equal(t, []string{"nat -A PREROUTING -j KUBE-SERVICES", "nat :KUBE-SERVICES -", "nat :OUTPUT DROP"}, rules)
}
