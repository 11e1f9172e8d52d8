package main

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/initializer/internal/rules"
	"github.com/contrast-cc/contrast/initializer/meshconfig"
)

func TestCommandRejects(t *testing.T) {
	testCases := map[string]struct {
		env     map[string]string
		args    []string
		wantErr string
		meshErr bool
	}{
		"malformed ingress": {
			env:     map[string]string{meshconfig.EnvIngress: "web#80"},
			wantErr: `annotation CONTRAST_SERVICEMESH_INGRESS: entry "web#80"`,
			meshErr: true,
		},
		"egress not on loopback": {
			env:     map[string]string{meshconfig.EnvEgress: "db#10.0.0.1:5432#db:5432"},
			wantErr: `annotation CONTRAST_SERVICEMESH_EGRESS: entry "db#10.0.0.1:5432#db:5432"`,
			meshErr: true,
		},
		"admin port is the ingress port": {
			env:     map[string]string{meshconfig.EnvAdminPort: "15006"},
			wantErr: "admin port 15006 is the proxy's ingress listener port",
		},
		"ingress entry on the ingress port": {
			env:     map[string]string{meshconfig.EnvIngress: "x#9000#false"},
			args:    []string{"--ingress-port=9000"},
			wantErr: `ingress entry "x#9000#false" uses port 9000`,
		},
		"log level": {args: []string{"--log-level=loud"}, wantErr: `--log-level "loud"`},
		"arguments": {args: []string{"extra"}, wantErr: "unknown command"},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			installed := false
			cmd := newCommand(&options{
				getenv:  func(k string) string { return tc.env[k] },
				install: func(*rules.Set) error { installed = true; return nil },
			})
			cmd.SetArgs(tc.args)
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetOut(&bytes.Buffer{})
			err := cmd.ExecuteContext(context.Background())
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.Equal(t, tc.meshErr, errors.Is(err, meshconfig.ErrMalformed))
			assert.False(t, installed, "no rules for a rejected configuration")
		})
	}
}

// TestCommandRun starts the command with a configuration, checks that it
// installs the computed rules first and stops cleanly on cancel while it
// still waits for certificates.
func TestCommandRun(t *testing.T) {
	// No admin port: the test runs in the host's network namespace and
	// must not bind fixed ports.
	env := map[string]string{meshconfig.EnvIngress: "metrics#9090#true"}
	got := make(chan *rules.Set, 1)
	cmd := newCommand(&options{
		getenv:  func(k string) string { return env[k] },
		install: func(s *rules.Set) error { got <- s; return nil },
	})
	cmd.SetArgs([]string{"--tls-dir", t.TempDir(), "--ingress-port=25006"})
	var logs bytes.Buffer
	cmd.SetErr(&logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var s *rules.Set
	select {
	case s = <-got:
	case err := <-done:
		t.Fatalf("command ended before installing rules: %v\n%s", err, logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("no rules installed")
	}
	assert.Equal(t, []uint16{9090}, s.SkippedPorts())
	assert.Equal(t, rules.Rule{Kind: rules.Redirect, Port: 25006, Comment: "inbound TCP to the mesh proxy"}, s.Rules[len(s.Rules)-1])
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("command did not stop")
	}
}
