package inject

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/contrast-cc/contrast/attest"
	"github.com/contrast-cc/contrast/webhook/images"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/policy"
)

// webhookCreds is the webhook's own keychain in these tests.
type webhookCreds struct{}

func (webhookCreds) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: "webhook", Password: "webhook-pw"}, nil
}

// credentialsSetup is a private registry only the webhook's credentials
// open, holding the Contrast images (as contrast.example/...) and
// acme/agent:2 (as private.example/...), and a public one holding
// acme/agent:2 (as registry.example/...).
type credentialsSetup struct {
	privateHost string
	mutator     *Mutator
	logs        *bytes.Buffer
}

func newCredentialsSetup(t *testing.T) *credentialsSetup {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "webhook" || p != "webhook-pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	private := strings.TrimPrefix(srv.URL, "http://")
	// only what the tests use: the catalog's large images take long to build
	// under the race detector
	agent := map[string]imagestest.Spec{"acme/agent:2": imagestest.Catalog["acme/agent:2"]}
	catalog := maps.Clone(injecttest.ContrastImages)
	maps.Copy(catalog, agent)
	for repoTag, spec := range catalog {
		ref, err := name.ParseReference(private+"/"+repoTag, name.Insecure)
		require.NoError(t, err)
		require.NoError(t, remote.Write(ref, imagestest.Build(t, spec), remote.WithAuthFromKeychain(webhookCreds{})))
	}
	public := imagestest.Serve(t)
	for repoTag, spec := range agent {
		imagestest.Push(t, public.Host, repoTag, imagestest.Build(t, spec))
	}

	var logs bytes.Buffer
	src := images.NewRegistry(images.RegistryConfig{
		Mirrors: map[string][]images.Mirror{
			"contrast.example": {{Host: private, Insecure: true}},
			"private.example":  {{Host: private, Insecure: true}},
			"registry.example": {{Host: public.Host, Insecure: true}},
		},
		SkipOrigin: []string{"contrast.example", "private.example", "registry.example"},
		Keychain:   webhookCreds{},
	})
	pin := func(image string) string {
		img, err := src.Resolve(t.Context(), image, nil)
		require.NoError(t, err)
		return img.Reference()
	}
	cfg := Config{
		InitializerImage:           pin("contrast.example/contrast/initializer:test"),
		ProxyImage:                 pin("contrast.example/contrast/mesh-proxy:test"),
		CoordinatorAddress:         "coordinator:7777",
		Platform:                   attest.PlatformSNP,
		CoordinatorPolicyHashes:    [][]byte{injecttest.CoordinatorPolicyHash},
		CoordinatorReferenceValues: injecttest.CoordinatorReferenceValues(),
	}
	require.NoError(t, cfg.Validate())
	return &credentialsSetup{
		privateHost: private,
		mutator:     &Mutator{Config: cfg, Images: src, Logger: slog.New(slog.NewTextHandler(&logs, nil))},
		logs:        &logs,
	}
}

func pullSecrets(t *testing.T, secrets ...corev1.Secret) authn.Keychain {
	t.Helper()
	kc, err := images.NewPullSecretKeychain(secrets)
	require.NoError(t, err)
	return kc
}

func dockerConfig(name, host, user, pw string) corev1.Secret {
	return corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: fmt.Appendf(nil, `{"auths":{%q:{"username":%q,"password":%q}}}`, host, user, pw)},
	}
}

func podWithImage(image string) *corev1.Pod {
	pod := basePod()
	for i := range pod.Spec.Containers {
		pod.Spec.Containers[i].Image = image
	}
	return pod
}

// TestMutatePodCredentials: the injected images are resolved with the
// webhook's own credentials, the pod's images with its pull secrets and then
// the webhook's, as the kubelet combines pod and node credentials.
func TestMutatePodCredentials(t *testing.T) {
	s := newCredentialsSetup(t)
	m := s.mutator
	otherRegistry := pullSecrets(t, dockerConfig("registry-a", "registry-a.example", "someone", "pw"))
	wrongForPrivate := pullSecrets(t, dockerConfig("stale", s.privateHost, "mallory", "guess"))

	t.Run("pull secrets for another registry", func(t *testing.T) {
		// both the Contrast images and the pod's own need the webhook's
		// credentials
		out, _, err := m.MutatePod(t.Context(), podWithImage("private.example/acme/agent:2"), otherRegistry)
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(out.Spec.InitContainers[0].Image, "contrast.example/contrast/initializer@sha256:"))
		assert.True(t, strings.HasPrefix(out.Spec.Containers[0].Image, "private.example/acme/agent@sha256:"))

		w := workloadOf(podWithImage("private.example/acme/agent:2"))
		_, err = m.MutateWorkload(t.Context(), w, otherRegistry)
		require.NoError(t, err)
	})
	t.Run("pull secrets for the Contrast registry do not apply to Contrast's images", func(t *testing.T) {
		_, _, err := m.MutatePod(t.Context(), podWithImage("registry.example/acme/agent:2"), wrongForPrivate)
		require.NoError(t, err)
		w := workloadOf(podWithImage("registry.example/acme/agent:2"))
		_, err = m.MutateWorkload(t.Context(), w, wrongForPrivate)
		require.NoError(t, err)
	})
	t.Run("the pod's own pull secrets come first", func(t *testing.T) {
		_, _, err := m.MutatePod(t.Context(), podWithImage("private.example/acme/agent:2"), wrongForPrivate)
		require.ErrorIs(t, err, ErrDenied)
		require.ErrorIs(t, err, images.ErrAccessDenied)
		var de *DenyError
		require.ErrorAs(t, err, &de)
		assert.Contains(t, []string{"spec.containers[0].image", "spec.containers[1].image"}, de.Field, "not an injected container")
	})
	t.Run("no pull secrets", func(t *testing.T) {
		_, _, err := m.MutatePod(t.Context(), podWithImage("private.example/acme/agent:2"), nil)
		require.NoError(t, err)
	})
}

func workloadOf(pod *corev1.Pod) *policy.Workload {
	return &policy.Workload{Kind: policy.KindPod, Name: pod.Name, Namespace: pod.Namespace,
		Template: corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}}
}

// TestMutatePodMalformedPullSecret: a malformed pull secret is skipped, not
// an error of the webhook; it is logged and named in image denials, never
// quoted.
func TestMutatePodMalformedPullSecret(t *testing.T) {
	const token = "ghp_MALFORMEDtoken0815" //nolint:gosec // G101: a marker, not a credential
	s := newCredentialsSetup(t)
	bad := corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "broken"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"x":{"password":` + token + `}}}`)},
	}
	kc := pullSecrets(t, bad, dockerConfig("ok", "registry-a.example", "someone", "pw"))

	_, _, err := s.mutator.MutatePod(t.Context(), podWithImage("registry.example/acme/agent:2"), kc)
	require.NoError(t, err)
	assert.Contains(t, s.logs.String(), "skipping malformed pull secrets")
	assert.Contains(t, s.logs.String(), "broken")
	assert.NotContains(t, s.logs.String(), token)

	_, _, err = s.mutator.MutatePod(t.Context(), podWithImage("registry.example/acme/missing:1"), kc)
	require.ErrorIs(t, err, ErrDenied)
	assert.Contains(t, err.Error(), `malformed pull secrets were skipped: "broken"`)
	assert.NotContains(t, err.Error(), token)
}

// TestPolicyCacheKeepsCredentialChecks: a policy cached for a pod whose
// images could be pulled is not served to the same pod with pull secrets
// that are refused: the images are pinned with each pod's own credentials
// before the cache is consulted.
func TestPolicyCacheKeepsCredentialChecks(t *testing.T) {
	s := newCredentialsSetup(t)
	m := s.mutator
	m.Policies = policy.NewCache(policy.CacheConfig{})
	wrongForPrivate := pullSecrets(t, dockerConfig("stale", s.privateHost, "mallory", "guess"))

	_, _, err := m.MutatePod(t.Context(), podWithImage("private.example/acme/agent:2"), nil)
	require.NoError(t, err)
	_, _, err = m.MutatePod(t.Context(), podWithImage("private.example/acme/agent:2"), nil)
	require.NoError(t, err)
	n, _ := m.Policies.Len()
	require.Equal(t, 1, n, "the policy is cached")

	_, _, err = m.MutatePod(t.Context(), podWithImage("private.example/acme/agent:2"), wrongForPrivate)
	require.ErrorIs(t, err, images.ErrAccessDenied)
	var de *DenyError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, DenyImage, de.Code)
	assert.Contains(t, []string{"spec.containers[0].image", "spec.containers[1].image"}, de.Field)
}
