package images_test

import (
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
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

// staticKeychain gives user:pw for every registry.
type staticKeychain struct{ user, pw string }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: k.user, Password: k.pw}, nil
}

// privateRegistry serves a private image (plain HTTP, configured insecure)
// to the given users, who include "webhook", and returns its host and
// pinned reference.
func privateRegistry(t *testing.T, users map[string]string) (host, pinned string) {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || users[u] != p {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host = strings.TrimPrefix(srv.URL, "http://")
	img := imagestest.Build(t, imagestest.Spec{
		Config: v1.Config{Entrypoint: []string{"/app"}, User: "app"},
		Files:  map[string]string{"etc/passwd": "app:x:1001:1001::/:/bin/sh\n", "etc/group": "app:x:1001:\n"},
	})
	ref, err := name.ParseReference(host+"/acme/private:1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "webhook", Password: users["webhook"]})))
	d, err := img.Digest()
	require.NoError(t, err)
	return host, host + "/acme/private@" + d.String()
}

func keychainFor(t *testing.T, host, user, pw string) authn.Keychain {
	t.Helper()
	kc, err := images.NewPullSecretKeychain([]corev1.Secret{pullSecret("pull", corev1.SecretTypeDockerConfigJson,
		fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, host, user, pw))})
	require.NoError(t, err)
	return kc
}

// TestRegistryPodKeychain: a pod's pull secrets come first; for registries
// they have nothing for, the webhook's own credentials are used, as the
// kubelet adds the node's. A bare keychain still replaces them.
func TestRegistryPodKeychain(t *testing.T) {
	host, pinned := privateRegistry(t, map[string]string{"webhook": "webhook-pw", "alice": "alice-pw"})
	rec := &recorder{}
	src := images.NewRegistry(images.RegistryConfig{
		Insecure: []string{host},
		Keychain: staticKeychain{"webhook", "webhook-pw"},
		Observer: rec,
	})
	otherRegistry := keychainFor(t, "registry-a.example", "someone", "pw")

	// the webhook's credentials alone
	_, err := src.Resolve(t.Context(), pinned, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"manifest/miss", "config/miss"}, kindsAndResults(rec.take()))

	// pull secrets for another registry: they replace the webhook's
	// credentials unless combined with NewPodKeychain
	_, err = src.Resolve(t.Context(), pinned, otherRegistry)
	require.ErrorIs(t, err, images.ErrAccessDenied)
	rec.take()
	got, err := src.Resolve(t.Context(), pinned, images.NewPodKeychain(otherRegistry))
	require.NoError(t, err)
	// ... and then use exactly the webhook's credentials: its cache scope
	assert.Equal(t, []string{"manifest/hit", "config/hit"}, kindsAndResults(rec.take()))
	_, err = src.Accounts(t.Context(), got, images.NewPodKeychain(otherRegistry))
	require.NoError(t, err)
	assert.Equal(t, []string{"accounts/miss"}, kindsAndResults(rec.take()))
	_, err = src.Accounts(t.Context(), got, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"accounts/hit"}, kindsAndResults(rec.take()))

	// pull secrets for the registry come first, in a scope of their own
	_, err = src.Resolve(t.Context(), pinned, images.NewPodKeychain(keychainFor(t, host, "alice", "alice-pw")))
	require.NoError(t, err)
	assert.Equal(t, []string{"manifest/miss", "config/miss"}, kindsAndResults(rec.take()))
	// wrong ones are not rescued by the webhook's (authn.NewMultiKeychain
	// takes the first credentials found), and the cache does not answer
	_, err = src.Resolve(t.Context(), pinned, images.NewPodKeychain(keychainFor(t, host, "mallory", "guess")))
	require.ErrorIs(t, err, images.ErrAccessDenied)
	assert.Equal(t, []string{"manifest/error"}, kindsAndResults(rec.take()))

	assert.Nil(t, images.NewPodKeychain(nil))
}
