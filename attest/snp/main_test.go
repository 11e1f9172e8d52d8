package snp_test

import (
	"io"
	"os"
	"testing"

	"github.com/google/logger"
)

// TestMain silences the process-wide logger that go-sev-guest writes to
// stdout: under `go test -fuzz` the worker's unread stdout fills up and
// stalls the fuzzer.
func TestMain(m *testing.M) {
	logger.Init("", false, false, io.Discard)
	os.Exit(m.Run())
}
