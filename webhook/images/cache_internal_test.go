package images

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestStoreBounded checks that a full cache is emptied before a new digest is
// added, so a long-running webhook's memory stays bounded.
func TestStoreBounded(t *testing.T) {
	m := map[string]int{}
	for i := range maxCachedDigests {
		storeBounded(m, strconv.Itoa(i), i)
	}
	assert.Len(t, m, maxCachedDigests)
	storeBounded(m, "0", -1) // replacing an entry does not empty the cache
	assert.Len(t, m, maxCachedDigests)
	storeBounded(m, "new", 1)
	assert.Equal(t, map[string]int{"new": 1}, m)
}
