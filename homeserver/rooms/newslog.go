package rooms

import (
	"sort"
	"sync"

	"github.com/parley-chat/parley/storage"
)

// newsLog remembers the events this instance's persister committed last,
// in stream order, so that a sync woken by a commit learns which of the
// user's rooms moved, and whether the user's memberships changed, without
// a read: with many members following a busy room, that read was one of
// the few statements every wake-up cost.
//
// It answers only for a window it holds whole. Every events-stream
// position is reserved by a persisting transaction, which holds the
// stream's row until it ends, so one transaction's positions are
// contiguous; when a commit's first position is not where the previous
// one of this instance ended, another instance (or a commit whose outcome
// was not seen) took the positions between, and the log starts again from
// there. A window reaching beyond the last commit the log saw, or before
// what it keeps, is read from the database.
type newsLog struct {
	mu  sync.RWMutex
	ent []newsEntry
	// Every event with base < position < next is in ent; next is 0 until
	// the first commit.
	base, next int64
	// keep is how many entries survive a trim; up to twice that are held.
	keep int
}

// newsEntry is what a sync needs to know about one committed event.
type newsEntry struct {
	pos, roomNID, eventNID int64
	roomID, sender         string
	// member is the state key of an m.room.member event; isMember tells
	// it from an event that is none.
	member, membership string
	isMember           bool
}

// maxNewsScan bounds the entries one window may walk; a sync that far
// behind reads the database, whose indexes go by room.
const maxNewsScan = 4096

func newNewsLog(keep int) *newsLog { return &newsLog{keep: keep} }

// commit records a committed transaction that reserved the events-stream
// positions [first, end) and wrote evs (in stream order; events without
// a position are skipped).
func (l *newsLog) commit(first, end int64, evs []*Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if first != l.next {
		l.ent = l.ent[:0]
		l.base = first - 1
	}
	for _, ev := range evs {
		if ev.StreamPos == nil {
			continue
		}
		e := newsEntry{pos: *ev.StreamPos, roomNID: ev.RoomNID, eventNID: ev.NID, roomID: ev.RoomID, sender: ev.Sender}
		if ev.Type == "m.room.member" && ev.StateKey != nil {
			e.isMember, e.member = true, *ev.StateKey
			if ev.Membership != nil {
				e.membership = *ev.Membership
			}
		}
		l.ent = append(l.ent, e)
	}
	l.next = end
	if len(l.ent) > 2*l.keep {
		drop := len(l.ent) - l.keep
		l.base = l.ent[drop-1].pos
		l.ent = append(l.ent[:0:0], l.ent[drop:]...)
	}
}

// window answers storage.Rooms.WindowNews for (from, to] from memory; ok
// is false when the log does not hold the whole window. The news tell the
// newest positions inside the window (a room without events there is
// absent), which is all a caller comparing them with from can use.
func (l *newsLog) window(user string, from, to int64, rooms []int64) (changes []storage.MembershipChange, news map[int64]storage.RoomStreams, ok bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.next == 0 || from < l.base || to >= l.next || from > to {
		return nil, nil, false
	}
	i := sort.Search(len(l.ent), func(i int) bool { return l.ent[i].pos > from })
	j := sort.Search(len(l.ent), func(i int) bool { return l.ent[i].pos > to })
	if j-i > maxNewsScan {
		return nil, nil, false
	}
	// The rooms the window touches are few; the user's may be many.
	moved := map[int64]storage.RoomStreams{}
	for _, e := range l.ent[i:j] {
		if e.isMember && e.member == user {
			changes = append(changes, storage.MembershipChange{RoomNID: e.roomNID, RoomID: e.roomID, EventNID: e.eventNID,
				Membership: e.membership, StreamPos: e.pos})
		}
		n := moved[e.roomNID]
		n.Last = e.pos
		if e.isMember {
			n.LastMember = e.pos
		}
		if e.sender == user {
			n.LastOwn = e.pos
		}
		moved[e.roomNID] = n
	}
	news = make(map[int64]storage.RoomStreams, min(len(moved), len(rooms)))
	for _, r := range rooms {
		if n, ok := moved[r]; ok {
			news[r] = n
		}
	}
	return changes, news, true
}
