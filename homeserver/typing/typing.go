// Package typing keeps who is typing in which room, in memory.
//
// Each instance holds the whole map: a change made here is applied
// locally, published on the bus (channel parley_typing) for the other
// instances to apply to theirs, and then wakes the room through the
// notifier. Because PostgreSQL delivers notifications in commit order and
// the bus runs handlers one at a time, another instance has applied the
// change before the notifier's wake-up for it arrives there.
//
// Positions are milliseconds since the epoch, strictly increasing within
// an instance, so that sync tokens stay roughly comparable across
// instances. Typing expires without polling: one goroutine sleeps until
// the earliest expiry of a min-heap. Rooms where nobody has typed for
// Retention are forgotten; a Since from before that reports every asked
// room it no longer knows with nobody typing, which is always true then.
package typing

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// busChannel carries typing changes between instances.
const busChannel = "parley_typing"

// Rooms checks membership.
type Rooms interface {
	// IsJoined reports whether the user is joined to the room (false for
	// an unknown room).
	IsJoined(ctx context.Context, userID, roomID string) (bool, error)
}

// Notifier wakes the clients of a room.
type Notifier interface {
	NotifyRoom(roomID string, extra ...string)
}

// Config tunes the engine.
type Config struct {
	// DefaultTimeout applies when a client gives none (default 30 s).
	DefaultTimeout time.Duration
	// MaxTimeout caps the client's timeout (default 120 s).
	MaxTimeout time.Duration
	// Retention is how long a room where nobody types stays known
	// (default 10 minutes).
	Retention time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Deps are what the engine calls; Bus may be nil (one instance).
type Deps struct {
	Rooms    Rooms
	Notifier Notifier
	Bus      *storage.Bus
}

// Engine is the typing engine.
type Engine struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	mu     sync.Mutex
	rooms  map[string]*room
	expiry expiryHeap
	pos    int64
	// forgot is the newest position of a forgotten room.
	forgot int64
	// swept is when idle rooms were last looked for (ms).
	swept int64

	poke      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	startOnce sync.Once
	stopOnce  sync.Once
}

// room is who types in one room: user → expiry (ms), and when it last
// changed.
type room struct {
	users map[string]int64
	pos   int64
}

// New builds the engine; Start runs its expiry.
func New(cfg Config, deps Deps, log *slog.Logger) *Engine {
	cfg.DefaultTimeout = cmp.Or(cfg.DefaultTimeout, 30*time.Second)
	cfg.MaxTimeout = cmp.Or(cfg.MaxTimeout, 120*time.Second)
	cfg.Retention = cmp.Or(cfg.Retention, 10*time.Minute)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Engine{
		cfg: cfg, deps: deps, log: log, rooms: map[string]*room{},
		poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	if deps.Bus != nil {
		deps.Bus.Subscribe(busChannel, e.fromBus)
	}
	return e
}

// Start runs the expiry goroutine; it returns at once.
func (e *Engine) Start(context.Context) error {
	e.startOnce.Do(func() { go e.run() })
	return nil
}

// Stop ends the expiry goroutine and waits for it; idempotent.
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

// Set handles PUT /rooms/{roomId}/typing/{userId} for the user themself:
// typing for timeoutMS (nil: the default, capped at MaxTimeout) or, with
// typing false, stopped.
func (e *Engine) Set(ctx context.Context, userID, roomID string, typing bool, timeoutMS *int64) error {
	timeout := e.cfg.DefaultTimeout
	if timeoutMS != nil {
		if *timeoutMS < 0 {
			return mxerr.InvalidParam("timeout must not be negative")
		}
		timeout = time.Duration(min(*timeoutMS, e.cfg.MaxTimeout.Milliseconds())) * time.Millisecond
	}
	joined, err := e.deps.Rooms.IsJoined(ctx, userID, roomID)
	if err != nil {
		return err
	}
	if !joined {
		return mxerr.Forbidden("You are not joined to this room")
	}
	var until int64
	if typing {
		until = e.cfg.Now().Add(timeout).UnixMilli()
	}
	changed := e.apply(roomID, userID, until)
	// The others hear even of an unchanged set: the expiry moved.
	e.publish(ctx, update{Room: roomID, User: userID, Until: until, Pos: e.Position()})
	if changed && e.deps.Notifier != nil {
		e.deps.Notifier.NotifyRoom(roomID)
	}
	return nil
}

// Left stops a user's typing in a room they are no longer joined to (they
// left, were kicked or banned): the expiry would otherwise keep them
// typing for everyone until it passed.
func (e *Engine) Left(ctx context.Context, userID, roomID string) {
	if !e.apply(roomID, userID, 0) {
		return
	}
	e.publish(ctx, update{Room: roomID, User: userID, Until: 0, Pos: e.Position()})
	if e.deps.Notifier != nil {
		e.deps.Notifier.NotifyRoom(roomID)
	}
}

// update is a typing change as the bus carries it.
type update struct {
	Room  string `json:"r"`
	User  string `json:"u"`
	Until int64  `json:"x"` // expiry (ms); 0: stopped
	// Pos is the sender's position: positions here stay ahead of it, so
	// that a token from there does not hide later changes made here.
	Pos int64 `json:"p"`
}

func (e *Engine) publish(ctx context.Context, u update) {
	if e.deps.Bus == nil {
		return
	}
	b, err := json.Marshal(u)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := e.deps.Bus.Publish(ctx, busChannel, string(b)); err != nil {
		e.log.Warn("typing: could not tell other instances", "err", err)
	}
}

// fromBus applies another instance's change. It does not wake anyone: the
// notifier's own message, which follows, does.
func (e *Engine) fromBus(payload string) {
	var u update
	if err := json.Unmarshal([]byte(payload), &u); err != nil || u.Room == "" || u.User == "" {
		e.log.Warn("typing: bad message on the bus", "payload", payload)
		return
	}
	e.mu.Lock()
	e.pos = max(e.pos, u.Pos)
	e.mu.Unlock()
	e.apply(u.Room, u.User, u.Until)
}

// next returns a new position: now in ms, or one past the last.
func (e *Engine) next() int64 {
	p := e.cfg.Now().UnixMilli()
	if p <= e.pos {
		p = e.pos + 1
	}
	e.pos = p
	return p
}

// apply records that user types in the room until `until` (ms; 0 or past:
// stopped) and reports whether the set of typing users changed.
func (e *Engine) apply(roomID, userID string, until int64) bool {
	now := e.cfg.Now().UnixMilli()
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.rooms[roomID]
	if until <= now {
		if r == nil {
			return false
		}
		if _, ok := r.users[userID]; !ok {
			return false
		}
		delete(r.users, userID)
		r.pos = e.next()
		return true
	}
	if r == nil {
		r = &room{users: map[string]int64{}}
		e.rooms[roomID] = r
	}
	_, was := r.users[userID]
	r.users[userID] = until
	earliest := len(e.expiry) == 0 || until < e.expiry[0].at
	heap.Push(&e.expiry, expiring{at: until, room: roomID, user: userID})
	if earliest {
		select {
		case e.poke <- struct{}{}:
		default:
		}
	}
	if was {
		return false
	}
	r.pos = e.next()
	return true
}

// run expires typing and forgets idle rooms until Stop.
func (e *Engine) run() {
	defer close(e.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := e.tick()
		timer.Reset(wait)
		select {
		case <-e.stop:
			return
		case <-e.poke:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-timer.C:
		}
	}
}

// tick expires what is due, forgets idle rooms, wakes the rooms that
// changed and returns how long to sleep.
func (e *Engine) tick() time.Duration {
	now := e.cfg.Now()
	nowMS := now.UnixMilli()
	var changed []string
	e.mu.Lock()
	for len(e.expiry) > 0 && e.expiry[0].at <= nowMS {
		x := heap.Pop(&e.expiry).(expiring)
		r := e.rooms[x.room]
		if r == nil || r.users[x.user] != x.at {
			continue // extended or stopped since
		}
		delete(r.users, x.user)
		r.pos = e.next()
		if !slices.Contains(changed, x.room) {
			changed = append(changed, x.room)
		}
	}
	// Idle rooms are looked for a few times per Retention, not on
	// every expiry.
	if retention := e.cfg.Retention.Milliseconds(); nowMS-e.swept >= retention/4 {
		e.swept = nowMS
		for id, r := range e.rooms {
			if len(r.users) == 0 && r.pos < nowMS-retention {
				e.forgot = max(e.forgot, r.pos)
				delete(e.rooms, id)
			}
		}
	}
	wait := e.cfg.Retention / 4
	if len(e.expiry) > 0 {
		wait = min(wait, time.Duration(e.expiry[0].at-nowMS)*time.Millisecond)
	}
	e.mu.Unlock()
	if e.deps.Notifier != nil {
		for _, r := range changed {
			e.deps.Notifier.NotifyRoom(r)
		}
	}
	return max(wait, time.Millisecond)
}

// Position returns the newest typing position (ms).
func (e *Engine) Position() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pos
}

// Since returns the rooms of roomIDs whose typing set changed after
// since, each with the users typing now (possibly none).
func (e *Engine) Since(roomIDs []string, since int64) map[string][]string {
	nowMS := e.cfg.Now().UnixMilli()
	e.mu.Lock()
	defer e.mu.Unlock()
	if since >= e.pos {
		return nil
	}
	out := map[string][]string{}
	for _, id := range roomIDs {
		r := e.rooms[id]
		switch {
		case r != nil && r.pos > since:
			out[id] = typers(r, nowMS)
		case r == nil && since < e.forgot:
			out[id] = []string{}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Current returns the rooms of roomIDs where someone is typing, with who.
func (e *Engine) Current(roomIDs []string) map[string][]string {
	nowMS := e.cfg.Now().UnixMilli()
	e.mu.Lock()
	defer e.mu.Unlock()
	var out map[string][]string
	for _, id := range roomIDs {
		r := e.rooms[id]
		if r == nil {
			continue
		}
		if t := typers(r, nowMS); len(t) > 0 {
			if out == nil {
				out = map[string][]string{}
			}
			out[id] = t
		}
	}
	return out
}

// typers lists a room's typing users, sorted, leaving out those whose
// expiry the timer has not reached yet.
func typers(r *room, nowMS int64) []string {
	out := make([]string, 0, len(r.users))
	for u, until := range r.users {
		if until > nowMS {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

// expiring is one heap entry: a user's typing ends at `at` (ms) unless it
// was extended or stopped since.
type expiring struct {
	at         int64
	room, user string
}

type expiryHeap []expiring

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiring)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
