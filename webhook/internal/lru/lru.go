// Package lru is the bounded least-recently-used map under the webhook's
// caches (the policy cache and the patch cache): bounded in entries and in
// bytes (each entry counted with a size its owner gives), safe for
// concurrent use.
package lru

import (
	"container/list"
	"sync"
)

// Cache maps K to V, dropping the least recently used entries to stay
// within its bounds.
type Cache[K comparable, V any] struct {
	maxEntries int
	maxBytes   int64

	mu      sync.Mutex
	order   *list.List // of *entry[K, V], most recently used first
	entries map[K]*list.Element
	bytes   int64
}

type entry[K comparable, V any] struct {
	key  K
	val  V
	size int64
}

// New returns an empty Cache holding at most maxEntries entries of at most
// maxBytes together; both must be positive.
func New[K comparable, V any](maxEntries int, maxBytes int64) *Cache[K, V] {
	return &Cache[K, V]{
		maxEntries: max(1, maxEntries),
		maxBytes:   max(1, maxBytes),
		order:      list.New(),
		entries:    map[K]*list.Element{},
	}
}

// Get returns the value of key and marks it the most recently used, with
// the number of entries and their size.
func (c *Cache[K, V]) Get(key K) (val V, ok bool, entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, found := c.entries[key]; found {
		c.order.MoveToFront(el)
		e, _ := el.Value.(*entry[K, V])
		val, ok = e.val, true
	}
	return val, ok, len(c.entries), c.bytes
}

// Put adds key with val counted as size bytes, unless key is there already
// (the first value stays) or size alone exceeds the byte bound (nothing is
// cached). It returns how many entries it evicted, and the number of
// entries and their size after.
func (c *Cache[K, V]) Put(key K, val V, size int64) (evicted, entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, found := c.entries[key]; !found && size <= c.maxBytes {
		c.entries[key] = c.order.PushFront(&entry[K, V]{key: key, val: val, size: size})
		c.bytes += size
		for len(c.entries) > c.maxEntries || c.bytes > c.maxBytes {
			el := c.order.Back()
			e, _ := el.Value.(*entry[K, V])
			c.order.Remove(el)
			delete(c.entries, e.key)
			c.bytes -= e.size
			evicted++
		}
	}
	return evicted, len(c.entries), c.bytes
}

// Len returns the number of entries and their size.
func (c *Cache[K, V]) Len() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.bytes
}
