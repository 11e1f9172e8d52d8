package images

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
)

// PullSecretKeychain authenticates with the image pull secrets of a pod and
// its service account (kubernetes.io/dockerconfigjson or dockercfg).
type PullSecretKeychain struct {
	auths     map[string]authn.AuthConfig
	malformed []string
}

// MalformedSecretError reports a pull secret that cannot be read. It names
// only the secret: the decoder's error could quote bytes of its content.
type MalformedSecretError struct {
	Secret string
}

func (e *MalformedSecretError) Error() string {
	return fmt.Sprintf("pull secret %q is malformed", e.Secret)
}

// NewPullSecretKeychain reads the given secrets; secrets of other types are
// ignored. Earlier secrets win for the same registry, as in the kubelet. A
// malformed secret (not JSON of the secret type's format, or an auth that is
// not base64) is skipped as a whole and listed by Malformed; the error is
// always nil and kept for compatibility.
func NewPullSecretKeychain(secrets []corev1.Secret) (*PullSecretKeychain, error) {
	kc := &PullSecretKeychain{auths: map[string]authn.AuthConfig{}}
	for _, s := range secrets {
		auths, ok, relevant := parsePullSecret(s)
		if !relevant {
			continue
		}
		if !ok {
			kc.malformed = append(kc.malformed, s.Name)
			continue
		}
		for _, a := range auths {
			if _, ok := kc.auths[a.host]; !ok {
				kc.auths[a.host] = a.cfg
			}
		}
	}
	return kc, nil
}

// Malformed returns the names of the secrets that were skipped because they
// are malformed, in the order given.
func (k *PullSecretKeychain) Malformed() []string { return slices.Clone(k.malformed) }

// MalformedErrors returns a *MalformedSecretError for every skipped secret.
func (k *PullSecretKeychain) MalformedErrors() []error {
	var errs []error
	for _, n := range k.malformed {
		errs = append(errs, &MalformedSecretError{Secret: n})
	}
	return errs
}

type hostAuth struct {
	host string
	cfg  authn.AuthConfig
}

// parsePullSecret returns the credentials of s, in a stable order (the
// secret's registries sorted), whether s could be read, and whether s is a
// pull secret at all. No error of the decoders leaves this function.
func parsePullSecret(s corev1.Secret) (auths []hostAuth, ok, relevant bool) {
	var entries map[string]dockerAuth
	switch s.Type {
	case corev1.SecretTypeDockerConfigJson:
		var cfg struct {
			Auths map[string]dockerAuth `json:"auths"`
		}
		if json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg) != nil {
			return nil, false, true
		}
		entries = cfg.Auths
	case corev1.SecretTypeDockercfg:
		if json.Unmarshal(s.Data[corev1.DockerConfigKey], &entries) != nil {
			return nil, false, true
		}
	default:
		return nil, false, false
	}
	for _, raw := range slices.Sorted(maps.Keys(entries)) {
		a := entries[raw]
		cfg := authn.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken}
		if a.Auth != "" && cfg.Username == "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, false, true
			}
			cfg.Username, cfg.Password, _ = strings.Cut(string(dec), ":")
		}
		auths = append(auths, hostAuth{host: normalizeHost(raw), cfg: cfg})
	}
	return auths, true, true
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

// NewPodKeychain returns the keychain for a pod's own images: its pull
// secrets first and, for registries they have nothing for, the webhook's own
// credentials (as the kubelet combines a pod's pull secrets with the node's
// credentials). A Registry uses its RegistryConfig.Keychain as the webhook's
// credentials, other Sources authn.DefaultKeychain. NewPodKeychain(nil) is
// nil: the webhook's credentials alone.
//
// Without it, a keychain given to a Registry replaces the webhook's
// credentials.
func NewPodKeychain(pullSecrets authn.Keychain) authn.Keychain {
	if pullSecrets == nil {
		return nil
	}
	return &podKeychain{pull: pullSecrets}
}

type podKeychain struct {
	pull authn.Keychain
}

// Resolve implements authn.Keychain.
func (k *podKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return authn.NewMultiKeychain(k.pull, authn.DefaultKeychain).Resolve(r)
}

// Resolve implements authn.Keychain.
func (k *PullSecretKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if a, ok := k.auths[normalizeHost(r.RegistryStr())]; ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}
