package notifier

import (
	"sync"
	"time"

	"github.com/parley-chat/parley/internal/lru"
)

// memberTTL bounds how long a room's member list is used without being
// read again, whatever else keeps it current.
const memberTTL = 2 * time.Second

// memberCache keeps rooms' local member lists between wake-ups: every
// commit to a busy room wakes its members, and read each time the list
// was one statement per commit. A room's list is dropped when its state
// may have changed through this instance (MembersChanged); wake-ups from
// other instances read it afresh, so a change made there is seen by the
// time it is announced.
type memberCache struct {
	mu  sync.Mutex
	lru *lru.Cache[string, memberEntry]
}

// memberEntry is a room's cached list; an invalid entry remembers that
// the list changed (gen moved on) while a read may have been under way.
type memberEntry struct {
	users []string
	at    time.Time
	gen   uint64
	valid bool
}

func newMemberCache(size int) *memberCache {
	return &memberCache{lru: lru.New[string, memberEntry](size)}
}

// get returns the room's list if one is fresh; gen is to be given back to
// put with what is read otherwise.
func (c *memberCache) get(room string, now time.Time) (users []string, gen uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.lru.Get(room)
	if found && e.valid && now.Sub(e.at) < memberTTL {
		return e.users, e.gen, true
	}
	return nil, e.gen, false
}

// put keeps a list read at now, unless the room's list changed since the
// get that returned gen.
func (c *memberCache) put(room string, users []string, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, _ := c.lru.Get(room); e.gen != gen {
		return
	}
	c.lru.Put(room, memberEntry{users: users, at: now, gen: gen, valid: true})
}

// invalidate drops the room's list.
func (c *memberCache) invalidate(room string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, _ := c.lru.Get(room)
	c.lru.Put(room, memberEntry{gen: e.gen + 1})
}
