// Package nudge wakes the StatefulSet controller for the Coordinator once
// the webhook serves.
//
// The Coordinator's pods are admitted by the webhook (failurePolicy Fail).
// At `helm install` both start together: until the webhook serves, the
// StatefulSet controller's pod creations fail, and the controller retries
// the StatefulSet with exponential back-off (5 ms doubling, up to 1000 s).
// By the time the webhook is Ready, the next retry can be as far away as
// the webhook took to start, which doubled `helm install --wait`. An update
// of the StatefulSet object puts it back in the controller's queue at once,
// so the webhook, once Ready, sets an annotation on the Coordinator's
// StatefulSet (AnnotationNudged, a timestamp) every Interval until the
// controller has created the pods it was missing when the webhook started,
// or until Timeout. It changes nothing the controller acts on: the pod
// template, and so the Coordinator's policy, stays as the chart wrote it.
package nudge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	typedappsv1 "k8s.io/client-go/kubernetes/typed/apps/v1"
)

// AnnotationNudged is the annotation the webhook sets on the Coordinator's
// StatefulSet to have the StatefulSet controller retry at once.
const AnnotationNudged = "contrast.cc/webhook-nudged"

// Defaults of Config.
const (
	DefaultInterval = 2 * time.Second
	DefaultTimeout  = 3 * time.Minute
)

// Config configures Run.
type Config struct {
	// StatefulSets is the client of the Coordinator's namespace.
	StatefulSets typedappsv1.StatefulSetInterface
	// Name is the Coordinator's StatefulSet.
	Name string
	// Ready reports whether the webhook can admit pods (its serving
	// certificate is in the caBundle); Run waits for it before the first
	// nudge. Nil: always ready.
	Ready func(context.Context) error
	// Interval between nudges (DefaultInterval when zero).
	Interval time.Duration
	// Timeout after which Run gives up (DefaultTimeout when zero).
	Timeout time.Duration
	Logger  *slog.Logger
	// Now returns the time (time.Now when nil).
	Now func() time.Time
}

// Run nudges the StatefulSet as the package describes and returns nil when
// it is done, gave up, or there was nothing to do: a StatefulSet with all
// its pods is left alone, one that does not exist yet is waited for until
// Timeout, and an API error is logged, not returned, because the webhook
// serves either way.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Ready == nil {
		cfg.Ready = func(context.Context) error { return nil }
	}
	log := cfg.Logger.With("statefulset", cfg.Name)
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	// Helm creates the webhook's Deployment before the StatefulSet, so a
	// StatefulSet not found yet is waited for (it then has no pods).
	var initial int32
	st, err := cfg.StatefulSets.Get(ctx, cfg.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		log.Info("the Coordinator's StatefulSet does not exist yet: nudging it once it does and the webhook is ready")
	case err != nil:
		log.Warn("reading the Coordinator's StatefulSet: not nudging it", "error", err)
		return nil
	case !missingPods(st, st.Status.Replicas):
		return nil
	default:
		initial = st.Status.Replicas
		log.Info("the Coordinator's StatefulSet lacks pods: nudging its controller once the webhook is ready",
			"replicas", initial, "want", want(st))
	}

	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	nudges := 0
	for {
		if err := cfg.Ready(ctx); err == nil {
			st, err = cfg.StatefulSets.Get(ctx, cfg.Name, metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				log.Warn("reading the Coordinator's StatefulSet", "error", err)
			}
			if err == nil {
				if !missingPods(st, initial) {
					log.Info("the StatefulSet controller created the Coordinator's pods", "nudges", nudges, "replicas", st.Status.Replicas)
					return nil
				}
				if err := patch(ctx, cfg, cfg.Now()); err != nil {
					log.Warn("nudging the Coordinator's StatefulSet", "error", err)
				} else {
					nudges++
				}
			}
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				log.Warn("gave up nudging the Coordinator's StatefulSet", "after", cfg.Timeout, "nudges", nudges)
			}
			return nil
		case <-tick.C:
		}
	}
}

// want is the StatefulSet's desired replicas (1 when unset, as the API
// server defaults it).
func want(st *appsv1.StatefulSet) int32 {
	if st.Spec.Replicas == nil {
		return 1
	}
	return *st.Spec.Replicas
}

// missingPods reports whether st still has fewer pods than it wants and no
// more than it had (initial) when the webhook started.
func missingPods(st *appsv1.StatefulSet, initial int32) bool {
	return st.Status.Replicas < want(st) && st.Status.Replicas <= initial
}

// patch sets AnnotationNudged to now with a JSON merge patch, which
// touches nothing else.
func patch(ctx context.Context, cfg Config, now time.Time) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		AnnotationNudged: now.UTC().Format(time.RFC3339Nano),
	}}})
	if err != nil {
		return fmt.Errorf("encoding the patch: %w", err)
	}
	_, err = cfg.StatefulSets.Patch(ctx, cfg.Name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "contrast-webhook"})
	return err
}
