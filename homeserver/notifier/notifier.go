// Package notifier wakes the clients waiting for news — long-polling
// /sync requests and WebSocket connections — when something they can see
// changes. Waiters are keyed by user; a change in a room wakes the room's
// local members. Other instances sharing the database hear about changes
// through the bus, so that a client on one instance learns at once of an
// event sent through another.
package notifier

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/parley-chat/parley/storage"
)

// Members lists the local users who should hear about a room: those
// joined, invited or knocking.
type Members interface {
	LocalMembers(ctx context.Context, roomID string) ([]string, error)
}

// busChannel carries wake-ups between instances.
const busChannel = "parley_wake"

// Notifier tracks, per user, a generation that grows with every change;
// waiters sleep until it passes the generation they saw.
type Notifier struct {
	log     *slog.Logger
	members Members
	bus     *storage.Bus
	cache   *memberCache
	now     func() time.Time

	mu    sync.Mutex
	users map[string]*userState
	// all is closed and replaced to wake every waiter (after the bus lost
	// messages).
	all chan struct{}

	// Room wake-ups queued by NotifyRoomSoon for the worker, coalesced
	// per room.
	qmu     sync.Mutex
	pending map[string][]string
	order   []string
	running bool
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

type userState struct {
	gen uint64
	ch  chan struct{}
}

// New builds a notifier. bus may be nil (single instance).
func New(log *slog.Logger, members Members, bus *storage.Bus) *Notifier {
	n := &Notifier{log: log, members: members, bus: bus, cache: newMemberCache(10_000), now: time.Now,
		users: map[string]*userState{}, all: make(chan struct{}),
		pending: map[string][]string{}, kick: make(chan struct{}, 1)}
	if bus != nil {
		bus.Subscribe(busChannel, n.fromBus)
		bus.OnResume(n.WakeAll)
	}
	return n
}

// Start runs the worker that carries out NotifyRoomSoon.
func (n *Notifier) Start(context.Context) error {
	n.qmu.Lock()
	defer n.qmu.Unlock()
	if n.running {
		return nil
	}
	n.running = true
	n.stop, n.done = make(chan struct{}), make(chan struct{})
	go n.loop(n.stop, n.done)
	return nil
}

// Stop ends the worker after carrying out what it was given; later
// NotifyRoomSoon calls notify at once.
func (n *Notifier) Stop() {
	n.qmu.Lock()
	if !n.running {
		n.qmu.Unlock()
		return
	}
	n.running = false
	stop, done := n.stop, n.done
	n.qmu.Unlock()
	close(stop)
	<-done
	n.flush()
}

func (n *Notifier) loop(stop, done chan struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		case <-n.kick:
			n.flush()
		}
	}
}

// flush carries out the queued room wake-ups.
func (n *Notifier) flush() {
	n.qmu.Lock()
	pending, order := n.pending, n.order
	n.pending, n.order = map[string][]string{}, nil
	n.qmu.Unlock()
	for _, r := range order {
		n.NotifyRoom(r, pending[r]...)
	}
}

// NotifyRoomSoon is NotifyRoom done by the worker: the caller (the
// persister, between two transactions) does not wait for the member list
// and the bus, and wake-ups of a busy room that queue up go out as one.
func (n *Notifier) NotifyRoomSoon(roomID string, extra ...string) {
	n.qmu.Lock()
	if !n.running {
		n.qmu.Unlock()
		n.NotifyRoom(roomID, extra...)
		return
	}
	if _, ok := n.pending[roomID]; !ok {
		n.order = append(n.order, roomID)
	}
	n.pending[roomID] = append(n.pending[roomID], extra...)
	n.qmu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default: // the worker is already due to run
	}
}

// SetMembers installs the member source (wiring order).
func (n *Notifier) SetMembers(m Members) { n.members = m }

func (n *Notifier) state(user string) *userState {
	s, ok := n.users[user]
	if !ok {
		s = &userState{ch: make(chan struct{})}
		n.users[user] = s
	}
	return s
}

// Generation returns the user's current generation: take it before
// computing a response, then Wait on it if the response was empty, and no
// change in between is missed.
func (n *Notifier) Generation(user string) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state(user).gen
}

// Wait blocks until the user's generation passes gen, ctx ends or
// timeout elapses; it reports whether something changed.
func (n *Notifier) Wait(ctx context.Context, user string, gen uint64, timeout time.Duration) bool {
	n.mu.Lock()
	s := n.state(user)
	if s.gen != gen {
		n.mu.Unlock()
		return true
	}
	ch, all := s.ch, n.all
	n.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-all:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// wakeLocal advances the generation of users on this instance.
func (n *Notifier) wakeLocal(users []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		s := n.state(u)
		s.gen++
		close(s.ch)
		s.ch = make(chan struct{})
	}
}

// WakeAll wakes every waiter on this instance.
func (n *Notifier) WakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.users {
		s.gen++
		close(s.ch)
		s.ch = make(chan struct{})
	}
	close(n.all)
	n.all = make(chan struct{})
}

// NotifyUsers wakes users here and on the other instances.
func (n *Notifier) NotifyUsers(users ...string) {
	if len(users) == 0 {
		return
	}
	n.wakeLocal(users)
	n.publish("u:" + strings.Join(users, "\n"))
}

// NotifyRoom wakes a room's local members (and extra users, such as one
// who just left) here and on the other instances.
func (n *Notifier) NotifyRoom(roomID string, extra ...string) {
	n.wakeRoomLocal(roomID, extra, false)
	msg := "r:" + roomID
	if len(extra) > 0 {
		msg += "\n" + strings.Join(extra, "\n")
	}
	n.publish(msg)
}

// MembersChanged tells that a room's local members may have changed
// through this instance (before its wake-up is asked for): the next
// wake-up reads them again.
func (n *Notifier) MembersChanged(roomID string) { n.cache.invalidate(roomID) }

// wakeRoomLocal wakes the room's local members and extra; fresh reads
// the members even when a list is cached.
func (n *Notifier) wakeRoomLocal(roomID string, extra []string, fresh bool) {
	users := append([]string(nil), extra...)
	if n.members != nil {
		now := n.now()
		m, gen, ok := n.cache.get(roomID, now)
		if !ok || fresh {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var err error
			m, err = n.members.LocalMembers(ctx, roomID)
			cancel()
			if err != nil {
				n.log.Warn("notifier: could not list room members", "room", roomID, "err", err)
			} else {
				n.cache.put(roomID, m, gen, now)
			}
		}
		users = append(users, m...)
	}
	n.wakeLocal(users)
}

func (n *Notifier) publish(msg string) {
	if n.bus == nil {
		return
	}
	// Messages that do not fit are replaced by a wake-everyone.
	if len(msg) > storage.MaxBusPayload {
		msg = "*"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.bus.Publish(ctx, busChannel, msg); err != nil {
		n.log.Warn("notifier: could not tell other instances", "err", err)
	}
}

func (n *Notifier) fromBus(payload string) {
	switch {
	case payload == "*":
		n.WakeAll()
	case strings.HasPrefix(payload, "u:"):
		n.wakeLocal(strings.Split(payload[2:], "\n"))
	case strings.HasPrefix(payload, "r:"):
		parts := strings.Split(payload[2:], "\n")
		n.wakeRoomLocal(parts[0], parts[1:], true)
	}
}
