package images

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
)

// PullSecretKeychain authenticates with the image pull secrets of a pod and
// its service account (kubernetes.io/dockerconfigjson or dockercfg).
type PullSecretKeychain struct {
	auths map[string]authn.AuthConfig
}

// NewPullSecretKeychain reads the given secrets; secrets of other types are
// ignored. Earlier secrets win for the same registry, as in the kubelet.
func NewPullSecretKeychain(secrets []corev1.Secret) (*PullSecretKeychain, error) {
	kc := &PullSecretKeychain{auths: map[string]authn.AuthConfig{}}
	for _, s := range secrets {
		var entries map[string]dockerAuth
		switch s.Type {
		case corev1.SecretTypeDockerConfigJson:
			var cfg struct {
				Auths map[string]dockerAuth `json:"auths"`
			}
			if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
				return nil, fmt.Errorf("pull secret %q: %w", s.Name, err)
			}
			entries = cfg.Auths
		case corev1.SecretTypeDockercfg:
			if err := json.Unmarshal(s.Data[corev1.DockerConfigKey], &entries); err != nil {
				return nil, fmt.Errorf("pull secret %q: %w", s.Name, err)
			}
		default:
			continue
		}
		for host, a := range entries {
			host = normalizeHost(host)
			if _, ok := kc.auths[host]; ok {
				continue
			}
			cfg := authn.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken}
			if a.Auth != "" && cfg.Username == "" {
				dec, err := base64.StdEncoding.DecodeString(a.Auth)
				if err != nil {
					return nil, fmt.Errorf("pull secret %q: registry %q: malformed auth", s.Name, host)
				}
				cfg.Username, cfg.Password, _ = strings.Cut(string(dec), ":")
			}
			kc.auths[host] = cfg
		}
	}
	return kc, nil
}

type dockerAuth struct {
	Username      string `json:"username"`
	Password      string `json:"password"`
	Auth          string `json:"auth"`
	IdentityToken string `json:"identitytoken"`
}

func normalizeHost(h string) string {
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	if h == "docker.io" || h == "registry-1.docker.io" {
		return "index.docker.io"
	}
	return h
}

// Resolve implements authn.Keychain.
func (k *PullSecretKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if a, ok := k.auths[normalizeHost(r.RegistryStr())]; ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}
