package rooms

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-chat/parley/internal/lru"
	"github.com/parley-chat/parley/internal/mxerr"
)

// AccountData reads a user's account data; an unset entry is an
// M_NOT_FOUND error.
type AccountData interface {
	AccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error)
}

// extras holds the state of the engine's secondary features (ignored
// users, the room directory, server ACLs, upgrades). Its zero value is
// ready: caches are made on first use.
type extras struct {
	once        sync.Once
	accountData AccountData

	// ignored caches each user's ignored set; ignoredGen moves on every
	// invalidation so that a read racing with a change is not cached.
	ignored    *lru.Cache[string, ignoredEntry]
	ignoredGen atomic.Int64

	acls *lru.Cache[int64, *serverACL]

	dirMu sync.Mutex
	dir   *directorySnapshot

	// upgrading serialises upgrades of one room on this instance.
	upgrading sync.Map
}

func (x *extras) init() {
	x.once.Do(func() {
		x.ignored = lru.New[string, ignoredEntry](100_000)
		x.acls = lru.New[int64, *serverACL](10_000)
	})
}

// SetAccountData installs the account data source (ignored users); call
// before serving.
func (e *Engine) SetAccountData(a AccountData) { e.x.accountData = a }

// ignoredTTL bounds how long another instance's change to a user's ignore
// list can go unnoticed here; changes on this instance apply at once.
const ignoredTTL = 30 * time.Second

type ignoredEntry struct {
	users map[string]bool
	at    time.Time
}

// IgnoredUsers returns the users a user ignores (from m.ignored_user_list
// account data); the map is shared and must not be modified.
func (e *Engine) IgnoredUsers(ctx context.Context, user string) (map[string]bool, error) {
	e.x.init()
	if c, ok := e.x.ignored.Get(user); ok && e.now().Sub(c.at) < ignoredTTL {
		return c.users, nil
	}
	if e.x.accountData == nil || user == "" {
		return nil, nil
	}
	gen := e.x.ignoredGen.Load()
	raw, err := e.x.accountData.AccountData(ctx, user, "", "m.ignored_user_list")
	if err != nil && !mxerr.IsCode(err, "M_NOT_FOUND") {
		return nil, err
	}
	users := parseIgnored(raw, user)
	if e.x.ignoredGen.Load() == gen {
		e.x.ignored.Put(user, ignoredEntry{users: users, at: e.now()})
	}
	return users, nil
}

// parseIgnored reads m.ignored_user_list content; a user never ignores
// themselves, and a malformed list ignores nobody.
func parseIgnored(raw json.RawMessage, self string) map[string]bool {
	var c struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &c) != nil || len(c.IgnoredUsers) == 0 {
		return nil
	}
	out := make(map[string]bool, len(c.IgnoredUsers))
	for u := range c.IgnoredUsers {
		if u != self {
			out[u] = true
		}
	}
	return out
}

// AccountDataChanged forgets what the engine cached of a user's account
// data; the accounts engine's hook calls it after every write.
func (e *Engine) AccountDataChanged(userID string) {
	e.x.init()
	e.x.ignoredGen.Add(1)
	e.x.ignored.Remove(userID)
}

// hiddenByIgnore reports whether an event is hidden from a user who
// ignores its sender. State events are never hidden (the spec keeps room
// state the same for everyone).
func hiddenByIgnore(ignored map[string]bool, ev *Event) bool {
	return len(ignored) > 0 && ignored[ev.Sender] && !ev.IsState()
}
