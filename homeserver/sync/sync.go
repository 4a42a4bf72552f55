// Package sync is the sync engine: it answers GET /sync (and feeds the
// WebSocket gateway) with everything that changed for a user and device
// since a token, long-polling until something does.
//
//	Sync(req) ─► positions now ─► build response for (since, now]
//	                 ▲                       │ empty?
//	                 │   notifier.Wait(gen) ◄┘ yes, and timeout left
//	                 └───────── woken ────────┘
//
// A response is built from independent streams — room events (timeline,
// state, membership), account data, receipts, typing, presence, to-device
// messages and device lists — each read up to the position taken at the
// start, so that the next token never skips anything committed.
package sync

import (
	"context"
	"encoding/json"
	"log/slog"
	"runtime"
	"time"

	"github.com/parley-chat/parley/e2ee"
	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/filter"
	"github.com/parley-chat/parley/homeserver/notifier"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/coalesce"
	"github.com/parley-chat/parley/internal/lru"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// Receipts is what sync reads of read and delivery receipts.
type Receipts interface {
	Position(ctx context.Context) (int64, error)
	Since(ctx context.Context, forUser string, roomIDs []string, from, to int64) (map[string]json.RawMessage, error)
	Current(ctx context.Context, forUser string, roomIDs []string) (map[string]json.RawMessage, error)
}

// Typing is what sync reads of typing notifications.
type Typing interface {
	Position() int64
	Since(roomIDs []string, since int64) map[string][]string
	Current(roomIDs []string) map[string][]string
}

// Presence is what sync reads and records of presence.
type Presence interface {
	Position() int64
	Since(ctx context.Context, forUser string, since int64) ([]json.RawMessage, error)
	SyncActivity(user string, setPresence string)
	Enabled() bool
}

// RoomCounts are a room's unread counts.
type RoomCounts struct {
	Notification, Highlight int
	Threads                 map[string]ThreadCounts
}

// Quiet names the rooms in which neither the user's membership, nor their
// own events, nor their read receipts changed in the events window
// (Since, upTo] of a count: the push engine's Quiet.
type Quiet struct {
	Since int64
	Rooms map[string]bool
}

// ThreadCounts are a thread's unread counts.
type ThreadCounts struct{ Notification, Highlight int }

// Counts gives unread notification counts.
type Counts interface {
	// Counts counts up to upTo, a committed events-stream position;
	// quiet names rooms whose count inputs did not change since a
	// previous count.
	Counts(ctx context.Context, user string, roomIDs []string, threads bool, upTo int64, quiet Quiet) (map[string]RoomCounts, error)
}

// Keys is what sync reads of end-to-end encryption.
type Keys interface {
	CurrentPositions(ctx context.Context) (map[string]int64, error)
	ToDeviceSince(ctx context.Context, userID, deviceID string, since, limit int64) ([]e2ee.ToDeviceMessage, int64, error)
	AckToDevice(ctx context.Context, userID, deviceID string, upTo int64) error
	// KeyCounts returns the one-time key counts and unused fallback key
	// types of a device.
	KeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error)
	DeviceListChanges(ctx context.Context, userID string, from, to int64, delta e2ee.MembershipDelta) (changed, left []string, err error)
}

// PushRules gives a user's push rules as the m.push_rules account data
// content (the server's defaults for users who never changed them).
type PushRules interface {
	AccountDataContent(ctx context.Context, user string) (json.RawMessage, error)
}

// Deps are the engines sync reads; any but Rooms, Accounts and Notifier
// may be nil.
type Deps struct {
	DB        *storage.DB
	Rooms     *rooms.Engine
	Accounts  *accounts.Engine
	Notifier  *notifier.Notifier
	Receipts  Receipts
	Typing    Typing
	Presence  Presence
	Counts    Counts
	Keys      Keys
	PushRules PushRules
}

// Engine is the sync engine.
type Engine struct {
	d   Deps
	log *slog.Logger
	// filters keeps parsed filters, read-only once parsed: clients send
	// the same inline filter, or name the same stored one (stored filters
	// never change), on every sync.
	filters *lru.Cache[string, *filter.Filter]
	// slots bounds the incremental builds running at once (buildSlots),
	// so that a herd of woken syncs never takes every processor from the
	// persister and the sends it serves, and so that builds queued behind
	// one carry more news each. On two cores and SQLite this took the
	// load test from 1,200 to 1,800 msgs/s.
	slots chan struct{}
	// joined keeps each user's joined rooms as of an events position (the
	// next_batch of the build that read them): a build from that token
	// whose window holds no membership change of the user reuses them.
	joined *lru.Cache[string, joinedAt]
	// quietAt keeps, for answers given, the user's notifier generation
	// before their positions were read: a sync from such a token while
	// the generation has not moved has nothing to build.
	quietAt *lru.Versions[string, Token, uint64]
	// streams reads the streams' positions for all the builds woken at
	// once: the members of a room woken by one commit share one read
	// (see positions).
	streams *coalesce.Reader[map[string]int64]
}

// joinedAt is a user's joined rooms as of an events position.
type joinedAt struct {
	pos   int64
	rooms []string
}

// New builds the engine.
func New(d Deps, log *slog.Logger) *Engine {
	e := &Engine{d: d, log: log, filters: lru.New[string, *filter.Filter](10_000),
		slots: make(chan struct{}, buildSlots(d.DB)), joined: lru.New[string, joinedAt](100_000),
		quietAt: lru.NewVersions[string, Token, uint64](100_000)}
	if d.DB != nil {
		e.streams = coalesce.NewEpochReader(d.DB.StreamPositions, d.DB.CommitEpoch)
	}
	return e
}

// Limits of a sync request.
const (
	// maxCachedFilter bounds the inline filters kept parsed, so that the
	// cache's memory stays bounded whatever clients send.
	maxCachedFilter      = 2048
	DefaultTimelineLimit = 10
	MaxTimelineLimit     = 500
	MaxTimeout           = 5 * time.Minute
	toDeviceLimit        = 100
	// presenceRefresh is how often a waiting sync renews presence.
	presenceRefresh = time.Minute
)

// Request is one sync request.
type Request struct {
	UserID, DeviceID string
	Since            *Token
	Timeout          time.Duration
	FullState        bool
	SetPresence      string
	Filter           *filter.Filter
	UseStateAfter    bool
	// PresenceKept: the caller renews the user's presence while the sync
	// waits (the WebSocket does at each ping), so the wait is one piece
	// instead of slices that wake to renew it.
	PresenceKept bool
	// Continued: the request carries on a stream of answers on one
	// connection (a WebSocket's), after a first answer or a wake-up, so
	// the news it needs is what this instance has heard of (see
	// positions).
	Continued bool
}

// ResolveFilter reads the filter parameter: inline JSON or a stored ID.
func (e *Engine) ResolveFilter(ctx context.Context, userID, param string) (*filter.Filter, error) {
	if param == "" {
		return &filter.Filter{}, nil
	}
	key := param
	if param[0] != '{' {
		key = userID + "\x00" + param
	}
	if f, ok := e.filters.Get(key); ok {
		return f, nil
	}
	if param[0] == '{' {
		f, err := filter.Parse([]byte(param))
		if err != nil {
			return nil, err
		}
		if len(param) <= maxCachedFilter {
			e.filters.Put(key, f)
		}
		return f, nil
	}
	raw, err := e.d.Accounts.Filter(ctx, userID, param)
	if err != nil {
		if mxerr.IsCode(err, "M_NOT_FOUND") {
			return nil, mxerr.InvalidParam("Unknown filter %q", param)
		}
		return nil, err
	}
	f, err := filter.Parse(raw)
	if err != nil {
		return nil, err
	}
	e.filters.Put(key, f)
	return f, nil
}

// Sync answers a sync request, waiting up to its timeout for news when
// there is none.
func (e *Engine) Sync(ctx context.Context, req Request) (*Response, error) {
	if req.Filter == nil {
		req.Filter = &filter.Filter{}
	}
	if e.d.Presence != nil {
		e.d.Presence.SyncActivity(req.UserID, req.SetPresence)
	}
	if req.Since != nil && e.d.Keys != nil && req.DeviceID != "" {
		// Coming back with this token proves the device got everything
		// up to it: only now may those to-device messages go.
		if err := e.d.Keys.AckToDevice(ctx, req.UserID, req.DeviceID, req.Since.ToDevice); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(min(req.Timeout, MaxTimeout))
	var resp *Response
	var built Token     // the positions resp was built for
	var builtGen uint64 // the user's generation before they were read
	first := true
	for {
		gen := e.d.Notifier.Generation(req.UserID)
		remaining := time.Until(deadline)
		if first && req.Since != nil && !req.FullState && remaining > 0 {
			// Back with the token of an answer built at this very
			// generation: nothing that concerns the user has happened
			// since, so wait without reading the positions.
			if g, ok := e.quietAt.Get(req.UserID, *req.Since); ok && g == gen {
				first = false
				if !e.wait(ctx, req, gen, deadline) {
					return nil, ctx.Err()
				}
				continue
			}
		}
		now, err := e.positions(ctx, first && !req.Continued)
		first = false
		if err != nil {
			return nil, err
		}
		// A window in which no stream moved holds nothing: the usual
		// start of a long poll, and wake-ups whose news an earlier build
		// already carried. Build only when something moved, or to answer.
		quiet := req.Since != nil && !req.FullState && remaining > 0 && nothingWanted(req, now)
		if !quiet && (resp == nil || now != built) {
			resp, built, err = e.gatedBuild(ctx, req, now)
			if err != nil {
				return nil, err
			}
			builtGen = gen
		}
		if resp != nil && (req.Since == nil || !resp.empty() || remaining <= 0 || req.FullState) {
			e.quietAt.Put(req.UserID, resp.Next, builtGen)
			return resp, nil
		}
		if !e.wait(ctx, req, gen, deadline) {
			return nil, ctx.Err()
		}
	}
}

// nothingWanted reports whether no stream the request wants moved past
// its since token: none at all, or only presence for a filter that takes
// none (presence changes wake everyone sharing a room with the user, and a
// client that turned presence off should not pay a build for each).
func nothingWanted(req Request, now Token) bool {
	t := now.max(*req.Since)
	if req.Filter != nil && req.Filter.Presence.AllowsNone() {
		t.Presence = req.Since.Presence
	}
	return t == *req.Since
}

// wait blocks until the user's generation passes gen or the deadline
// comes; it reports false when ctx ended.
func (e *Engine) wait(ctx context.Context, req Request, gen uint64, deadline time.Time) bool {
	// Wait in slices so that a long wait keeps the user present.
	slice := time.Until(deadline)
	if !req.PresenceKept {
		slice = min(slice, presenceRefresh)
	}
	if !e.d.Notifier.Wait(ctx, req.UserID, gen, slice) {
		if ctx.Err() != nil {
			return false
		}
		if time.Until(deadline) > 0 && e.d.Presence != nil {
			e.d.Presence.SyncActivity(req.UserID, req.SetPresence)
		}
	}
	return true
}

// buildSlots is how many incremental builds run at once. On SQLite a build
// only computes, so one processor is kept free of them; on PostgreSQL a
// build mostly waits for round trips, and too few slots queue them (on two
// cores, 2× the processors kept p50 at 500 msgs/s at 32 ms where one slot
// took 55 ms).
func buildSlots(db *storage.DB) int {
	n := runtime.GOMAXPROCS(0)
	if db != nil && db.Dialect() == "postgres" {
		return 2 * n
	}
	return max(1, n-1)
}

// gatedBuild builds an incremental response in one of the slots. Initial
// and full-state syncs, rare and slow, go around the gate so that they
// never hold up everyone's incremental ones. A build that had to wait for
// its slot reads the positions again: what arrived while it waited goes
// into the same answer rather than into another build right after, so
// that a busy server builds fewer, fuller answers. It returns the
// positions it built for.
func (e *Engine) gatedBuild(ctx context.Context, req Request, now Token) (*Response, Token, error) {
	if req.Since != nil && !req.FullState {
		select {
		case e.slots <- struct{}{}:
		default:
			select {
			case e.slots <- struct{}{}:
			case <-ctx.Done():
				return nil, now, ctx.Err()
			}
			var err error
			if now, err = e.positions(ctx, false); err != nil {
				<-e.slots
				return nil, now, err
			}
		}
		defer func() { <-e.slots }()
		// One read transaction for the whole build: a dozen reads, one
		// view. Only gated builds hold one, so that the read connections
		// they keep are bounded by the slots; a long initial sync reads
		// statement by statement and never holds one back from others.
		if e.d.DB != nil {
			var end func()
			ctx, end = e.d.DB.ReadSnapshot(ctx)
			defer end()
		}
	}
	resp, err := e.build(ctx, req, now)
	return resp, now, err
}

// positions reads every stream's current position, the database's in one
// query shared with the builds asking at the same time. A fresh read
// starts after this call does, so it sees every commit made before, on
// any instance: a new request's, whose client may have just written
// through another instance. Otherwise the read may be one that started
// when the database's commit epoch was already what it is now, which
// sees every commit this instance has heard of: enough for a build woken
// by a commit (whose wake-up came after its epoch moved), and shared by
// every member of the room woken with it instead of one read per wave.
// ctx must not hold a read snapshot (ReadSnapshot): the read may run in
// another caller's context.
func (e *Engine) positions(ctx context.Context, fresh bool) (Token, error) {
	var t Token
	read := e.streams.Current
	if fresh {
		read = e.streams.Read
	}
	ps, err := read(ctx)
	if err != nil {
		return t, err
	}
	t.Events, t.AccountData = ps[storage.EventsStream], ps[storage.AccountDataStream]
	if e.d.Receipts != nil {
		t.Receipts = ps[storage.ReceiptsStream]
	}
	if e.d.Keys != nil {
		t.ToDevice, t.DeviceLists = ps[storage.ToDeviceStream], ps[storage.DeviceListsStream]
	}
	if e.d.Typing != nil {
		t.Typing = e.d.Typing.Position()
	}
	if e.d.Presence != nil {
		t.Presence = e.d.Presence.Position()
	}
	return t, nil
}
