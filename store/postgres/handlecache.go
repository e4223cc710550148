package postgres

import (
	"sync"
	"time"

	"github.com/kez-chat/kezd/store"
)

// maxCachedHandles bounds the handle cache; past it the cache starts over.
const maxCachedHandles = 1 << 14

// handleCacheTTL is how long a handle found is believed without asking the
// database again. Every signed request looks its signer up, so the cache
// saves a query per request; but keys rotate and handles are deleted, and
// another process may have done it. This process's own changes drop the
// entry at once, and a revocation broadcast drops it everywhere
// (ForgetHandle); the TTL bounds how long an instance that missed the
// broadcast can go on believing a retired key.
const handleCacheTTL = time.Second

// handleCache remembers handles that were found, for handleCacheTTL. Misses
// are not remembered: a handle registered through another process is found
// as soon as it is committed.
type handleCache struct {
	mu sync.RWMutex
	m  map[string]cachedHandle
}

type cachedHandle struct {
	h       store.Handle
	expires time.Time
}

func (c *handleCache) get(handle string, now time.Time) (store.Handle, bool) {
	c.mu.RLock()
	e, ok := c.m[handle]
	c.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return store.Handle{}, false
	}
	return e.h, true
}

func (c *handleCache) put(h store.Handle, now time.Time) {
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedHandles {
		c.m = make(map[string]cachedHandle)
	}
	c.m[h.Handle] = cachedHandle{h: h, expires: now.Add(handleCacheTTL)}
	c.mu.Unlock()
}

func (c *handleCache) forget(handle string) {
	c.mu.Lock()
	delete(c.m, handle)
	c.mu.Unlock()
}
