package images_test

import (
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/webhook/images"
)

// leakedToken stands for credential bytes in a malformed pull secret; no
// error may quote it.
const leakedToken = "ghp_Zq9LEAKEDtoken4711" //nolint:gosec // G101: a marker, not a credential

func pullSecret(name string, typ corev1.SecretType, data string) corev1.Secret {
	key := corev1.DockerConfigJsonKey
	if typ == corev1.SecretTypeDockercfg {
		key = corev1.DockerConfigKey
	}
	return corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: typ, Data: map[string][]byte{key: []byte(data)}}
}

func authFor(t *testing.T, kc authn.Keychain, image string) *authn.AuthConfig {
	t.Helper()
	ref, err := name.ParseReference(image)
	require.NoError(t, err)
	a, err := kc.Resolve(ref.Context())
	require.NoError(t, err)
	cfg, err := a.Authorization()
	require.NoError(t, err)
	return cfg
}

// TestPullSecretKeychainMalformed: a malformed pull secret is skipped, as a
// whole, and reported by name only; the other secrets still authenticate.
func TestPullSecretKeychainMalformed(t *testing.T) {
	good := pullSecret("good", corev1.SecretTypeDockerConfigJson,
		`{"auths":{"https://registry.example/v1/":{"username":"u","password":"p"}}}`)
	for name, bad := range map[string]corev1.Secret{
		"truncated JSON":              pullSecret("bad", corev1.SecretTypeDockerConfigJson, `{"auths":{"registry.example":{"auth":"`+leakedToken),
		"syntax error at the token":   pullSecret("bad", corev1.SecretTypeDockerConfigJson, `{"auths":{"registry.example":{"password":`+leakedToken+`}}}`),
		"wrong type quoting a number": pullSecret("bad", corev1.SecretTypeDockerConfigJson, `{"auths":{"registry.example":{"password":4711`+fmt.Sprint(len(leakedToken))+`}}}`),
		"auths not an object":         pullSecret("bad", corev1.SecretTypeDockerConfigJson, `{"auths":"`+leakedToken+`"}`),
		"auth not base64":             pullSecret("bad", corev1.SecretTypeDockerConfigJson, `{"auths":{"other.example":{"auth":"`+leakedToken+`!!"}}}`),
		"dockercfg":                   pullSecret("bad", corev1.SecretTypeDockercfg, `["`+leakedToken+`"]`),
		"missing key":                 {ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Type: corev1.SecretTypeDockerConfigJson},
	} {
		t.Run(name, func(t *testing.T) {
			// before and after the good secret: neither order fails
			for _, secrets := range [][]corev1.Secret{{bad, good}, {good, bad}} {
				kc, err := images.NewPullSecretKeychain(secrets)
				require.NoError(t, err)
				assert.Equal(t, []string{"bad"}, kc.Malformed())
				errs := kc.MalformedErrors()
				require.Len(t, errs, 1)
				assert.Equal(t, `pull secret "bad" is malformed`, errs[0].Error())
				var me *images.MalformedSecretError
				require.ErrorAs(t, errs[0], &me)
				assert.Equal(t, "bad", me.Secret)

				assert.Equal(t, &authn.AuthConfig{Username: "u", Password: "p"}, authFor(t, kc, "registry.example/acme/app:1"))
				// nothing of the malformed secret is used
				assert.Equal(t, &authn.AuthConfig{}, authFor(t, kc, "other.example/acme/app:1"))
			}
		})
	}
}

func TestPullSecretKeychain(t *testing.T) {
	auth := base64.StdEncoding.EncodeToString([]byte("alice:pw:with:colons"))
	kc, err := images.NewPullSecretKeychain([]corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "opaque"}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"x": []byte("not a pull secret")}},
		pullSecret("first", corev1.SecretTypeDockerConfigJson, `{"auths":{"docker.io":{"auth":"`+auth+`"}}}`),
		pullSecret("second", corev1.SecretTypeDockercfg, `{"index.docker.io":{"username":"bob","password":"x"},"quay.io":{"identitytoken":"tok"}}`),
	})
	require.NoError(t, err)
	assert.Empty(t, kc.Malformed(), "secrets of other types are not pull secrets")
	assert.Equal(t, &authn.AuthConfig{Username: "alice", Password: "pw:with:colons"}, authFor(t, kc, "library/busybox:1"))
	assert.Equal(t, &authn.AuthConfig{IdentityToken: "tok"}, authFor(t, kc, "quay.io/acme/app:1"))
}
