// Package push decides which events notify which local users, and keeps
// what notification counts, GET /notifications and (later) pushers are
// made of.
//
//	PUT /pushrules/… ──► Engine.PutRule … ──► push_rules (what the user
//	                     changed) + m.push_rules account data (the whole
//	                     ruleset) + cache invalidation on every instance
//
//	rooms persister, inside the batch transaction:
//	  OnEvents ──► per room: members and power levels (rooms.PushContext)
//	           ──► per event, per local member but the sender: the
//	               member's compiled rules → the deciding rule
//	           ──► notify? a push_actions row (user, room, stream
//	               position, thread, highlight, actions) in the batch
//
//	sync ──► Counts: rows after each room's read-up-to position
//	         (receipts, and the user's own newest event), per thread;
//	         counted once, then topped up with the rows committed since,
//	         from memory (pushLog) when this instance committed them
//
// Counts follow MSC3771: an unthreaded receipt reads everything up to its
// event, a threaded one (thread_id "main" or a thread root) only that
// thread. A row is unread when it is after both.
package push

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/lru"
	"github.com/parley-chat/parley/storage"
)

// ReadReceipts tells how far users have read, one room and thread at a
// time; counting many rooms at once reads the receipts themselves with the
// other inputs of a count (storage's CountInputsGet).
type ReadReceipts interface {
	// ReadUpTo returns the events-stream position of the event the
	// user's latest read receipt (m.read or m.read.private, whichever is
	// further) in the room points at; threadID "" is the unthreaded
	// receipt, "main" the main timeline's, an event ID that thread's.
	// 0 if there is none.
	ReadUpTo(ctx context.Context, user, roomID, threadID string) (int64, error)
}

// AccountData writes server-managed account data (m.push_rules).
type AccountData interface {
	PutAccountData(ctx context.Context, userID, roomID, typ string, content json.RawMessage) error
}

// Publisher tells the other instances that a user's rules changed.
type Publisher interface {
	Publish(ctx context.Context, channel, payload string) error
}

// RulesChannel is the bus channel announcing rule changes (payload: the
// user ID); subscribers call ForgetUser.
const RulesChannel = "parley_push_rules"

// Config tunes the engine; zero values take the defaults.
type Config struct {
	// PruneAfter is how long push actions are kept once read (30 days).
	PruneAfter time.Duration
	// CacheTTL bounds how long a user's cached rules and ignore list are
	// used (30 s): ignore-list changes made on another instance are not
	// announced.
	CacheTTL time.Duration
}

// Engine is the push engine.
type Engine struct {
	cfg      Config
	db       *storage.DB
	store    *storage.Push
	rooms    *rooms.Engine
	accounts AccountData
	log      *slog.Logger
	now      func() time.Time

	receipts ReadReceipts
	bus      Publisher

	// users caches each user's compiled rules and ignore list; gen moves
	// on every invalidation so that a load racing with a change is not
	// cached.
	users *lru.Cache[string, userEntry]
	gen   atomic.Int64
	// names caches display-name matchers (contains_display_name).
	names *lru.Cache[string, *regexp.Regexp]
	// roomCtx keeps rooms' push contexts between batches (evaluateRoom);
	// only the persister's goroutine uses them.
	roomCtx *lru.Cache[string, roomContext]
	// recent holds the push actions committed last, for counts from memory.
	recent *pushLog
	// countCache keeps unread counts between syncs (counts.go).
	countCache *lru.Cache[countKey, countEntry]
	// inputs keeps rooms' count inputs by the position they were read for
	// (countInputs), for the next build of a window in which they did not
	// change.
	inputs *lru.Versions[inputsKey, int64, roomInputs]
	// locks serialise rule changes per user on this instance, so that
	// m.push_rules account data is written in the order of the changes.
	locks [64]sync.Mutex
}

// roomContext is a room's push context as of a state snapshot.
type roomContext struct {
	pr    *rooms.PushRoom
	state int64
}

type userEntry struct {
	rules   *ruleset
	ignored map[string]bool
	at      time.Time
}

// New builds the engine. accounts receives m.push_rules account data.
func New(cfg Config, db *storage.DB, roomsEngine *rooms.Engine, accounts AccountData, log *slog.Logger) *Engine {
	if cfg.PruneAfter <= 0 {
		cfg.PruneAfter = 30 * 24 * time.Hour
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 30 * time.Second
	}
	return &Engine{
		cfg: cfg, db: db, store: db.Push(), rooms: roomsEngine, accounts: accounts, log: log, now: time.Now,
		users:      lru.New[string, userEntry](100_000),
		names:      lru.New[string, *regexp.Regexp](10_000),
		roomCtx:    lru.New[string, roomContext](2_000),
		recent:     newPushLog(8192),
		countCache: lru.New[countKey, countEntry](100_000),
		inputs:     lru.NewVersions[inputsKey, int64, roomInputs](100_000),
	}
}

// SetReceipts installs the read receipt source; without one every
// notification counts as unread. Call before serving.
func (e *Engine) SetReceipts(r ReadReceipts) { e.receipts = r }

// SetPublisher installs the bus that announces rule changes to other
// instances. Call before serving.
func (e *Engine) SetPublisher(p Publisher) { e.bus = p }

// ForgetUser drops what is cached about a user's rules and ignore list
// (after a change here or on another instance, or any account data write).
func (e *Engine) ForgetUser(userID string) {
	e.gen.Add(1)
	e.users.Remove(userID)
}

// ForgetAll drops every cached ruleset (after the bus missed messages).
func (e *Engine) ForgetAll() {
	e.gen.Add(1)
	e.users.Purge()
}

func (e *Engine) lock(userID string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(userID))
	return &e.locks[h.Sum32()%uint32(len(e.locks))]
}

// userStates returns the compiled rules and ignore lists of users,
// loading those not cached (or cached too long) in two queries.
func (e *Engine) userStates(ctx context.Context, users []string, into map[string]userEntry) error {
	now := e.now()
	var missing []string
	for _, u := range users {
		if _, ok := into[u]; ok {
			continue
		}
		if c, ok := e.users.Get(u); ok && now.Sub(c.at) < e.cfg.CacheTTL {
			into[u] = c
			continue
		}
		missing = append(missing, u)
	}
	if len(missing) == 0 {
		return nil
	}
	gen := e.gen.Load()
	docs, err := e.store.PushRulesForUsers(ctx, missing)
	if err != nil {
		return err
	}
	lists, err := e.store.IgnoredUserLists(ctx, missing)
	if err != nil {
		return err
	}
	for _, u := range missing {
		ent := userEntry{rules: defaultRuleset, ignored: parseIgnored(lists[u], u), at: now}
		if raw, ok := docs[u]; ok {
			d, err := parseDocument(raw)
			if err != nil {
				e.log.Warn("unreadable push rules; using the defaults", "user", u, "err", err)
			} else {
				ent.rules = compileRuleset(d)
			}
		}
		into[u] = ent
		if e.gen.Load() == gen {
			e.users.Put(u, ent)
		}
	}
	return nil
}

// parseIgnored reads m.ignored_user_list content; nobody ignores
// themselves, and a malformed list ignores nobody.
func parseIgnored(raw, self string) map[string]bool {
	if raw == "" {
		return nil
	}
	var c struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal([]byte(raw), &c) != nil || len(c.IgnoredUsers) == 0 {
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
