package integration_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/contrast-cc/contrast/integration/cluster"
	"github.com/contrast-cc/contrast/webhook/images/imagestest"
	"github.com/contrast-cc/contrast/webhook/inject"
	"github.com/contrast-cc/contrast/webhook/inject/injecttest"
	"github.com/contrast-cc/contrast/webhook/inject/webhooktest"
	"github.com/contrast-cc/contrast/webhook/policy"
	"github.com/contrast-cc/contrast/webhook/shareddata"
)

// corpusWorkload is a pod template of the corpus.
type corpusWorkload struct {
	dir string
	w   policy.Workload
}

func (c corpusWorkload) key() string { return c.dir + "/" + c.w.Kind + "/" + c.w.Name }

// corpusDenial is why a pod template of the corpus stays denied: the
// denial's field and a part of its reason, the same on both sides.
type corpusDenial struct {
	field, reason, why string
}

// digestPinned is the reason for pods with an image pinned by digest: a
// stand-in cannot have the published image's digest, and the image source
// checks every manifest against the digest it asked for (go-containerregistry),
// so the stand-in cannot be served under that name; the denial is the image
// one, naming the container.
const digestPinned = "image pinned by digest: a stand-in cannot have that digest, and manifests are verified against it"

// corpusDenials are the pod templates of the corpus that stay denied.
var corpusDenials = map[string]corpusDenial{
	"ingress-nginx/Deployment/ingress-nginx-controller": {field: "spec.containers[0].image", reason: "cannot be resolved", why: digestPinned},
	"ingress-nginx/Job/ingress-nginx-admission-create":  {field: "spec.containers[0].image", reason: "cannot be resolved", why: digestPinned},
	"ingress-nginx/Job/ingress-nginx-admission-patch":   {field: "spec.containers[0].image", reason: "cannot be resolved", why: digestPinned},
	"online-boutique/Deployment/loadgenerator":          {field: "spec.initContainers[0].image", reason: "cannot be resolved", why: digestPinned},
}

// readCorpus decodes every workload of ../shared/workloads-real/* and
// ../shared/workloads/emojivoto, by folder name, with the ConfigMaps of the
// folder's files (as contrast generate reads a folder). Workloads without
// a namespace get the folder's name (contrast generate -n <folder>).
func readCorpus(t *testing.T) (map[string][]string, []corpusWorkload) {
	t.Helper()
	dirs := map[string]string{"emojivoto": shareddata.Dir(t, shareddata.Emojivoto)}
	real := shareddata.Dir(t, shareddata.RealWorld)
	entries, err := os.ReadDir(real)
	require.NoError(t, err)
	for _, e := range entries {
		if e.IsDir() {
			dirs[e.Name()] = filepath.Join(real, e.Name())
		}
	}
	require.Len(t, dirs, 11, "emojivoto and ten published workloads")
	files := map[string][]string{}
	var out []corpusWorkload
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		var all []byte
		for _, pattern := range []string{"*.yaml", "*.yml"} {
			m, err := filepath.Glob(filepath.Join(dirs[d], pattern))
			require.NoError(t, err)
			for _, f := range m {
				if filepath.Base(f) == "kustomization.yml" {
					continue // not a Kubernetes object
				}
				files[d] = append(files[d], f)
				b, err := os.ReadFile(f)
				require.NoError(t, err)
				all = append(append(all, b...), "\n---\n"...)
			}
		}
		ws, err := policy.DecodeWorkloads(all)
		require.NoError(t, err, d)
		for _, w := range ws {
			if w.Namespace == "" {
				w.Namespace = d
			}
			w.EnvSources, err = policy.DecodeEnvSources(all, w.Namespace)
			require.NoError(t, err)
			out = append(out, corpusWorkload{dir: d, w: w})
		}
	}
	return files, out
}

// standIns are stand-in images under the names of the corpus's images,
// each with an ENTRYPOINT as the real ones have, and the registry hosts they
// are reached through.
func standIns(t *testing.T, ws []corpusWorkload) (map[string]imagestest.Spec, []string) {
	t.Helper()
	specs := map[string]imagestest.Spec{}
	hosts := map[string]bool{}
	for _, cw := range ws {
		spec := cw.w.Template.Spec
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			ref := c.Image
			if i := strings.Index(ref, "@"); i >= 0 {
				ref = ref[:i] // served by tag; the digest cannot be matched
			}
			tag, err := name.NewTag(ref)
			require.NoError(t, err, c.Image)
			host := tag.RegistryStr()
			if host == name.DefaultRegistry {
				host = "docker.io"
			}
			hosts[host] = true
			bin := path.Base(tag.RepositoryStr())
			specs[tag.RepositoryStr()+":"+tag.TagStr()] = imagestest.Spec{
				Config: v1.Config{
					Entrypoint: []string{"/usr/local/bin/" + bin},
					Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
				},
				Files: map[string]string{"usr/local/bin/" + bin: bin},
			}
		}
	}
	return specs, slices.Sorted(maps.Keys(hosts))
}

// TestRealWorldCorpus applies every workload of ../shared/workloads-real
// and ../shared/workloads/emojivoto, unmodified, with kubectl apply to
// opted-in namespaces of the real control plane, with the in-process
// webhook registered (pods and StatefulSets, as the chart does) and
// stand-in images under the same names. A StatefulSet's stored claim
// templates ask for volumeMode Block exactly where contrast generate's do.
// Every pod
// the controllers create is admitted with the hash that the YAML side
// (contrast generate's mutation of the unmodified template) computes; the
// templates in corpusDenials stay denied, on both sides with the same field
// and reason, and the test says why.
//
// The CronJob's pod is created with `kubectl create job --from=cronjob/...`
// under the name the CronJob controller would give it (its schedule is
// hourly); a Node object lets the DaemonSet controller create its pod.
func TestRealWorldCorpus(t *testing.T) {
	files, corpus := readCorpus(t)
	require.Len(t, corpus, 36, "pod templates of the corpus")
	specs, hosts := standIns(t, corpus)
	imgs := injecttest.ServeWith(t, specs, hosts)

	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	wh := webhooktest.Start(t, webhooktest.Config{Images: imgs})
	createRuntimeClass(ctx, t, c)
	registerWebhook(ctx, t, c, wh.URL, wh.CABundle)
	registerStatefulSetWebhook(ctx, t, c, wh.StatefulSetURL, wh.CABundle)
	_, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	namespaces := map[string]bool{}
	for _, cw := range corpus {
		namespaces[cw.w.Namespace] = true
	}
	for ns := range namespaces {
		createOptedInNamespace(ctx, t, c, ns)
	}
	for _, d := range slices.Sorted(maps.Keys(files)) {
		// the namespace of the folder's workloads (the documents' own, or
		// the folder's name for documents without one)
		ns := corpusNamespace(t, corpus, d)
		args := []string{"apply", "-n", ns}
		for _, f := range files[d] {
			args = append(args, "-f", f)
		}
		c.Kubectl(t, args...)
	}
	for _, cw := range corpus {
		if cw.w.Kind == policy.KindCronJob {
			// the name the CronJob controller gives the Job of a schedule
			c.Kubectl(t, "create", "job", "-n", cw.w.Namespace, cw.w.Name+"-29461757", "--from=cronjob/"+cw.w.Name)
		}
	}

	admitted := 0
	var stillDenied []string
	for _, cw := range corpus {
		t.Run(cw.key(), func(t *testing.T) {
			yamlSide := cw.w
			yamlSide.Template = *cw.w.Template.DeepCopy()
			want, yamlErr := wh.Mutator.MutateWorkload(ctx, &yamlSide, nil)

			if d, ok := corpusDenials[cw.key()]; ok {
				var de *inject.DenyError
				require.ErrorAs(t, yamlErr, &de, "YAML side")
				assert.Equal(t, d.field, de.Field, "YAML side")
				assert.Contains(t, de.Error(), d.reason, "YAML side")
				msg := waitForDenial(ctx, t, c, cw.w)
				assert.Contains(t, msg, d.field+": ", "webhook side")
				assert.Contains(t, msg, d.reason, "webhook side")
				stillDenied = append(stillDenied, fmt.Sprintf("%s: %s (%s)", cw.key(), de.Error(), d.why))
				return
			}
			require.NoError(t, yamlErr, "YAML side")
			pod := waitForPodOf(ctx, t, c, cw.w)
			assert.Equal(t, inject.DefaultRuntimeClassName, *pod.Spec.RuntimeClassName)
			assert.Equal(t, want.Annotations[policy.AnnotationPolicyHash], pod.Annotations[policy.AnnotationPolicyHash],
				"the admitted pod's policy hash must equal the YAML side's")
			if generated, ok := yamlSide.Object.(*appsv1.StatefulSet); ok {
				// the webhook's claim templates are the ones contrast generate writes
				stored, err := c.Client.AppsV1().StatefulSets(cw.w.Namespace).Get(ctx, cw.w.Name, metav1.GetOptions{})
				require.NoError(t, err)
				require.Len(t, stored.Spec.VolumeClaimTemplates, len(generated.Spec.VolumeClaimTemplates))
				for i, g := range generated.Spec.VolumeClaimTemplates {
					block := ptr.Deref(g.Spec.VolumeMode, "") == corev1.PersistentVolumeBlock
					assert.Equal(t, block, ptr.Deref(stored.Spec.VolumeClaimTemplates[i].Spec.VolumeMode, "") == corev1.PersistentVolumeBlock,
						"claim template %s: Block as contrast generate writes it", g.Name)
				}
			}
			admitted++
		})
	}
	t.Logf("admitted %d of %d pod templates; still denied:\n%s", admitted, len(corpus), strings.Join(stillDenied, "\n"))
	assert.Equal(t, len(corpus)-len(corpusDenials), admitted)
}

// waitForDenial waits for the event of a controller of w that failed to
// create a pod, and returns its message.
func waitForDenial(ctx context.Context, t *testing.T, c *cluster.Cluster, w policy.Workload) string {
	t.Helper()
	var msg string
	err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		events, err := c.Client.CoreV1().Events(w.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.Reason == "FailedCreate" && strings.HasPrefix(e.InvolvedObject.Name, w.Name) && strings.Contains(e.Message, "denied the request") {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "waiting for the denial of %s %s", w.Kind, w.Name)
	return msg
}
