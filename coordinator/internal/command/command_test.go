package command

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/attest/sim"
	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/server"
)

func TestFlagValidation(t *testing.T) {
	testCases := map[string]struct {
		args    []string
		env     map[string]string
		wantErr []string
	}{
		"no platform": {
			args:    []string{"--namespace", "x"},
			wantErr: []string{"--platform must be"},
		},
		"unknown platform and no namespace": {
			args:    []string{"--platform", "sgx"},
			wantErr: []string{"--platform must be", "--namespace"},
		},
		"sim flags on real platform": {
			args:    []string{"--platform", "snp", "--namespace", "x", "--sim-measurement", "00"},
			wantErr: []string{"--sim-* flags need a simulated --platform"},
		},
		"bad sim host data": {
			args:    []string{"--platform", "snp-simulated", "--in-memory-store", "--sim-host-data", "abcd"},
			wantErr: []string{"--sim-host-data must be 32"},
		},
		"exclusive sim flags": {
			args:    []string{"--platform", "snp-simulated", "--in-memory-store", "--sim-host-data", strings.Repeat("00", 32), "--sim-initdata-file", "x"},
			wantErr: []string{"exclusive"},
		},
		"bad log level": {
			args:    []string{"--platform", "tdx", "--namespace", "x", "--log-level", "loud"},
			wantErr: []string{"--log-level"},
		},
		"platform from environment": {
			env:     map[string]string{"CONTRAST_COORDINATOR_PLATFORM": "sgx", "POD_NAMESPACE": "x"},
			wantErr: []string{`got "sgx"`},
		},
		"in-memory store on real hardware": {
			args:    []string{"--platform", "snp", "--in-memory-store"},
			wantErr: []string{"--in-memory-store is only allowed with a simulated --platform", `got --platform "snp"`},
		},
		"in-memory store from environment": {
			args:    []string{"--platform", "tdx"},
			env:     map[string]string{"CONTRAST_COORDINATOR_IN_MEMORY_STORE": "true"},
			wantErr: []string{"--in-memory-store is only allowed with a simulated --platform"},
		},
		"peer without port": {
			args:    []string{"--platform", "snp", "--namespace", "x", "--peers", "coordinator-peers.contrast-system.svc"},
			wantErr: []string{`--peers: "coordinator-peers.contrast-system.svc" is not host:port`},
		},
		"peers with the in-memory store": {
			args:    []string{"--platform", "snp-simulated", "--in-memory-store", "--peers", "a:7777,b:7777"},
			wantErr: []string{"--peers needs the shared ConfigMap store"},
		},
		"peers from environment": {
			args:    []string{"--platform", "snp", "--namespace", "x"},
			env:     map[string]string{"CONTRAST_COORDINATOR_PEERS": "ok:7777,:7777"},
			wantErr: []string{`--peers: ":7777" is not host:port`},
		},
		"negative collateral age": {
			args:    []string{"--platform", "tdx", "--namespace", "x", "--collateral-max-age", "-1h"},
			wantErr: []string{"--collateral-max-age"},
		},
		"unknown flag": {
			args:    []string{"--nope"},
			wantErr: []string{"unknown flag"},
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cmd := New(slog.New(slog.DiscardHandler), nil)
			cmd.SetArgs(tc.args)
			cmd.SetOut(io.Discard)
			cmd.SetErr(io.Discard)
			err := cmd.ExecuteContext(t.Context())
			require.Error(t, err)
			for _, w := range tc.wantErr {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestInMemoryStoreNeedsSimulatedPlatform(t *testing.T) {
	testCases := map[string]struct {
		platform string
		inMemory bool
		wantErr  bool
	}{
		"snp in memory":            {platform: "snp", inMemory: true, wantErr: true},
		"tdx in memory":            {platform: "tdx", inMemory: true, wantErr: true},
		"snp-simulated in memory":  {platform: "snp-simulated", inMemory: true},
		"tdx-simulated in memory":  {platform: "tdx-simulated", inMemory: true},
		"snp configmaps":           {platform: "snp"},
		"tdx-simulated configmaps": {platform: "tdx-simulated"},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			o := &Options{Platform: tc.platform, InMemoryStore: tc.inMemory, Namespace: "x", LogLevel: "info"}
			err := o.Validate()
			if !tc.wantErr {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "--in-memory-store")
			assert.Contains(t, err.Error(), "--platform")
			assert.Contains(t, err.Error(), tc.platform)
		})
	}
}

// TestRunsSimulated starts the binary's command with a simulated platform
// and an in-memory store, and stops it.
func TestRunsSimulated(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	cmd := New(slog.New(slog.DiscardHandler), &slog.LevelVar{})
	cmd.SetArgs([]string{
		"--platform", "snp-simulated", "--in-memory-store", "--log-level", "debug",
		"--user-api-addr", "127.0.0.1:0", "--mesh-api-addr", "127.0.0.1:0", "--probe-addr", "127.0.0.1:0",
		"--sim-authority", t.TempDir() + "/amd.pem", "--sim-host-data", strings.Repeat("ab", 32),
	})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	time.Sleep(500 * time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}

// TestNegativeMatrixDefaultFlags runs the Coordinator's negative matrix
// against the configuration the binary builds from its default flags (only
// the simulated platform, its authority and the listen addresses set):
// every tampered pod is denied by its check, through manifest.Parse and
// the validators built with the command's validator options.
func TestNegativeMatrixDefaultFlags(t *testing.T) {
	p, err := coordinatortest.SharedPlatform()
	require.NoError(t, err)
	authority := filepath.Join(t.TempDir(), "amd.pem")
	require.NoError(t, p.Authority.Save(authority))
	h := coordinatortest.NewHarness(t, nil)
	o := &Options{}
	cmd := newCommand(o, slog.New(slog.DiscardHandler), nil)
	require.NoError(t, cmd.ParseFlags([]string{
		"--platform", "snp-simulated", "--in-memory-store",
		"--user-api-addr", "127.0.0.1:0", "--mesh-api-addr", "127.0.0.1:0", "--probe-addr", "127.0.0.1:0",
		"--sim-authority", authority,
		"--sim-host-data", hex.EncodeToString(h.CoordinatorPolicy.Hash[:]),
		"--sim-measurement", hex.EncodeToString(p.Base.Measurement[:]),
	}))
	require.NoError(t, o.Validate())
	cfg, err := o.serverConfig(slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Run("validators", func(t *testing.T) {
		coordinatortest.RunEvidenceMatrix(t, h, cfg.ValidatorOptions)
	})
	t.Run("coordinator", func(t *testing.T) {
		h.Configure = func(c *server.Config) {
			built := cfg
			built.ShutdownTimeout = c.ShutdownTimeout
			*c = built
		}
		coordinatortest.RunNegativeMatrix(t, h)
	})
}

// TestSimInitDataFile: the simulated issuer derives HOST_DATA from the pod's
// initdata annotation exactly as Kata does (SHA-256 of the decoded TOML),
// and refuses a malformed annotation instead of hashing it.
func TestSimInitDataFile(t *testing.T) {
	doc := "algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\n'''\n"
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, _ = zw.Write([]byte(doc))
	require.NoError(t, zw.Close())
	dir := t.TempDir()
	good := filepath.Join(dir, "initdata")
	require.NoError(t, os.WriteFile(good, []byte(base64.StdEncoding.EncodeToString(z.Bytes())), 0o600))
	raw := filepath.Join(dir, "raw.toml")
	require.NoError(t, os.WriteFile(raw, []byte(doc), 0o600))

	o := &Options{Platform: "snp-simulated", SimInitdata: good}
	hd, err := o.simHostData()
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256([]byte(doc)), hd)

	o.SimInitdata = raw
	_, err = o.simHostData()
	require.ErrorIs(t, err, sim.ErrInitData)
	assert.Contains(t, err.Error(), "--sim-initdata-file")
}
