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
