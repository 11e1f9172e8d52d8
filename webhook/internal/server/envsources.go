package server

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// ConfigMapReader returns an inject.EnvSourceFunc that reads the ConfigMaps
// a pod references with envFrom through the API server (RBAC: get
// configmaps), as they are at admission. Missing ConfigMaps are left out:
// the policy generator brings nothing for optional ones and denies the pod
// for the others. Errors name the ConfigMap, never its data.
func ConfigMapReader(client corev1client.CoreV1Interface) inject.EnvSourceFunc {
	return func(ctx context.Context, namespace string, names []string) (*policy.EnvSources, error) {
		out := &policy.EnvSources{ConfigMaps: map[string]*corev1.ConfigMap{}}
		for _, n := range names {
			cm, err := client.ConfigMaps(namespace).Get(ctx, n, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				continue
			case err != nil:
				return nil, fmt.Errorf("reading configMap %s/%s: %w", namespace, n, err)
			}
			out.ConfigMaps[n] = cm
		}
		return out, nil
	}
}
