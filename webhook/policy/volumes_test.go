package policy_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/policy/agentsim"
)

// pvWorkload is a pod as the injection leaves it with an encrypted volume
// (data: given to an opener as a block device, shared with the app by an
// emptyDir with mount propagation) and a host-shared one (files, named in
// contrast.cc/host-shared-volumes).
const pvWorkload = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: privileged, namespace: demo}
spec:
  selector: {matchLabels: {app: pv}}
  template:
    metadata:
      labels: {app: pv}
      annotations: {contrast.cc/host-shared-volumes: files}
    spec:
      initContainers:
      - name: opener
        image: registry.example/acme/agent:2
        command: ["/agent", "open"]
        securityContext: {privileged: true}
        volumeDevices: [{name: data, devicePath: /dev/contrast-pv/data}]
        volumeMounts: [{name: contrast-pv-data, mountPath: /contrast-pv/data, mountPropagation: Bidirectional}]
      containers:
      - name: app
        image: registry.example/acme/agent:2
        args: ["serve"]
        volumeMounts:
        - {name: contrast-pv-data, mountPath: /var/lib/data, mountPropagation: HostToContainer}
        - {name: files, mountPath: /files}
      volumes:
      - name: data
        ephemeral: {volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce], volumeMode: Block, resources: {requests: {storage: 1Gi}}}}}
      - name: contrast-pv-data
        emptyDir: {medium: Memory}
      - name: files
        persistentVolumeClaim: {claimName: team-files}
`

const (
	pvOpenerID = "41941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"
	pvAppID    = "42941c1e6546ae2aef276f738b162fc379e61467120544e13e5ca5bd204862b9"
)

func addMount(r map[string]any, dest, source string, opts ...any) {
	o := oci(r)
	o["Mounts"] = append(o["Mounts"].([]any), map[string]any{"destination": dest, "source": source, "type_": "bind", "options": opts})
}

func addStorage(r map[string]any, s map[string]any) {
	r["storages"] = append(r["storages"].([]any), s)
}

// memoryStorage is the agent storage of the memory emptyDir name.
func memoryStorage(name string) map[string]any {
	return map[string]any{
		"driver": "ephemeral", "driver_options": []any{}, "source": "tmpfs", "fstype": "tmpfs",
		"options": []any{"size=1024m"}, "mount_point": "/run/kata-containers/sandbox/ephemeral/" + name,
	}
}

// TestPersistentVolumeRequests drives the policy of pvWorkload with
// Kata-format requests: the opener gets exactly its block device, the app
// exactly the propagated mount and the host-shared claim; every other
// device or mount source is denied by the check that pins it.
func TestPersistentVolumeRequests(t *testing.T) {
	src, _ := testRegistry(t)
	ws, err := policy.DecodeWorkloads([]byte(pvWorkload))
	require.NoError(t, err)
	require.Len(t, ws, 1)
	res, err := policy.Generate(t.Context(), policy.GenerateInput{Workload: &ws[0], Images: src})
	require.NoError(t, err)
	img, err := src.Resolve(t.Context(), "registry.example/acme/agent:2", nil)
	require.NoError(t, err)
	good := img.Reference()

	opener := func(t *testing.T) map[string]any {
		r := privilegedRequest(t, pvOpenerID, "opener", good, []any{"/agent", "open"})
		addMount(r, "/contrast-pv/data", "/run/kata-containers/sandbox/ephemeral/contrast-pv-data", "rbind", "rshared", "rw")
		addStorage(r, memoryStorage("contrast-pv-data"))
		r["devices"] = []any{map[string]any{"id": "0000:00:05.0", "type_": "blk", "vm_path": "/dev/vdb", "container_path": "/dev/contrast-pv/data", "options": []any{}}}
		oci(r)["Linux"].(map[string]any)["Devices"] = []any{map[string]any{"Path": "/dev/contrast-pv/data", "Type": "b", "Major": 254, "Minor": 16}}
		return r
	}
	app := func(t *testing.T) map[string]any {
		r := plainRequest(t, pvAppID, "app", good, []any{"/agent", "serve"})
		addMount(r, "/var/lib/data", "/run/kata-containers/sandbox/ephemeral/contrast-pv-data", "rbind", "rslave", "rw")
		addMount(r, "/files", "/run/kata-containers/shared/containers/"+pvAppID+"-0123456789abcdef-files", "rbind", "rprivate", "rw")
		addStorage(r, memoryStorage("contrast-pv-data"))
		return r
	}
	sandbox := func(t *testing.T, a *agentsim.Agent) {
		t.Helper()
		d, err := a.Allow(t.Context(), "CreateContainerRequest", privSandbox(t))
		require.NoError(t, err)
		require.True(t, d.Allowed, "pause container denied")
	}
	t.Run("good", func(t *testing.T) {
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		sandbox(t, a)
		for _, r := range []map[string]any{opener(t), app(t)} {
			d, err := a.Allow(t.Context(), "CreateContainerRequest", r)
			if err != nil || !d.Allowed {
				explainCreate(t, res.Rego, a.State(), r)
				t.FailNow()
			}
		}
	})
	// Kata versions that replace the propagation with rprivate
	t.Run("good/rprivate", func(t *testing.T) {
		a, err := agentsim.New(res.Rego)
		require.NoError(t, err)
		sandbox(t, a)
		r := opener(t)
		setMountOptions(r, "/contrast-pv/data", "rbind", "rprivate", "rw")
		d, err := a.Allow(t.Context(), "CreateContainerRequest", r)
		require.NoError(t, err)
		assert.True(t, d.Allowed)
	})

	tamper := map[string]struct {
		req    func(*testing.T) map[string]any
		mod    func(r map[string]any)
		checks []string
	}{
		"device at another path": {opener, func(r map[string]any) {
			r["devices"].([]any)[0].(map[string]any)["container_path"] = "/dev/other"
		}, []string{"agent_devices_ok"}},
		"device of another type": {opener, func(r map[string]any) {
			r["devices"].([]any)[0].(map[string]any)["type_"] = "vfio-pci-gk"
		}, []string{"agent_devices_ok"}},
		"device twice": {opener, func(r map[string]any) {
			r["devices"] = append(r["devices"].([]any), r["devices"].([]any)[0])
		}, []string{"agent_devices_ok"}},
		"OCI device at another path": {opener, func(r map[string]any) {
			oci(r)["Linux"].(map[string]any)["Devices"].([]any)[0].(map[string]any)["Path"] = "/dev/vda"
		}, []string{"linux_devices_ok"}},
		"OCI character device": {opener, func(r map[string]any) {
			oci(r)["Linux"].(map[string]any)["Devices"].([]any)[0].(map[string]any)["Type"] = "c"
		}, []string{"linux_devices_ok"}},
		"device given to the app": {app, func(r map[string]any) {
			r["devices"] = []any{map[string]any{"id": "0000:00:05.0", "type_": "blk", "vm_path": "/dev/vdb", "container_path": "/dev/contrast-pv/data", "options": []any{}}}
		}, []string{"agent_devices_ok"}},
		// the host cannot replace the decrypted volume by a directory it shares
		"encrypted mount from the host": {app, func(r map[string]any) {
			for _, m := range oci(r)["Mounts"].([]any) {
				if m := m.(map[string]any); m["destination"] == "/var/lib/data" {
					m["source"] = "/run/kata-containers/shared/containers/" + pvAppID + "-0123456789abcdef-data"
				}
			}
		}, []string{"mounts_ok"}},
		"host-shared claim mounted elsewhere": {app, func(r map[string]any) {
			for _, m := range oci(r)["Mounts"].([]any) {
				if m := m.(map[string]any); m["destination"] == "/files" {
					m["destination"] = "/usr/bin"
				}
			}
		}, []string{"mounts_ok"}},
	}
	for name, tc := range tamper {
		t.Run("denied/"+name, func(t *testing.T) {
			r := tc.req(t)
			tc.mod(r)
			requireDeniedBy(t, res.Rego, func(t *testing.T, a *agentsim.Agent) { sandbox(t, a) }, "CreateContainerRequest", r, tc.checks...)
		})
	}
}

// TestPersistentVolumeFieldErrors checks the denials of persistent volumes
// the generator gives, naming the field.
func TestPersistentVolumeFieldErrors(t *testing.T) {
	src, _ := testRegistry(t)
	cases := map[string]struct {
		mod       func(w *policy.Workload)
		wantField string
	}{
		"device of an emptyDir": {func(w *policy.Workload) {
			w.Template.Spec.InitContainers[0].VolumeDevices[0].Name = "contrast-pv-data"
		}, "spec.initContainers[0].volumeDevices[0].name"},
		"device of no volume": {func(w *policy.Workload) {
			w.Template.Spec.InitContainers[0].VolumeDevices[0].Name = "nothing"
		}, "spec.initContainers[0].volumeDevices[0].name"},
		"relative device path": {func(w *policy.Workload) {
			w.Template.Spec.InitContainers[0].VolumeDevices[0].DevicePath = "dev/x"
		}, "spec.initContainers[0].volumeDevices[0].devicePath"},
		"claim not named host-shared": {func(w *policy.Workload) {
			delete(w.Template.Annotations, policy.AnnotationHostSharedVolumes)
		}, "spec.containers[0].volumeMounts[1].name"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ws, err := policy.DecodeWorkloads([]byte(pvWorkload))
			require.NoError(t, err)
			tc.mod(&ws[0])
			_, err = policy.Generate(t.Context(), policy.GenerateInput{Workload: &ws[0], Images: src})
			var fe *policy.FieldError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tc.wantField, fe.Field)
		})
	}
}
