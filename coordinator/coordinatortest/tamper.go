package coordinatortest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	userpb "github.com/contrast-cc/contrast/coordinator/api/userapi"
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
	return m["ReferenceValues"].(map[string]any)["snp"].([]any)[i].(map[string]any) //nolint:forcetypeassert // the harness's own manifest
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
