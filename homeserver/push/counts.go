package push

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// RoomCounts are a room's unread counts for one user.
type RoomCounts struct {
	Notification, Highlight int
	// Threads holds per-thread counts when asked for; nil otherwise.
	Threads map[string]ThreadCounts
}

// ThreadCounts are one thread's unread counts.
type ThreadCounts struct{ Notification, Highlight int }

// Counts returns the counts of each room (rooms with nothing unread may be omitted).
// With threads false, thread counts are folded into the room's.
//
// With threads true, a room's own counts are its main timeline's and
// Threads has the counts of each thread (by root event ID) that has any.
func (e *Engine) Counts(ctx context.Context, user string, roomIDs []string, threads bool) (map[string]RoomCounts, error) {
	return e.CountsAt(ctx, user, roomIDs, threads, 0, Quiet{})
}

// Quiet names the rooms in which the caller knows that nothing a count
// starts from changed in the events window (Since, upTo]: not the user's
// membership, not their own events, not their read receipts. Their inputs
// as read for a count up to Since are used again instead of read.
type Quiet struct {
	Since int64
	Rooms map[string]bool
}

// inputsKey names one room's count inputs for a user; they are kept by
// the committed position they were read for.
type inputsKey struct{ user, room string }

// roomInputs are one room's share of storage.CountInputs.
type roomInputs struct {
	start    int64
	joined   bool
	own      []storage.OwnRead
	receipts map[string]int64 // by thread ("" the unthreaded receipt)
}

// countInputs returns the count inputs of rooms, read only for the rooms
// that Quiet does not cover, and remembers each room's at upTo (0: not a
// committed position, nothing remembered).
func (e *Engine) countInputs(ctx context.Context, user string, rooms []string, upTo int64, quiet Quiet) (storage.CountInputs, error) {
	in := storage.CountInputs{Starts: map[string]int64{}, Receipts: map[[2]string]int64{}}
	var read []string
	for _, r := range rooms {
		ri, ok := roomInputs{}, false
		if quiet.Since > 0 && quiet.Rooms[r] {
			ri, ok = e.inputs.Get(inputsKey{user, r}, quiet.Since)
		}
		if !ok {
			read = append(read, r)
			continue
		}
		if ri.joined {
			in.Starts[r] = ri.start
		}
		in.Own = append(in.Own, ri.own...)
		for t, p := range ri.receipts {
			in.Receipts[[2]string{r, t}] = p
		}
	}
	if len(read) > 0 {
		got, err := e.store.CountInputsGet(ctx, user, read)
		if err != nil {
			return in, err
		}
		maps.Copy(in.Starts, got.Starts)
		maps.Copy(in.Receipts, got.Receipts)
		in.Own = append(in.Own, got.Own...)
	}
	if upTo <= 0 {
		return in, nil
	}
	per := make(map[string]*roomInputs, len(rooms))
	for _, r := range rooms {
		ri := &roomInputs{receipts: map[string]int64{}}
		ri.start, ri.joined = in.Starts[r]
		per[r] = ri
	}
	for _, o := range in.Own {
		if ri := per[o.RoomID]; ri != nil {
			ri.own = append(ri.own, o)
		}
	}
	for k, p := range in.Receipts {
		if ri := per[k[0]]; ri != nil {
			ri.receipts[k[1]] = p
		}
	}
	for r, ri := range per {
		e.inputs.Put(inputsKey{user, r}, upTo, *ri)
	}
	return in, nil
}

// CountsAt is Counts up to a committed events-stream position the caller
// read (0: the current one), sparing a read of it.
//
// Rooms that quiet covers start from the inputs remembered for quiet.Since.
func (e *Engine) CountsAt(ctx context.Context, user string, roomIDs []string, threads bool, upTo int64, quiet Quiet) (map[string]RoomCounts, error) {
	out := map[string]RoomCounts{}
	upper := upTo
	if upper <= 0 {
		var err error
		if upper, err = e.rooms.StreamPosition(ctx); err != nil {
			return nil, err
		}
	}
	rd := newReads(e, user)
	seen := make(map[string]bool, len(roomIDs))
	want := make([]storage.PushAfter, 0, len(roomIDs))
	var unique []string
	for _, r := range roomIDs {
		if !seen[r] {
			seen[r] = true
			unique = append(unique, r)
		}
	}
	// Membership starts, own events and receipts in one read, or none.
	in, err := e.countInputs(ctx, user, unique, upTo, quiet)
	if err != nil {
		return nil, err
	}
	sharedFrom := func(room string) int64 {
		if s, ok := in.Starts[room]; ok {
			return s
		}
		return notJoined
	}
	var receipts map[[2]string]int64
	if e.receipts != nil {
		receipts = in.Receipts
	}
	rd.fill(unique, receipts, in.Own)
	for _, r := range unique {
		u, err := rd.unthreaded(ctx, r)
		if err != nil {
			return nil, err
		}
		// The main timeline is read up to its own receipt or the user's
		// newest event there when those are further: counted so in the
		// same query.
		main, err := rd.upTo(ctx, r, mainThread)
		if err != nil {
			return nil, err
		}
		want = append(want, storage.PushAfter{RoomID: r, After: u, MainAfter: main, SharedFrom: sharedFrom(r)})
	}
	first, err := e.countsAfter(ctx, user, want, false, upper)
	if err != nil || len(first) == 0 {
		return out, err
	}
	// A thread whose own receipt (or the user's own event) is ahead of
	// the unthreaded receipt is counted again from there.
	final := make([]storage.PushCount, 0, len(first))
	var recount []storage.PushAfter
	for _, c := range first {
		upTo, err := rd.upTo(ctx, c.RoomID, c.ThreadID)
		if err != nil {
			return nil, err
		}
		if c.ThreadID != mainThread && upTo > rd.unthr[c.RoomID] {
			recount = append(recount, storage.PushAfter{RoomID: c.RoomID, ThreadID: c.ThreadID, After: upTo, SharedFrom: sharedFrom(c.RoomID)})
			continue
		}
		final = append(final, c)
	}
	if len(recount) > 0 {
		second, err := e.countsAfter(ctx, user, recount, true, upper)
		if err != nil {
			return nil, err
		}
		final = append(final, second...)
	}
	for _, c := range final {
		if c.Notifications == 0 {
			continue
		}
		rc := out[c.RoomID]
		if threads && c.ThreadID != mainThread {
			if rc.Threads == nil {
				rc.Threads = map[string]ThreadCounts{}
			}
			rc.Threads[c.ThreadID] = ThreadCounts{Notification: c.Notifications, Highlight: c.Highlight}
		} else {
			rc.Notification += c.Notifications
			rc.Highlight += c.Highlight
		}
		out[c.RoomID] = rc
	}
	return out, nil
}

// notJoined is the SharedFrom of rooms the user is not joined to: no
// shared row counts for them.
const notJoined = 1 << 62

// joinedStarts lists the rooms the user is joined to with the start of
// their membership, for reading shared rows.
func (e *Engine) joinedStarts(ctx context.Context, user string) ([]storage.PushAfter, error) {
	ms, err := e.rooms.MembershipsNow(ctx, user)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, m := range ms {
		if m.Membership == "join" {
			ids = append(ids, m.RoomID)
		}
	}
	starts, err := e.store.MembershipStarts(ctx, user, ids)
	if err != nil {
		return nil, err
	}
	out := make([]storage.PushAfter, 0, len(starts))
	for _, id := range ids {
		if s, ok := starts[id]; ok {
			out = append(out, storage.PushAfter{RoomID: id, After: s})
		}
	}
	return out, nil
}

// reads works out, and remembers for one request, where a user has read
// up to: receipts, and the user's own newest events.
type reads struct {
	e     *Engine
	user  string
	unthr map[string]int64
	thr   map[[2]string]int64
	own   map[[2]string]int64
	// loaded rooms had every receipt read at once (preload): a thread
	// missing from thr has none.
	loaded map[string]bool
}

func newReads(e *Engine, user string) *reads {
	return &reads{e: e, user: user, unthr: map[string]int64{}, thr: map[[2]string]int64{}, own: map[[2]string]int64{},
		loaded: map[string]bool{}}
}

// fill records every read receipt (by room and thread) and own event of
// the user in rooms, read at once.
func (r *reads) fill(roomIDs []string, receipts map[[2]string]int64, own []storage.OwnRead) {
	for k, v := range receipts {
		if k[1] == "" {
			r.unthr[k[0]] = v
		} else {
			r.thr[k] = v
		}
	}
	for _, room := range roomIDs {
		if _, ok := r.unthr[room]; !ok {
			r.unthr[room] = 0
		}
		r.loaded[room] = true
	}
	r.addOwn(own)
}

// unthreaded is the position of the room's unthreaded receipt.
func (r *reads) unthreaded(ctx context.Context, roomID string) (int64, error) {
	if v, ok := r.unthr[roomID]; ok {
		return v, nil
	}
	var v int64
	if r.e.receipts != nil {
		var err error
		if v, err = r.e.receipts.ReadUpTo(ctx, r.user, roomID, ""); err != nil {
			return 0, err
		}
	}
	r.unthr[roomID] = v
	return v, nil
}

// loadOwn reads the user's own newest events in rooms.
func (r *reads) loadOwn(ctx context.Context, roomIDs []string) error {
	if len(roomIDs) == 0 {
		return nil
	}
	own, err := r.e.store.OwnReadsGet(ctx, r.user, roomIDs)
	if err != nil {
		return err
	}
	r.addOwn(own)
	return nil
}

// addOwn records the user's own newest events.
func (r *reads) addOwn(own []storage.OwnRead) {
	for _, o := range own {
		r.own[[2]string{o.RoomID, o.ThreadID}] = o.StreamPos
	}
}

// upTo is how far the user has read in a room's thread: the furthest of
// the unthreaded receipt, the thread's receipt and their own last event
// in the thread (call loadOwn for the room first).
func (r *reads) upTo(ctx context.Context, roomID, threadID string) (int64, error) {
	u, err := r.unthreaded(ctx, roomID)
	if err != nil {
		return 0, err
	}
	k := [2]string{roomID, threadID}
	t, ok := r.thr[k]
	if !ok && !r.loaded[roomID] {
		if r.e.receipts != nil {
			if t, err = r.e.receipts.ReadUpTo(ctx, r.user, roomID, threadID); err != nil {
				return 0, err
			}
		}
		r.thr[k] = t
	}
	return max(u, t, r.own[k]), nil
}

// Limits of GET /notifications.
const (
	DefaultNotificationsLimit = 20
	MaxNotificationsLimit     = 100
)

// NotificationsQuery is GET /notifications' parameters.
type NotificationsQuery struct {
	// From is a next_token of an earlier page ("": the newest).
	From string
	// Limit is the page size (0: the default; at most MaxNotificationsLimit).
	Limit int
	// Only "highlight" keeps highlighted notifications only.
	Only string
}

// Notification is one entry of GET /notifications.
type Notification struct {
	Actions    json.RawMessage    `json:"actions"`
	Event      *rooms.ClientEvent `json:"event"`
	ProfileTag string             `json:"profile_tag,omitempty"`
	Read       bool               `json:"read"`
	RoomID     string             `json:"room_id"`
	TS         int64              `json:"ts"`
}

// NotificationsPage is GET /notifications' answer.
type NotificationsPage struct {
	NextToken     string         `json:"next_token,omitempty"`
	Notifications []Notification `json:"notifications"`
}

// maxNotificationScans bounds how many rows one page looks at when
// many are left out (events the user can no longer see).
const maxNotificationScans = 4

// Notifications lists the events a user was notified about, newest
// first. Events the user can no longer see (history visibility, ignored
// senders) are left out; a page may then come back short, with a
// next_token if there may be more.
func (e *Engine) Notifications(ctx context.Context, who rooms.Requester, q NotificationsQuery) (*NotificationsPage, error) {
	var before int64
	if q.From != "" {
		v, err := strconv.ParseInt(q.From, 10, 64)
		if err != nil || v <= 0 {
			return nil, mxerr.InvalidParam("from is not a token this endpoint gave")
		}
		before = v
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultNotificationsLimit
	}
	limit = min(limit, MaxNotificationsLimit)
	page := &NotificationsPage{Notifications: []Notification{}}
	rd := newReads(e, who.UserID)
	joined, err := e.joinedStarts(ctx, who.UserID)
	if err != nil {
		return nil, err
	}
	for scan := 0; scan < maxNotificationScans && len(page.Notifications) < limit; scan++ {
		want := limit - len(page.Notifications)
		rows, err := e.store.NotificationsPage(ctx, who.UserID, before, want, q.Only == "highlight", joined)
		if err != nil {
			return nil, err
		}
		if err := e.appendNotifications(ctx, who, rd, rows, page); err != nil {
			return nil, err
		}
		if len(rows) < want {
			page.NextToken = ""
			return page, nil
		}
		before = rows[len(rows)-1].StreamPos
		page.NextToken = strconv.FormatInt(before, 10)
	}
	return page, nil
}

// appendNotifications renders rows the user can still see into page.
func (e *Engine) appendNotifications(ctx context.Context, who rooms.Requester, rd *reads, rows []storage.PushAction, page *NotificationsPage) error {
	var roomIDs []string
	seen := map[string]bool{}
	for _, row := range rows {
		if !seen[row.RoomID] {
			seen[row.RoomID] = true
			roomIDs = append(roomIDs, row.RoomID)
		}
	}
	if err := rd.loadOwn(ctx, roomIDs); err != nil {
		return err
	}
	for _, row := range rows {
		ev, err := e.rooms.Event(ctx, who, row.RoomID, row.EventID)
		if mxerr.IsCode(err, "M_NOT_FOUND") {
			continue
		}
		if err != nil {
			return err
		}
		ev.RoomID = "" // the spec's format here is the event without room_id
		upTo, err := rd.upTo(ctx, row.RoomID, row.ThreadID)
		if err != nil {
			return err
		}
		page.Notifications = append(page.Notifications, Notification{
			Actions: json.RawMessage(row.Actions), Event: ev, Read: row.StreamPos <= upTo, RoomID: row.RoomID, TS: row.TS,
		})
	}
	return nil
}

// countKey names a cached count: a user's push actions in a room, or in
// one of its threads, after a position.
type countKey struct {
	user, room, thread           string
	threads                      bool
	after, mainAfter, sharedFrom int64
}

// countEntry is a cached count, complete up to stream position upTo.
type countEntry struct {
	upTo   int64
	at     time.Time
	counts []storage.PushCount // per thread
}

// countTTL bounds how long a cached count is reused, far below the age at
// which Prune may delete rows it counted (a user who left and came back).
const countTTL = 10 * time.Minute

// countsAfter counts push actions after each room's (or, with threads,
// each thread's) position, reusing what an earlier call counted: push
// actions never change once committed, so a count up to a committed
// stream position only ever needs the rows after it. Busy rooms whose
// readers send no receipts would otherwise be counted from scratch on
// every sync.
func (e *Engine) countsAfter(ctx context.Context, user string, want []storage.PushAfter, threads bool, upper int64) ([]storage.PushCount, error) {
	now := e.now()
	key := func(w storage.PushAfter) countKey {
		k := countKey{user: user, room: w.RoomID, threads: threads, after: w.After, mainAfter: w.MainAfter, sharedFrom: w.SharedFrom}
		if threads {
			k.thread = w.ThreadID
		}
		return k
	}
	ask := make([]storage.PushAfter, len(want))
	cached := make([]countEntry, len(want))
	for i, w := range want {
		ask[i] = w
		if c, ok := e.countCache.Get(key(w)); ok && c.upTo <= upper && now.Sub(c.at) < countTTL {
			cached[i] = c
			ask[i].After = max(w.After, c.upTo)
		}
	}
	// Rows decided within countTTL cannot have been pruned.
	fresh, ok := e.recent.counts(user, ask, threads, upper, now.Add(-countTTL).UnixMilli())
	if !ok {
		var err error
		if fresh, err = e.store.PushCountsBetween(ctx, user, ask, threads, upper); err != nil {
			return nil, err
		}
	}
	// Counts of each wanted entry by thread; fresh rows land on the entry
	// they were asked for (a room, or a room and thread). A cached entry's
	// counts are shared with the cache: copied before they change.
	counts := make([][]storage.PushCount, len(want))
	owned := make([]bool, len(want))
	for i := range want {
		counts[i] = cached[i].counts
	}
	var at map[[2]string]int // (room, thread or "") → index in want, for many
	if len(want) > 8 {
		at = make(map[[2]string]int, len(want))
		for i, w := range want {
			at[[2]string{w.RoomID, key(w).thread}] = i
		}
	}
	find := func(room, thread string) int {
		if at != nil {
			if i, ok := at[[2]string{room, thread}]; ok {
				return i
			}
			return -1
		}
		for i, w := range want {
			if w.RoomID == room && key(w).thread == thread {
				return i
			}
		}
		return -1
	}
	for _, c := range fresh {
		t := ""
		if threads {
			t = c.ThreadID
		}
		i := find(c.RoomID, t)
		if i < 0 {
			continue
		}
		if !owned[i] {
			counts[i], owned[i] = slices.Clone(counts[i]), true
		}
		j := slices.IndexFunc(counts[i], func(p storage.PushCount) bool { return p.ThreadID == c.ThreadID })
		if j < 0 {
			counts[i] = append(counts[i], storage.PushCount{RoomID: c.RoomID, ThreadID: c.ThreadID})
			j = len(counts[i]) - 1
		}
		counts[i][j].Notifications += c.Notifications
		counts[i][j].Highlight += c.Highlight
	}
	var out []storage.PushCount
	for i, w := range want {
		entry := countEntry{upTo: upper, at: now, counts: counts[i]}
		out = append(out, counts[i]...)
		if !cached[i].at.IsZero() {
			entry.at = cached[i].at // the age of the full count, not the top-up
		}
		e.countCache.Put(key(w), entry)
	}
	return out, nil
}
