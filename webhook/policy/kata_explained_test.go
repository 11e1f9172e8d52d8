package policy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/policy/agentsim"
)

// TestKataDifferencesExplained repairs each Kata case we deny (see
// knownDifferences) in exactly the way its documented reason says and checks
// that the repaired sequence is then allowed: the reasons are the only ones.
func TestKataDifferencesExplained(t *testing.T) {
	fixtures, err := os.ReadFile("testdata/kata-images.json")
	require.NoError(t, err)
	src, err := images.NewStaticFromJSON(fixtures)
	require.NoError(t, err)

	bundleID := func(r map[string]any) string {
		p := oci(r)["Annotations"].(map[string]any)["io.katacontainers.pkg.oci.bundle_path"].(string)
		return p[strings.LastIndex(p, "/")+1:]
	}
	pin := func(ref string) func(r map[string]any) {
		return func(r map[string]any) {
			cid := bundleID(r)
			var keep []any
			for _, s := range asList(r["storages"]) {
				if s.(map[string]any)["driver"] != "image_guest_pull" {
					keep = append(keep, s)
				}
			}
			r["storages"] = append(keep, map[string]any{
				"driver": "image_guest_pull", "driver_options": []any{`image_guest_pull={"metadata":{"io.katacontainers.pkg.oci.container_type":"pod_container"}}`},
				"fstype": "overlay", "mount_point": "/run/kata-containers/" + cid + "/rootfs", "options": []any{}, "source": ref,
			})
		}
	}
	addEnv := func(env ...string) func(r map[string]any) {
		return func(r map[string]any) {
			e := asList(proc(r)["Env"])
			for _, v := range env {
				e = append(e, v)
			}
			proc(r)["Env"] = e
		}
	}
	setExecEnv := func(i int, v string) func(r map[string]any) {
		return func(r map[string]any) { r["process"].(map[string]any)["Env"].([]any)[i] = v }
	}
	const pause = "registry.k8s.io/pause@sha256:3d380ca8864549e74af4b29c10f9cb0956236dfb01c40ca076fb6c37253234db"
	const path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	busybox := "quay.io/prometheus/busybox@sha256:" + strings.Repeat("0", 63) + "2"
	redis := "quay.io/kata-containers/test-images/opstree/redis@sha256:2642c7b07713df6897fa88cbe6db85170690cf3650018ceb2ab16cfa0b4f8d48"

	type fix struct {
		index int
		apply []func(r map[string]any)
	}
	cases := map[string][]fix{
		"createcontainer/security_context/supplemental_groups": {{0, []func(map[string]any){pin(redis)}}},
		"createcontainer/volumes/config_map":                   {{0, []func(map[string]any){pin(pause), addEnv(path, "HOSTNAME=dummy")}}},
		"createcontainer/volumes/emptydir": {
			{0, []func(map[string]any){pin(pause), addEnv(path, "HOSTNAME=dummy")}},
			{2, []func(map[string]any){pin(pause), addEnv(path, "HOSTNAME=dummy")}},
		},
		"state/execprocessdeployment": {{0, []func(map[string]any){pin(busybox)}}},
		"state/execprocess": {
			{0, []func(map[string]any){pin(busybox), addEnv("CONTAINER_NAME=first-test-container", "HOSTNAME=busybox")}},
			{1, []func(map[string]any){pin(busybox), addEnv("CONTAINER_NAME=second-test-container", "HOSTNAME=busybox")}},
			// the exec request's HOSTNAME (busybox-cc) is not the pod's hostname
			{2, []func(map[string]any){setExecEnv(1, "HOSTNAME=busybox")}},
		},
	}
	for dir, fixes := range cases {
		t.Run(dir, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(kataDir(t), dir, "pod.yaml"))
			require.NoError(t, err)
			ws, err := policy.DecodeWorkloads(b)
			require.NoError(t, err)
			res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &ws[0], Images: src})
			require.NoError(t, err)
			agent, err := agentsim.New(res.Rego)
			require.NoError(t, err)
			raw, err := os.ReadFile(filepath.Join(kataDir(t), dir, "testcases.json"))
			require.NoError(t, err)
			var cases []kataCase
			require.NoError(t, json.Unmarshal(raw, &cases))
			for i, c := range cases {
				var input map[string]any
				require.NoError(t, json.Unmarshal(c.Request, &input))
				want := c.Allowed
				for _, f := range fixes {
					if f.index == i {
						for _, apply := range f.apply {
							apply(input)
						}
					}
				}
				d, err := agent.Allow(t.Context(), c.Kind, input)
				got := err == nil && d.Allowed
				if got != want {
					if c.Kind == "CreateContainerRequest" {
						explainCreate(t, res.Rego, agent.State(), input)
					}
					t.Fatalf("case %d (%s): allowed=%v after repair, want %v (err %v)", i, c.Description, got, want, err)
				}
			}
		})
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
