// Package imagestest builds deterministic test images and serves them from
// an in-process OCI registry.
package imagestest

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Created is the fixed creation time of test images.
var Created = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Spec describes a test image.
type Spec struct {
	Config v1.Config
	// Files are the files of the single layer (path → content).
	Files map[string]string
	// Padding adds a file of this many deterministic bytes, to give the
	// image a realistic size.
	Padding int
}

// Build returns a deterministic image for spec.
func Build(t testing.TB, spec Spec) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := spec.Files
	if spec.Padding > 0 {
		files = map[string]string{}
		for k, v := range spec.Files {
			files[k] = v
		}
		pad := make([]byte, spec.Padding)
		x := uint32(2463534242)
		for i := range pad {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			pad[i] = byte(x) //nolint:gosec // G115: truncation is intended
		}
		files["usr/lib/padding.bin"] = string(pad)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := files[n]
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(n, "/"), Mode: 0o644, Size: int64(len(c)), ModTime: Created, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config = spec.Config
	cf.Created = v1.Time{Time: Created}
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Registry is an in-process registry that counts the bytes it serves.
type Registry struct {
	Host   string
	served atomic.Int64
}

// BytesServed returns the number of response body bytes served so far.
func (r *Registry) BytesServed() int64 { return r.served.Load() }

// ResetCounter resets BytesServed.
func (r *Registry) ResetCounter() { r.served.Store(0) }

// Serve starts an in-process registry for the duration of the test.
func Serve(t testing.TB) *Registry {
	t.Helper()
	r := &Registry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h.ServeHTTP(&countingWriter{ResponseWriter: w, n: &r.served}, req)
	}))
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// Push pushes img as host/repo:tag and returns its digest.
func Push(t testing.TB, host, repoTag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}
