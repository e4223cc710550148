package postgres

import (
	"sync"

	"github.com/kez-chat/kezd/store"
)

// maxCachedHandles bounds the handle cache; past it the cache starts over.
const maxCachedHandles = 1 << 14

// handleCache remembers handles that were found. Every signed request looks
// its signer up, and a registered handle never changes (the protocol has no
// key rotation and no deletion), so a remembered handle is always right and
// saves a query per request. Misses are not remembered: a handle registered
// through another process is found as soon as it is committed.
type handleCache struct {
	mu sync.RWMutex
	m  map[string]store.Handle
}

func (c *handleCache) get(handle string) (store.Handle, bool) {
	c.mu.RLock()
	h, ok := c.m[handle]
	c.mu.RUnlock()
	return h, ok
}

func (c *handleCache) put(h store.Handle) {
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedHandles {
		c.m = make(map[string]store.Handle)
	}
	c.m[h.Handle] = h
	c.mu.Unlock()
}
