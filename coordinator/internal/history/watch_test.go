package history_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/contrast-cc/contrast/coordinator/internal/history"
)

// Both stores call the watcher when the latest pointer is created,
// replaced or deleted (the ConfigMap store also once when its watch
// starts).
func TestWatchLatest(t *testing.T) {
	client := fake.NewClientset()
	mem := history.NewMemStore()
	stores := map[string]struct {
		store   history.Store
		replace func(context.Context) error
		delete  func(context.Context) error
	}{
		"memory": {
			store:   mem,
			replace: func(context.Context) error { mem.SetLatestRaw([]byte(`{"a":2}`)); return nil },
			delete:  func(context.Context) error { mem.SetLatestRaw(nil); return nil },
		},
		"configmap": {
			store: history.NewConfigMapStore(client, ns),
			// The fake clientset keeps no resourceVersion, so replace
			// through it directly.
			replace: func(ctx context.Context) error {
				cms := client.CoreV1().ConfigMaps(ns)
				cm, err := cms.Get(ctx, "contrast-history-latest", metav1.GetOptions{})
				if err != nil {
					return err
				}
				cm.BinaryData["data"] = []byte(`{"a":2}`)
				_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
				return err
			},
			delete: func(ctx context.Context) error {
				return client.CoreV1().ConfigMaps(ns).Delete(ctx, "contrast-history-latest", metav1.DeleteOptions{})
			},
		},
	}
	for name, tc := range stores {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			changed := make(chan struct{}, 16)
			done := make(chan struct{})
			go func() {
				defer close(done)
				tc.store.WatchLatest(ctx, func() { changed <- struct{}{} })
			}()
			await := func(what string) {
				t.Helper()
				select {
				case <-changed:
				case <-time.After(5 * time.Second):
					require.FailNow(t, "no watch notification", what)
				}
			}
			drain := func() {
				for {
					select {
					case <-changed:
					case <-time.After(100 * time.Millisecond):
						return
					}
				}
			}
			drain() // the ConfigMap watch's start
			_, err := tc.store.SwapLatest(ctx, "", []byte(`{"a":1}`))
			require.NoError(t, err)
			await("create")
			require.NoError(t, tc.replace(ctx))
			await("replace")
			require.NoError(t, tc.delete(ctx))
			await("delete")
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				require.FailNow(t, "WatchLatest did not return after cancel")
			}
		})
	}
}
