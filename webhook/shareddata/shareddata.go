// Package shareddata finds the third-party test data that stays outside the
// project: the Kata agent request corpus and the published workloads in
// ../shared beside the repository (CI has it there). Tests read it in place;
// it is never copied into the project.
package shareddata

import (
	"os"
	"path/filepath"
	"testing"
)

// EnvDir overrides where the shared data is.
const EnvDir = "CONTRAST_SHARED_DIR"

// Folders of the shared data.
const (
	// KataPolicy is the Kata genpolicy request corpus.
	KataPolicy = "kata-policy-testdata"
	// Emojivoto is the emojivoto tutorial's manifests.
	Emojivoto = "workloads/emojivoto"
	// RealWorld holds published workloads, one folder each.
	RealWorld = "workloads-real"
)

// Root returns the shared data folder ($CONTRAST_SHARED_DIR, else ../shared
// beside the repository root, the folder with go.work) and whether it
// exists.
func Root() (string, bool) {
	dir := os.Getenv(EnvDir)
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", false
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
				dir = filepath.Join(filepath.Dir(d), "shared")
				break
			}
			if filepath.Dir(d) == d {
				return filepath.Join(wd, "shared"), false
			}
		}
	}
	info, err := os.Stat(dir) //nolint:gosec // G703: a test-data folder the developer or CI names
	return dir, err == nil && info.IsDir()
}

// Dir returns the folder elem of the shared data. Without it the test
// fails under CI (where a skip would hide a broken set-up) and is skipped
// elsewhere, saying by name that it did not run and why.
func Dir(t testing.TB, elem ...string) string {
	t.Helper()
	root, ok := Root()
	dir := filepath.Join(append([]string{root}, elem...)...)
	if ok {
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
	}
	msg := "%s did not run: it reads the third-party test data %s, which is not there (CI has ../shared beside the clone; set %s to its folder)"
	if os.Getenv("CI") != "" {
		t.Fatalf(msg, t.Name(), dir, EnvDir)
	}
	t.Skipf(msg, t.Name(), dir, EnvDir)
	return ""
}
