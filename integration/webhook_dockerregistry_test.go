package integration_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/contrast-cc/contrast/webhook/images/imagestest"
)

// recordingTB is a testing.TB whose Fatal and Skip end the calling
// goroutine, as the real ones do, and are recorded instead of ending the
// test.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordingTB) Fatal(args ...any) {
	r.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestWebhookDockerRegistryMissing: TestWebhookAdmitsEmojivoto needs the
// docker-registry binary. Without it, the test fails in CI (CI set) rather
// than skipping, which would pass a broken set-up as a green run; outside
// CI it is skipped, saying so.
func TestWebhookDockerRegistryMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no docker-registry
	run := func() *recordingTB {
		r := &recordingTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			imagestest.StartDockerRegistry(r)
		}()
		<-done
		return r
	}

	t.Setenv(imagestest.CIEnv, "1")
	r := run()
	assert.Contains(t, r.fatal, "docker-registry not found")
	assert.Contains(t, r.fatal, "fails instead of skipping")
	assert.Empty(t, r.skip)

	t.Setenv(imagestest.CIEnv, "")
	r = run()
	assert.Empty(t, r.fatal)
	assert.Contains(t, r.skip, "SKIPPED")
	assert.Contains(t, r.skip, "apt-get install docker-registry")
}
