package rooms

import (
	"slices"

	"github.com/parley-chat/parley/internal/streamlog"
	"github.com/parley-chat/parley/storage"
)

// newsLog remembers the events this instance's persister committed last,
// in stream order, so that a sync woken by a commit learns which of the
// user's rooms moved, and whether the user's memberships changed, without
// a read: with many members following a busy room, that read was one of
// the few statements every wake-up cost. It answers only for windows it
// holds whole (streamlog).
type newsLog struct{ log *streamlog.Log[newsEntry] }

// newsEntry is what a sync needs to know about one committed event.
type newsEntry struct {
	roomNID, eventNID int64
	// stateAfter is the room's state snapshot after the event (0: none).
	stateAfter int64
	// bundles is the event this one relates to by a relation bundled
	// into its parent (thread, edit or reference), if any.
	bundles        string
	roomID, sender string
	// member is the state key of an m.room.member event; isMember tells
	// it from an event that is none.
	member, membership string
	isMember           bool
}

// maxNewsScan bounds the entries one window may walk; a sync that far
// behind reads the database, whose indexes go by room.
const maxNewsScan = 4096

func newNewsLog(keep int) *newsLog { return &newsLog{log: streamlog.New[newsEntry](keep)} }

// commit records a committed transaction that reserved the events-stream
// positions [first, end) and wrote evs (in stream order; events without
// a position are skipped).
func (l *newsLog) commit(first, end int64, evs []*Event) {
	items := make([]streamlog.Item[newsEntry], 0, len(evs))
	for _, ev := range evs {
		if ev.StreamPos == nil {
			continue
		}
		e := newsEntry{roomNID: ev.RoomNID, eventNID: ev.NID, roomID: ev.RoomID, sender: ev.Sender, stateAfter: deref(ev.StateAfter)}
		switch deref2(ev.RelType) {
		case "m.thread", "m.replace", "m.reference":
			e.bundles = deref2(ev.RelatesTo)
		}
		if ev.Type == "m.room.member" && ev.StateKey != nil {
			e.isMember, e.member = true, *ev.StateKey
			if ev.Membership != nil {
				e.membership = *ev.Membership
			}
		}
		items = append(items, streamlog.Item[newsEntry]{Pos: *ev.StreamPos, V: e})
	}
	l.log.Commit(first, end, items)
}

// window answers storage.Rooms.WindowNews for (from, to] from memory; ok
// is false when the log does not hold the whole window. The news tell the
// newest positions inside the window (a room without events there is
// absent), which is all a caller comparing them with from can use.
func (l *newsLog) window(user string, from, to int64, rooms []int64) (changes []storage.MembershipChange, news map[int64]storage.RoomStreams, ok bool) {
	// The rooms the window touches are few; the user's may be many.
	moved := map[int64]storage.RoomStreams{}
	held := l.log.Window(from, to, maxNewsScan, func(pos int64, e newsEntry) bool {
		if e.isMember && e.member == user {
			changes = append(changes, storage.MembershipChange{RoomNID: e.roomNID, RoomID: e.roomID, EventNID: e.eventNID,
				Membership: e.membership, StreamPos: pos})
		}
		n := moved[e.roomNID]
		n.Last = pos
		if e.isMember {
			n.LastMember = pos
		}
		if e.sender == user {
			n.LastOwn = pos
		}
		moved[e.roomNID] = n
		return true
	})
	if !held {
		return nil, nil, false
	}
	news = make(map[int64]storage.RoomStreams, min(len(moved), len(rooms)))
	for _, r := range rooms {
		if n, ok := moved[r]; ok {
			news[r] = n
		}
	}
	return changes, news, true
}

// timeline answers storage.Rooms.TimelineNIDsByStream from memory: the
// room's events with lower < position ≤ upper, newest first, at most
// limit.
func (l *newsLog) timeline(roomNID, lower, upper int64, limit int) ([]storage.NIDPos, bool) {
	if limit <= 0 {
		return nil, false
	}
	var out []storage.NIDPos
	held := l.log.Window(lower, upper, maxNewsScan, func(pos int64, e newsEntry) bool {
		if e.roomNID == roomNID {
			out = append(out, storage.NIDPos{NID: e.eventNID, Stream: pos})
		}
		return true
	})
	if !held {
		return nil, false
	}
	slices.Reverse(out)
	return out[:min(len(out), limit)], true
}

// stateAt answers storage.Rooms.StateAfterAtStream from memory: the state
// after the room's newest event at or before pos.
func (l *newsLog) stateAt(roomNID, pos int64) (int64, bool) {
	_, e, ok := l.log.Latest(pos, maxNewsScan, func(e newsEntry) bool { return e.roomNID == roomNID })
	return e.stateAfter, ok
}

// withBundled answers storage.Rooms.WithBundledRelations for parents
// whose children all come after them: events of this server's users,
// whose IDs (hashes of what the server built) nobody could name before
// they were committed. ok is false for other parents, or a window the log
// does not hold.
func (l *newsLog) withBundled(parents []*Event, upTo int64, local func(user string) bool) (map[string]bool, bool) {
	pos := make(map[string]int64, len(parents))
	lo := upTo
	for _, p := range parents {
		if p.StreamPos == nil || !local(p.Sender) {
			return nil, false
		}
		pos[p.EventID] = *p.StreamPos
		lo = min(lo, *p.StreamPos)
	}
	out := map[string]bool{}
	held := l.log.Window(lo, upTo, maxNewsScan, func(at int64, e newsEntry) bool {
		if p, ok := pos[e.bundles]; ok && at > p {
			out[e.bundles] = true
		}
		return true
	})
	return out, held
}
