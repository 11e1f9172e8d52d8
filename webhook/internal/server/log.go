package server

import (
	"context"
	"fmt"
	"log/slog"

	kwhlog "github.com/slok/kubewebhook/v2/pkg/log"
)

// kubewebhookLogger adapts slog to kubewebhook's logger. kubewebhook's own
// messages are logged at debug level (the admitter logs each admission).
type kubewebhookLogger struct {
	l *slog.Logger
}

type ctxKey struct{}

const kubewebhookMsg = "kubewebhook"

// log formats the message only if level is enabled: kubewebhook debug-logs
// the whole JSON patch of every mutation.
func (k kubewebhookLogger) log(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if !k.l.Enabled(ctx, level) {
		return
	}
	k.l.Log(ctx, level, kubewebhookMsg, "detail", fmt.Sprintf(format, args...))
}

func (k kubewebhookLogger) Infof(format string, args ...any) {
	k.log(slog.LevelDebug, format, args)
}
func (k kubewebhookLogger) Warningf(format string, args ...any) {
	k.log(slog.LevelWarn, format, args)
}
func (k kubewebhookLogger) Errorf(format string, args ...any) {
	k.log(slog.LevelWarn, format, args)
}
func (k kubewebhookLogger) Debugf(format string, args ...any) {
	k.log(slog.LevelDebug, format, args)
}

func (k kubewebhookLogger) WithValues(values map[string]any) kwhlog.Logger {
	if len(values) == 0 {
		return k
	}
	args := make([]any, 0, 2*len(values))
	for key, v := range values {
		args = append(args, key, v)
	}
	return kubewebhookLogger{k.l.With(args...)}
}

func (k kubewebhookLogger) WithCtxValues(ctx context.Context) kwhlog.Logger {
	values, _ := ctx.Value(ctxKey{}).(map[string]any)
	return k.WithValues(values)
}

func (k kubewebhookLogger) SetValuesOnCtx(parent context.Context, values map[string]any) context.Context {
	merged := map[string]any{}
	if old, ok := parent.Value(ctxKey{}).(map[string]any); ok {
		for key, v := range old {
			merged[key] = v
		}
	}
	for key, v := range values {
		merged[key] = v
	}
	return context.WithValue(parent, ctxKey{}, merged)
}
