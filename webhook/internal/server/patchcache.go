package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"slices"
	"strconv"
	"sync"

	"github.com/contrast-cc/contrast/webhook/internal/keyhash"
	"github.com/contrast-cc/contrast/webhook/internal/lru"
)

// Patch cache defaults (PatchCacheConfig).
const (
	DefaultPatchCacheMaxEntries = 1024
	DefaultPatchCacheMaxBytes   = 32 << 20
)

// PatchCacheConfig bounds a PatchCache.
type PatchCacheConfig struct {
	// MaxEntries bounds the number of cached patches (default
	// DefaultPatchCacheMaxEntries).
	MaxEntries int
	// MaxBytes bounds the size of the cached patches, each counted with
	// its length and patchEntryOverhead (default DefaultPatchCacheMaxBytes).
	// A patch larger than MaxBytes is not cached.
	MaxBytes int64
	// Observer receives every lookup and eviction (default none).
	Observer PatchCacheObserver
}

// PatchCacheEvent is what happened in a PatchCache.
type PatchCacheEvent string

// Patch cache events.
const (
	// PatchCacheHit: the patch was served from the cache.
	PatchCacheHit PatchCacheEvent = "hit"
	// PatchCacheMiss: the patch was computed from the difference (and
	// cached if that succeeded).
	PatchCacheMiss PatchCacheEvent = "miss"
	// PatchCacheEvict: the least recently used patch was dropped to stay
	// within the bounds.
	PatchCacheEvict PatchCacheEvent = "evict"
)

// PatchCacheObserver receives the events of a PatchCache with its size after
// the event. Implementations must be safe for concurrent use and must not
// block.
type PatchCacheObserver interface {
	ObservePatchCache(event PatchCacheEvent, entries int, bytes int64)
}

// PatchCache holds the JSON patches of the mutating webhook by a digest of
// the admitted pod and the pod the mutator made of it (patchKeyOf), so that
// the pods of one controller after the first skip the most expensive part
// of a warm admission: parsing both documents, diffing them and encoding
// the patch. The mutator still runs for every pod (images are resolved as
// usual, the policy comes from the policy cache); only the derivation of
// the patch from the difference is reused. A hit returns the patch a miss
// computed for a key-equal pair of documents, which is a patch a miss would
// compute for this pair (see patchKeyOf). Bounded in entries and bytes,
// least recently used first out; safe for concurrent use.
type PatchCache struct {
	observer PatchCacheObserver
	lru      *lru.Cache[patchKey, []byte]
}

// patchEntryOverhead approximates the memory of an entry besides the patch:
// list element, map slot, key and headers.
const patchEntryOverhead = 256

// NewPatchCache returns an empty PatchCache.
func NewPatchCache(cfg PatchCacheConfig) *PatchCache {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultPatchCacheMaxEntries
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultPatchCacheMaxBytes
	}
	return &PatchCache{observer: cfg.Observer, lru: lru.New[patchKey, []byte](cfg.MaxEntries, cfg.MaxBytes)}
}

// Len returns the number of cached patches and their counted size.
func (c *PatchCache) Len() (int, int64) { return c.lru.Len() }

// get returns the patch of key. The patch is shared: never modify it.
func (c *PatchCache) get(key patchKey) ([]byte, bool) {
	patch, ok, n, b := c.lru.Get(key)
	if ok {
		c.observe(PatchCacheHit, n, b)
	}
	return patch, ok
}

// put caches patch under key; the cache keeps patch, the caller must not
// modify it afterwards.
func (c *PatchCache) put(key patchKey, patch []byte) {
	evicted, n, b := c.lru.Put(key, patch, int64(len(patch)+patchEntryOverhead))
	c.observe(PatchCacheMiss, n, b)
	for range evicted {
		c.observe(PatchCacheEvict, n, b)
	}
}

func (c *PatchCache) observe(e PatchCacheEvent, n int, b int64) {
	if c.observer != nil {
		c.observer.ObservePatchCache(e, n, b)
	}
}

// patchKey is the SHA-256 digest a PatchCache keys a patch by.
type patchKey [sha256.Size]byte

func (k patchKey) String() string { return hex.EncodeToString(k[:]) }

// patchKeyVersion names the layout of the key; change it with the layout.
const patchKeyVersion = "contrast patch cache key v1"

// perPodPaths are the values in which the pods of one controller differ
// although the mutator leaves them alone: in the metadata the name (when
// the API server set it), the fields the API server sets, and
// managedFields, whose entries carry the time of the request; in the spec
// the names of volumes and volume mounts (the service-account token volume
// the API server adds is named kube-api-access-<random> in every pod). A
// key is a member name, "*" every element of an array; a node without
// children is a masked value.
var perPodPaths = &pathNode{children: []*pathNode{
	{key: "metadata", children: leaves("name", "uid", "resourceVersion", "creationTimestamp", "managedFields")},
	{key: "spec", children: []*pathNode{
		{key: "volumes", children: []*pathNode{{key: "*", children: leaves("name")}}},
		{key: "initContainers", children: mountNames},
		{key: "containers", children: mountNames},
		{key: "ephemeralContainers", children: mountNames},
	}},
}}

var mountNames = []*pathNode{{key: "*", children: []*pathNode{{key: "volumeMounts", children: []*pathNode{{key: "*", children: leaves("name")}}}}}}

type pathNode struct {
	key      string
	children []*pathNode
}

func leaves(keys ...string) []*pathNode {
	out := make([]*pathNode, len(keys))
	for i, k := range keys {
		out[i] = &pathNode{key: k}
	}
	return out
}

// patchKeyOf returns the key of the patch that turns the admitted pod raw
// into mutated (the JSON of the mutated pod with the policy annotations'
// stand-ins) once the stand-ins in it are replaced by values.
//
// The key is the digest of raw, mutated and values, except that values at
// paths of perPodPaths are left out (their paths are hashed instead) where
// they cannot show in the patch: a value both documents hold at the same
// path with the same bytes, and a value of raw at a path mutated does not
// have. The JSON patch is derived from the difference position by position
// (objects by member, arrays by index): it has no operation at a path whose
// value is the same in both documents, a value only raw has is removed by
// its path (the patch holds values of mutated only), and no operation
// elsewhere depends on either. So two pairs of documents that differ only
// in such values have the same patch (up to the order of operations, which
// the diff leaves to Go's map iteration).
// Masking applies only where the scan is unambiguous: no object on the way
// to a masked value has a key with an escape sequence or the key taken
// twice; otherwise every byte is hashed. TestPatchCacheGolden and
// FuzzPatchCacheKey check that pairs of the same key take the same patch.
func patchKeyOf(raw, mutated []byte, values []policyValue) patchKey {
	var rawMask, mutMask []maskedSpan
	rawSpans, rawOK := perPodSpans(raw)
	mutSpans, mutOK := perPodSpans(mutated)
	if rawOK && mutOK {
		for _, r := range rawSpans {
			i := slices.IndexFunc(mutSpans, func(m maskedSpan) bool { return m.path == r.path })
			switch {
			case i < 0:
				// removed: the patch never holds a value of the admitted pod
				rawMask = append(rawMask, r)
			case bytes.Equal(raw[r.start:r.end], mutated[mutSpans[i].start:mutSpans[i].end]):
				rawMask = append(rawMask, r)
				mutMask = append(mutMask, mutSpans[i])
			}
		}
	}
	h := sha256.New()
	w := keyWriter{keyhash.Writer{H: h}}
	w.Str(patchKeyVersion)
	w.masked(raw, rawMask)
	w.masked(mutated, mutMask)
	w.Int(len(values))
	for _, v := range values {
		w.Str(v.key)
		d := valueDigests.digest(v.value)
		w.Bytes(d[:])
	}
	var key patchKey
	h.Sum(key[:0])
	return key
}

// valueDigests remembers the SHA-256 digests of the last policy annotation
// values: the pods of one controller carry the same value, served by the
// policy cache as the same string, and hashing it (10 KiB and more) for
// every admission was the largest part of the key.
var valueDigests digestMemo

// digestMemo is a small memo of SHA-256 digests of strings, replaced round
// robin. A lookup compares the strings themselves (==: constant time for
// the same string, else up to the first differing byte), so a remembered
// digest is exactly the digest of the value.
type digestMemo struct {
	mu      sync.Mutex
	next    int
	entries [8]struct {
		s      string
		digest [sha256.Size]byte
	}
}

func (m *digestMemo) digest(s string) [sha256.Size]byte {
	m.mu.Lock()
	for i := range m.entries {
		if e := &m.entries[i]; len(e.s) == len(s) && e.s == s && s != "" {
			d := e.digest
			m.mu.Unlock()
			return d
		}
	}
	m.mu.Unlock()
	h := sha256.New()
	_, _ = io.WriteString(h, s) // without copying s
	var d [sha256.Size]byte
	h.Sum(d[:0])
	m.mu.Lock()
	m.entries[m.next].s, m.entries[m.next].digest = s, d
	m.next = (m.next + 1) % len(m.entries)
	m.mu.Unlock()
	return d
}

// maskedSpan is the span of the value at path (a JSON pointer).
type maskedSpan struct {
	span
	path string
}

// keyWriter writes the key's fields, length-prefixed (keyhash).
type keyWriter struct{ keyhash.Writer }

// masked writes doc without the masked spans (in document order), each
// replaced by its path.
func (w keyWriter) masked(doc []byte, mask []maskedSpan) {
	w.Int(len(mask))
	prev := 0
	for _, m := range sortedSpans(mask) {
		w.Bytes(doc[prev:m.start])
		w.Str(m.path)
		prev = m.end
	}
	w.Bytes(doc[prev:])
}

// sortedSpans returns mask in document order (a handful of entries).
func sortedSpans(mask []maskedSpan) []maskedSpan {
	for i := 1; i < len(mask); i++ {
		for j := i; j > 0 && mask[j].start < mask[j-1].start; j-- {
			mask[j], mask[j-1] = mask[j-1], mask[j]
		}
	}
	return mask
}

// span is the byte range [start, end) of a JSON value.
type span struct{ start, end int }

// perPodSpans scans doc, a JSON object, for the values at perPodPaths and
// returns their spans in document order. ok is false if doc is not a JSON
// object as far as the scan goes, or if an object on the way to a value of
// perPodPaths has a key with an escape sequence or a key of perPodPaths
// twice (a key that unescapes to a path's key, or a later duplicate, would
// make the scan disagree with a JSON parser). It does not validate values;
// malformed input gives ok false or spans the caller only compares
// bytewise.
func perPodSpans(doc []byte) (spans []maskedSpan, ok bool) {
	start := skipSpace(doc, 0)
	if start >= len(doc) || doc[start] != '{' {
		return nil, false
	}
	ok = walkPaths(doc, start, perPodPaths, "", &spans)
	return spans, ok
}

// walkPaths collects the spans of the values below node in the value at
// doc[start:] (see perPodSpans). A value of another JSON type than node
// expects (an object for keys, an array for "*") holds none.
func walkPaths(doc []byte, start int, node *pathNode, path string, out *[]maskedSpan) bool {
	if len(node.children) == 1 && node.children[0].key == "*" {
		if doc[start] != '[' {
			return true
		}
		child := node.children[0]
		return eachElement(doc, start, func(i, vs, ve int) bool {
			return visit(doc, vs, ve, child, path+"/"+strconv.Itoa(i), out)
		})
	}
	if doc[start] != '{' {
		return true
	}
	var seen uint64 // bit i: children[i] seen
	return eachMember(doc, start, func(key []byte, vs, ve int) bool {
		for i, child := range node.children {
			if string(key) != child.key {
				continue
			}
			if seen&(1<<i) != 0 {
				return false
			}
			seen |= 1 << i
			return visit(doc, vs, ve, child, path+"/"+child.key, out)
		}
		return true
	})
}

func visit(doc []byte, vs, ve int, node *pathNode, path string, out *[]maskedSpan) bool {
	if len(node.children) == 0 {
		*out = append(*out, maskedSpan{span{vs, ve}, path})
		return true
	}
	return walkPaths(doc, vs, node, path, out)
}

// eachElement calls f with the index and value span of every element of
// the JSON array at doc[start], in order, and reports whether the array
// was scanned to its end without f returning false.
func eachElement(doc []byte, start int, f func(i, vs, ve int) bool) bool {
	i := skipSpace(doc, start+1)
	if i < len(doc) && doc[i] == ']' {
		return true
	}
	for n := 0; i < len(doc); n++ {
		ve := valueEnd(doc, i)
		if ve < 0 || !f(n, i, ve) {
			return false
		}
		i = skipSpace(doc, ve)
		switch {
		case i >= len(doc):
			return false
		case doc[i] == ']':
			return true
		case doc[i] != ',':
			return false
		}
		i = skipSpace(doc, i+1)
	}
	return false
}

// eachMember calls f with the key and value span of every member of the
// JSON object at doc[start:] (after white space), in order, and reports
// whether the object was scanned to its end without a key holding an
// escape and without f returning false.
func eachMember(doc []byte, start int, f func(key []byte, vs, ve int) bool) bool {
	i := skipSpace(doc, start)
	if i >= len(doc) || doc[i] != '{' {
		return false
	}
	i = skipSpace(doc, i+1)
	if i < len(doc) && doc[i] == '}' {
		return true
	}
	for i < len(doc) {
		if doc[i] != '"' {
			return false
		}
		end := stringEnd(doc, i)
		if end < 0 {
			return false
		}
		key := doc[i+1 : end]
		if bytes.IndexByte(key, '\\') >= 0 {
			return false
		}
		i = skipSpace(doc, end+1)
		if i >= len(doc) || doc[i] != ':' {
			return false
		}
		vs := skipSpace(doc, i+1)
		ve := valueEnd(doc, vs)
		if ve < 0 || !f(key, vs, ve) {
			return false
		}
		i = skipSpace(doc, ve)
		switch {
		case i >= len(doc):
			return false
		case doc[i] == '}':
			return true
		case doc[i] != ',':
			return false
		}
		i = skipSpace(doc, i+1)
	}
	return false
}

// valueEnd returns the index after the JSON value starting at doc[i], or
// -1. Strings are skipped by their escapes and quotes, objects and arrays
// by their brackets outside strings, literals up to the next delimiter.
func valueEnd(doc []byte, i int) int {
	if i >= len(doc) {
		return -1
	}
	switch doc[i] {
	case '"':
		end := stringEnd(doc, i)
		if end < 0 {
			return -1
		}
		return end + 1
	case '{', '[':
		depth := 0
		for j := i; j < len(doc); j++ {
			switch doc[j] {
			case '"':
				end := stringEnd(doc, j)
				if end < 0 {
					return -1
				}
				j = end
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(doc) {
		switch doc[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if j == i {
				return -1
			}
			return j
		}
		j++
	}
	return -1
}
