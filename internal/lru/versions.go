package lru

import "sync"

// versionsPerKey is how many versions Versions keeps of each key.
const versionsPerKey = 4

// Versions is a Cache of values that each key holds at several versions
// (positions, tokens), keeping only the newest few of each key: caches
// keyed by key and version together fill up with versions nobody will
// ask for again, which the garbage collector then walks on every cycle.
type Versions[K, P comparable, V any] struct {
	mu sync.Mutex
	c  *Cache[K, *versioned[P, V]]
}

type versioned[P comparable, V any] struct {
	n    int // versions held
	next int // where the next one goes
	at   [versionsPerKey]P
	val  [versionsPerKey]V
}

// NewVersions returns a cache of at most size keys.
func NewVersions[K, P comparable, V any](size int) *Versions[K, P, V] {
	return &Versions[K, P, V]{c: New[K, *versioned[P, V]](size)}
}

// Get returns the value of key k at version p.
func (c *Versions[K, P, V]) Get(k K, p P) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	e, ok := c.c.Get(k)
	if !ok {
		return zero, false
	}
	for i := range e.n {
		if e.at[i] == p {
			return e.val[i], true
		}
	}
	return zero, false
}

// Put stores the value of key k at version p, replacing the oldest
// version kept when the key has as many as it keeps.
func (c *Versions[K, P, V]) Put(k K, p P, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.c.Get(k)
	if !ok {
		e = &versioned[P, V]{}
		c.c.Put(k, e)
	}
	for i := range e.n {
		if e.at[i] == p {
			e.val[i] = v
			return
		}
	}
	e.at[e.next], e.val[e.next] = p, v
	e.next = (e.next + 1) % versionsPerKey
	e.n = min(e.n+1, versionsPerKey)
}

// Len is the number of keys held.
func (c *Versions[K, P, V]) Len() int { return c.c.Len() }
