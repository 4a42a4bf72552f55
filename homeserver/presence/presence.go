// Package presence decides whether users are online, unavailable or
// offline, and tells the sync engine about changes.
//
// Inputs, with their times, are kept per user in the database:
//
//   - activity (Touch: any request but /sync; PUT online) raises
//     last_active and last_seen;
//   - a sync (SyncActivity) raises last_seen only, and brings an offline
//     user online (set_presence online) or unavailable (unavailable);
//   - PUT unavailable or offline is the user's explicit state, kept until
//     they PUT another: every request counts as activity here, so activity
//     cannot be allowed to undo a state the user chose (a client that
//     idles sets online again itself).
//
// The published outputs follow from them (see derive): offline if set so
// or not seen for OfflineAfter; unavailable if set so or idle for
// IdleAfter; online otherwise, currently_active within ActiveWindow of the
// last activity. Every change of the outputs takes a new position: a
// millisecond timestamp, strictly increasing across every instance
// because changes are written under one lock.
//
// Activity is cheap: Touch and SyncActivity only note the time in memory.
// A flusher writes, every FlushEvery and in one transaction, the users
// whose outputs change and those whose new times have waited PersistEvery;
// it also applies the timeouts that fell due. After the commit it tells
// the other instances (bus channel parley_presence) and wakes the local
// users who share a room with a changed user, in one notification.
package presence

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// Presence states.
const (
	Online      = "online"
	Unavailable = "unavailable"
	Offline     = "offline"
)

// MaxStatusMsgBytes bounds a status message.
const MaxStatusMsgBytes = 1024

// busChannel tells other instances that presence changed.
const busChannel = "parley_presence"

// flushLock serialises presence writes across instances, so that
// positions commit in order.
const flushLock = 8200510

// maxDue bounds the timeouts applied per flush; the rest wait for the next.
const maxDue = 1000

// maxSince bounds an incremental Since; more changes fall back to the
// whole current presence.
const maxSince = 5000

// Rooms tells who shares a room with whom.
type Rooms interface {
	// SharedRoomUsers lists the users joined to any room userID has joined.
	SharedRoomUsers(ctx context.Context, userID string) ([]string, error)
	// UsersShareRoom reports whether two users are both joined to a room.
	UsersShareRoom(ctx context.Context, a, b string) (bool, error)
}

// Users tells whether a local user exists.
type Users interface {
	UserExists(ctx context.Context, userID string) (bool, error)
}

// Notifier wakes waiting clients.
type Notifier interface {
	NotifyUsers(users ...string)
}

// Config tunes the engine.
type Config struct {
	// Enabled turns presence on. Off, nothing is recorded or delivered:
	// PUT is accepted and ignored, GET answers offline.
	Enabled bool
	// ServerName tells local users from remote ones.
	ServerName string
	// IdleAfter makes an online user unavailable without activity
	// (default 5 minutes).
	IdleAfter time.Duration
	// OfflineAfter makes a user offline without any request or sync; it
	// must exceed the longest /sync long-poll (default 2 minutes).
	OfflineAfter time.Duration
	// ActiveWindow is how long after activity a user is currently_active
	// (default 1 minute).
	ActiveWindow time.Duration
	// FlushEvery is how often activity is written and timeouts applied
	// (default 1 s).
	FlushEvery time.Duration
	// PersistEvery is how long new activity times that change nothing
	// visible may wait in memory (default 15 s, well under ActiveWindow).
	PersistEvery time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Deps are what the engine calls; Bus may be nil (one instance).
type Deps struct {
	Rooms    Rooms
	Users    Users
	Notifier Notifier
	Bus      *storage.Bus
}

// Engine is the presence engine.
type Engine struct {
	cfg   Config
	db    *storage.DB
	store *storage.Presence
	deps  Deps
	log   *slog.Logger

	mu sync.Mutex
	// pending is activity not yet written, by user.
	pending map[string]*input
	// writing is activity a flush took from pending and is writing; it
	// counts for Status until the written rows are in known.
	writing map[string]*input
	// known is each recently seen user's presence as last read or
	// written here, to tell activity that changes nothing visible.
	known map[string]storage.PresenceRow
	// forgotAt is when known was last cleaned (ms).
	forgotAt int64
	pos      int64

	// flushMu makes flushes (the flusher's and SetStatus's) one at a time
	// per instance.
	flushMu   sync.Mutex
	poke      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	startOnce sync.Once
	stopOnce  sync.Once
}

// input is a user's activity noted since the last flush (ms; 0: none).
type input struct {
	active, seen int64
	// syncOnline: a sync asked to be online at seen.
	syncOnline bool
	// first is when the entry was made.
	first int64
	// set is a PUT of the user's state.
	set *setState
}

type setState struct {
	state, msg string
	at         int64
}

// maxPending flushes early when this many users wait.
const maxPending = 50_000

// New builds the engine; Start runs its flusher.
func New(cfg Config, db *storage.DB, deps Deps, log *slog.Logger) *Engine {
	cfg.IdleAfter = cmp.Or(cfg.IdleAfter, 5*time.Minute)
	cfg.OfflineAfter = cmp.Or(cfg.OfflineAfter, 2*time.Minute)
	cfg.ActiveWindow = cmp.Or(cfg.ActiveWindow, time.Minute)
	cfg.FlushEvery = cmp.Or(cfg.FlushEvery, time.Second)
	cfg.PersistEvery = cmp.Or(cfg.PersistEvery, 15*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Engine{
		cfg: cfg, db: db, store: db.Presence(), deps: deps, log: log,
		pending: map[string]*input{}, known: map[string]storage.PresenceRow{},
		poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if deps.Bus != nil && cfg.Enabled {
		deps.Bus.Subscribe(busChannel, e.fromBus)
		deps.Bus.OnResume(e.forgetKnown)
	}
	return e
}

// Enabled reports whether presence is on.
func (e *Engine) Enabled() bool { return e.cfg.Enabled }

// Start loads the newest position and runs the flusher; it returns at
// once. Off, it does nothing.
func (e *Engine) Start(ctx context.Context) error {
	if !e.cfg.Enabled {
		return nil
	}
	pos, err := e.store.PresenceMaxPos(ctx, e.db.Read())
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.pos = max(e.pos, pos)
	e.mu.Unlock()
	e.startOnce.Do(func() { go e.run() })
	return nil
}

// Stop writes what activity is pending and ends the flusher; idempotent.
func (e *Engine) Stop() {
	e.stopOnce.Do(func() {
		close(e.stop)
		started := true
		e.startOnce.Do(func() { started = false })
		if started {
			<-e.done
		}
	})
}

func (e *Engine) run() {
	defer close(e.done)
	t := time.NewTicker(e.cfg.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			e.flushLogged(ctx, true)
			cancel()
			return
		case <-t.C:
		case <-e.poke:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		e.flushLogged(ctx, false)
		cancel()
	}
}

func (e *Engine) flushLogged(ctx context.Context, all bool) {
	if err := e.flush(ctx, all); err != nil {
		e.log.Warn("presence: could not write presence", "err", err)
	}
}

func (e *Engine) nowMS() int64 { return e.cfg.Now().UnixMilli() }

// note records activity for the next flush.
func (e *Engine) note(user string, fn func(in *input)) {
	now := e.nowMS()
	e.mu.Lock()
	in := e.pending[user]
	if in == nil {
		in = &input{first: now}
		e.pending[user] = in
	}
	fn(in)
	full := len(e.pending) >= maxPending
	e.mu.Unlock()
	if full {
		select {
		case e.poke <- struct{}{}:
		default:
		}
	}
}

// Touch records activity of a user: any authenticated request but /sync.
// It only notes the time in memory.
func (e *Engine) Touch(user string) {
	if !e.cfg.Enabled {
		return
	}
	now := e.nowMS()
	e.note(user, func(in *input) {
		in.active = max(in.active, now)
		in.seen = max(in.seen, now)
	})
}

// SyncActivity records a /sync request with its set_presence: "" or
// "online" keeps the user connected and brings them online from offline;
// "unavailable" keeps them connected and brings them unavailable from
// offline; "offline" does nothing. Neither counts as activity, so a user
// who only syncs becomes unavailable after IdleAfter. Call it when a sync
// starts and again when it answers.
func (e *Engine) SyncActivity(user string, setPresence string) {
	if !e.cfg.Enabled || setPresence == Offline {
		return
	}
	now := e.nowMS()
	e.note(user, func(in *input) {
		in.seen = max(in.seen, now)
		if setPresence != Unavailable {
			in.syncOnline = true
		}
	})
}

// SetStatus handles PUT /presence/{userId}/status for the user themself.
// It is written at once. Off, it is checked and ignored.
func (e *Engine) SetStatus(ctx context.Context, user, state string, statusMsg *string) error {
	switch state {
	case Online, Unavailable, Offline:
	default:
		return mxerr.InvalidParam("presence must be online, unavailable or offline")
	}
	msg := ""
	if statusMsg != nil {
		msg = *statusMsg
	}
	if len(msg) > MaxStatusMsgBytes {
		return mxerr.InvalidParam("status_msg is longer than %d bytes", MaxStatusMsgBytes)
	}
	if !e.cfg.Enabled {
		return nil
	}
	set := &setState{state: state, msg: msg, at: e.nowMS()}
	return e.process(ctx, map[string]*input{user: {set: set}}, nil)
}

// flush writes pending activity and applies due timeouts. With all, every
// pending entry is written (shutdown); otherwise those that change nothing
// visible wait up to PersistEvery.
func (e *Engine) flush(ctx context.Context, all bool) error {
	now := e.nowMS()
	due, err := e.store.PresenceDue(ctx,
		now-e.cfg.OfflineAfter.Milliseconds(), now-e.cfg.IdleAfter.Milliseconds(), now-e.cfg.ActiveWindow.Milliseconds(), maxDue)
	if err != nil {
		return err
	}
	take := map[string]*input{}
	e.mu.Lock()
	all = all || len(e.pending) >= maxPending
	// A due user's activity goes with the timeout, which it may cancel.
	for _, u := range due {
		if in := e.pending[u]; in != nil {
			take[u] = in
			delete(e.pending, u)
		}
	}
	for u, in := range e.pending {
		k, ok := e.known[u]
		if all || !ok || now-in.first >= e.cfg.PersistEvery.Milliseconds() || e.visible(k, in, now) {
			take[u] = in
			delete(e.pending, u)
		}
	}
	e.forgetOldKnown(now)
	e.writing = take
	e.mu.Unlock()
	if len(take) == 0 && len(due) == 0 {
		return nil
	}
	if err := e.process(ctx, take, due); err != nil {
		// Put the activity back for the next attempt.
		e.mu.Lock()
		e.writing = nil
		for u, in := range take {
			if cur := e.pending[u]; cur != nil {
				in.merge(cur)
			}
			e.pending[u] = in
		}
		e.mu.Unlock()
		return err
	}
	return nil
}

// visible reports whether applying in to k would change what others see.
func (e *Engine) visible(k storage.PresenceRow, in *input, now int64) bool {
	p := k
	e.apply(&p, in)
	st, act := e.derive(p, now)
	return st != k.State || act != k.CurrentlyActive
}

func (in *input) merge(o *input) {
	in.active = max(in.active, o.active)
	in.seen = max(in.seen, o.seen)
	in.syncOnline = in.syncOnline || o.syncOnline
	in.first = min(in.first, o.first)
	if o.set != nil {
		in.set = o.set
	}
}

// forgetOldKnown drops users gone offline long ago from memory, looking
// a few times per OfflineAfter; called with mu held.
func (e *Engine) forgetOldKnown(now int64) {
	if now-e.forgotAt < e.cfg.OfflineAfter.Milliseconds()/4 {
		return
	}
	e.forgotAt = now
	cutoff := now - 2*e.cfg.OfflineAfter.Milliseconds()
	for u, k := range e.known {
		if k.LastSeenTS < cutoff && e.pending[u] == nil {
			delete(e.known, u)
		}
	}
}

// apply adds a user's inputs to their row.
func (e *Engine) apply(p *storage.PresenceRow, in *input) {
	if in.seen > 0 && in.syncOnline {
		// A sync asking to be online brings an offline user online: one
		// who was offline when this batch of activity began.
		if st, _ := e.derive(*p, in.first); st == Offline && p.ExplicitState != Offline {
			p.LastActiveTS = max(p.LastActiveTS, in.seen)
		}
	}
	p.LastActiveTS = max(p.LastActiveTS, in.active)
	p.LastSeenTS = max(p.LastSeenTS, in.seen)
	if s := in.set; s != nil {
		p.StatusMsg = s.msg
		p.LastSeenTS = max(p.LastSeenTS, s.at)
		if s.state == Online {
			p.ExplicitState, p.ExplicitTS = "", s.at
			p.LastActiveTS = max(p.LastActiveTS, s.at)
		} else {
			p.ExplicitState, p.ExplicitTS = s.state, s.at
		}
	}
}

// derive computes the published state and currently_active of a row at
// time now (ms).
func (e *Engine) derive(p storage.PresenceRow, now int64) (string, bool) {
	switch {
	case p.ExplicitState == Offline, now-p.LastSeenTS >= e.cfg.OfflineAfter.Milliseconds():
		return Offline, false
	case p.ExplicitState == Unavailable, now-p.LastActiveTS >= e.cfg.IdleAfter.Milliseconds():
		return Unavailable, false
	default:
		return Online, now-p.LastActiveTS < e.cfg.ActiveWindow.Milliseconds()
	}
}

// process writes the inputs of some users and re-derives their presence
// and that of the due users, in one transaction under the presence lock;
// then it tells the other instances and wakes whom it concerns.
func (e *Engine) process(ctx context.Context, inputs map[string]*input, due []string) error {
	last, changed, err := e.write(ctx, inputs, due)
	if err != nil || len(changed) == 0 {
		return err
	}
	e.announce(ctx, last, changed)
	return nil
}

// write is process's transaction; it returns the newest position given
// and the users whose presence changed.
func (e *Engine) write(ctx context.Context, inputs map[string]*input, due []string) (int64, []string, error) {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	users := make([]string, 0, len(inputs)+len(due))
	for u := range inputs {
		users = append(users, u)
	}
	for _, u := range due {
		if inputs[u] == nil {
			users = append(users, u)
		}
	}
	var (
		changed []string
		written []storage.PresenceRow
		last    int64
	)
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		changed, written, last = nil, nil, 0
		if err := tx.Lock(ctx, flushLock); err != nil {
			return err
		}
		rows, err := e.store.PresenceGetMany(ctx, tx, users)
		if err != nil {
			return err
		}
		top, err := e.store.PresenceMaxPos(ctx, tx)
		if err != nil {
			return err
		}
		e.mu.Lock()
		top = max(top, e.pos)
		e.mu.Unlock()
		now := e.nowMS()
		for _, u := range users {
			p, ok := rows[u]
			if !ok {
				p = storage.PresenceRow{UserID: u, State: Offline}
			}
			old := p
			if in := inputs[u]; in != nil {
				e.apply(&p, in)
			}
			st, act := e.derive(p, now)
			if !ok || st != p.State || act != p.CurrentlyActive || p.StatusMsg != old.StatusMsg {
				top = max(now, top+1)
				p.State, p.CurrentlyActive, p.StreamPos = st, act, top
				changed = append(changed, u)
				last = top
			}
			if p != old {
				if err := e.store.PresencePut(ctx, tx, p); err != nil {
					return err
				}
			}
			written = append(written, p)
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	e.mu.Lock()
	e.pos = max(e.pos, last)
	for _, p := range written {
		e.known[p.UserID] = p
	}
	e.writing = nil
	e.mu.Unlock()
	return last, changed, nil
}

// busMessage tells other instances of changes.
type busMessage struct {
	Pos   int64    `json:"p"`
	Users []string `json:"u,omitempty"`
	// All: the users did not fit; forget everything known.
	All bool `json:"a,omitempty"`
}

// announce publishes changes to other instances, then wakes the local
// users who share a room with a changed user (and the changed local users).
func (e *Engine) announce(ctx context.Context, pos int64, changed []string) {
	ctx = context.WithoutCancel(ctx)
	if e.deps.Bus != nil {
		msg := busMessage{Pos: pos, Users: changed}
		b, _ := json.Marshal(msg)
		if len(b) > storage.MaxBusPayload {
			b, _ = json.Marshal(busMessage{Pos: pos, All: true})
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := e.deps.Bus.Publish(pctx, busChannel, string(b)); err != nil {
			e.log.Warn("presence: could not tell other instances", "err", err)
		}
		cancel()
	}
	if e.deps.Notifier == nil {
		return
	}
	suffix := ":" + e.cfg.ServerName
	wake := map[string]bool{}
	for _, u := range changed {
		if strings.HasSuffix(u, suffix) {
			wake[u] = true
		}
		others, err := e.deps.Rooms.SharedRoomUsers(ctx, u)
		if err != nil {
			e.log.Warn("presence: could not list who shares a room", "user", u, "err", err)
			continue
		}
		for _, o := range others {
			if strings.HasSuffix(o, suffix) {
				wake[o] = true
			}
		}
	}
	list := make([]string, 0, len(wake))
	for u := range wake {
		list = append(list, u)
	}
	e.deps.Notifier.NotifyUsers(list...)
}

// fromBus learns of another instance's changes. Waking is left to the
// notifier's message, which follows.
func (e *Engine) fromBus(payload string) {
	var m busMessage
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		e.log.Warn("presence: bad message on the bus", "payload", payload)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pos = max(e.pos, m.Pos)
	if m.All {
		e.known = map[string]storage.PresenceRow{}
	}
	for _, u := range m.Users {
		delete(e.known, u)
	}
}

// forgetKnown drops what is known after the bus lost messages.
func (e *Engine) forgetKnown() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.known = map[string]storage.PresenceRow{}
}

// Position returns the newest presence position (ms).
func (e *Engine) Position() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pos
}

// Status is a user's presence as GET /presence/{userId}/status shows it.
type Status struct {
	Presence        string  `json:"presence"`
	LastActiveAgo   *int64  `json:"last_active_ago,omitempty"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	CurrentlyActive *bool   `json:"currently_active,omitempty"`
}

// Status handles GET /presence/{userId}/status: one's own, or that of a
// user one shares a room with (403 otherwise; 404 for an unknown local
// user). Off, everyone is offline.
func (e *Engine) Status(ctx context.Context, viewer, target string) (Status, error) {
	if viewer != target {
		if strings.HasSuffix(target, ":"+e.cfg.ServerName) {
			ok, err := e.deps.Users.UserExists(ctx, target)
			if err != nil {
				return Status{}, err
			}
			if !ok {
				return Status{}, mxerr.NotFound("No such user")
			}
		}
		ok, err := e.deps.Rooms.UsersShareRoom(ctx, viewer, target)
		if err != nil {
			return Status{}, err
		}
		if !ok {
			return Status{}, mxerr.Forbidden("You are not allowed to see their presence")
		}
	}
	if !e.cfg.Enabled {
		return Status{Presence: Offline}, nil
	}
	p, err := e.store.PresenceGet(ctx, e.db.Read(), target)
	if errors.Is(err, storage.ErrNotFound) {
		// Nothing written yet; there may be activity in memory.
		p, err = storage.PresenceRow{UserID: target, State: Offline}, nil
	}
	if err != nil {
		return Status{}, err
	}
	return e.status(p, e.nowMS()), nil
}

// status renders a row as of now, with activity not yet written.
func (e *Engine) status(p storage.PresenceRow, now int64) Status {
	e.mu.Lock()
	// A flush may have committed after p was read, or be writing now:
	// what it wrote is in known, what it writes in writing.
	if k, ok := e.known[p.UserID]; ok && k.StreamPos >= p.StreamPos {
		p = k
	}
	if in := e.writing[p.UserID]; in != nil {
		e.apply(&p, in)
	}
	if in := e.pending[p.UserID]; in != nil {
		e.apply(&p, in)
	}
	e.mu.Unlock()
	st, act := e.derive(p, now)
	s := Status{Presence: st}
	if p.LastActiveTS > 0 {
		ago := max(now-p.LastActiveTS, 0)
		s.LastActiveAgo = &ago
	}
	if p.StatusMsg != "" {
		s.StatusMsg = &p.StatusMsg
	}
	if st == Online {
		s.CurrentlyActive = &act
	}
	return s
}

// event is an m.presence event.
type event struct {
	Type    string `json:"type"`
	Sender  string `json:"sender"`
	Content Status `json:"content"`
}

// Since returns the m.presence events of the users forUser shares a room
// with, and forUser's own, that changed after since. Since 0 gives the
// current presence of them all, leaving out offline users without a status
// message. Off, it returns nothing.
func (e *Engine) Since(ctx context.Context, forUser string, since int64) ([]json.RawMessage, error) {
	if !e.cfg.Enabled {
		return nil, nil
	}
	if since > 0 && since >= e.Position() {
		return nil, nil
	}
	var rows []storage.PresenceRow
	if since > 0 {
		var err error
		rows, err = e.store.PresenceSince(ctx, since, maxSince)
		if err != nil {
			return nil, err
		}
		if len(rows) == maxSince {
			since, rows = 0, nil
		}
	}
	if since == 0 {
		shared, err := e.deps.Rooms.SharedRoomUsers(ctx, forUser)
		if err != nil {
			return nil, err
		}
		byUser, err := e.store.PresenceGetMany(ctx, e.db.Read(), append(shared, forUser))
		if err != nil {
			return nil, err
		}
		for _, p := range byUser {
			if p.State != Offline || p.StatusMsg != "" || p.UserID == forUser {
				rows = append(rows, p)
			}
		}
	} else if len(rows) > 0 {
		var err error
		if rows, err = e.visibleTo(ctx, forUser, rows); err != nil {
			return nil, err
		}
	}
	now := e.nowMS()
	out := make([]json.RawMessage, 0, len(rows))
	for _, p := range rows {
		b, err := json.Marshal(event{Type: "m.presence", Sender: p.UserID, Content: e.status(p, now)})
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// visibleTo keeps the rows of forUser and of users sharing a room with
// them.
func (e *Engine) visibleTo(ctx context.Context, forUser string, rows []storage.PresenceRow) ([]storage.PresenceRow, error) {
	onlySelf := true
	for _, p := range rows {
		onlySelf = onlySelf && p.UserID == forUser
	}
	if onlySelf {
		return rows, nil
	}
	shared, err := e.deps.Rooms.SharedRoomUsers(ctx, forUser)
	if err != nil {
		return nil, err
	}
	ok := make(map[string]bool, len(shared)+1)
	for _, u := range shared {
		ok[u] = true
	}
	ok[forUser] = true
	kept := rows[:0]
	for _, p := range rows {
		if ok[p.UserID] {
			kept = append(kept, p)
		}
	}
	return kept, nil
}
