package server

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/contrast-cc/contrast/webhook/images"
)

// PullSecretKeychain returns a KeychainFunc that reads the pull secrets of
// the pod and of its service account, as the kubelet would use them. Missing
// secrets are skipped (the kubelet does the same).
func PullSecretKeychain(client corev1client.CoreV1Interface) KeychainFunc {
	return func(ctx context.Context, namespace string, pod *corev1.Pod) (authn.Keychain, error) {
		names := map[string]bool{}
		var order []string
		add := func(refs []corev1.LocalObjectReference) {
			for _, r := range refs {
				if r.Name != "" && !names[r.Name] {
					names[r.Name] = true
					order = append(order, r.Name)
				}
			}
		}
		add(pod.Spec.ImagePullSecrets)
		sa := pod.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		acct, err := client.ServiceAccounts(namespace).Get(ctx, sa, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("reading service account %s/%s: %w", namespace, sa, err)
		default:
			add(acct.ImagePullSecrets)
		}
		if len(order) == 0 {
			return nil, nil //nolint:nilnil // no credentials: anonymous access
		}
		var secrets []corev1.Secret
		for _, n := range order {
			s, err := client.Secrets(namespace).Get(ctx, n, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				continue
			case err != nil:
				return nil, fmt.Errorf("reading pull secret %s/%s: %w", namespace, n, err)
			}
			secrets = append(secrets, *s)
		}
		if len(secrets) == 0 {
			return nil, nil //nolint:nilnil // no credentials: anonymous access
		}
		kc, err := images.NewPullSecretKeychain(secrets)
		if err != nil {
			return nil, fmt.Errorf("pull secrets of pod: %w", err)
		}
		return kc, nil
	}
}
