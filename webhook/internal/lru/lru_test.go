package lru

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCache(t *testing.T) {
	type op struct {
		put, get    string
		size        int64
		wantOK      bool
		wantEvicted int
	}
	for name, tc := range map[string]struct {
		maxEntries int
		maxBytes   int64
		ops        []op
		wantLen    int
		wantBytes  int64
	}{
		"entry bound drops the least recently used": {
			maxEntries: 2, maxBytes: 100,
			ops: []op{
				{put: "a", size: 1}, {put: "b", size: 1},
				{get: "a", wantOK: true}, // b is now the least recently used
				{put: "c", size: 1, wantEvicted: 1},
				{get: "b"}, {get: "a", wantOK: true}, {get: "c", wantOK: true},
			},
			wantLen: 2, wantBytes: 2,
		},
		"byte bound evicts as many as needed": {
			maxEntries: 10, maxBytes: 10,
			ops: []op{
				{put: "a", size: 4}, {put: "b", size: 4},
				{put: "c", size: 9, wantEvicted: 2},
				{get: "a"}, {get: "b"}, {get: "c", wantOK: true},
			},
			wantLen: 1, wantBytes: 9,
		},
		"an entry larger than the byte bound is not cached": {
			maxEntries: 10, maxBytes: 10,
			ops:     []op{{put: "a", size: 3}, {put: "big", size: 11}, {get: "big"}, {get: "a", wantOK: true}},
			wantLen: 1, wantBytes: 3,
		},
		"the first value of a key stays": {
			maxEntries: 10, maxBytes: 100,
			ops:     []op{{put: "a", size: 3}, {put: "a", size: 50}, {get: "a", wantOK: true}},
			wantLen: 1, wantBytes: 3,
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := New[string, string](tc.maxEntries, tc.maxBytes)
			for i, o := range tc.ops {
				if o.put != "" {
					evicted, _, _ := c.Put(o.put, "v-"+o.put, o.size)
					assert.Equal(t, o.wantEvicted, evicted, "op %d: put %s", i, o.put)
					continue
				}
				v, ok, _, _ := c.Get(o.get)
				assert.Equal(t, o.wantOK, ok, "op %d: get %s", i, o.get)
				if ok {
					assert.Equal(t, "v-"+o.get, v)
				}
			}
			n, b := c.Len()
			assert.Equal(t, tc.wantLen, n)
			assert.Equal(t, tc.wantBytes, b)
		})
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := New[int, int](64, 1<<20)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				k := (w*1000 + i) % 100
				if v, ok, _, _ := c.Get(k); ok {
					assert.Equal(t, k*2, v, "key %d", k)
					continue
				}
				c.Put(k, k*2, 10)
			}
		})
	}
	wg.Wait()
	n, b := c.Len()
	assert.LessOrEqual(t, n, 64)
	assert.Equal(t, int64(n*10), b)
}
