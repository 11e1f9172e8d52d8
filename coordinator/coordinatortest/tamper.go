package coordinatortest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/attest/sim"
	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
	"github.com/contrast-cc/contrast/coordinator/manifest"
)

// LatestStore reads and overwrites the stored latest pointer behind the
// Coordinators' backs, as whoever controls the history store (the API
// server) can.
type LatestStore interface {
	// Latest returns the stored pointer, nil if there is none.
	Latest(ctx context.Context) ([]byte, error)
	// SetLatest overwrites (or creates) the pointer; nil deletes it.
	SetLatest(ctx context.Context, data []byte) error
}

// LatestConfigMap is the name of the ConfigMap holding the latest pointer.
const LatestConfigMap = "contrast-history-latest"

// ConfigMapLatest returns the LatestStore of the ConfigMap history in
// namespace.
func ConfigMapLatest(client kubernetes.Interface, namespace string) LatestStore {
	return configMapLatest{client: client, namespace: namespace}
}

type configMapLatest struct {
	client    kubernetes.Interface
	namespace string
}

func (c configMapLatest) Latest(ctx context.Context) ([]byte, error) {
	cm, err := c.client.CoreV1().ConfigMaps(c.namespace).Get(ctx, LatestConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting the latest pointer: %w", err)
	}
	return cm.BinaryData["data"], nil
}

func (c configMapLatest) SetLatest(ctx context.Context, data []byte) error {
	cms := c.client.CoreV1().ConfigMaps(c.namespace)
	if data == nil {
		if err := cms.Delete(ctx, LatestConfigMap, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting the latest pointer: %w", err)
		}
		return nil
	}
	cm, err := cms.Get(ctx, LatestConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: LatestConfigMap, Labels: map[string]string{"contrast.cc/history": "latest"}},
			BinaryData: map[string][]byte{"data": data},
		}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating the latest pointer: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("getting the latest pointer: %w", err)
	}
	cm.BinaryData = map[string][]byte{"data": data}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("overwriting the latest pointer: %w", err)
	}
	return nil
}

// editJSON decodes a manifest document, lets edit change it and encodes it
// again: requests with fields the Go types may not have.
func editJSON(t testing.TB, doc []byte, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(doc, &m))
	edit(m)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

func snpEntry(m map[string]any, i int) map[string]any {
	return m["ReferenceValues"].(map[string]any)["snp"].([]any)[i].(map[string]any)
}

// RunUnenforced sets manifests whose reference values ask for something
// the evidence cannot show (SNP CPUs and APEIP): SetManifest refuses each
// with InvalidArgument naming the field's path, unless the manifest lists
// the path in AcceptUnenforced; an AcceptUnenforced entry that names no
// such field is refused too. Mesh certificates are then issued as usual.
func RunUnenforced(t *testing.T, h *Harness) {
	ctx := context.Background()
	d := NewDeployment(1)
	c := h.Start(t)
	anon := h.User(t, c, nil)
	withCPUs := func(m map[string]any) { snpEntry(m, 0)["CPUs"] = 2 }
	withAPEIP := func(m map[string]any) { snpEntry(m, 0)["APEIP"] = "0080b004" }

	for name, tc := range map[string]struct {
		edit func(m map[string]any)
		want []string
	}{
		"CPUs":  {edit: withCPUs, want: []string{"ReferenceValues.snp[0].CPUs: set, but the Coordinator cannot enforce it", "AcceptUnenforced"}},
		"APEIP": {edit: withAPEIP, want: []string{"ReferenceValues.snp[0].APEIP: set, but the Coordinator cannot enforce it"}},
		"both, one accepted": {
			edit: func(m map[string]any) {
				withCPUs(m)
				withAPEIP(m)
				m["AcceptUnenforced"] = []string{"ReferenceValues.snp[0].APEIP"}
			},
			want: []string{"ReferenceValues.snp[0].CPUs: set, but"},
		},
		"stale acceptance": {
			edit: func(m map[string]any) { m["AcceptUnenforced"] = []string{"ReferenceValues.snp[0].CPUs"} },
			want: []string{`AcceptUnenforced[0]: "ReferenceValues.snp[0].CPUs" is not a field this manifest sets that the Coordinator cannot enforce`},
		},
	} {
		t.Run(name, func(t *testing.T) {
			req := h.Request(d, nil)
			req.Manifest = editJSON(t, req.GetManifest(), tc.edit)
			_, err := anon.SetManifest(ctx, req)
			RequireCode(t, err, codes.InvalidArgument, tc.want...)
		})
	}
	_, err := anon.GetManifests(ctx, &userpb.GetManifestsRequest{})
	RequireCode(t, err, codes.FailedPrecondition, "no manifest")

	req := h.Request(d, nil)
	req.Manifest = editJSON(t, req.GetManifest(), func(m map[string]any) {
		withCPUs(m)
		withAPEIP(m)
		m["AcceptUnenforced"] = []string{"ReferenceValues.snp[0].APEIP", "ReferenceValues.snp[0].CPUs"}
	})
	_, err = anon.SetManifest(ctx, req)
	require.NoError(t, err, "accepted explicitly")
	web := h.Pod(t, d.Web, nil)
	_, err = NewMeshCert(ctx, c.MeshAddr(), Issuer(web.Device), web.Key)
	require.NoError(t, err)
}

// Tamper is one way a pod's evidence deviates from the manifest, and the
// check that must reject it.
type Tamper struct {
	Name string
	// Intruder launches the pod with a policy the manifest does not list
	// (otherwise the web workload's).
	Intruder bool
	// Foreign issues the evidence under another simulated AMD root.
	Foreign bool
	// Mutate changes the pod's simulated device.
	Mutate func(*sim.SNPDeviceConfig)
	// Check is the attestation check that must reject the evidence; empty
	// for a rejection that is not one (Reason).
	Check attest.Check
	// Reason must appear in the rejection (the policy decision, or the
	// cause within Check).
	Reason string
}

// Tampers is the Coordinator's negative matrix: every deviation of
// workload evidence from the harness's manifest that the simulated SNP
// platform can produce, each with the check that rejects it.
func Tampers() []Tamper {
	return []Tamper{
		{Name: "unknown policy", Intruder: true, Reason: "unknown policy hash"},
		{Name: "foreign root", Foreign: true, Check: attest.CheckChain},
		{Name: "wrong measurement", Mutate: func(c *sim.SNPDeviceConfig) { c.Measurement[0] ^= 1 }, Check: attest.CheckMeasurement},
		{Name: "debug guest", Mutate: func(c *sim.SNPDeviceConfig) { c.Policy.Debug = true }, Check: attest.CheckDebug},
		{Name: "snp tcb below minimum", Mutate: func(c *sim.SNPDeviceConfig) { c.TCB.SnpSpl-- }, Check: attest.CheckTCB, Reason: "below the minimum"},
		{Name: "microcode below minimum", Mutate: func(c *sim.SNPDeviceConfig) { c.TCB.UcodeSpl-- }, Check: attest.CheckTCB, Reason: "below the minimum"},
		{Name: "vmpl 1", Mutate: func(c *sim.SNPDeviceConfig) { c.VMPL = 1 }, Check: attest.CheckVMPL},
		{Name: "tsme not allowed", Mutate: func(c *sim.SNPDeviceConfig) { c.PlatformInfo.TSMEEnabled = true }, Check: attest.CheckPlatformInfo},
		{Name: "no VCEK", Mutate: func(c *sim.SNPDeviceConfig) { c.OmitCertificates = true }, Check: attest.CheckChain},
		{Name: "migration agent", Mutate: func(c *sim.SNPDeviceConfig) { c.Policy.MigrateMA = true }, Check: attest.CheckReportFields, Reason: "migration agent"},
	}
}

var (
	foreignOnce sync.Once
	foreignAuth *sim.SNPAuthority
	foreignErr  error
)

// tamperedPod returns the pod of deployment d that tc describes.
func (h *Harness) tamperedPod(t testing.TB, d *Deployment, tc Tamper) *Pod {
	t.Helper()
	p := d.Web
	if tc.Intruder {
		p = NewPolicy("intruder")
	}
	if !tc.Foreign {
		return h.Pod(t, p, tc.Mutate)
	}
	foreignOnce.Do(func() { foreignAuth, foreignErr = sim.NewSNPAuthority() })
	require.NoError(t, foreignErr)
	cfg := h.Platform.Base
	cfg.HostData = p.Hash
	dev, err := foreignAuth.NewDevice(cfg)
	require.NoError(t, err)
	return &Pod{Device: dev, Key: OwnerKey()}
}

// RunEvidenceMatrix validates every tampered pod's evidence with the
// validators the Coordinator builds from the harness's manifest
// (manifest.Parse of its JSON, then Validators with opts, the options
// production uses): each is rejected by its check, and the untampered pod
// is accepted, so the configuration is not simply rejecting everything.
func RunEvidenceMatrix(t *testing.T, h *Harness, opts manifest.ValidatorOptions) {
	ctx := context.Background()
	d := NewDeployment(1)
	m, err := manifest.Parse(h.Request(d, nil).GetManifest())
	require.NoError(t, err)
	require.NoError(t, m.CheckEnforceable())
	validators, err := m.Validators(opts)
	require.NoError(t, err)
	var rd [64]byte
	rd[7] = 7
	validate := func(p *Pod) (*attest.Result, error) {
		ev, err := Issuer(p.Device).Issue(ctx, rd)
		require.NoError(t, err)
		return attest.ValidateAny(ctx, validators, ev, rd)
	}
	res, err := validate(h.Pod(t, d.Web, nil))
	require.NoError(t, err, "the untampered pod is accepted")
	_, _, known := m.Policy(res.PolicyDigest)
	require.True(t, known)
	for _, tc := range Tampers() {
		t.Run(tc.Name, func(t *testing.T) {
			res, err := validate(h.tamperedPod(t, d, tc))
			if tc.Check == "" {
				require.NoError(t, err, "not an attestation failure")
				_, _, known := m.Policy(res.PolicyDigest)
				require.False(t, known, "the policy decision rejects it")
				return
			}
			require.Error(t, err)
			got, ok := attest.FailedCheck(err)
			require.True(t, ok, "not a CheckError: %v", err)
			require.Equal(t, tc.Check, got, "error: %v", err)
			require.ErrorContains(t, err, tc.Reason)
		})
	}
}

// RunNegativeMatrix sets the harness's manifest on a running Coordinator
// and requests a mesh certificate for every tampered pod: each is denied
// (PermissionDenied) naming the check that rejected it, while the
// untampered pod gets its certificate.
func RunNegativeMatrix(t *testing.T, h *Harness) {
	ctx := context.Background()
	d := NewDeployment(1)
	c := h.Start(t)
	_, err := h.User(t, c, nil).SetManifest(ctx, h.Request(d, nil))
	require.NoError(t, err)
	web := h.Pod(t, d.Web, nil)
	_, err = NewMeshCert(ctx, c.MeshAddr(), Issuer(web.Device), web.Key)
	require.NoError(t, err, "the untampered pod gets a certificate")
	requireRejections(t, h, c, d)
}

// requireRejections runs the negative matrix against the running
// Coordinator c, whose manifest is h's for deployment d.
func requireRejections(t *testing.T, h *Harness, c *Running, d *Deployment) {
	t.Helper()
	ctx := context.Background()
	for _, tc := range Tampers() {
		t.Run(tc.Name, func(t *testing.T) {
			p := h.tamperedPod(t, d, tc)
			_, err := NewMeshCert(ctx, c.MeshAddr(), Issuer(p.Device), p.Key)
			// The mesh API names the check, not its cause (that stays in
			// the Coordinator's log); RunEvidenceMatrix asserts the cause.
			want := []string{fmt.Sprintf("attestation check %q failed", tc.Check)}
			if tc.Check == "" {
				hd := p.Device.Config().HostData
				want = []string{tc.Reason, hexOf(hd[:])}
			}
			RequireCode(t, err, codes.PermissionDenied, want...)
		})
	}
}
