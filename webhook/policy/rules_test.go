package policy_test

import (
	"bufio"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/policy/agentsim"
)

// agentRequests reads testdata/agent-requests.txt: the request messages of
// the Kata agent's AgentService (see the file for its source).
func agentRequests(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("testdata/agent-requests.txt")
	require.NoError(t, err)
	defer f.Close()
	var names []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line, _, _ := strings.Cut(s.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			names = append(names, line)
		}
	}
	require.NoError(t, s.Err())
	return names
}

// requestRules are the names of the rules in rules.rego that the agent
// queries: the rules whose names start with an upper-case letter.
func requestRules(t *testing.T) []string {
	t.Helper()
	mod, err := ast.ParseModuleWithOpts("rules.rego", policy.Rules, ast.ParserOptions{RegoVersion: ast.RegoV1})
	require.NoError(t, err)
	var names []string
	for _, r := range mod.Rules {
		n := r.Head.Name.String()
		if n == "" {
			n = r.Head.Ref().String()
		}
		if unicode.IsUpper(rune(n[0])) && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// TestRuleNamesMatchAgentProto checks that every request rule is named after
// a message the agent really evaluates (a misspelt rule is never queried:
// the agent denies the request, and a real sandbox fails to start), and that
// every request the agent knows has an explicit decision.
func TestRuleNamesMatchAgentProto(t *testing.T) {
	want := agentRequests(t)
	require.Len(t, want, 37)
	slices.Sort(want)
	got := requestRules(t)
	for _, n := range got {
		assert.Contains(t, want, n, "rule %s is not a request message of agent.proto: the agent never queries it", n)
	}
	for _, n := range want {
		assert.Contains(t, got, n, "request %s of agent.proto has no rule (no explicit decision)", n)
	}
}

// copyJSON deep-copies a JSON-compatible value.
func copyJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// requireDeniedBy asserts that regoText denies req at endpoint, after setup
// ran on a fresh agent, and that the named checks are why: with them
// switched off (agentsim.WithoutChecks) the same sequence allows req, and
// each of them is needed (switching off all the others still denies). A
// malformed request or a broken rule therefore fails the assertion.
func requireDeniedBy(t *testing.T, regoText string, setup func(*testing.T, *agentsim.Agent), endpoint string, req any, checks ...string) {
	t.Helper()
	require.NotEmpty(t, checks, "name the check that denies the request")
	decide := func(text string) bool {
		t.Helper()
		a, err := agentsim.New(text)
		require.NoError(t, err)
		if setup != nil {
			setup(t, a)
		}
		d, err := a.Allow(t.Context(), endpoint, copyJSON(t, req))
		if err != nil {
			require.ErrorIs(t, err, agentsim.ErrEvaluation)
			return false
		}
		return d.Allowed
	}
	require.False(t, decide(regoText), "%s allowed", endpoint)
	without, err := agentsim.WithoutChecks(regoText, checks...)
	require.NoError(t, err)
	require.True(t, decide(without), "%s still denied without %v: another check denies it", endpoint, checks)
	if len(checks) > 1 {
		for i, c := range checks {
			others, err := agentsim.WithoutChecks(regoText, slices.Delete(slices.Clone(checks), i, i+1)...)
			require.NoError(t, err)
			require.False(t, decide(others), "%s allowed without %v: %s is not needed", endpoint, checks, c)
		}
	}
}

// TestRequestDecisions pins the decision for every request the agent knows
// that is not checked against the pod (those have their own tests): the
// requests the shim sends to run any pod are allowed, the others are denied
// by their rule's default, as Kata genpolicy's default rules deny them.
func TestRequestDecisions(t *testing.T) {
	src, _ := testRegistry(t)
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: simplePod(), Images: src})
	require.NoError(t, err)
	const cid = "88941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"
	allowed := map[string]map[string]any{
		"DestroySandboxRequest":                 {},
		"GuestDetailsRequest":                   {"mem_block_size": true, "mem_hotplug_probe": false},
		"GetOOMEventRequest":                    {},
		"OnlineCPUMemRequest":                   {"wait": false, "nb_cpus": 2, "cpu_only": false},
		"RemoveStaleVirtiofsShareMountsRequest": {},
		"SignalProcessRequest":                  {"container_id": cid, "exec_id": cid, "signal": 15},
		"StartContainerRequest":                 {"container_id": cid},
		"StatsContainerRequest":                 {"container_id": cid},
		"TtyWinResizeRequest":                   {"container_id": cid, "exec_id": cid, "row": 24, "column": 80},
		"WaitProcessRequest":                    {"container_id": cid, "exec_id": cid},
	}
	denied := map[string]map[string]any{
		"AddSwapRequest":               {"PCIPath": []any{1}},
		"CloseStdinRequest":            {"container_id": cid, "exec_id": cid},
		"GetIPTablesRequest":           {"is_ipv6": false},
		"GetMetricsRequest":            {},
		"ListInterfacesRequest":        {},
		"ListRoutesRequest":            {},
		"MemHotplugByProbeRequest":     {"memHotplugProbeAddr": []any{4294967296}},
		"PauseContainerRequest":        {"container_id": cid},
		"ReseedRandomDevRequest":       {"data": "AAAA"},
		"ResizeVolumeRequest":          {"volume_guest_path": "/x", "size": 1},
		"ResumeContainerRequest":       {"container_id": cid},
		"SetGuestDateTimeRequest":      {"Sec": 0, "Usec": 0},
		"SetIPTablesRequest":           {"is_ipv6": false, "data": ""},
		"SetPolicyRequest":             {"policy": "package agent_policy\ndefault CreateContainerRequest := true\n"},
		"UpdateContainerRequest":       {"container_id": cid, "resources": map[string]any{"CPU": map[string]any{"Shares": 2}}},
		"UpdateEphemeralMountsRequest": {"storages": []any{}},
		"VolumeStatsRequest":           {"volume_guest_path": "/x"},
		"WriteStreamRequest":           {"container_id": cid, "exec_id": cid, "data": "AAAA"},
	}
	checked := []string{
		"CreateSandboxRequest", "CreateContainerRequest", "RemoveContainerRequest", "ExecProcessRequest",
		"CopyFileRequest", "ReadStreamRequest", "UpdateInterfaceRequest", "UpdateRoutesRequest", "AddARPNeighborsRequest",
	}
	var all []string
	for n := range allowed {
		all = append(all, n)
	}
	for n := range denied {
		all = append(all, n)
	}
	all = append(all, checked...)
	slices.Sort(all)
	want := agentRequests(t)
	slices.Sort(want)
	require.Equal(t, want, all, "every request of agent.proto has a decision in this test")

	for name, input := range allowed {
		t.Run("allowed/"+name, func(t *testing.T) {
			a, err := agentsim.New(res.Rego)
			require.NoError(t, err)
			d, err := a.Allow(t.Context(), name, input)
			require.NoError(t, err)
			assert.True(t, d.Allowed)
		})
	}
	for name, input := range denied {
		t.Run("denied/"+name, func(t *testing.T) {
			requireDeniedBy(t, res.Rego, nil, name, input, name)
		})
	}
}

// webPolicy generates the policy of emojivoto's web Deployment and returns
// it with the web container's image reference.
func webPolicy(t *testing.T) (*policy.Result, string) {
	t.Helper()
	src, _ := testRegistry(t)
	for _, w := range emojivotoWorkloads(t) {
		if w.Name != "web" {
			continue
		}
		res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &w, Images: src})
		require.NoError(t, err)
		img, err := src.Resolve(t.Context(), "docker.l5d.io/buoyantio/emojivoto-web:v11", nil)
		require.NoError(t, err)
		return res, img.Reference()
	}
	t.Fatal("no web workload")
	return nil, ""
}

// withSandbox creates the web pod's pause container.
func withSandbox(t *testing.T, a *agentsim.Agent) {
	t.Helper()
	d, err := a.Allow(t.Context(), "CreateContainerRequest", sandboxRequest(t))
	require.NoError(t, err)
	require.True(t, d.Allowed, "pause container denied")
}

// TestKataAnnotations checks the io.katacontainers.config.* annotations of
// a CreateContainerRequest: only the policy annotations containerd passes
// through from the pod (pod_annotations of Kata's runtime configuration)
// and the ones the pod template itself carries are allowed.
func TestKataAnnotations(t *testing.T) {
	res, good := webPolicy(t)
	withAnno := func(k, v string) map[string]any {
		r := webRequest(t, good)
		oci(r)["Annotations"].(map[string]any)[k] = v
		return r
	}
	for _, k := range []string{policy.AnnotationInitData, policy.AnnotationLegacyPolicy} {
		t.Run("allowed/"+k, func(t *testing.T) {
			a, err := agentsim.New(res.Rego)
			require.NoError(t, err)
			withSandbox(t, a)
			d, err := a.Allow(t.Context(), "CreateContainerRequest", withAnno(k, "H4sIAAAAAAAA"))
			require.NoError(t, err)
			assert.True(t, d.Allowed)
		})
	}
	for _, k := range []string{
		"io.katacontainers.config.agent.debug_console",
		"io.katacontainers.config.hypervisor.kernel_params",
		"io.katacontainers.config.runtime.disable_guest_seccomp",
		"io.katacontainers.evil",
	} {
		t.Run("denied/"+k, func(t *testing.T) {
			requireDeniedBy(t, res.Rego, withSandbox, "CreateContainerRequest", withAnno(k, "true"), "annotations_ok")
		})
	}
	t.Run("allowed/the template's own key", func(t *testing.T) {
		src, _ := testRegistry(t)
		var web policy.Workload
		for _, w := range emojivotoWorkloads(t) {
			if w.Name == "web" {
				web = w
			}
		}
		const key = "io.katacontainers.config.hypervisor.default_memory"
		web.Template.Annotations = map[string]string{key: "4096"}
		res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &web, Images: src})
		require.NoError(t, err)
		assert.Equal(t, []string{key}, res.Data.Pod.KataAnnotations)
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		withSandbox(t, a)
		d, err := a.Allow(t.Context(), "CreateContainerRequest", withAnno(key, "4096"))
		require.NoError(t, err)
		assert.True(t, d.Allowed)
	})
}
