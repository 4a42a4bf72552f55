// Package receipts keeps read receipts, private read receipts, fully read
// markers and MSC4089 delivery receipts, and tells the sync engine which
// of them each user sees.
//
//	POST /receipt, /read_markers ─► Send / SetReadMarkers
//	    checks: shape, membership, visibility, thread
//	    m.read, m.read.private ─► "up to" marker per (room, user, type, thread),
//	                              moving only forward ─► NotifyRoom / NotifyUsers(self)
//	    m.delivery             ─► one per (event, reader) ─► NotifyUsers(event sender)
//	    m.fully_read           ─► room account data (moving only forward)
//	sync ─► Position, Since, Current; push counts ─► ReadUpTo
//
// Receipts and delivery receipts share one stream, positioned inside the
// writing transaction so that positions become visible in order.
package receipts

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// Receipt types.
const (
	Read        = "m.read"
	ReadPrivate = "m.read.private"
	FullyRead   = "m.fully_read"
	Delivery    = "m.delivery"
	// DeliveryUnstable is MSC4089's unstable name for m.delivery.
	DeliveryUnstable = "org.matrix.msc4089.delivery"
)

// MainThread is the thread ID of the main timeline.
const MainThread = "main"

// Rooms is what receipts need to know about rooms and events.
type Rooms interface {
	// IsJoined reports whether the user is joined to the room (false for
	// an unknown room).
	IsJoined(ctx context.Context, userID, roomID string) (bool, error)
	// EventVisible reports whether the user may see the event.
	EventVisible(ctx context.Context, userID, roomID, eventID string) (bool, error)
	EventPositions
}

// EventPositions locates events in the events stream.
type EventPositions interface {
	// EventPosition returns an event's events-stream position, its sender
	// and the root of its thread ("" for the main timeline); M_NOT_FOUND
	// if it is not in the room's timeline.
	EventPosition(ctx context.Context, roomID, eventID string) (streamPos int64, sender, threadRoot string, err error)
}

// AccountData reads and writes room account data (m.fully_read), bypassing
// the refusal clients get for that type.
type AccountData interface {
	AccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error)
	PutAccountData(ctx context.Context, userID, roomID, typ string, content json.RawMessage) error
}

// Notifier wakes waiting clients.
type Notifier interface {
	NotifyRoom(roomID string, extra ...string)
	NotifyUsers(users ...string)
}

// Config tunes the engine.
type Config struct {
	// ServerName tells local users (whose clients are woken) from remote.
	ServerName string
	// DeliveryWindow is how long delivery receipts are shown on initial
	// sync and kept (default 7 days).
	DeliveryWindow time.Duration
	// MaxDeliveryPerRoom bounds the delivery receipts per room an initial
	// sync shows, newest first (default 100).
	MaxDeliveryPerRoom int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Deps are the engines receipts call.
type Deps struct {
	Rooms       Rooms
	AccountData AccountData
	Notifier    Notifier
}

// Engine is the receipts engine.
type Engine struct {
	cfg   Config
	db    *storage.DB
	store *storage.Receipts
	deps  Deps
	log   *slog.Logger
}

// New builds the engine.
func New(cfg Config, db *storage.DB, deps Deps, log *slog.Logger) *Engine {
	cfg.DeliveryWindow = cmp.Or(cfg.DeliveryWindow, 7*24*time.Hour)
	cfg.MaxDeliveryPerRoom = cmp.Or(cfg.MaxDeliveryPerRoom, 100)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Engine{cfg: cfg, db: db, store: db.Receipts(), deps: deps, log: log}
}

// validEventID reports whether s has the shape of an event ID.
func validEventID(s string) bool {
	return len(s) > 1 && len(s) <= 255 && s[0] == '$' && utf8.ValidString(s) && !strings.ContainsAny(s, " \t\n")
}

// target is a checked event a receipt points at.
type target struct {
	eventID    string
	pos        int64
	sender     string
	threadRoot string
}

// check verifies that user may send a receipt for the event of the room
// (joined: 403; visible: 404) and locates it.
func (e *Engine) check(ctx context.Context, userID, roomID, eventID string) (target, error) {
	ok, err := e.deps.Rooms.EventVisible(ctx, userID, roomID, eventID)
	if err != nil {
		return target{}, err
	}
	if !ok {
		return target{}, mxerr.NotFound("Event %s not found or not visible to you", eventID)
	}
	pos, sender, root, err := e.deps.Rooms.EventPosition(ctx, roomID, eventID)
	if err != nil {
		return target{}, err
	}
	return target{eventID: eventID, pos: pos, sender: sender, threadRoot: root}, nil
}

func (e *Engine) mustBeJoined(ctx context.Context, userID, roomID string) error {
	joined, err := e.deps.Rooms.IsJoined(ctx, userID, roomID)
	if err != nil {
		return err
	}
	if !joined {
		return mxerr.Forbidden("You are not joined to this room")
	}
	return nil
}

// Send handles POST /rooms/{roomId}/receipt/{receiptType}/{eventId}:
// threadID nil is an unthreaded receipt.
func (e *Engine) Send(ctx context.Context, userID, roomID, receiptType, eventID string, threadID *string) error {
	switch receiptType {
	case Read, ReadPrivate, FullyRead, Delivery, DeliveryUnstable:
	default:
		return mxerr.InvalidParam("Unknown receipt type %q", receiptType)
	}
	if !validEventID(eventID) {
		return mxerr.InvalidParam("%q is not a valid event ID", eventID)
	}
	thread := ""
	if threadID != nil {
		thread = *threadID
		switch {
		case receiptType != Read && receiptType != ReadPrivate:
			return mxerr.InvalidParam("thread_id is not allowed for %s", receiptType)
		case thread != MainThread && !validEventID(thread):
			return mxerr.InvalidParam("thread_id must be %q or a thread root's event ID", MainThread)
		}
	}
	if err := e.mustBeJoined(ctx, userID, roomID); err != nil {
		return err
	}
	t, err := e.check(ctx, userID, roomID, eventID)
	if err != nil {
		return err
	}
	if err := inThread(t, threadID); err != nil {
		return err
	}
	switch receiptType {
	case FullyRead:
		return e.setFullyRead(ctx, userID, roomID, t)
	case Delivery, DeliveryUnstable:
		return e.deliver(ctx, userID, roomID, t)
	default:
		return e.read(ctx, userID, roomID, receiptType, thread, t)
	}
}

// inThread checks that a threaded receipt's event is in that thread: for
// "main", not in any thread; for a root, in its thread or the root itself.
func inThread(t target, threadID *string) error {
	if threadID == nil {
		return nil
	}
	switch th := *threadID; {
	case th == MainThread && t.threadRoot != "":
		return mxerr.InvalidParam("Event %s is in thread %s, not the main timeline", t.eventID, t.threadRoot)
	case th != MainThread && t.threadRoot != th && t.eventID != th:
		return mxerr.InvalidParam("Event %s is not in thread %s", t.eventID, th)
	}
	return nil
}

// Markers is the body of POST /read_markers: event IDs, "" for none.
type Markers struct {
	FullyRead   string
	Read        string
	ReadPrivate string
}

// SetReadMarkers handles POST /rooms/{roomId}/read_markers. Every event is
// checked before anything is written.
func (e *Engine) SetReadMarkers(ctx context.Context, userID, roomID string, m Markers) error {
	fields := []struct{ name, eventID string }{{FullyRead, m.FullyRead}, {Read, m.Read}, {ReadPrivate, m.ReadPrivate}}
	for _, f := range fields {
		if f.eventID != "" && !validEventID(f.eventID) {
			return mxerr.InvalidParam("%s: %q is not a valid event ID", f.name, f.eventID)
		}
	}
	if err := e.mustBeJoined(ctx, userID, roomID); err != nil {
		return err
	}
	targets := make([]target, len(fields))
	for i, f := range fields {
		if f.eventID == "" {
			continue
		}
		t, err := e.check(ctx, userID, roomID, f.eventID)
		if err != nil {
			return err
		}
		targets[i] = t
	}
	for i, f := range fields {
		if f.eventID == "" {
			continue
		}
		var err error
		if f.name == FullyRead {
			err = e.setFullyRead(ctx, userID, roomID, targets[i])
		} else {
			err = e.read(ctx, userID, roomID, f.name, "", targets[i])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// read moves a read receipt forward and wakes who sees it.
func (e *Engine) read(ctx context.Context, userID, roomID, typ, thread string, t target) error {
	var moved bool
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		_, moved, err = e.store.ReceiptPut(ctx, tx, storage.Receipt{
			RoomID: roomID, UserID: userID, Type: typ, ThreadID: thread,
			EventID: t.eventID, EventPos: t.pos, TS: e.cfg.Now().UnixMilli(),
		})
		return err
	})
	if err != nil || !moved || e.deps.Notifier == nil {
		return err
	}
	if typ == ReadPrivate {
		e.deps.Notifier.NotifyUsers(userID)
	} else {
		e.deps.Notifier.NotifyRoom(roomID)
	}
	return nil
}

// deliver stores a delivery receipt once and wakes the event's sender. A
// receipt for one's own event says nothing and is dropped.
func (e *Engine) deliver(ctx context.Context, userID, roomID string, t target) error {
	if t.sender == userID {
		return nil
	}
	var added bool
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		_, added, err = e.store.DeliveryPut(ctx, tx, storage.DeliveryReceipt{
			RoomID: roomID, EventID: t.eventID, EventSender: t.sender, UserID: userID, TS: e.cfg.Now().UnixMilli(),
		})
		return err
	})
	if err != nil || !added || e.deps.Notifier == nil {
		return err
	}
	if strings.HasSuffix(t.sender, ":"+e.cfg.ServerName) {
		e.deps.Notifier.NotifyUsers(t.sender)
	}
	return nil
}

// setFullyRead moves the m.fully_read marker forward.
func (e *Engine) setFullyRead(ctx context.Context, userID, roomID string, t target) error {
	cur, err := e.deps.AccountData.AccountData(ctx, userID, roomID, FullyRead)
	switch {
	case err == nil:
		var c struct {
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(cur, &c) == nil && c.EventID != "" {
			if c.EventID == t.eventID {
				return nil
			}
			pos, _, _, err := e.deps.Rooms.EventPosition(ctx, roomID, c.EventID)
			switch {
			case err == nil && pos >= t.pos:
				return nil
			case err != nil && !mxerr.IsCode(err, "M_NOT_FOUND"):
				return err
			}
		}
	case !mxerr.IsCode(err, "M_NOT_FOUND"):
		return err
	}
	content, err := json.Marshal(map[string]string{"event_id": t.eventID})
	if err != nil {
		return err
	}
	return e.deps.AccountData.PutAccountData(ctx, userID, roomID, FullyRead, content)
}

// Position returns the newest committed receipt stream position.
func (e *Engine) Position(ctx context.Context) (int64, error) {
	return e.db.StreamPos(ctx, storage.ReceiptsStream)
}

// Since returns, per room, the m.receipt event content of the receipts
// with from < position ≤ to that forUser may see: m.read of anyone in the
// room, m.read.private only their own, delivery receipts only for events
// forUser sent. Rooms without any are absent.
func (e *Engine) Since(ctx context.Context, forUser string, roomIDs []string, from, to int64) (map[string]json.RawMessage, error) {
	if from >= to || len(roomIDs) == 0 {
		return nil, nil
	}
	reads, err := e.store.ReceiptsSince(ctx, forUser, roomIDs, from, to)
	if err != nil {
		return nil, err
	}
	dels, err := e.store.DeliveriesSince(ctx, forUser, from, to)
	if err != nil {
		return nil, err
	}
	return build(roomIDs, reads, dels)
}

// Current returns, per room, the receipts an initial sync shows: every
// m.read (per thread), forUser's own m.read.private, and the delivery
// receipts of forUser's events made within DeliveryWindow (at most
// MaxDeliveryPerRoom per room, the newest).
func (e *Engine) Current(ctx context.Context, forUser string, roomIDs []string) (map[string]json.RawMessage, error) {
	if len(roomIDs) == 0 {
		return nil, nil
	}
	reads, err := e.store.ReceiptsCurrent(ctx, forUser, roomIDs)
	if err != nil {
		return nil, err
	}
	since := e.cfg.Now().Add(-e.cfg.DeliveryWindow).UnixMilli()
	dels, err := e.store.DeliveriesRecent(ctx, forUser, since, e.cfg.MaxDeliveryPerRoom)
	if err != nil {
		return nil, err
	}
	return build(roomIDs, reads, dels)
}

// ReadUpTo returns the events-stream position of the event forUser's
// latest read receipt (m.read or m.read.private, whichever is further) in
// the room and thread points at; 0 if none. threadID "" is the unthreaded
// receipt.
func (e *Engine) ReadUpTo(ctx context.Context, user, roomID, threadID string) (int64, error) {
	return e.store.ReceiptReadUpTo(ctx, user, roomID, threadID)
}

// Prune deletes delivery receipts older than DeliveryWindow.
func (e *Engine) Prune(ctx context.Context) error {
	n, err := e.store.DeliveriesPrune(ctx, e.cfg.Now().Add(-e.cfg.DeliveryWindow).UnixMilli())
	if err != nil {
		return err
	}
	if n > 0 {
		e.log.Debug("pruned delivery receipts", "count", n)
	}
	return nil
}

// receiptInfo is one user's entry under an event and receipt type.
type receiptInfo struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

// content is an m.receipt content: event ID → receipt type → user → info.
type content map[string]map[string]map[string]receiptInfo

func (c content) add(eventID, typ, user string, info receiptInfo) {
	byType := c[eventID]
	if byType == nil {
		byType = map[string]map[string]receiptInfo{}
		c[eventID] = byType
	}
	byUser := byType[typ]
	if byUser == nil {
		byUser = map[string]receiptInfo{}
		byType[typ] = byUser
	}
	byUser[user] = info
}

// build groups receipts, given in position order, into one m.receipt
// content per room of roomIDs. A user's receipts of one type on the same
// event in several threads collapse into the newest, which is all the
// format can say. Delivery receipts are given under both m.delivery and
// MSC4089's unstable name, so that clients of either generation see them.
func build(roomIDs []string, reads []storage.Receipt, dels []storage.DeliveryReceipt) (map[string]json.RawMessage, error) {
	want := make(map[string]bool, len(roomIDs))
	for _, r := range roomIDs {
		want[r] = true
	}
	byRoom := map[string]content{}
	get := func(room string) content {
		c := byRoom[room]
		if c == nil {
			c = content{}
			byRoom[room] = c
		}
		return c
	}
	for _, r := range reads {
		if want[r.RoomID] {
			get(r.RoomID).add(r.EventID, r.Type, r.UserID, receiptInfo{TS: r.TS, ThreadID: r.ThreadID})
		}
	}
	for _, d := range dels {
		if want[d.RoomID] {
			c := get(d.RoomID)
			c.add(d.EventID, Delivery, d.UserID, receiptInfo{TS: d.TS})
			c.add(d.EventID, DeliveryUnstable, d.UserID, receiptInfo{TS: d.TS})
		}
	}
	if len(byRoom) == 0 {
		return nil, nil
	}
	out := make(map[string]json.RawMessage, len(byRoom))
	for room, c := range byRoom {
		b, err := json.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("encode receipts: %w", err)
		}
		out[room] = b
	}
	return out, nil
}
