package push

import (
	"slices"
	"sort"

	"github.com/parley-chat/parley/internal/streamlog"
	"github.com/parley-chat/parley/storage"
)

// pushLog remembers the push actions this instance's persister committed
// last, by the position of their event, so that a sync woken by a commit
// tops its cached counts up from memory: otherwise every member following
// a busy room costs a count query on every wake-up. It answers only for
// windows it holds whole (streamlog); others are counted in the database.
type pushLog struct{ log *streamlog.Log[pushEntry] }

// pushEntry is the push actions of one event.
type pushEntry struct {
	roomID, thread string
	// ts is when the actions were decided (Prune goes by it).
	ts int64
	// shared is set when the event has a row shared by the room's
	// members but skips.
	shared, sharedHighlight bool
	skips                   []string
	own                     []ownAction
}

// ownAction is one member's own push action.
type ownAction struct {
	user      string
	highlight bool
}

// maxPushScan bounds the entries one count may walk from memory.
const maxPushScan = 4096

func newPushLog(keep int) *pushLog { return &pushLog{log: streamlog.New[pushEntry](keep)} }

// commit records the rows of a committed transaction that reserved the
// events-stream positions [first, end).
func (l *pushLog) commit(first, end int64, rows []storage.PushAction, shared []storage.SharedPushAction, roomIDs map[int64]string) {
	by := map[int64]*pushEntry{}
	entry := func(pos, roomNID int64, thread string, ts int64) *pushEntry {
		e := by[pos]
		if e == nil {
			e = &pushEntry{roomID: roomIDs[roomNID], thread: thread, ts: ts}
			by[pos] = e
		}
		return e
	}
	for _, r := range rows {
		e := entry(r.StreamPos, r.RoomNID, r.ThreadID, r.TS)
		e.own = append(e.own, ownAction{user: r.UserID, highlight: r.Highlight})
	}
	for _, r := range shared {
		e := entry(r.StreamPos, r.RoomNID, r.ThreadID, r.TS)
		e.shared, e.sharedHighlight, e.skips = true, r.Highlight, r.Skips
	}
	items := make([]streamlog.Item[pushEntry], 0, len(by))
	for pos, e := range by {
		items = append(items, streamlog.Item[pushEntry]{Pos: pos, V: *e})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Pos < items[j].Pos })
	l.log.Commit(first, end, items)
}

// counts is storage.Push.PushCountsBetween for the user's rows with
// positions up to upper, from memory: one count per wanted entry and
// thread that has any. ok is false when the log does not hold every
// wanted window, or holds rows decided before notBefore (unix ms), which
// Prune may have deleted since.
func (l *pushLog) counts(user string, want []storage.PushAfter, threads bool, upper, notBefore int64) (out []storage.PushCount, ok bool) {
	if len(want) == 0 {
		return nil, true
	}
	lo := want[0].After
	byRoom := make(map[string][]int, len(want))
	for i, w := range want {
		lo = min(lo, w.After)
		byRoom[w.RoomID] = append(byRoom[w.RoomID], i)
	}
	if lo >= upper {
		return nil, true // every row counted is after lo
	}
	type key struct {
		want   int
		thread string
	}
	acc := map[key]*storage.PushCount{}
	var order []key
	held := l.log.Window(lo, upper, maxPushScan, func(pos int64, e pushEntry) bool {
		if e.ts < notBefore {
			return false
		}
		for _, i := range byRoom[e.roomID] {
			w := want[i]
			if pos <= w.After || (threads && w.ThreadID != e.thread) {
				continue
			}
			if e.thread == mainThread && pos <= max(w.After, w.MainAfter) {
				continue
			}
			n, h := 0, 0
			for _, o := range e.own {
				if o.user == user {
					n++
					if o.highlight {
						h++
					}
				}
			}
			if e.shared && pos > max(w.After, w.SharedFrom) && !slices.Contains(e.skips, user) {
				n++
				if e.sharedHighlight {
					h++
				}
			}
			if n == 0 {
				continue
			}
			k := key{i, e.thread}
			c := acc[k]
			if c == nil {
				c = &storage.PushCount{RoomID: w.RoomID, ThreadID: e.thread}
				acc[k] = c
				order = append(order, k)
			}
			c.Notifications += n
			c.Highlight += h
		}
		return true
	})
	if !held {
		return nil, false
	}
	out = make([]storage.PushCount, 0, len(order))
	for _, k := range order {
		out = append(out, *acc[k])
	}
	return out, true
}
