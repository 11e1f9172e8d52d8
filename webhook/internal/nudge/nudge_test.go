package nudge

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

const ns, name = "contrast-system", "contrast-coordinator"

func statefulSet(want, have int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{"meta.helm.sh/release-name": "contrast"}},
		Spec:       appsv1.StatefulSetSpec{Replicas: ptr.To(want)},
		Status:     appsv1.StatefulSetStatus{Replicas: have},
	}
}

// controller stands in for the StatefulSet controller: after the
// createAfter-th patch it "creates" the missing pods (status.replicas).
type controller struct {
	mu          sync.Mutex
	patches     []string
	createAfter int
}

func (c *controller) react(client *fake.Clientset) {
	client.PrependReactor("patch", "statefulsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		pa := a.(k8stesting.PatchAction)
		c.patches = append(c.patches, string(pa.GetPatch()))
		if len(c.patches) == c.createAfter {
			obj, err := client.Tracker().Get(appsv1.SchemeGroupVersion.WithResource("statefulsets"), ns, name)
			if err != nil {
				return true, nil, err
			}
			st := obj.(*appsv1.StatefulSet)
			st.Status.Replicas = *st.Spec.Replicas
			if err := client.Tracker().Update(appsv1.SchemeGroupVersion.WithResource("statefulsets"), st, ns); err != nil {
				return true, nil, err
			}
		}
		return false, nil, nil // the tracker applies the patch
	})
}

func (c *controller) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.patches)
}

func run(t *testing.T, client *fake.Clientset, ready func(context.Context) error, timeout time.Duration) {
	t.Helper()
	now := time.Date(2026, 12, 3, 20, 0, 0, 0, time.UTC)
	done := make(chan error, 1)
	go func() {
		done <- Run(t.Context(), Config{
			StatefulSets: client.AppsV1().StatefulSets(ns), Name: name, Ready: ready,
			Interval: time.Millisecond, Timeout: timeout, Now: func() time.Time { return now },
		})
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

func TestRunNudgesUntilThePodsExist(t *testing.T) {
	client := fake.NewClientset(statefulSet(3, 0))
	c := &controller{createAfter: 3}
	c.react(client)
	run(t, client, nil, time.Minute)

	require.Equal(t, 3, c.count(), "nudged until the controller created the pods, then stopped")
	for _, p := range c.patches {
		assert.JSONEq(t, `{"metadata":{"annotations":{"contrast.cc/webhook-nudged":"2026-12-03T20:00:00Z"}}}`, p)
	}
	st, err := client.AppsV1().StatefulSets(ns).Get(t.Context(), name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"meta.helm.sh/release-name": "contrast", AnnotationNudged: "2026-12-03T20:00:00Z"}, st.Annotations,
		"only the annotation is added")
}

func TestRunWaitsForReadiness(t *testing.T) {
	client := fake.NewClientset(statefulSet(1, 0))
	c := &controller{createAfter: 1}
	c.react(client)
	var mu sync.Mutex
	calls := 0
	ready := func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls < 5 {
			assert.Zero(t, c.count(), "no nudge before the webhook is ready")
			return errors.New("webhook CA added to the caBundle: waiting")
		}
		return nil
	}
	run(t, client, ready, time.Minute)
	assert.Equal(t, 1, c.count())
	assert.Equal(t, 6, calls, "four times not ready, then one nudge, then the pods are seen")
}

func TestRunLeavesAloneWhatNeedsNoNudge(t *testing.T) {
	for n, objs := range map[string][]runtime.Object{
		"all pods exist":        {statefulSet(3, 3)},
		"more pods than wanted": {statefulSet(1, 2)},
	} {
		t.Run(n, func(t *testing.T) {
			client := fake.NewClientset(objs...)
			c := &controller{}
			c.react(client)
			run(t, client, nil, time.Minute)
			assert.Zero(t, c.count())
		})
	}
}

func TestRunWaitsForTheStatefulSet(t *testing.T) {
	// Helm creates the webhook's Deployment before the StatefulSet
	client := fake.NewClientset()
	c := &controller{createAfter: 1}
	c.react(client)
	var mu sync.Mutex
	gets := 0
	client.PrependReactor("get", "statefulsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if gets++; gets == 3 {
			require.NoError(t, client.Tracker().Add(statefulSet(1, 0)))
		}
		return false, nil, nil
	})
	run(t, client, nil, time.Minute)
	assert.Equal(t, 1, c.count(), "nudged once it existed, until its pod was created")
}

func TestRunGivesUpWithoutStatefulSet(t *testing.T) {
	client := fake.NewClientset()
	c := &controller{}
	c.react(client)
	start := time.Now()
	run(t, client, nil, 50*time.Millisecond)
	assert.Zero(t, c.count(), "nothing to patch")
	assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "waited for it until the timeout")
}

func TestRunGivesUp(t *testing.T) {
	client := fake.NewClientset(statefulSet(1, 0))
	c := &controller{createAfter: -1} // the controller never creates the pod
	c.react(client)
	run(t, client, nil, 50*time.Millisecond)
	assert.Positive(t, c.count(), "nudged until the timeout")
}

func TestRunStopsWhenAPodAppearsOfSeveral(t *testing.T) {
	// a webhook restarted while one of three Coordinators was being
	// recreated: it stops once the controller made progress
	client := fake.NewClientset(statefulSet(3, 2))
	c := &controller{createAfter: 2}
	c.react(client)
	run(t, client, nil, time.Minute)
	assert.Equal(t, 2, c.count())
}
