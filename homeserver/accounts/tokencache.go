package accounts

import (
	"sync"
	"time"
)

// tokenCache keeps recently used access tokens so that authenticating a
// request costs a map lookup. Entries live for ttl; revocations on this
// instance delete at once, revocations elsewhere arrive through
// Engine.ForgetTokens.
type tokenCache struct {
	mu      sync.RWMutex
	entries map[[32]byte]cachedToken
	max     int
	ttl     time.Duration
}

type cachedToken struct {
	dev     Device
	expires int64 // token expiry (ms), 0: never
	until   time.Time
}

func newTokenCache(max int, ttl time.Duration) *tokenCache {
	return &tokenCache{entries: make(map[[32]byte]cachedToken), max: max, ttl: ttl}
}

func key(hash []byte) (k [32]byte) { copy(k[:], hash); return }

func (c *tokenCache) get(hash []byte, now time.Time) (cachedToken, bool) {
	c.mu.RLock()
	t, ok := c.entries[key(hash)]
	c.mu.RUnlock()
	if !ok || now.After(t.until) {
		return t, false
	}
	return t, true
}

func (c *tokenCache) put(hash []byte, t cachedToken, now time.Time) {
	t.until = now.Add(c.ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		// Evict expired entries first, then arbitrary ones: a full cache
		// only costs extra lookups.
		for k, v := range c.entries {
			if now.After(v.until) || len(c.entries) >= c.max {
				delete(c.entries, k)
			}
			if len(c.entries) < c.max*9/10 {
				break
			}
		}
	}
	c.entries[key(hash)] = t
}

func (c *tokenCache) forget(hashes [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range hashes {
		delete(c.entries, key(h))
	}
}

func (c *tokenCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
}
