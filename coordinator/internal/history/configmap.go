package history

import (
	"bytes"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// ConfigMap naming. A blob is the ConfigMap
// `contrast-history-<kind>-<hash>` with its bytes in binaryData["data"];
// the latest pointer is `contrast-history-latest`, swapped with the
// resourceVersion precondition of the API server.
const (
	configMapPrefix = "contrast-history-"
	latestName      = configMapPrefix + "latest"
	dataKey         = "data"
	// LabelKey marks every history ConfigMap (for RBAC-scoped listing and cleanup).
	LabelKey = "contrast.cc/history"
)

// ConfigMapStore stores the history in ConfigMaps of one namespace.
type ConfigMapStore struct {
	client    kubernetes.Interface
	namespace string
}

// NewConfigMapStore returns a store in namespace.
func NewConfigMapStore(client kubernetes.Interface, namespace string) *ConfigMapStore {
	return &ConfigMapStore{client: client, namespace: namespace}
}

func blobName(kind Kind, hash string) string {
	return configMapPrefix + string(kind) + "-" + hash
}

func (s *ConfigMapStore) get(ctx context.Context, name string) (*corev1.ConfigMap, error) {
	cm, err := s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("getting ConfigMap %s/%s: %w", s.namespace, name, err)
	}
	return cm, nil
}

// GetBlob implements Store.
func (s *ConfigMapStore) GetBlob(ctx context.Context, kind Kind, hash string) ([]byte, error) {
	cm, err := s.get(ctx, blobName(kind, hash))
	if err != nil {
		return nil, err
	}
	b, ok := cm.BinaryData[dataKey]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s has no %q: %w", cm.Name, dataKey, ErrNotFound)
	}
	return b, nil
}

func (s *ConfigMapStore) configMap(name, kind string, data []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: s.namespace,
			Labels: map[string]string{LabelKey: kind, "app.kubernetes.io/managed-by": "contrast-coordinator"},
		},
		BinaryData: map[string][]byte{dataKey: data},
		Immutable:  ptr(kind != "latest"),
	}
}

func ptr[T any](v T) *T { return &v }

// PutBlob implements Store. If the ConfigMap exists already, its content is
// read back and must equal data: anyone who can create ConfigMaps in the
// namespace can squat a content address, and accepting the squatted blob
// would let SetManifest succeed with a history that no read can verify.
// A matching blob that is not immutable is made immutable.
func (s *ConfigMapStore) PutBlob(ctx context.Context, kind Kind, hash string, data []byte) error {
	name := blobName(kind, hash)
	cms := s.client.CoreV1().ConfigMaps(s.namespace)
	_, err := cms.Create(ctx, s.configMap(name, string(kind), data), metav1.CreateOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ConfigMap for %s %s: %w", kind, hash, err)
	}
	existing, err := s.get(ctx, name)
	if err != nil {
		return fmt.Errorf("reading back existing ConfigMap for %s %s: %w", kind, hash, err)
	}
	if got, ok := existing.BinaryData[dataKey]; !ok || !bytes.Equal(got, data) || len(existing.Data) != 0 || len(existing.BinaryData) != 1 {
		return fmt.Errorf("%w: ConfigMap %s/%s exists with other content than the %s it is named after", ErrCorrupt, s.namespace, name, kind)
	}
	if existing.Immutable != nil && *existing.Immutable {
		return nil
	}
	// Same content but mutable (not created by a Coordinator): freeze it,
	// under the resourceVersion just read, so it cannot change later.
	existing.Immutable = ptr(true)
	if _, err := cms.Update(ctx, existing, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("making existing ConfigMap %s/%s immutable: %w", s.namespace, name, err)
	}
	return nil
}

// HasBlobs implements Store: it lists ConfigMaps by the history label.
func (s *ConfigMapStore) HasBlobs(ctx context.Context, kinds ...Kind) (bool, error) {
	if len(kinds) == 0 {
		return false, nil
	}
	values := make([]string, len(kinds))
	for i, k := range kinds {
		values[i] = string(k)
	}
	req, err := labels.NewRequirement(LabelKey, selection.In, values)
	if err != nil {
		return false, fmt.Errorf("history label selector: %w", err)
	}
	list, err := s.client.CoreV1().ConfigMaps(s.namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.NewSelector().Add(*req).String(),
		Limit:         1,
	})
	if err != nil {
		return false, fmt.Errorf("listing history ConfigMaps in %s: %w", s.namespace, err)
	}
	return len(list.Items) > 0, nil
}

// GetLatest implements Store.
func (s *ConfigMapStore) GetLatest(ctx context.Context) ([]byte, string, error) {
	cm, err := s.get(ctx, latestName)
	if err != nil {
		return nil, "", err
	}
	b, ok := cm.BinaryData[dataKey]
	if !ok {
		return nil, "", fmt.Errorf("ConfigMap %s has no %q: %w", latestName, dataKey, ErrNotFound)
	}
	return b, cm.ResourceVersion, nil
}

// SwapLatest implements Store with the API server's optimistic concurrency:
// create when oldVersion is "", otherwise update with resourceVersion
// oldVersion; a conflict (409) becomes ErrConflict.
func (s *ConfigMapStore) SwapLatest(ctx context.Context, oldVersion string, data []byte) (string, error) {
	cms := s.client.CoreV1().ConfigMaps(s.namespace)
	cm := s.configMap(latestName, "latest", data)
	var out *corev1.ConfigMap
	var err error
	if oldVersion == "" {
		out, err = cms.Create(ctx, cm, metav1.CreateOptions{})
	} else {
		cm.ResourceVersion = oldVersion
		out, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	switch {
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err), oldVersion != "" && apierrors.IsNotFound(err):
		return "", fmt.Errorf("%w: %w", ErrConflict, err)
	case err != nil:
		return "", fmt.Errorf("writing ConfigMap %s: %w", latestName, err)
	}
	return out.ResourceVersion, nil
}

// WatchLatest implements Store with a watch on the latest ConfigMap (field
// selector on its name). Every event, and every (re)start of the watch,
// calls changed; a failed watch is retried with backoff up to 5 s. The
// API server ends a watch after its timeout; it is then re-established.
func (s *ConfigMapStore) WatchLatest(ctx context.Context, changed func()) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		timeout := int64(300)
		w, err := s.client.CoreV1().ConfigMaps(s.namespace).Watch(ctx, metav1.ListOptions{
			FieldSelector:  "metadata.name=" + latestName,
			TimeoutSeconds: &timeout,
		})
		// Events between the previous watch and this one may be lost.
		changed()
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		drainWatch(ctx, w, changed)
		w.Stop()
	}
}

// drainWatch calls changed for every event until the watch ends or ctx is done.
func drainWatch(ctx context.Context, w watch.Interface, changed func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-w.ResultChan():
			if !ok {
				return
			}
			changed()
		}
	}
}

var _ Store = (*ConfigMapStore)(nil)
