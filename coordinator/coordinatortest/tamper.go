package coordinatortest

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
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
