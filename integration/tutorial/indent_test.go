package tutorial

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// TestIndentWriterConcurrent: a command's stdout and stderr write from two
// goroutines (run with -race); every line comes out whole and indented.
func TestIndentWriterConcurrent(t *testing.T) {
	var out bytes.Buffer
	w := &indentWriter{w: &out}
	var wg sync.WaitGroup
	for _, s := range []string{"out\n", "err\n"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if _, err := w.Write([]byte(s)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	_, _ = w.Write([]byte("partial"))
	w.flush()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 201 {
		t.Fatalf("%d lines, want 201", len(lines))
	}
	for _, l := range lines {
		if l != "      out" && l != "      err" && l != "      partial" {
			t.Fatalf("line %q is not a whole indented line", l)
		}
	}
}
