package cmd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/contrast-cc/contrast/coordinator/coordinatortest"
	"github.com/contrast-cc/contrast/coordinator/manifest"
	"github.com/contrast-cc/contrast/coordinator/server"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/shareddata"
)

// run executes contrast with args and returns stdout, stderr and the exit
// code.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := NewRootCommand()
	root.SetArgs(args)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	code := Execute(context.Background(), root, &stderr)
	return stdout.String(), stderr.String(), code
}

// env is a registry with the stand-in images and the settings flags that
// reach it, as the chart would configure the webhook.
type env struct {
	settings []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	imgs := injecttest.Serve(t)
	imagestest.Push(t, imgs.Registry.Host, "contrast/coordinator:test", imagestest.Build(t, imagestest.Spec{
		Config: v1.Config{Entrypoint: []string{"/coordinator"}, Env: []string{"PATH=/"}},
		Files:  map[string]string{"coordinator": "coordinator"},
	}))
	mirror := "http://" + imgs.Registry.Host
	return &env{settings: []string{
		"--initializer-image=" + imgs.InitializerImage,
		"--proxy-image=" + imgs.ProxyImage,
		"--registry-mirror=docker.l5d.io=" + mirror, "--registry-mirror=registry.example=" + mirror,
		"--registry-skip-origin=docker.l5d.io", "--registry-skip-origin=registry.example",
	}}
}

// simFlags are --sim-authority and --sim-measurement of the simulated
// platform of coordinatortest, which the in-process Coordinators use.
func simFlags(t *testing.T) []string {
	t.Helper()
	p, err := coordinatortest.SharedPlatform()
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "sim-snp.pem")
	require.NoError(t, p.Authority.Save(path))
	return []string{"--reference-values=snp-simulated", "--sim-authority=" + path, "--sim-measurement=" + hex.EncodeToString(p.Base.Measurement[:])}
}

func (e *env) generate(t *testing.T, ws string, args ...string) (string, string, int) {
	t.Helper()
	return run(t, append(append([]string{"generate", "-w", ws}, e.settings...), args...)...)
}

func readManifestFile(t *testing.T, ws string) *manifest.Manifest {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(ws, fileManifest))
	require.NoError(t, err)
	m, err := manifest.Parse(raw)
	require.NoError(t, err)
	return m
}

// emojivotoDir is the emojivoto tutorial's manifests in ../shared.
func emojivotoDir(t testing.TB) string {
	t.Helper()
	return shareddata.Dir(t, shareddata.Emojivoto)
}

// TestGenerateEmojivoto generates over ../shared/workloads/emojivoto with
// the stand-in images.
func TestGenerateEmojivoto(t *testing.T) {
	e := newEnv(t)
	sim := simFlags(t)
	for name, dir := range map[string]string{
		"shared": emojivotoDir(t),
	} {
		t.Run(name, func(t *testing.T) {
			ws := t.TempDir()
			stdout, stderr, code := e.generate(t, ws, append(sim, "-o", "json", "testdata/coordinator.yaml", dir)...)
			require.Equal(t, ExitOK, code, stderr)
			var res generateResult
			require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)

			m := readManifestFile(t, ws)
			byName := map[string]manifest.PolicyEntry{}
			for _, p := range res.Policies {
				byName[p.Kind+"/"+p.Name] = m.Policies[manifest.HexString(p.PolicyHash)]
				doc, err := os.ReadFile(filepath.Join(ws, dirPolicies, p.PolicyHash))
				require.NoError(t, err, "every policy document is written")
				assert.Equal(t, p.PolicyHash, sha256Hex(doc), "the file name is the hash of the document")
			}
			require.Contains(t, byName, "Deployment/web")
			assert.Equal(t, []string{"web", "*"}, byName["Deployment/web"].SANs)
			assert.Equal(t, "emojivoto/web", byName["Deployment/web"].WorkloadSecretID)
			for _, w := range []string{"Deployment/emoji", "Deployment/voting", "Deployment/vote-bot"} {
				assert.Contains(t, byName, w)
			}
			assert.Equal(t, manifest.RoleCoordinator, byName["StatefulSet/coordinator"].Role)
			assert.Len(t, m.Policies, 5)
			assert.Len(t, m.WorkloadOwnerPubKeys, 1)
			assert.Len(t, m.SeedshareOwnerPubKeys, 1)
			assert.Contains(t, res.Warnings[0], "simulated platform")
			for _, k := range []string{fileWorkloadOwnerKey, fileSeedshareKey} {
				info, err := os.Stat(filepath.Join(ws, k))
				require.NoError(t, err)
				assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), k)
			}

			// deterministic: a second run gives the same manifest and keeps the keys
			before, err := os.ReadFile(filepath.Join(ws, fileManifest))
			require.NoError(t, err)
			_, stderr, code = e.generate(t, ws, "testdata/coordinator.yaml", dir)
			require.Equal(t, ExitOK, code, stderr)
			after, err := os.ReadFile(filepath.Join(ws, fileManifest))
			require.NoError(t, err)
			assert.JSONEq(t, string(before), string(after))
		})
	}
}

func TestGenerateLeavesYAMLUnmodifiedAndInjects(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	in := filepath.Join(t.TempDir(), "app")
	require.NoError(t, os.MkdirAll(in, 0o755))
	src, err := os.ReadFile(filepath.Join(emojivotoDir(t), "web.yml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(in, "web.yml"), src, 0o644))

	_, stderr, code := e.generate(t, ws, append(simFlags(t), "--inject", "testdata/coordinator.yaml", in)...)
	require.Equal(t, ExitOK, code, stderr)
	unchanged, err := os.ReadFile(filepath.Join(in, "web.yml"))
	require.NoError(t, err)
	assert.Equal(t, src, unchanged, "the input YAML is not modified")

	injected, err := os.ReadFile(filepath.Join(ws, "injected", "app", "web.yml"))
	require.NoError(t, err)
	assert.Contains(t, string(injected), "runtimeClassName: contrast-cc")
	assert.Contains(t, string(injected), "io.katacontainers.config.hypervisor.cc_init_data")
	assert.Contains(t, string(injected), "kind: ServiceAccount", "other objects are kept")

	// without policies/, set takes the policies from the injected YAML
	m := readManifestFile(t, ws)
	require.NoError(t, os.RemoveAll(filepath.Join(ws, dirPolicies)))
	_, err = collectPolicies(m, filepath.Join(ws, dirPolicies), []string{filepath.Join(ws, "injected", "app")})
	require.ErrorContains(t, err, "no policy document for", "the Coordinator's policy is not in the injected app")
	docs, err := collectPolicies(m, filepath.Join(ws, dirPolicies), []string{filepath.Join(ws, "injected")})
	require.NoError(t, err)
	assert.Len(t, docs, 2)
}

// TestGenerateCoordinatorExpectations: the Initializer's expectations the
// settings leave out are derived from the Coordinator computed in the same
// run and the manifest's reference values; given ones must accept that
// Coordinator; and either way the workloads get the same policy as the
// webhook configured with the same expectations.
func TestGenerateCoordinatorExpectations(t *testing.T) {
	e := newEnv(t)
	sim := simFlags(t)
	ws := t.TempDir()
	stdout, stderr, code := e.generate(t, ws, append(sim, "-o", "json", "--inject", "testdata/coordinator.yaml", filepath.Join(emojivotoDir(t), "web.yml"))...)
	require.Equal(t, ExitOK, code, stderr)
	var res generateResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)
	var coordHash, webHash string
	for _, p := range res.Policies {
		switch p.Name {
		case "coordinator":
			coordHash = p.PolicyHash
		case "web":
			webHash = p.PolicyHash
		}
	}
	require.NotEmpty(t, coordHash)
	require.NotEmpty(t, webHash)
	injected, err := os.ReadFile(filepath.Join(ws, "injected", "web.yml"))
	require.NoError(t, err)
	assert.Contains(t, string(injected), "value: "+coordHash, "the web pod's Initializer expects the Coordinator computed in the same run")
	assert.Contains(t, string(injected), "value: snp-simulated", "the platform named by the reference values")
	values, err := os.ReadFile(filepath.Join(ws, fileChartValues))
	require.NoError(t, err)
	var chartValues struct {
		Coordinator struct {
			PolicyHash      string                   `json:"policyHash"`
			ReferenceValues manifest.ReferenceValues `json:"referenceValues"`
		} `json:"coordinator"`
	}
	require.NoError(t, yaml.UnmarshalStrict(values, &chartValues))
	assert.Equal(t, coordHash, chartValues.Coordinator.PolicyHash, "the chart values name the Coordinator computed here")
	assert.Equal(t, readManifestFile(t, ws).ReferenceValues, chartValues.Coordinator.ReferenceValues)

	// the same expectations given explicitly: the same policies
	rv, err := json.Marshal(readManifestFile(t, ws).ReferenceValues)
	require.NoError(t, err)
	explicit := []string{"--platform=snp-simulated", "--coordinator-policy-hash=" + coordHash, "--coordinator-reference-values=" + string(rv)}
	ws2 := t.TempDir()
	stdout, stderr, code = e.generate(t, ws2, append(append(sim, explicit...), "-o", "json", "testdata/coordinator.yaml", filepath.Join(emojivotoDir(t), "web.yml"))...)
	require.Equal(t, ExitOK, code, stderr)
	var res2 generateResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &res2), stdout)
	assert.ElementsMatch(t, res.Policies, res2.Policies)

	// a hash that is not this Coordinator's: refused, naming both
	other := strings.Repeat("ab", 32)
	_, stderr, code = e.generate(t, t.TempDir(), append(append(sim, "--coordinator-policy-hash="+other), "testdata/coordinator.yaml", filepath.Join(emojivotoDir(t), "web.yml"))...)
	require.Equal(t, ExitUsage, code, stderr)
	assert.Contains(t, stderr, "the Coordinator computed here has policy "+coordHash)
	assert.Contains(t, stderr, other)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestGenerateNamespace: documents without a namespace get -n (default
// "default", as kubectl apply), and $(POD_NAMESPACE) in arguments is expanded
// with it, so the policy equals that of the same YAML naming the namespace
// (and the webhook's for the pod admitted there, TestArgExpansion).
func TestGenerateNamespace(t *testing.T) {
	e := newEnv(t)
	sim := simFlags(t)
	const app = `apiVersion: apps/v1
kind: Deployment
metadata: {name: app%s}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - name: app
        image: registry.example/acme/agent:2
        args: ["--publish-service=$(POD_NAMESPACE)/app"]
        env:
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
`
	generate := func(t *testing.T, doc string, args ...string) (string, string) {
		t.Helper()
		in := filepath.Join(t.TempDir(), "app.yaml")
		require.NoError(t, os.WriteFile(in, []byte(doc), 0o644))
		ws := t.TempDir()
		stdout, stderr, code := e.generate(t, ws, append(append(sim, args...), "-o", "json", "testdata/coordinator.yaml", in)...)
		require.Equal(t, ExitOK, code, stderr)
		var res generateResult
		require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)
		for _, p := range res.Policies {
			if p.Name == "app" {
				doc, err := os.ReadFile(filepath.Join(ws, dirPolicies, p.PolicyHash))
				require.NoError(t, err)
				return p.PolicyHash, string(doc)
			}
		}
		t.Fatalf("no policy for app: %s", stdout)
		return "", ""
	}
	withFlag, doc := generate(t, fmt.Sprintf(app, ""), "-n", "demo")
	assert.Contains(t, doc, `"--publish-service=demo/app"`)
	inDoc, _ := generate(t, fmt.Sprintf(app, ", namespace: demo"))
	assert.Equal(t, inDoc, withFlag, "-n demo and namespace: demo give the same policy")
	byDefault, doc := generate(t, fmt.Sprintf(app, ""))
	assert.Contains(t, doc, `"--publish-service=default/app"`, "without -n: the default namespace, as kubectl apply")
	assert.NotEqual(t, withFlag, byDefault)
}

func TestGenerateRejections(t *testing.T) {
	e := newEnv(t)
	sim := simFlags(t)
	testCases := map[string]struct {
		args    []string
		wantErr string
	}{
		"no Coordinator": {
			args:    append(sim, emojivotoDir(t)),
			wantErr: "no Coordinator among the inputs",
		},
		"no reference values": {
			args:    []string{"testdata/coordinator.yaml"},
			wantErr: "--reference-values is required",
		},
		"unknown preset": {
			args:    []string{"--reference-values=sgx", "testdata/coordinator.yaml"},
			wantErr: `--reference-values "sgx": want one of`,
		},
		"simulated without authority": {
			args:    []string{"--reference-values=snp-simulated", "testdata/coordinator.yaml"},
			wantErr: "needs --sim-authority",
		},
		"bad measurement": {
			args:    []string{"--reference-values=snp-simulated", "--sim-authority=" + sim[1][len("--sim-authority="):], "--sim-measurement=abcd", "testdata/coordinator.yaml"},
			wantErr: `--sim-measurement "abcd": want 48 bytes hex`,
		},
		"bad SAN annotation": {
			args:    append(sim, "testdata/coordinator.yaml", "testdata/bad-san.yaml"),
			wantErr: `annotation contrast.cc/sans: SAN "host:8080"`,
		},
		"missing input": {
			args:    []string{"testdata/missing.yaml"},
			wantErr: "no such file",
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			_, stderr, code := e.generate(t, t.TempDir(), tc.args...)
			assert.Equal(t, ExitUsage, code)
			assert.Contains(t, stderr, tc.wantErr)
		})
	}
	t.Run("settings name the flag", func(t *testing.T) {
		_, stderr, code := run(t, "generate", "-w", t.TempDir(), "testdata/coordinator.yaml")
		assert.Equal(t, ExitUsage, code)
		assert.Contains(t, stderr, "--initializer-image is required")
	})
}

func TestGenerateHardwarePresetMarksFillIns(t *testing.T) {
	e := newEnv(t)
	ws := t.TempDir()
	_, stderr, code := e.generate(t, ws, "--reference-values=snp", "testdata/coordinator.yaml")
	require.Equal(t, ExitOK, code, stderr)
	assert.Contains(t, stderr, "Fill in: ReferenceValues.snp[0].TrustedMeasurement")
	raw, err := os.ReadFile(filepath.Join(ws, fileManifest))
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"TrustedMeasurement": "FILL-IN: `)
	// set refuses it before contacting anything, naming the field
	_, stderr, code = run(t, "set", "-w", ws, "-c", "127.0.0.1:1")
	assert.Equal(t, ExitUsage, code)
	assert.Contains(t, stderr, "ReferenceValues.snp[0].TrustedMeasurement")
}

// roundTrip generates a manifest, starts an in-process Coordinator (simulated
// SNP) running the generated Coordinator policy and returns it with the
// workspace.
func roundTrip(t *testing.T) (*coordinatortest.Harness, *coordinatortest.Running, string) {
	t.Helper()
	e := newEnv(t)
	ws := t.TempDir()
	_, stderr, code := e.generate(t, ws, append(simFlags(t), "testdata/coordinator.yaml", emojivotoDir(t))...)
	require.Equal(t, ExitOK, code, stderr)
	m := readManifestFile(t, ws)
	hashes := m.CoordinatorPolicyHashes()
	require.Len(t, hashes, 1)
	doc, err := os.ReadFile(filepath.Join(ws, dirPolicies, hashes[0].String()))
	require.NoError(t, err)

	store := server.NewMemoryStore()
	h := coordinatortest.NewHarness(t, func(c *server.Config) { c.MemoryStore = store })
	h.CoordinatorPolicy = coordinatortest.Policy{Doc: doc}
	b, err := hashes[0].Bytes()
	require.NoError(t, err)
	copy(h.CoordinatorPolicy.Hash[:], b)
	return h, h.Start(t), ws
}

func TestSetVerifyRecover(t *testing.T) {
	h, c, ws := roundTrip(t)
	addr := c.UserAddr()

	stdout, stderr, code := run(t, "set", "-w", ws, "-c", addr, "-o", "json")
	require.Equal(t, ExitOK, code, stderr)
	var set setResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &set))
	assert.EqualValues(t, 1, set.Generation)
	for _, f := range []string{fileRootCA, fileMeshCA, fileLatest} {
		assert.FileExists(t, filepath.Join(ws, f))
	}
	info, err := os.Stat(filepath.Join(ws, fileSeedShares))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	// an update with the owner key (compare-and-swap on the recorded transition)
	stdout, stderr, code = run(t, "set", "-w", ws, "-c", addr, "-o", "json")
	require.Equal(t, ExitOK, code, stderr)
	require.NoError(t, json.Unmarshal([]byte(stdout), &set))
	assert.EqualValues(t, 2, set.Generation)

	stdout, stderr, code = run(t, "verify", "-w", ws, "-c", addr)
	require.Equal(t, ExitOK, code, stderr)
	assert.Contains(t, stdout, "proved with hardware-signed evidence")
	assert.Contains(t, stdout, "generation 2 of 2")
	for _, f := range []string{"mesh-ca.pem", "coordinator-root-ca.pem", "manifests/1.json", "manifests/2.json"} {
		assert.FileExists(t, filepath.Join(ws, dirVerify, f))
	}
	policies, err := os.ReadDir(filepath.Join(ws, dirVerify, "policies"))
	require.NoError(t, err)
	assert.Len(t, policies, 5)

	// the Coordinator restarts without its secrets and is recovered
	c.Stop()
	c2 := h.Start(t)
	stdout, stderr, code = run(t, "recover", "-w", ws, "-c", c2.UserAddr())
	require.Equal(t, ExitOK, code, stderr)
	assert.Contains(t, stdout, "generation 2")
	_, stderr, code = run(t, "verify", "-w", ws, "-c", c2.UserAddr())
	require.Equal(t, ExitOK, code, stderr)
}

func TestSetWithoutOwnerKeyRefused(t *testing.T) {
	_, c, ws := roundTrip(t)
	_, stderr, code := run(t, "set", "-w", ws, "-c", c.UserAddr())
	require.Equal(t, ExitOK, code, stderr)

	require.NoError(t, os.Remove(filepath.Join(ws, fileWorkloadOwnerKey)))
	_, stderr, code = run(t, "set", "-w", ws, "-c", c.UserAddr())
	assert.Equal(t, ExitRefused, code, stderr)
	assert.Contains(t, stderr, "the Coordinator refused (PermissionDenied)")
	assert.Contains(t, stderr, "client key is not a workload-owner key of the current manifest")
}

func TestSetStaleTransitionRefused(t *testing.T) {
	_, c, ws := roundTrip(t)
	_, stderr, code := run(t, "set", "-w", ws, "-c", c.UserAddr())
	require.Equal(t, ExitOK, code, stderr)
	first, err := os.ReadFile(filepath.Join(ws, fileLatest))
	require.NoError(t, err)
	_, stderr, code = run(t, "set", "-w", ws, "-c", c.UserAddr())
	require.Equal(t, ExitOK, code, stderr)

	require.NoError(t, os.WriteFile(filepath.Join(ws, fileLatest), first, 0o644))
	_, stderr, code = run(t, "set", "-w", ws, "-c", c.UserAddr())
	assert.Equal(t, ExitRefused, code, stderr)
	assert.Contains(t, stderr, "the Coordinator refused (Aborted)")
}

func TestVerifyDifferentManifestFails(t *testing.T) {
	_, c, ws := roundTrip(t)
	_, stderr, code := run(t, "set", "-w", ws, "-c", c.UserAddr())
	require.Equal(t, ExitOK, code, stderr)

	// a voter's manifest with one more SAN than the one that is set
	m := readManifestFile(t, ws)
	for h, e := range m.Policies {
		if e.Role == "" {
			e.SANs = append(e.SANs, "extra.example")
			m.Policies[h] = e
			break
		}
	}
	voter := t.TempDir()
	raw, err := m.Marshal()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(voter, fileManifest), raw, 0o644))
	stdout, stderr, code := run(t, "verify", "-w", voter, "-c", c.UserAddr(), "-o", "json")
	assert.Equal(t, ExitMismatch, code, stderr)
	assert.Contains(t, stderr, "differs from")
	assert.Contains(t, stderr, "[Policies]")
	var res verifyResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assert.False(t, res.Verified)
}

func TestAttestationFailures(t *testing.T) {
	_, c, ws := roundTrip(t)
	m := readManifestFile(t, ws)

	t.Run("other Coordinator policy", func(t *testing.T) {
		other := t.TempDir()
		mm := *m
		mm.Policies = map[manifest.HexString]manifest.PolicyEntry{}
		for h, e := range m.Policies {
			if e.Role == manifest.RoleCoordinator {
				h = manifest.HexString(strings.Repeat("ab", 32))
			}
			mm.Policies[h] = e
		}
		raw, err := mm.Marshal()
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(other, fileManifest), raw, 0o644))
		_, stderr, code := run(t, "verify", "-w", other, "-c", c.UserAddr())
		assert.Equal(t, ExitAttestation, code, stderr)
		assert.Contains(t, stderr, `failed at check "policy-digest"`)
		assert.Contains(t, stderr, "the Coordinator runs policy")
	})
	t.Run("other measurement", func(t *testing.T) {
		other := t.TempDir()
		mm := *m
		mm.ReferenceValues.SNP = append(mm.ReferenceValues.SNP[:0:0], mm.ReferenceValues.SNP...)
		mm.ReferenceValues.SNP[0].TrustedMeasurement = bytes.Repeat([]byte{1}, 48)
		raw, err := mm.Marshal()
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(other, fileManifest), raw, 0o644))
		_, stderr, code := run(t, "verify", "-w", other, "-c", c.UserAddr())
		assert.Equal(t, ExitAttestation, code, stderr)
		assert.Contains(t, stderr, `failed at check "measurement"`)
	})
}

func TestRecoverRolledBackRefused(t *testing.T) {
	h, c, ws := roundTrip(t)
	for range 2 {
		_, stderr, code := run(t, "set", "-w", ws, "-c", c.UserAddr())
		require.Equal(t, ExitOK, code, stderr)
	}
	c.Stop()
	c2 := h.Start(t)
	// the owner expects another transition than the stored history ends at
	require.NoError(t, os.WriteFile(filepath.Join(ws, fileLatest), []byte(strings.Repeat("cd", 32)+"\n"), 0o644))
	_, stderr, code := run(t, "recover", "-w", ws, "-c", c2.UserAddr())
	assert.Equal(t, ExitRefused, code, stderr)
	assert.Contains(t, stderr, "the Coordinator refused (FailedPrecondition)")
	assert.Contains(t, stderr, "nothing was restored")
}

func TestUsage(t *testing.T) {
	testCases := map[string]struct {
		args    []string
		wantErr string
	}{
		"set without coordinator":   {args: []string{"set"}, wantErr: "--coordinator (-c) is required"},
		"verify bad address":        {args: []string{"verify", "-c", "coordinator"}, wantErr: `--coordinator "coordinator": want host:port`},
		"bad output":                {args: []string{"verify", "-c", "a:1", "-o", "yaml"}, wantErr: `-o "yaml"`},
		"unknown flag":              {args: []string{"set", "--frobnicate"}, wantErr: "unknown flag"},
		"generate without paths":    {args: []string{"generate"}, wantErr: "requires at least 1 arg"},
		"recover without manifest":  {args: []string{"recover", "-c", "a:1", "-w", "/nonexistent"}, wantErr: "reading manifest"},
		"recover contradicting":     {args: []string{"recover", "-c", "a:1", "--expected-transition", "ab", "--no-rollback-check", "-w", "testdata/workspace"}, wantErr: "exclude each other"},
		"verify without manifest":   {args: []string{"verify", "-c", "a:1", "-w", "/nonexistent"}, wantErr: "reading manifest"},
		"settings file unknown key": {args: []string{"generate", "--settings", "testdata/bad-settings.yaml", "x"}, wantErr: `unknown setting "listen-address"`},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			_, stderr, code := run(t, tc.args...)
			assert.Equal(t, ExitUsage, code)
			assert.Contains(t, stderr, tc.wantErr)
		})
	}
}

// TestGenerateStatefulSetVolumes: contrast generate --inject writes a
// StatefulSet whose claim templates are provisioned as block devices and
// whose pod template gives them to the Initializer (issue 15); a claim
// named in contrast.cc/host-shared-volumes is left as it was.
func TestGenerateStatefulSetVolumes(t *testing.T) {
	e := newEnv(t)
	const db = `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: demo}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      annotations: {contrast.cc/host-shared-volumes: logs}
    spec:
      containers:
      - name: db
        image: registry.example/acme/db:1.0
        volumeMounts:
        - {name: data, mountPath: /var/lib/db}
        - {name: logs, mountPath: /var/log/db}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
  - metadata: {name: logs}
    spec: {accessModes: [ReadWriteOnce], volumeMode: Filesystem, resources: {requests: {storage: 1Gi}}}
`
	in := filepath.Join(t.TempDir(), "app")
	require.NoError(t, os.MkdirAll(in, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(in, "db.yaml"), []byte(db), 0o644))
	ws := t.TempDir()
	_, stderr, code := e.generate(t, ws, append(simFlags(t), "--inject", "testdata/coordinator.yaml", in)...)
	require.Equal(t, ExitOK, code, stderr)
	injected, err := os.ReadFile(filepath.Join(ws, "injected", "app", "db.yaml"))
	require.NoError(t, err)
	out := string(injected)
	assert.Equal(t, 1, strings.Count(out, "volumeMode: Block"), "data is a block device:\n%s", out)
	assert.Equal(t, 1, strings.Count(out, "volumeMode: Filesystem"), "logs stays host-shared")
	assert.Contains(t, out, "devicePath: /dev/contrast-pv/data")
	assert.Contains(t, out, "value: data:data")
	assert.Contains(t, out, "name: contrast-pv-data")
}
