package agentsim_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/policy/agentsim"
)

const policy = `package agent_policy

default A := false

A if input.ok

default B := {"allowed": false}

B := {"allowed": true, "ops": [{"op": "add", "path": "/pstate/seen", "value": input.id}]} if {
	not data.pstate.seen
}

C := {"allowed": true, "ops": [{"op": "remove", "path": "/pstate/seen"}]} if data.pstate.seen

D := "not a decision"
`

func TestAgent(t *testing.T) {
	a, err := agentsim.New(policy)
	require.NoError(t, err)
	ctx := t.Context()

	d, err := a.Allow(ctx, "A", map[string]any{"ok": true})
	require.NoError(t, err)
	assert.True(t, d.Allowed)
	d, err = a.Allow(ctx, "A", map[string]any{})
	require.NoError(t, err)
	assert.False(t, d.Allowed)

	d, err = a.Allow(ctx, "B", map[string]any{"id": "x"})
	require.NoError(t, err)
	assert.True(t, d.Allowed)
	assert.Equal(t, "x", a.State()["pstate"].(map[string]any)["seen"])
	d, err = a.Allow(ctx, "B", map[string]any{"id": "y"})
	require.NoError(t, err)
	assert.False(t, d.Allowed, "state persists between requests")

	d, err = a.Allow(ctx, "C", map[string]any{})
	require.NoError(t, err)
	assert.True(t, d.Allowed)
	assert.NotContains(t, a.State()["pstate"], "seen")

	_, err = a.Allow(ctx, "Undefined", map[string]any{})
	require.ErrorIs(t, err, agentsim.ErrEvaluation, "undefined rules fail closed")
	_, err = a.Allow(ctx, "D", map[string]any{})
	require.ErrorIs(t, err, agentsim.ErrEvaluation)

	_, err = agentsim.New("package x\nfoo[")
	require.Error(t, err)
}

func TestWithoutChecks(t *testing.T) {
	const p = `package agent_policy

default R := false

R if {
	a(input.x)
	b(input.x, input.y)
}

default S := false

a(x) if x > 1

b(x, y) if x < y

f(x) := x + 1
`
	ctx := t.Context()
	decide := func(t *testing.T, policy string, input map[string]any) bool {
		t.Helper()
		a, err := agentsim.New(policy)
		require.NoError(t, err)
		d, err := a.Allow(ctx, "R", input)
		require.NoError(t, err)
		return d.Allowed
	}
	in := map[string]any{"x": 0, "y": 5}
	assert.False(t, decide(t, p, in))
	without, err := agentsim.WithoutChecks(p, "a")
	require.NoError(t, err)
	assert.True(t, decide(t, without, in), "only a fails")
	without, err = agentsim.WithoutChecks(p, "b")
	require.NoError(t, err)
	assert.False(t, decide(t, without, in), "a still fails")
	without, err = agentsim.WithoutChecks(p, "R")
	require.NoError(t, err)
	assert.True(t, decide(t, without, in))

	_, err = agentsim.WithoutChecks(p, "missing")
	require.ErrorContains(t, err, `no check "missing"`)
	_, err = agentsim.WithoutChecks(p, "f")
	require.ErrorContains(t, err, "not a boolean check")
}
