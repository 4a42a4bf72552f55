// Package rooms is the room engine: it builds, authorises, signs and
// persists events, keeps each room's event graph and state, and answers
// every read of room history with the visibility rules applied.
//
// The write path of one local event:
//
//	Send ──► persister queue ──► batch transaction (advisory lock on
//	PostgreSQL, the single writer on SQLite)
//	           │  for each request, in arrival order:
//	           │    txn ID seen? → answer with the first event
//	           │    auth events from current state → build, hash, sign
//	           │    authorise (eventauth) → 403 naming the failed rule
//	           │    state after = snapshot(state before + event)
//	           │    rows queued: event, edges, extremities, current state
//	           ▼
//	         one round trip writes the batch, commit, wake-ups
//
// Events are addressed inside the server by numeric IDs (nids); state is
// stored as binary skip deltas (snapshot.go); rooms' current state is also
// kept flat in current_state for fast reads.
package rooms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/lru"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// SupportedVersions are the room versions Parley creates and joins.
var SupportedVersions = []id.RoomVersion{
	id.RoomV1, id.RoomV2, id.RoomV3, id.RoomV4, id.RoomV5, id.RoomV6,
	id.RoomV7, id.RoomV8, id.RoomV9, id.RoomV10, id.RoomV11, id.RoomV12,
}

// DefaultVersion is the version of new rooms unless asked otherwise.
const DefaultVersion = id.RoomV12

// Config is the engine's configuration.
type Config struct {
	ServerName     string
	Signer         *Signer
	DefaultVersion id.RoomVersion
}

// Hooks let other engines take part in persistence without this package
// importing them.
type Hooks struct {
	// InTx runs inside the persisting transaction once a batch's events
	// are queued for writing (push actions, notification counts); span
	// is the run of events-stream positions the batch reserved. It runs
	// for every batch, even one that persisted no event.
	InTx func(ctx context.Context, tx *storage.Tx, b *storage.Batch, span Span, events []*Event) error
	// Persisted runs after a batch has committed (wake-ups, federation).
	Persisted func(events []*Event)
}

// Span is the run of events-stream positions [First, End) one persisting
// transaction reserved: the positions of its events, and of none other.
type Span struct{ First, End int64 }

// Engine is the room engine.
type Engine struct {
	cfg   Config
	db    *storage.DB
	store *storage.Rooms
	log   *slog.Logger
	snaps *snapshots
	hooks Hooks
	now   func() time.Time

	events *lru.Cache[int64, *Event]
	// snapAt remembers a room's state snapshot at a committed stream
	// position (final once committed): members syncing the same window
	// ask for the same ones.
	snapAt *lru.Cache[[2]int64, int64]
	// windows remembers timeline windows read at committed positions
	// (timelineNIDs); the slices are shared and never modified.
	windows *lru.Cache[timelineKey, []storage.NIDPos]
	// bundled remembers which events of a window have children to bundle,
	// as of a committed position (aggregate); the maps are never modified.
	bundled *lru.Cache[string, map[string]bool]
	// news remembers the events committed last, for what a woken sync
	// reads: WindowNews, timeline windows, state at a position, bundling.
	news     *newsLog
	keyNIDs  sync.Map // storage.StateKey → int64
	keyNames sync.Map // int64 → storage.StateKey
	metas    sync.Map // room nid → *roomMeta
	metaByID sync.Map // room ID → *roomMeta

	persister *persister
	profiles  Profiles
	keyring   KeyRing
	x         extras // ignored users, directory, ACLs, upgrades (extras.go)
}

// roomMeta is what never changes about a room.
type roomMeta struct {
	NID     int64
	ID      string
	Version id.RoomVersion
}

// New builds the engine. It sets mautrix's pdu.UseInternalMetaForGetEventID
// once: every PDU this server handles carries its event ID, and events of
// room versions 1 and 2 cannot compute theirs.
func New(cfg Config, db *storage.DB, log *slog.Logger) *Engine {
	pdu.UseInternalMetaForGetEventID = true
	if cfg.DefaultVersion == "" {
		cfg.DefaultVersion = DefaultVersion
	}
	e := &Engine{
		cfg: cfg, db: db, store: db.Rooms(), log: log, now: time.Now,
		snaps:   newSnapshots(db.Rooms(), 50_000),
		events:  lru.New[int64, *Event](200_000),
		snapAt:  lru.New[[2]int64, int64](50_000),
		windows: lru.New[timelineKey, []storage.NIDPos](20_000),
		bundled: lru.New[string, map[string]bool](20_000),
		news:    newNewsLog(8192),
	}
	e.persister = newPersister(e)
	return e
}

// SetHooks installs hooks; call before Start.
func (e *Engine) SetHooks(h Hooks) { e.hooks = h }

// Hooks returns the installed hooks.
func (e *Engine) Hooks() Hooks { return e.hooks }

// Start runs the persister; it returns at once.
func (e *Engine) Start(ctx context.Context) error { return e.persister.start(ctx) }

// Stop drains and stops the persister.
func (e *Engine) Stop() { e.persister.stop() }

// ServerName is this server's name.
func (e *Engine) ServerName() string { return e.cfg.ServerName }

// ErrUnknownRoom is returned for rooms this server does not know.
var ErrUnknownRoom = mxerr.NotFound("Unknown room")

// meta returns a room's immutable facts by ID.
func (e *Engine) meta(ctx context.Context, roomID string) (*roomMeta, error) {
	if m, ok := e.metaByID.Load(roomID); ok {
		return m.(*roomMeta), nil
	}
	r, err := e.store.RoomByID(ctx, e.db.Read(), roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrUnknownRoom
	}
	if err != nil {
		return nil, err
	}
	return e.remember(r), nil
}

func (e *Engine) metaByNID(ctx context.Context, q storage.Querier, nid int64) (*roomMeta, error) {
	if m, ok := e.metas.Load(nid); ok {
		return m.(*roomMeta), nil
	}
	r, err := e.store.RoomByNID(ctx, q, nid)
	if err != nil {
		return nil, fmt.Errorf("room %d: %w", nid, err)
	}
	return e.remember(r), nil
}

func (e *Engine) remember(r storage.Room) *roomMeta {
	m := &roomMeta{NID: r.NID, ID: r.RoomID, Version: id.RoomVersion(r.Version)}
	e.metas.Store(r.NID, m)
	e.metaByID.Store(r.RoomID, m)
	return m
}

// keyNID interns a state key; with tx nil an unknown key returns 0.
func (e *Engine) keyNID(ctx context.Context, q storage.Querier, tx *storage.Tx, k storage.StateKey) (int64, error) {
	if v, ok := e.keyNIDs.Load(k); ok {
		return v.(int64), nil
	}
	m, err := e.store.StateKeyNIDs(ctx, q, tx, []storage.StateKey{k})
	if err != nil {
		return 0, err
	}
	nid := m[k]
	if nid != 0 {
		if tx != nil {
			tx.AfterCommit(func() { e.rememberKey(k, nid) })
		} else {
			e.rememberKey(k, nid)
		}
	}
	return nid, nil
}

func (e *Engine) rememberKey(k storage.StateKey, nid int64) {
	e.keyNIDs.Store(k, nid)
	e.keyNames.Store(nid, k)
}

// keyNames resolves interned keys.
func (e *Engine) keysByNID(ctx context.Context, q storage.Querier, nids []int64) (map[int64]storage.StateKey, error) {
	out := make(map[int64]storage.StateKey, len(nids))
	var missing []int64
	for _, n := range nids {
		if v, ok := e.keyNames.Load(n); ok {
			out[n] = v.(storage.StateKey)
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		m, err := e.store.StateKeysByNID(ctx, q, missing)
		if err != nil {
			return nil, err
		}
		for n, k := range m {
			out[n] = k
			if q == e.db.Read() {
				e.rememberKey(k, n)
			}
		}
	}
	return out, nil
}

// eventsByNID loads events, from the batch overlay, the cache or storage.
func (e *Engine) eventsByNID(ctx context.Context, q storage.Querier, ov map[int64]*Event, nids []int64) (map[int64]*Event, error) {
	out := make(map[int64]*Event, len(nids))
	var missing []int64
	for _, n := range nids {
		if ev, ok := ov[n]; ok {
			out[n] = ev
		} else if ev, ok := e.events.Get(n); ok {
			out[n] = ev
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := e.store.EventsByNID(ctx, q, missing)
	if err != nil {
		return nil, err
	}
	for n, row := range rows {
		m, err := e.metaByNID(ctx, q, row.RoomNID)
		if err != nil {
			return nil, err
		}
		ev, err := fromRow(row, m.Version, m.ID)
		if err != nil {
			return nil, err
		}
		e.events.Put(n, ev)
		out[n] = ev
	}
	return out, nil
}

// eventByNID loads one event.
func (e *Engine) eventByNID(ctx context.Context, q storage.Querier, ov map[int64]*Event, nid int64) (*Event, error) {
	m, err := e.eventsByNID(ctx, q, ov, []int64{nid})
	if err != nil {
		return nil, err
	}
	ev, ok := m[nid]
	if !ok {
		return nil, fmt.Errorf("event nid %d: %w", nid, storage.ErrNotFound)
	}
	return ev, nil
}

// eventsByID loads events by event ID (missing ones are absent).
func (e *Engine) eventsByID(ctx context.Context, q storage.Querier, ids []string) (map[string]*Event, error) {
	rows, err := e.store.EventsByID(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Event, len(rows))
	for idv, row := range rows {
		if ev, ok := e.events.Get(row.NID); ok && ev.RedactedBy == row.RedactedBy {
			out[idv] = ev
			continue
		}
		m, err := e.metaByNID(ctx, q, row.RoomNID)
		if err != nil {
			return nil, err
		}
		ev, err := fromRow(row, m.Version, m.ID)
		if err != nil {
			return nil, err
		}
		e.events.Put(row.NID, ev)
		out[idv] = ev
	}
	return out, nil
}

// eventByID loads one event; M_NOT_FOUND if unknown.
func (e *Engine) eventByID(ctx context.Context, eventID string) (*Event, error) {
	m, err := e.eventsByID(ctx, e.db.Read(), []string{eventID})
	if err != nil {
		return nil, err
	}
	ev, ok := m[eventID]
	if !ok {
		return nil, mxerr.NotFound("Event not found")
	}
	return ev, nil
}

// stateEventsAt returns the whole state at a snapshot as events.
func (e *Engine) stateEventsAt(ctx context.Context, q storage.Querier, snap int64) (map[storage.StateKey]*Event, error) {
	st, err := e.snaps.full(ctx, q, nil, snap)
	if err != nil {
		return nil, err
	}
	keyNIDs := make([]int64, 0, len(st))
	evNIDs := make([]int64, 0, len(st))
	for k, v := range st {
		keyNIDs = append(keyNIDs, k)
		evNIDs = append(evNIDs, v)
	}
	keys, err := e.keysByNID(ctx, q, keyNIDs)
	if err != nil {
		return nil, err
	}
	evs, err := e.eventsByNID(ctx, q, nil, evNIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[storage.StateKey]*Event, len(st))
	for k, v := range st {
		if ev, ok := evs[v]; ok {
			out[keys[k]] = ev
		}
	}
	return out, nil
}

// stateEventAt returns one state event at a snapshot (nil if unset).
func (e *Engine) stateEventAt(ctx context.Context, q storage.Querier, snap int64, k storage.StateKey) (*Event, error) {
	kn, err := e.keyNID(ctx, q, nil, k)
	if err != nil || kn == 0 {
		return nil, err
	}
	ev, err := e.snaps.lookup(ctx, q, nil, snap, kn)
	if err != nil || ev == 0 {
		return nil, err
	}
	return e.eventByNID(ctx, q, nil, ev)
}

// currentStateEvent returns one event of a room's current state (nil if unset).
func (e *Engine) currentStateEvent(ctx context.Context, q storage.Querier, roomNID int64, typ, key string) (*Event, error) {
	nid, err := e.store.CurrentStateGet(ctx, q, roomNID, typ, key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return e.eventByNID(ctx, q, nil, nid)
}
