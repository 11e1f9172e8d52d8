package policy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/policy/agentsim"
)

const (
	sandboxID = "a10abe57d2a2e47c30d5bd2427170e019fddc587a59d173544d87842f1905da4"
	webID     = "88941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"
	podName   = "web-5f8d7c9b4d-x2k9z"
)

// kataRequest loads a real request from the Kata test data as a template.
func kataRequest(t *testing.T, dir string, i int) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(kataDir(t), dir, "testcases.json"))
	require.NoError(t, err)
	var cases []struct {
		Request map[string]any `json:"request"`
	}
	require.NoError(t, json.Unmarshal(raw, &cases))
	return cases[i].Request
}

func sandboxRequest(t *testing.T) map[string]any {
	return sandboxRequestFor(t, podName, "emojivoto")
}

func sandboxRequestFor(t *testing.T, podName, namespace string) map[string]any {
	req := kataRequest(t, "createcontainer/security_context/runas", 0)
	oci := req["OCI"].(map[string]any)
	anno := oci["Annotations"].(map[string]any)
	anno["io.kubernetes.cri.sandbox-name"] = podName
	anno["io.kubernetes.cri.sandbox-namespace"] = namespace
	anno["io.kubernetes.cri.sandbox-log-directory"] = "/var/log/pods/emojivoto_" + podName + "_fd055c20-d44c-4fc5-aa90-283f629201af"
	oci["Hostname"] = podName
	user := oci["Process"].(map[string]any)["User"].(map[string]any)
	user["UID"], user["GID"], user["AdditionalGids"] = 65535, 65535, []any{65535}
	return req
}

func webRequest(t *testing.T, imageRef string) map[string]any {
	req := containerRequest(t, webID, "web-svc", podName, "emojivoto", imageRef)
	p := proc(req)
	p["Args"] = []any{"/usr/local/bin/emojivoto-web"}
	p["Cwd"] = "/usr/local/bin"
	p["User"] = map[string]any{"UID": 0, "GID": 0, "AdditionalGids": []any{0}, "Username": ""}
	p["Env"] = []any{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME=" + podName,
		"WEB_PORT=8080",
		"EMOJISVC_HOST=emoji-svc.emojivoto:8080",
		"VOTINGSVC_HOST=voting-svc.emojivoto:8080",
		"INDEX_BUNDLE=dist/index_bundle.js",
		"KUBERNETES_SERVICE_HOST=10.0.0.1",
		"KUBERNETES_PORT_443_TCP=tcp://10.0.0.1:443",
		"WEB_SVC_SERVICE_HOST=10.0.0.77",
		"WEB_SVC_PORT_80_TCP_PORT=80",
	}
	return req
}

// containerRequest derives a complete, real-format CreateContainerRequest
// from the Kata "gid" test request.
func containerRequest(t *testing.T, cid, container, podName, namespace, imageRef string) map[string]any {
	req := kataRequest(t, "createcontainer/gid", 0)
	b, err := json.Marshal(req)
	require.NoError(t, err)
	s := strings.ReplaceAll(string(b), "/gid-", "/"+cid+"-")
	s = strings.ReplaceAll(s, "k8s.io/gid", "k8s.io/"+cid)
	s = strings.ReplaceAll(s, "/run/kata-containers/gid/rootfs", "/run/kata-containers/"+cid+"/rootfs")
	s = strings.ReplaceAll(s, "ghcr.io/burgerdev/weird-images/gid@sha256:bdbb485bb9e3baf381a2957b9369b6051c6113097a5f8dcee27faff17624a2c0", imageRef)
	require.NoError(t, json.Unmarshal([]byte(s), &req))
	req["container_id"], req["exec_id"] = cid, cid
	oci := req["OCI"].(map[string]any)
	anno := oci["Annotations"].(map[string]any)
	anno["io.kubernetes.cri.container-name"] = container
	anno["io.kubernetes.cri.sandbox-name"] = podName
	anno["io.kubernetes.cri.sandbox-namespace"] = namespace
	anno["io.kubernetes.cri.sandbox-uid"] = "fd055c20-d44c-4fc5-aa90-283f629201af"
	return req
}

// TestEmojivotoRequests drives the web pod's policy with Kata-format
// requests: the good sequence is allowed, every tampering is denied.
func TestEmojivotoRequests(t *testing.T) {
	src, _ := testRegistry(t)
	var web policy.Workload
	for _, w := range emojivotoWorkloads(t) {
		if w.Name == "web" {
			web = w
		}
	}
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &web, Images: src})
	require.NoError(t, err)
	img, err := src.Resolve(t.Context(), "docker.l5d.io/buoyantio/emojivoto-web:v11", nil)
	require.NoError(t, err)
	good := img.Reference()

	fresh := func(t *testing.T) *agentsim.Agent {
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		d, err := a.Allow(t.Context(), "CreateContainerRequest", sandboxRequest(t))
		require.NoError(t, err)
		require.True(t, d.Allowed, "pause container denied")
		return a
	}
	allow := func(t *testing.T, a *agentsim.Agent, kind string, req any) bool {
		d, err := a.Allow(t.Context(), kind, req)
		return err == nil && d.Allowed
	}

	t.Run("good", func(t *testing.T) {
		a := fresh(t)
		if !allow(t, a, "CreateContainerRequest", webRequest(t, good)) {
			explainCreate(t, res.Rego, a.State(), webRequest(t, good))
			t.FailNow()
		}
		require.True(t, allow(t, a, "ReadStreamRequest", map[string]any{"container_id": webID}))
		require.True(t, allow(t, a, "RemoveContainerRequest", map[string]any{"container_id": webID}))
	})

	// each tampering and the check that denies it
	tamper := map[string]struct {
		mod   func(r map[string]any)
		check string
	}{
		"other digest": {func(r map[string]any) {
			r["storages"].([]any)[0].(map[string]any)["source"] = "docker.l5d.io/buoyantio/emojivoto-web@sha256:" + strings.Repeat("0", 64)
		}, "storages_ok"},
		"tag instead of digest": {func(r map[string]any) {
			r["storages"].([]any)[0].(map[string]any)["source"] = "docker.l5d.io/buoyantio/emojivoto-web:v11"
		}, "storages_ok"},
		"args": {func(r map[string]any) { proc(r)["Args"] = []any{"/bin/sh", "-c", "evil"} }, "args_ok"},
		"env added": {func(r map[string]any) {
			proc(r)["Env"] = append(proc(r)["Env"].([]any), "LD_PRELOAD=/tmp/evil.so")
		}, "env_ok"},
		"env removed": {func(r map[string]any) {
			proc(r)["Env"] = proc(r)["Env"].([]any)[:3]
		}, "env_ok"},
		"env changed": {func(r map[string]any) { proc(r)["Env"].([]any)[2] = "WEB_PORT=9999" }, "env_ok"},
		"env duplicated": {func(r map[string]any) {
			proc(r)["Env"] = append(proc(r)["Env"].([]any), "WEB_PORT=8080")
		}, "env_ok"},
		"wrong hostname": {func(r map[string]any) { proc(r)["Env"].([]any)[1] = "HOSTNAME=other" }, "env_ok"},
		"cwd":            {func(r map[string]any) { proc(r)["Cwd"] = "/tmp" }, "cwd_ok"},
		"root user":      {func(r map[string]any) { proc(r)["User"].(map[string]any)["UID"] = 1 }, "user_ok"},
		"extra group":    {func(r map[string]any) { proc(r)["User"].(map[string]any)["AdditionalGids"] = []any{0, 6} }, "user_ok"},
		"capability": {func(r map[string]any) {
			c := proc(r)["Capabilities"].(map[string]any)
			c["Bounding"] = append(c["Bounding"].([]any), "CAP_SYS_ADMIN")
		}, "caps_ok"},
		"host mount": {func(r map[string]any) {
			oci(r)["Mounts"] = append(oci(r)["Mounts"].([]any), map[string]any{"destination": "/host", "source": "/", "type_": "bind", "options": []any{"rbind"}})
		}, "mounts_ok"},
		"shared rootfs": {func(r map[string]any) {
			oci(r)["Root"].(map[string]any)["Path"] = "/run/kata-containers/shared/containers/" + webID + "/rootfs"
		}, "root_ok"},
		"hook": {func(r map[string]any) {
			oci(r)["Hooks"] = map[string]any{"Prestart": []any{map[string]any{"Path": "/bin/evil"}}}
		}, "hooks_ok"},
		"other container name": {func(r map[string]any) {
			oci(r)["Annotations"].(map[string]any)["io.kubernetes.cri.container-name"] = "other"
		}, "selects"},
		"other pod": {func(r map[string]any) {
			// a name the ReplicaSet could generate, but not the VM's pod
			oci(r)["Annotations"].(map[string]any)["io.kubernetes.cri.sandbox-name"] = "web-5f8d7c9b4d-bbbbb"
			proc(r)["Env"].([]any)[1] = "HOSTNAME=web-5f8d7c9b4d-bbbbb"
		}, "sandbox_consistent"},
		"unknown annotation": {func(r map[string]any) {
			oci(r)["Annotations"].(map[string]any)["io.katacontainers.evil"] = "1"
		}, "annotations_ok"},
		"sysctl": {func(r map[string]any) {
			oci(r)["Linux"].(map[string]any)["Sysctl"] = map[string]any{"kernel.shm_rmid_forced": "1"}
		}, "sysctls_ok"},
		"no mount namespace": {func(r map[string]any) {
			oci(r)["Linux"].(map[string]any)["Namespaces"] = []any{map[string]any{"Type": "ipc", "Path": ""}, map[string]any{"Type": "uts", "Path": ""}}
		}, "namespaces_ok"},
		"device": {func(r map[string]any) {
			r["devices"] = []any{map[string]any{"id": "vfio1", "type_": "vfio-pci-gk"}}
		}, "agent_devices_ok"},
		"privileged paths": {func(r map[string]any) { oci(r)["Linux"].(map[string]any)["MaskedPaths"] = []any{} }, "paths_ok"},
		"terminal":         {func(r map[string]any) { proc(r)["Terminal"] = true }, "terminal_ok"},
	}
	for name, tc := range tamper {
		t.Run(name, func(t *testing.T) {
			r := webRequest(t, good)
			tc.mod(r)
			requireDeniedBy(t, res.Rego, withSandbox, "CreateContainerRequest", r, tc.check)
		})
	}

	t.Run("pause container named as the ReplicaSet never names pods", func(t *testing.T) {
		// 'a' is not in the API server's alphabet for generated names
		r := sandboxRequestFor(t, "web-5f8d7c9b4d-aaaaa", "emojivoto")
		requireDeniedBy(t, res.Rego, nil, "CreateContainerRequest", r, "name_ok")
	})

	t.Run("exec without probe", func(t *testing.T) {
		a := fresh(t)
		require.True(t, allow(t, a, "CreateContainerRequest", webRequest(t, good)))
		require.False(t, allow(t, a, "ExecProcessRequest", map[string]any{"container_id": webID, "process": map[string]any{"Args": []any{"/bin/sh"}}}))
	})
}

func proc(r map[string]any) map[string]any { return oci(r)["Process"].(map[string]any) }

func oci(r map[string]any) map[string]any { return r["OCI"].(map[string]any) }

// TestExecProbe checks the exec path with the StatefulSet "db" of
// testdata/workloads.yaml: only its readiness probe may be executed, only in
// a created container, and only with the container's process settings.
func TestExecProbe(t *testing.T) {
	src, _ := testRegistry(t)
	var db policy.Workload
	for _, w := range readWorkloads(t, "testdata/workloads.yaml") {
		if w.Name == "db" {
			db = w
		}
	}
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &db, Images: src})
	require.NoError(t, err)
	img, err := src.Resolve(t.Context(), "registry.example/acme/db:1.0", nil)
	require.NoError(t, err)
	a, err := agentsim.New(res.Rego)
	require.NoError(t, err)
	allow := func(kind string, req any) bool {
		d, err := a.Allow(t.Context(), kind, req)
		return err == nil && d.Allowed
	}
	require.True(t, allow("CreateContainerRequest", sandboxRequestFor(t, "db-0", "demo")))

	const dbID = "22941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"
	env := []any{"PATH=/bin", "DB_HOME=/var/lib/db", "HOSTNAME=db-0", "POD_NAME=db-0", "POD_IP=10.244.1.7", "KUBERNETES_SERVICE_HOST=10.0.0.1"}
	user := map[string]any{"UID": 999, "GID": 999, "AdditionalGids": []any{999}, "Username": ""}
	req := containerRequest(t, dbID, "db", "db-0", "demo", img.Reference())
	p := proc(req)
	p["Args"] = []any{"/bin/db", "--data", "/var/lib/db"}
	p["Cwd"] = "/"
	p["User"] = user
	p["Env"] = env
	oci(req)["Mounts"] = append(oci(req)["Mounts"].([]any), map[string]any{
		"destination": "/var/lib/db", "source": "/run/kata-containers/sandbox/storage/MDAvMDA=", "type_": "bind", "options": []any{"rbind", "rprivate", "rw"},
	})
	req["storages"] = append(req["storages"].([]any), map[string]any{
		"driver": "blk", "driver_options": []any{"encryption_key=ephemeral", "create_filesystem"}, "fs_group": nil,
		"fstype": "ext4", "mount_point": "/run/kata-containers/sandbox/storage/MDAvMDA=", "options": []any{}, "source": "00/00", "shared": true,
	})
	if !allow("CreateContainerRequest", req) {
		explainCreate(t, res.Rego, a.State(), req)
		t.Fatal("db container denied")
	}

	exec := func(args []any, mod func(map[string]any)) map[string]any {
		p := map[string]any{"Args": args, "Capabilities": nil, "Cwd": "/", "Env": env, "NoNewPrivileges": false,
			"SelinuxLabel": "", "Terminal": false, "User": user}
		if mod != nil {
			mod(p)
		}
		return map[string]any{"container_id": dbID, "exec_id": "e1", "process": p, "string_user": nil}
	}
	require.True(t, allow("ExecProcessRequest", exec([]any{"/bin/db", "ping"}, nil)))
	created := func(t *testing.T, a *agentsim.Agent) {
		t.Helper()
		for _, r := range []map[string]any{sandboxRequestFor(t, "db-0", "demo"), req} {
			d, err := a.Allow(t.Context(), "CreateContainerRequest", r)
			require.NoError(t, err)
			require.True(t, d.Allowed)
		}
	}
	for name, tc := range map[string]struct {
		req   map[string]any
		check string
	}{
		"not a probe":  {exec([]any{"/bin/sh"}, nil), "exec_command_ok"},
		"terminal":     {exec([]any{"/bin/db", "ping"}, func(p map[string]any) { p["Terminal"] = true }), "exec_terminal_ok"},
		"root":         {exec([]any{"/bin/db", "ping"}, func(p map[string]any) { p["User"] = map[string]any{"UID": 0, "GID": 999, "AdditionalGids": []any{999}} }), "user_ok"},
		"env injected": {exec([]any{"/bin/db", "ping"}, func(p map[string]any) { p["Env"] = append(slices.Clone(env), "LD_PRELOAD=/x.so") }), "exec_env_ok"},
	} {
		t.Run("denied exec/"+name, func(t *testing.T) {
			requireDeniedBy(t, res.Rego, created, "ExecProcessRequest", tc.req, tc.check)
		})
	}
	// The same probe was allowed above; after the removal it is denied
	// because the container left the policy state (ExecProcessRequest looks
	// the container up there), not because of any other check.
	containers := func() map[string]any {
		ps, _ := a.State()["pstate"].(map[string]any)
		c, _ := ps["containers"].(map[string]any)
		return c
	}
	require.Contains(t, containers(), dbID, "the db container is in the policy state before its removal")
	require.True(t, allow("RemoveContainerRequest", map[string]any{"container_id": dbID}))
	require.NotContains(t, containers(), dbID, "RemoveContainerRequest takes the container out of the policy state")
	require.False(t, allow("ExecProcessRequest", exec([]any{"/bin/db", "ping"}, nil)), "exec after removal")
}
