package integration_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/integration/chart"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/inject/settings"
)

// chartCases are the values files of the chart's lint and golden tests
// (testdata/chart/<name>.values.yaml → <name>.golden.yaml).
var chartCases = []string{"default", "local", "certmanager", "ha"}

const chartRelease, chartNamespace = "contrast", "contrast-system"

func chartHelm(t *testing.T) (*chart.Helm, string) {
	t.Helper()
	h, err := chart.NewHelm("", t.TempDir())
	require.NoError(t, err, "the chart tests need helm")
	dir, err := chart.Dir()
	require.NoError(t, err)
	return h, dir
}

func chartValues(name string) string {
	return filepath.Join("testdata", "chart", name+".values.yaml")
}

// TestChartLint runs `helm lint --strict` with every values file.
func TestChartLint(t *testing.T) {
	h, dir := chartHelm(t)
	for _, name := range chartCases {
		t.Run(name, func(t *testing.T) {
			out, err := h.Run(t.Context(), "lint", "--strict", dir, "--namespace", chartNamespace, "--values", chartValues(name))
			require.NoError(t, err, out)
			assert.Contains(t, out, "1 chart(s) linted, 0 chart(s) failed")
		})
	}
}

// TestChartGolden renders the chart with every values file and compares the
// result with testdata/chart/<name>.golden.yaml (UPDATE_GOLDEN=1 rewrites).
func TestChartGolden(t *testing.T) {
	h, dir := chartHelm(t)
	for _, name := range chartCases {
		t.Run(name, func(t *testing.T) {
			out, err := h.Template(t.Context(), dir, chartRelease, chartNamespace, []string{chartValues(name)})
			require.NoError(t, err)
			golden := filepath.Join("testdata", "chart", name+".golden.yaml")
			if os.Getenv("UPDATE_GOLDEN") != "" {
				require.NoError(t, os.WriteFile(golden, []byte(out), 0o600))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run with UPDATE_GOLDEN=1 to create it")
			assert.Equal(t, string(want), out, "stale golden file %s: run with UPDATE_GOLDEN=1 and check the diff", golden)
		})
	}
}

// TestChartRendersDefaults checks the properties the issue asks of the
// default render, object by object.
func TestChartRendersDefaults(t *testing.T) {
	h, dir := chartHelm(t)
	out, err := h.Template(t.Context(), dir, chartRelease, chartNamespace, []string{chartValues("default")})
	require.NoError(t, err)
	cfgName := "contrast-contrast-system"

	var sts appsv1.StatefulSet
	decodeObject(t, out, "StatefulSet", "contrast-coordinator", &sts)
	pod := sts.Spec.Template
	assert.Equal(t, "coordinator", pod.Annotations["contrast.cc/pod-role"])
	assert.Equal(t, "contrast-cc", *pod.Spec.RuntimeClassName)
	assert.Nil(t, pod.Spec.Affinity, "no anti-affinity with one replica")
	c := pod.Spec.Containers[0]
	assert.Contains(t, c.Args, "--platform=snp")
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.Equal(t, "probes", c.ReadinessProbe.HTTPGet.Port.StrVal)
	assert.Equal(t, "/livez", c.LivenessProbe.HTTPGet.Path)
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	assert.Equal(t, map[string]int32{"userapi": 1313, "meshapi": 7777, "probes": 9102}, ports)
	assert.NotEmpty(t, c.Resources.Requests)

	var user, mesh corev1.Service
	decodeObject(t, out, "Service", "contrast-coordinator", &user)
	assert.True(t, user.Spec.PublishNotReadyAddresses, "contrast recover must reach a Coordinator in recovery mode")
	assert.Equal(t, int32(1313), user.Spec.Ports[0].Port)
	decodeObject(t, out, "Service", "contrast-coordinator-mesh", &mesh)
	assert.False(t, mesh.Spec.PublishNotReadyAddresses, "the mesh API only on ready Coordinators")
	assert.Equal(t, int32(7777), mesh.Spec.Ports[0].Port)

	var role rbacv1.Role
	decodeObject(t, out, "Role", "contrast-coordinator", &role)
	require.Len(t, role.Rules, 1)
	assert.Equal(t, []string{"configmaps"}, role.Rules[0].Resources)
	assert.ElementsMatch(t, []string{"get", "list", "watch", "create", "update"}, role.Rules[0].Verbs)

	var dep appsv1.Deployment
	decodeObject(t, out, "Deployment", "contrast-webhook", &dep)
	assert.Equal(t, int32(2), *dep.Spec.Replicas)
	assert.Equal(t, "disabled", dep.Spec.Template.Labels["contrast.cc/inject"], "the webhook's pods never go through a webhook")
	psc := dep.Spec.Template.Spec.SecurityContext
	assert.True(t, *psc.RunAsNonRoot)
	wc := dep.Spec.Template.Spec.Containers[0]
	assert.True(t, *wc.SecurityContext.ReadOnlyRootFilesystem)
	assert.False(t, *wc.SecurityContext.AllowPrivilegeEscalation)
	assert.NotEmpty(t, dep.Spec.Template.Spec.TopologySpreadConstraints)
	assert.NotEmpty(t, wc.Resources.Requests)
	for _, want := range []string{
		"--settings=/etc/contrast/settings/settings.yaml",
		"--self-managed-certs",
		"--webhook-configuration=" + cfgName,
		"--validating-webhook-configuration=" + cfgName,
	} {
		assert.Contains(t, wc.Args, want)
	}

	// The settings ConfigMap is what the webhook reads and what `contrast
	// generate --settings` reads: the injection settings package accepts it.
	cm, err := chart.Object(out, "ConfigMap", "contrast-settings")
	require.NoError(t, err)
	// The defaults leave the Initializer's expectations of the Coordinator
	// to the owner (contrast generate derives them from this render): the
	// webhook refuses to start without them, naming them.
	s := loadSettings(t, cm)
	_, err = s.Resolve()
	require.ErrorContains(t, err, "--coordinator-policy-hash is required")
	require.ErrorContains(t, err, "--coordinator-reference-values is required")
	resolved, err := s.ResolveCoordinatorOnly()
	require.NoError(t, err)
	assert.Equal(t, attest.PlatformSNP, attest.Platform(s.TEEPlatform), "the platform is the chart's")
	assert.Equal(t, "ghcr.io/contrast-cc/contrast/initializer@sha256:"+strings.Repeat("3", 64), resolved.Inject.InitializerImage)
	assert.Equal(t, "ghcr.io/contrast-cc/contrast/mesh-proxy@sha256:"+strings.Repeat("4", 64), resolved.Inject.ProxyImage)
	assert.Equal(t, "contrast-coordinator-mesh.contrast-system.svc:7777", resolved.Inject.CoordinatorAddress)
	assert.Equal(t, "contrast-cc", resolved.Inject.RuntimeClassName)
	assert.False(t, resolved.Legacy)

	var certsRole rbacv1.ClusterRole
	decodeObject(t, out, "ClusterRole", cfgName+"-webhook-certs", &certsRole)
	require.Len(t, certsRole.Rules, 1)
	assert.Equal(t, []string{cfgName}, certsRole.Rules[0].ResourceNames, "exactly its two configurations")
	assert.ElementsMatch(t, []string{"get", "update"}, certsRole.Rules[0].Verbs)

	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	decodeObject(t, out, "MutatingWebhookConfiguration", cfgName, &mwc)
	require.Len(t, mwc.Webhooks, 3)
	pods, coord, sets := mwc.Webhooks[0], mwc.Webhooks[1], mwc.Webhooks[2]
	for _, w := range mwc.Webhooks {
		assert.Equal(t, admissionregistrationv1.Fail, *w.FailurePolicy)
		assert.Equal(t, admissionregistrationv1.SideEffectClassNone, *w.SideEffects)
		assert.Equal(t, int32(20), *w.TimeoutSeconds)
	}
	for _, w := range []admissionregistrationv1.MutatingWebhook{pods, coord} {
		assert.Equal(t, admissionregistrationv1.IfNeededReinvocationPolicy, *w.ReinvocationPolicy)
		assert.Equal(t, "/mutate", *w.ClientConfig.Service.Path)
	}
	// StatefulSets: claim templates of encrypted volumes set to Block, in the
	// pods' namespaces
	assert.Equal(t, "/mutate-statefulsets", *sets.ClientConfig.Service.Path)
	assert.Equal(t, []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
		Rule: admissionregistrationv1.Rule{APIGroups: []string{"apps"}, APIVersions: []string{"v1"}, Resources: []string{"statefulsets"},
			Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
	}}, sets.Rules)
	assert.Equal(t, pods.NamespaceSelector, sets.NamespaceSelector)
	assert.Nil(t, sets.ObjectSelector, "the pod template's opt-out label is read by the webhook")
	assert.Equal(t, map[string]string{"contrast.cc/inject": "enabled"}, pods.NamespaceSelector.MatchLabels)
	assert.Equal(t, []string{"kube-system", chartNamespace}, pods.NamespaceSelector.MatchExpressions[0].Values)
	assert.Equal(t, "contrast.cc/inject", pods.ObjectSelector.MatchExpressions[0].Key)
	assert.Equal(t, []string{"disabled"}, pods.ObjectSelector.MatchExpressions[0].Values)
	assert.Equal(t, map[string]string{"kubernetes.io/metadata.name": chartNamespace}, coord.NamespaceSelector.MatchLabels)
	assert.Equal(t, "coordinator", coord.ObjectSelector.MatchLabels["app.kubernetes.io/component"])
	assert.Equal(t, pod.Labels, coord.ObjectSelector.MatchLabels, "the Coordinator's pods and only they")
	assert.NotEqual(t, dep.Spec.Template.Labels["app.kubernetes.io/component"], coord.ObjectSelector.MatchLabels["app.kubernetes.io/component"])

	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	decodeObject(t, out, "ValidatingWebhookConfiguration", cfgName, &vwc)
	require.Len(t, vwc.Webhooks, 2)
	assert.Nil(t, vwc.Webhooks[0].ObjectSelector, "a later webhook cannot escape validation with the opt-out label")
	assert.Equal(t, "/validate", *vwc.Webhooks[0].ClientConfig.Service.Path)
	assert.Equal(t, coord.ObjectSelector, vwc.Webhooks[1].ObjectSelector)
}

// loadSettings reads a rendered settings ConfigMap as the webhook and
// `contrast generate --settings` do.
func loadSettings(t *testing.T, configMap []byte) *settings.Settings {
	t.Helper()
	f := filepath.Join(t.TempDir(), "settings.yaml")
	require.NoError(t, os.WriteFile(f, configMap, 0o600))
	var s settings.Settings
	fs := pflag.NewFlagSet("settings", pflag.ContinueOnError)
	s.AddFlags(fs)
	require.NoError(t, s.ApplyFile(fs, f))
	return &s
}

// TestChartCoordinatorExpectations: coordinator.policyHash and
// coordinator.referenceValues reach the webhook's settings, and do not
// change the Coordinator's pod (whose policy hash they name).
func TestChartCoordinatorExpectations(t *testing.T) {
	h, dir := chartHelm(t)
	base, err := h.Template(t.Context(), dir, chartRelease, chartNamespace, []string{chartValues("default")})
	require.NoError(t, err)
	rv, err := json.Marshal(injecttest.CoordinatorReferenceValues())
	require.NoError(t, err)
	hash := strings.Repeat("c0", 32)
	out, err := h.Template(t.Context(), dir, chartRelease, chartNamespace, []string{chartValues("default")},
		"--set", "coordinator.policyHash="+hash, "--set-json", "coordinator.referenceValues="+string(rv))
	require.NoError(t, err)

	cm, err := chart.Object(out, "ConfigMap", "contrast-settings")
	require.NoError(t, err)
	r, err := loadSettings(t, cm).Resolve()
	require.NoError(t, err)
	assert.Equal(t, [][]byte{injecttest.CoordinatorPolicyHash}, r.Inject.CoordinatorPolicyHashes)
	assert.Equal(t, injecttest.CoordinatorReferenceValues(), r.Inject.CoordinatorReferenceValues)
	assert.Equal(t, attest.PlatformSNP, r.Inject.Platform)

	before, err := chart.Object(base, "StatefulSet", "contrast-coordinator")
	require.NoError(t, err)
	after, err := chart.Object(out, "StatefulSet", "contrast-coordinator")
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after), "the Coordinator's pod does not depend on the expectations that name its hash")
}

func decodeObject(t *testing.T, rendered, kind, name string, into any) {
	t.Helper()
	doc, err := chart.Object(rendered, kind, name)
	require.NoError(t, err)
	require.NoError(t, yaml.UnmarshalStrict(doc, into), "%s %s", kind, name)
}

// TestChartRejectsBadValues checks that values.schema.json and the chart's
// own checks refuse bad values with a message that names the value.
func TestChartRejectsBadValues(t *testing.T) {
	h, dir := chartHelm(t)
	const schema = "values don't meet the specifications of the schema"
	testCases := map[string]struct {
		args       []string
		bySchema   bool
		wantInMsgs []string
	}{
		"replicas not a number":   {args: []string{"--set-string", "webhook.replicas=two"}, bySchema: true, wantInMsgs: []string{"/webhook/replicas"}},
		"one coordinator too few": {args: []string{"--set", "coordinator.replicas=0"}, bySchema: true, wantInMsgs: []string{"/coordinator/replicas"}},
		"misspelled value":        {args: []string{"--set", "webhook.replica=3"}, bySchema: true, wantInMsgs: []string{"/webhook", "replica"}},
		"image by tag":            {args: []string{"--set", "images.webhook=ghcr.io/contrast-cc/contrast/webhook:latest"}, bySchema: true, wantInMsgs: []string{"/images/webhook", "ghcr.io/contrast-cc/contrast/webhook:latest"}},
		"unknown platform":        {args: []string{"--set", "platform=sev"}, bySchema: true, wantInMsgs: []string{"/platform", "value must be one of 'snp', 'tdx'"}},
		"timeout above 30s":       {args: []string{"--set", "webhook.timeoutSeconds=31"}, bySchema: true, wantInMsgs: []string{"/webhook/timeoutSeconds"}},
		"short policy hash":       {args: []string{"--set", "coordinator.policyHash=abcd"}, bySchema: true, wantInMsgs: []string{"/coordinator/policyHash", "abcd"}},
		"service type":            {args: []string{"--set", "coordinator.service.type=External"}, bySchema: true, wantInMsgs: []string{"/coordinator/service/type", "value must be one of"}},
		"log level":               {args: []string{"--set", "webhook.logLevel=verbose"}, bySchema: true, wantInMsgs: []string{"/webhook/logLevel", "value must be one of"}},
		"validity not a duration": {args: []string{"--set", "webhook.selfManagedCerts.caValidity=1y"}, bySchema: true, wantInMsgs: []string{"/webhook/selfManagedCerts/caValidity", "1y"}},
		"policy mode":             {args: []string{"--set", "webhook.policyMode=strict"}, bySchema: true, wantInMsgs: []string{"/webhook/policyMode", "value must be one of 'initdata', 'legacy'"}},
		"mirror with a path":      {args: []string{"--set-json", `webhook.registry.mirrors={"docker.io":["https://m.example/v2"]}`}, bySchema: true, wantInMsgs: []string{"/webhook/registry/mirrors/docker.io/0"}},
		"simulated with kata": {
			args:       []string{"--set", "simulated=true"},
			wantInMsgs: []string{`simulated: true is refused with runtimeClass.handler "kata-qemu-snp"`},
		},
		"real platform with runc": {
			args:       []string{"--set", "runtimeClass.handler=runc"},
			wantInMsgs: []string{`runtimeClass.handler "runc" gives no TEE`},
		},
		"missing image": {
			args:       []string{"--set", "images.initializer="},
			wantInMsgs: []string{"images.initializer is required", "make images"},
		},
		"sim measurement on hardware": {
			args:       []string{"--set", "coordinator.simMeasurement=" + strings.Repeat("ab", 48)},
			wantInMsgs: []string{"coordinator.simMeasurement is for simulated: true only"},
		},
		"short sim measurement": {args: []string{"--set", "coordinator.simMeasurement=abcd"}, bySchema: true, wantInMsgs: []string{"/coordinator/simMeasurement", "abcd"}},
		"sim authority on hardware": {
			args:       []string{"--set", "coordinator.simAuthoritySecret=sim"},
			wantInMsgs: []string{"coordinator.simAuthoritySecret is for simulated: true only"},
		},
	}
	for name, tc := range testCases {
		t.Run(name, func(t *testing.T) {
			_, err := h.Template(t.Context(), dir, chartRelease, chartNamespace, []string{chartValues("default")}, tc.args...)
			require.Error(t, err)
			var herr *chart.Error
			require.ErrorAs(t, err, &herr)
			if tc.bySchema {
				assert.Contains(t, herr.Stderr, schema, "rejected by values.schema.json")
			} else {
				assert.NotContains(t, herr.Stderr, schema, "rejected by the chart's own checks")
			}
			for _, want := range tc.wantInMsgs {
				assert.Contains(t, herr.Stderr, want)
			}
		})
	}

	t.Run("defaults without images", func(t *testing.T) {
		_, err := h.Template(t.Context(), dir, chartRelease, chartNamespace, nil)
		var herr *chart.Error
		require.ErrorAs(t, err, &herr)
		assert.Contains(t, herr.Stderr, "is required: the image pinned by digest")
	})
}

// TestChartHA checks the high-availability render (three Coordinators) and
// that the default render has none of it.
func TestChartHA(t *testing.T) {
	h, dir := chartHelm(t)
	out, err := h.Template(t.Context(), dir, chartRelease, chartNamespace, []string{chartValues("ha")})
	require.NoError(t, err)

	var sts appsv1.StatefulSet
	decodeObject(t, out, "StatefulSet", "contrast-coordinator", &sts)
	assert.Equal(t, int32(3), *sts.Spec.Replicas)
	assert.Equal(t, appsv1.ParallelPodManagement, sts.Spec.PodManagementPolicy, "a replica in recovery mode must not block the others")
	assert.NotNil(t, sts.Spec.Template.Spec.Affinity.PodAntiAffinity)
	assert.Contains(t, sts.Spec.Template.Spec.Containers[0].Args, "--peers=contrast-coordinator-peers."+chartNamespace+".svc:7777")

	var peers corev1.Service
	decodeObject(t, out, "Service", "contrast-coordinator-peers", &peers)
	assert.Equal(t, "None", peers.Spec.ClusterIP, "headless: every ready replica's address")
	assert.False(t, peers.Spec.PublishNotReadyAddresses, "a replica in recovery mode is never a peer")
	assert.Equal(t, sts.Spec.Template.Labels, peers.Spec.Selector)

	var pdb policyv1.PodDisruptionBudget
	decodeObject(t, out, "PodDisruptionBudget", "contrast-coordinator", &pdb)
	assert.Equal(t, 1, pdb.Spec.MinAvailable.IntValue(), "a quorum of one")

	var role rbacv1.Role
	decodeObject(t, out, "Role", "contrast-coordinator", &role)
	assert.Contains(t, role.Rules[0].Verbs, "watch", "every replica follows the history head")

	def, err := h.Template(t.Context(), dir, chartRelease, chartNamespace, []string{chartValues("default")})
	require.NoError(t, err)
	_, err = chart.Object(def, "Service", "contrast-coordinator-peers")
	require.Error(t, err, "no peers Service with one replica")
	decodeObject(t, def, "StatefulSet", "contrast-coordinator", &sts)
	for _, a := range sts.Spec.Template.Spec.Containers[0].Args {
		assert.NotContains(t, a, "--peers")
	}
}
