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
