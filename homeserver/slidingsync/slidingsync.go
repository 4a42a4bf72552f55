// Package slidingsync is the simplified sliding sync engine (MSC4186):
// POST /sync with lists (windows over the user's rooms, ordered by
// activity), room subscriptions and extensions, answered with only what
// the client does not hold yet.
//
//	request(pos) ─► connection state at pos (database) ─► positions now
//	      │                                                    │
//	      │   rooms: user's rooms ─► filters ─► order ─► ranges ∪ subscriptions
//	      │          ─► per room: never sent? news since its position?
//	      │             config grown? ─► timeline, required_state, summary
//	      │   extensions: to_device, e2ee, account_data, receipts, typing
//	      ▼                                                    │
//	empty and timeout left? ── yes ─► notifier.Wait ─► build again
//	      │ no
//	      ▼
//	commit: new pos, rooms whose state changed (one transaction) ─► response
//
// What each connection's client holds — the rooms it was sent, up to
// which position, with which required_state and timeline depth, and where
// each extension stands — lives in the database, versioned by pos, so
// that any instance can serve the next request and a client retrying with
// the same pos gets a consistent answer. A pos that is unknown, expired,
// superseded or not the requester's gets M_UNKNOWN_POS and the client
// starts again.
package slidingsync

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/parley-chat/parley/e2ee"
	"github.com/parley-chat/parley/homeserver/notifier"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/storage"
)

// Receipts is what the engine reads of read receipts.
type Receipts interface {
	Position(ctx context.Context) (int64, error)
	Since(ctx context.Context, forUser string, roomIDs []string, from, to int64) (map[string]json.RawMessage, error)
	Current(ctx context.Context, forUser string, roomIDs []string) (map[string]json.RawMessage, error)
}

// Typing is what the engine reads of typing notifications.
type Typing interface {
	Position() int64
	Since(roomIDs []string, since int64) map[string][]string
	Current(roomIDs []string) map[string][]string
}

// Presence records that a user is syncing.
type Presence interface {
	SyncActivity(user string, setPresence string)
}

// Keys is what the engine reads of end-to-end encryption.
type Keys interface {
	CurrentPositions(ctx context.Context) (map[string]int64, error)
	ToDeviceSince(ctx context.Context, userID, deviceID string, since, limit int64) ([]e2ee.ToDeviceMessage, int64, error)
	AckToDevice(ctx context.Context, userID, deviceID string, upTo int64) error
	// KeyCounts returns the one-time key counts and unused fallback key
	// types of a device.
	KeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error)
	DeviceListChanges(ctx context.Context, userID string, from, to int64, delta e2ee.MembershipDelta) (changed, left []string, err error)
}

// Deps are the engines sliding sync reads; Keys, Receipts, Typing and
// Presence may be nil (their extensions then return nothing).
type Deps struct {
	DB       *storage.DB
	Rooms    *rooms.Engine
	Notifier *notifier.Notifier
	Keys     Keys
	Receipts Receipts
	Typing   Typing
	Presence Presence
}

// Config tunes the engine; zero values take the defaults.
type Config struct {
	// MaxRoomsPerResponse bounds the rooms one response carries; the rest
	// follow in the next responses.
	MaxRoomsPerResponse int
	// MaxConnectionsPerDevice bounds a device's connections; a new one
	// drops the least recently used.
	MaxConnectionsPerDevice int
	// ConnectionLifetime is how long an unused connection lives.
	ConnectionLifetime time.Duration
}

// Defaults of Config, and the longest wait.
const (
	DefaultMaxRoomsPerResponse     = 200
	DefaultMaxConnectionsPerDevice = 10
	DefaultConnectionLifetime      = 7 * 24 * time.Hour
	MaxTimeout                     = 5 * time.Minute
	// touchEvery coalesces the last-use updates of a connection that
	// keeps coming back with the same pos.
	touchEvery = time.Hour
)

// Engine is the sliding sync engine.
type Engine struct {
	d     Deps
	cfg   Config
	store *storage.SlidingSync
	log   *slog.Logger
	now   func() time.Time
}

// New builds the engine.
func New(d Deps, cfg Config, log *slog.Logger) *Engine {
	if cfg.MaxRoomsPerResponse <= 0 {
		cfg.MaxRoomsPerResponse = DefaultMaxRoomsPerResponse
	}
	if cfg.MaxConnectionsPerDevice <= 0 {
		cfg.MaxConnectionsPerDevice = DefaultMaxConnectionsPerDevice
	}
	if cfg.ConnectionLifetime <= 0 {
		cfg.ConnectionLifetime = DefaultConnectionLifetime
	}
	return &Engine{d: d, cfg: cfg, store: d.DB.SlidingSync(), log: log, now: time.Now}
}

// Sync answers a request, waiting up to its timeout for news when there
// is none and the request continues a connection.
func (e *Engine) Sync(ctx context.Context, req *Request) (*Response, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	req.Compat = req.Compat || req.usesCompat()
	conn, err := e.open(ctx, req)
	if err != nil {
		return nil, err
	}
	if e.d.Presence != nil {
		e.d.Presence.SyncActivity(req.UserID, req.SetPresence)
	}
	if err := e.ackToDevice(ctx, req, conn); err != nil {
		return nil, err
	}
	var timeout time.Duration
	if req.Timeout != nil && !conn.isNew {
		timeout = time.Duration(min(*req.Timeout, MaxTimeout.Milliseconds())) * time.Millisecond
	}
	deadline := time.Now().Add(timeout)
	m := newMemo()
	for {
		gen := e.d.Notifier.Generation(req.UserID)
		b, err := e.build(ctx, req, conn, m)
		if err != nil {
			return nil, err
		}
		remaining := time.Until(deadline)
		// Rooms whose record changed without news (a grown config that
		// brought nothing) end the wait too: recording them spares the
		// next requests computing them again.
		if conn.isNew || !b.empty() || len(b.touched) > 0 || remaining <= 0 {
			return e.finish(ctx, req, conn, b)
		}
		if !e.d.Notifier.Wait(ctx, req.UserID, gen, remaining) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return e.finish(ctx, req, conn, b)
		}
	}
}

// finish records the response and gives it its pos. A response with
// nothing in it changes nothing the client holds: it keeps its pos.
func (e *Engine) finish(ctx context.Context, req *Request, conn *connection, b *builder) (*Response, error) {
	if !conn.isNew && b.empty() && len(b.touched) == 0 {
		b.resp.Pos = req.Pos
		return b.resp, nil
	}
	st, _ := json.Marshal(b.nextStreams)
	c := storage.SlidingCommit{
		ConnNID: conn.nid, UserID: req.UserID, DeviceID: req.DeviceID, ConnID: req.ConnID,
		Parent: conn.seq, EventsPos: b.to.events, Streams: string(st), Scope: encodeScope(b.scope),
		Rooms: make(map[string]string, len(b.touched)), Specs: map[string]string{}, MaxSpecs: maxSpecs,
		Now: e.now().UnixMilli(), MaxPerDevice: e.cfg.MaxConnectionsPerDevice,
	}
	for room, s := range b.touched {
		c.Rooms[room] = s.encode()
		// Only the configs the stored rooms name.
		if k, ok := b.newSpecs[s.Spec]; ok {
			c.Specs[s.Spec] = k
		}
	}
	nid, seq, err := e.store.Commit(ctx, c)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, unknownPos()
	}
	if err != nil {
		return nil, err
	}
	b.resp.Pos = posToken{Events: b.to.events, Conn: nid, Seq: seq}.String()
	return b.resp, nil
}

// ackToDevice deletes the to-device messages the client proved it has: up
// to the to_device since it sends, or else to where its pos says.
func (e *Engine) ackToDevice(ctx context.Context, req *Request, conn *connection) error {
	td := req.Extensions.ToDevice
	if e.d.Keys == nil || req.DeviceID == "" || td == nil || !td.on() {
		return nil
	}
	upTo := int64(0)
	if td.Since != "" {
		upTo, _ = parseSince(td.Since)
	} else if conn.streams.ToDevice != nil {
		upTo = *conn.streams.ToDevice
	}
	if upTo <= 0 {
		return nil
	}
	return e.d.Keys.AckToDevice(ctx, req.UserID, req.DeviceID, upTo)
}

// Expire deletes connections unused for longer than their lifetime.
func (e *Engine) Expire(ctx context.Context) error {
	before := e.now().Add(-e.cfg.ConnectionLifetime).UnixMilli()
	for {
		n, err := e.store.ExpireConnections(ctx, before, 500)
		if err != nil || n < 500 {
			return err
		}
	}
}

// DevicesDeleted drops the connections of deleted devices, in the
// transaction that deletes them.
func (e *Engine) DevicesDeleted(ctx context.Context, tx *storage.Tx, userID string, deviceIDs []string) error {
	for _, d := range deviceIDs {
		if err := e.store.DeleteDeviceConnections(ctx, tx, userID, d); err != nil {
			return err
		}
	}
	return nil
}
