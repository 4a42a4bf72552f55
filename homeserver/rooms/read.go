package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/homeserver/filter"
	"github.com/parley-chat/parley/internal/lru"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// membershipNow returns a user's current membership event in a room.
func (e *Engine) membershipNow(ctx context.Context, m *roomMeta, user string) (*Event, string, error) {
	ev, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.member", user)
	if err != nil || ev == nil {
		return nil, "leave", err
	}
	return ev, membershipOf(ev.PDU.Content), nil
}

// worldReadable reports whether the room's current history visibility is
// world_readable.
func (e *Engine) worldReadable(ctx context.Context, m *roomMeta) (bool, error) {
	ev, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.history_visibility", "")
	if err != nil || ev == nil {
		return false, err
	}
	return gjson.GetBytes(ev.Content(), "history_visibility").String() == "world_readable", nil
}

// readableState returns the snapshot of the state a user may read: the
// current state while joined (or the room is world-readable), the state
// at their departure after leaving or being banned.
func (e *Engine) readableState(ctx context.Context, m *roomMeta, user string) (int64, error) {
	mev, mem, err := e.membershipNow(ctx, m, user)
	if err != nil {
		return 0, err
	}
	room, err := e.store.RoomByNID(ctx, e.db.Read(), m.NID)
	if err != nil {
		return 0, err
	}
	if mem == "join" {
		return room.StateNID, nil
	}
	if wr, err := e.worldReadable(ctx, m); err != nil || wr {
		return room.StateNID, err
	}
	if mev != nil && (mem == "leave" || mem == "ban") {
		// They saw the room until they left.
		before, err := e.stateEventAt(ctx, e.db.Read(), deref(mev.StateBefore), storage.StateKey{Type: "m.room.member", StateKey: user})
		if err != nil {
			return 0, err
		}
		if before != nil && membershipOf(before.PDU.Content) == "join" {
			return deref(mev.StateAfter), nil
		}
	}
	return 0, mxerr.Forbidden("You are not a member of this room")
}

// State returns the room state a user may read.
func (e *Engine) State(ctx context.Context, user, roomID string) ([]*ClientEvent, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, notMemberIfUnknown(err)
	}
	snap, err := e.readableState(ctx, m, user)
	if err != nil {
		return nil, err
	}
	st, err := e.stateEventsAt(ctx, e.db.Read(), snap)
	if err != nil {
		return nil, err
	}
	evs := make([]*Event, 0, len(st))
	for _, ev := range st {
		evs = append(evs, ev)
	}
	slices.SortFunc(evs, func(a, b *Event) int { return int(deref(a.StreamPos) - deref(b.StreamPos)) })
	return e.renderAll(ctx, evs, nil, FormatOptions{User: user, NoBundle: true})
}

// notMemberIfUnknown hides whether a room exists from non-members.
func notMemberIfUnknown(err error) error {
	if errors.Is(err, ErrUnknownRoom) {
		return mxerr.Forbidden("You are not a member of this room")
	}
	return err
}

// StateEvent returns one state event's content (or, with full, the event).
func (e *Engine) StateEvent(ctx context.Context, user, roomID, typ, key string) (*ClientEvent, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, notMemberIfUnknown(err)
	}
	snap, err := e.readableState(ctx, m, user)
	if err != nil {
		return nil, err
	}
	ev, err := e.stateEventAt(ctx, e.db.Read(), snap, storage.StateKey{Type: typ, StateKey: key})
	if err != nil {
		return nil, err
	}
	if ev == nil {
		return nil, mxerr.NotFound("No %s state event with key %q", typ, key)
	}
	return e.render(ctx, ev, "", FormatOptions{User: user, NoBundle: true})
}

// Requester is who reads: transaction IDs are echoed to the sending device.
type Requester struct{ UserID, DeviceID string }

// Event returns one event if the user may see it.
func (e *Engine) Event(ctx context.Context, who Requester, roomID, eventID string) (*ClientEvent, error) {
	user := who.UserID
	if !ValidEventID(eventID) {
		return nil, mxerr.InvalidParam("%q is not a valid event ID", eventID)
	}
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, mxerr.NotFound("Event not found")
	}
	ev, err := e.eventByID(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev.RoomNID != m.NID {
		return nil, mxerr.NotFound("Event not found")
	}
	v, err := e.newViewer(ctx, user, m)
	if err != nil {
		return nil, err
	}
	ok, mem, err := v.allowed(ev)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxerr.NotFound("Event not found or not visible to you")
	}
	ignored, err := e.IgnoredUsers(ctx, user)
	if err != nil {
		return nil, err
	}
	if hiddenByIgnore(ignored, ev) {
		return nil, mxerr.NotFound("Event not found or not visible to you")
	}
	out, err := e.renderAll(ctx, []*Event{ev}, []string{mem}, FormatOptions{User: user, DeviceID: who.DeviceID})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// MembersQuery filters /members.
type MembersQuery struct {
	At            string
	Membership    string
	NotMembership string
}

// Members returns member events (at a point in the timeline when At is set).
func (e *Engine) Members(ctx context.Context, user, roomID string, q MembersQuery) ([]*ClientEvent, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, notMemberIfUnknown(err)
	}
	snap, err := e.readableState(ctx, m, user)
	if err != nil {
		return nil, err
	}
	if q.At != "" {
		pos, err := ParsePosition(q.At)
		if err != nil {
			return nil, err
		}
		// Only members may look back; a departed user stays at the state
		// of their departure.
		if _, mem, err := e.membershipNow(ctx, m, user); err != nil {
			return nil, err
		} else if mem == "join" {
			at, err := e.snapshotAtStream(ctx, m, pos.Stream)
			if err != nil {
				return nil, err
			}
			if at != 0 {
				snap = at
			}
		}
	}
	st, err := e.stateEventsAt(ctx, e.db.Read(), snap)
	if err != nil {
		return nil, err
	}
	var evs []*Event
	for k, ev := range st {
		if k.Type != "m.room.member" {
			continue
		}
		mem := membershipOf(ev.PDU.Content)
		if q.Membership != "" && mem != q.Membership {
			continue
		}
		if q.NotMembership != "" && mem == q.NotMembership {
			continue
		}
		evs = append(evs, ev)
	}
	slices.SortFunc(evs, func(a, b *Event) int { return int(deref(a.StreamPos) - deref(b.StreamPos)) })
	return e.renderAll(ctx, evs, nil, FormatOptions{User: user, NoBundle: true})
}

// committedSnapshotAt is snapshotAtStream for a sync window, remembered
// when the position is at or below committed: stream positions are
// assigned and committed in order, so no later event can land there.
func (e *Engine) committedSnapshotAt(ctx context.Context, m *roomMeta, stream, committed int64) (int64, error) {
	return finalAt(e.snapAt, [2]int64{m.NID, stream}, stream <= committed, func() (int64, error) {
		return e.snapshotAtStream(ctx, m, stream)
	})
}

// finalAt reads through cache when the answer is final (it concerns only
// committed stream positions, which never change), and directly when not.
func finalAt[K comparable, V any](cache *lru.Cache[K, V], key K, final bool, read func() (V, error)) (V, error) {
	if !final {
		return read()
	}
	if v, ok := cache.Get(key); ok {
		return v, nil
	}
	v, err := read()
	if err == nil {
		cache.Put(key, v)
	}
	return v, err
}

// snapshotAtStream returns the room state after its last event at or
// before a stream position (0 if none).
func (e *Engine) snapshotAtStream(ctx context.Context, m *roomMeta, stream int64) (int64, error) {
	if s, ok := e.news.stateAt(m.NID, stream); ok {
		return s, nil
	}
	return e.store.StateAfterAtStream(ctx, m.NID, stream)
}

// JoinedMember is an entry of /joined_members.
type JoinedMember struct {
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// JoinedMembers returns the joined members with their profiles.
func (e *Engine) JoinedMembers(ctx context.Context, user, roomID string) (map[string]JoinedMember, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, notMemberIfUnknown(err)
	}
	_, mem, err := e.membershipNow(ctx, m, user)
	if err != nil {
		return nil, err
	}
	if mem != "join" {
		if wr, err := e.worldReadable(ctx, m); err != nil || !wr {
			if err == nil {
				err = mxerr.Forbidden("You are not a member of this room")
			}
			return nil, err
		}
	}
	entries, err := e.store.CurrentState(ctx, e.db.Read(), m.NID, "m.room.member")
	if err != nil {
		return nil, err
	}
	var nids []int64
	for _, en := range entries {
		if en.Membership != nil && *en.Membership == "join" {
			nids = append(nids, en.EventNID)
		}
	}
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, nids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]JoinedMember, len(evs))
	for _, ev := range evs {
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		out[*ev.StateKey] = JoinedMember{DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
	}
	return out, nil
}

// JoinedRooms lists the rooms a user is joined to.
func (e *Engine) JoinedRooms(ctx context.Context, user string) ([]string, error) {
	rs, err := e.store.RoomsOfUser(ctx, user, "join")
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.RoomID)
	}
	return out, nil
}

// MessagesQuery is /messages's parameters.
type MessagesQuery struct {
	From, To string
	Backward bool
	Limit    int
	Filter   *filter.RoomEventFilter
}

// Messages is /messages's answer.
type Messages struct {
	Chunk []*ClientEvent `json:"chunk"`
	Start string         `json:"start"`
	End   string         `json:"end,omitempty"`
	State []*ClientEvent `json:"state,omitempty"`
}

// Limits of pagination.
const (
	DefaultMessagesLimit = 10
	MaxMessagesLimit     = 1000
	// maxScan bounds how many events one request looks at while skipping
	// filtered or invisible ones.
	maxScanFactor = 10
)

// Messages pages through a room's history for a user.
func (e *Engine) Messages(ctx context.Context, who Requester, roomID string, q MessagesQuery) (*Messages, error) {
	user := who.UserID
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, notMemberIfUnknown(err)
	}
	if q.Limit <= 0 {
		q.Limit = DefaultMessagesLimit
	}
	q.Limit = min(q.Limit, MaxMessagesLimit)
	v, err := e.newViewer(ctx, user, m)
	if err != nil {
		return nil, err
	}
	if err := e.mayRead(ctx, m, user, v); err != nil {
		return nil, err
	}
	ignored, err := e.IgnoredUsers(ctx, user)
	if err != nil {
		return nil, err
	}
	from, err := e.startPosition(ctx, m, q.From, q.Backward)
	if err != nil {
		return nil, err
	}
	var to *Position
	if q.To != "" {
		p, err := ParsePosition(q.To)
		if err != nil {
			return nil, err
		}
		if p.StreamOnly {
			if p, err = e.topoOfStream(ctx, m, p.Stream, q.Backward); err != nil {
				return nil, err
			}
		}
		to = &p
	}
	res := &Messages{Start: from.String(), Chunk: []*ClientEvent{}}
	var kept []*Event
	var mems []string
	cur := from
	scanned, exhausted, more := 0, false, false
scan:
	for len(kept) < q.Limit && scanned < q.Limit*maxScanFactor {
		tq := storage.TimelineQuery{RoomNID: m.NID, FromDepth: cur.Depth, FromStream: cur.Stream, Backwards: q.Backward,
			Limit: q.Limit - len(kept) + 1}
		if to != nil {
			tq.HasTo, tq.ToDepth, tq.ToStream = true, to.Depth, to.Stream
		}
		rows, err := e.store.Timeline(ctx, tq)
		if err != nil {
			return nil, err
		}
		if len(rows) < tq.Limit {
			exhausted = true
		}
		for i, row := range rows {
			scanned++
			cur = Position{Depth: row.Depth, Stream: deref(row.StreamPos)}
			ev, err := fromRow(row, m.Version, m.ID)
			if err != nil {
				return nil, err
			}
			if hiddenByIgnore(ignored, ev) || !q.Filter.AllowsEvent(ev.Type, ev.Sender, ev.PDU.Content) {
				continue
			}
			ok, mem, err := v.allowed(ev)
			if err != nil {
				return nil, err
			}
			if ok {
				kept = append(kept, ev)
				mems = append(mems, mem)
				if len(kept) == q.Limit {
					// More is known to follow only if rows remain.
					more = i < len(rows)-1 || !exhausted
					break scan
				}
			}
		}
		if exhausted {
			break
		}
	}
	if more || (!exhausted && len(kept) < q.Limit) {
		res.End = cur.String()
	}
	if res.Chunk, err = e.renderAll(ctx, kept, mems, FormatOptions{User: user, DeviceID: who.DeviceID}); err != nil {
		return nil, err
	}
	if q.Filter != nil && q.Filter.LazyLoadMembers && len(kept) > 0 {
		if res.State, err = e.lazyMembers(ctx, user, kept); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// mayRead refuses users who never had any access to a room.
func (e *Engine) mayRead(ctx context.Context, m *roomMeta, user string, v *viewer) error {
	if v.memKey != 0 {
		if ev, _, err := e.membershipNow(ctx, m, user); err != nil || ev != nil {
			return err
		}
	}
	if wr, err := e.worldReadable(ctx, m); err != nil || wr {
		return err
	}
	return mxerr.Forbidden("You are not a member of this room")
}

// startPosition turns a from token into a topological position; no token
// starts at the end (backwards) or the beginning (forwards).
func (e *Engine) startPosition(ctx context.Context, m *roomMeta, from string, backward bool) (Position, error) {
	if from == "" {
		if backward {
			// Just after the newest event, so that the token also works
			// forwards later.
			return e.topoOfStream(ctx, m, 1<<62, true)
		}
		return Position{}, nil
	}
	p, err := ParsePosition(from)
	if err != nil {
		return p, err
	}
	if p.StreamOnly {
		return e.topoOfStream(ctx, m, p.Stream, backward)
	}
	return p, nil
}

// topoOfStream maps a stream position to the topological position just
// after (backwards) or at (forwards) the room's last event at or before it.
func (e *Engine) topoOfStream(ctx context.Context, m *roomMeta, stream int64, backward bool) (Position, error) {
	evs, err := e.store.TimelineByStream(ctx, m.NID, -1, stream, 1)
	if err != nil {
		return Position{}, err
	}
	if len(evs) == 0 {
		return Position{}, nil
	}
	p := Position{Depth: evs[0].Depth, Stream: deref(evs[0].StreamPos)}
	if backward {
		// Exclusive bound: include the event at the position itself.
		p.Stream++
	}
	return p, nil
}

// lazyMembers returns the member events of the senders of events, as of
// the newest of them.
func (e *Engine) lazyMembers(ctx context.Context, user string, evs []*Event) ([]*ClientEvent, error) {
	newest := evs[0]
	for _, ev := range evs {
		if deref(ev.StreamPos) > deref(newest.StreamPos) {
			newest = ev
		}
	}
	seen := map[string]bool{}
	var out []*Event
	for _, ev := range evs {
		if seen[ev.Sender] {
			continue
		}
		seen[ev.Sender] = true
		mem, err := e.stateEventAt(ctx, e.db.Read(), deref(newest.StateAfter), storage.StateKey{Type: "m.room.member", StateKey: ev.Sender})
		if err != nil {
			return nil, err
		}
		if mem != nil {
			out = append(out, mem)
		}
	}
	return e.renderAll(ctx, out, nil, FormatOptions{User: user, NoBundle: true})
}

// ContextResult is /context's answer.
type ContextResult struct {
	Start        string         `json:"start,omitempty"`
	End          string         `json:"end,omitempty"`
	EventsBefore []*ClientEvent `json:"events_before"`
	Event        *ClientEvent   `json:"event"`
	EventsAfter  []*ClientEvent `json:"events_after"`
	State        []*ClientEvent `json:"state"`
}

// Context returns an event with those around it.
func (e *Engine) Context(ctx context.Context, who Requester, roomID, eventID string, limit int, f *filter.RoomEventFilter) (*ContextResult, error) {
	user := who.UserID
	ev, err := e.Event(ctx, who, roomID, eventID)
	if err != nil {
		return nil, err
	}
	target, err := e.eventByID(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, mxerr.InvalidParam("limit must not be negative")
	}
	if limit == 0 {
		limit = 10
	}
	limit = min(limit, 100)
	at := Position{Depth: target.Depth, Stream: deref(target.StreamPos)}
	before, err := e.Messages(ctx, who, roomID, MessagesQuery{From: at.String(), Backward: true, Limit: limit / 2, Filter: f})
	if err != nil {
		return nil, err
	}
	after, err := e.Messages(ctx, who, roomID, MessagesQuery{From: at.String(), Backward: false, Limit: limit - limit/2, Filter: f})
	if err != nil {
		return nil, err
	}
	res := &ContextResult{Event: ev, EventsBefore: before.Chunk, EventsAfter: after.Chunk, Start: before.End, End: after.End}
	if res.Start == "" {
		res.Start = at.String()
	}
	if res.End == "" {
		res.End = at.String()
	}
	state, err := e.stateEventsAt(ctx, e.db.Read(), deref(target.StateAfter))
	if err != nil {
		return nil, err
	}
	var evs []*Event
	lazy := f != nil && f.LazyLoadMembers
	var senders map[string]bool
	if lazy {
		senders = map[string]bool{target.Sender: true}
		for _, c := range append(before.Chunk, after.Chunk...) {
			senders[c.Sender] = true
		}
	}
	for k, s := range state {
		if lazy && k.Type == "m.room.member" && !senders[k.StateKey] {
			continue
		}
		evs = append(evs, s)
	}
	if res.State, err = e.renderAll(ctx, evs, nil, FormatOptions{User: user, NoBundle: true}); err != nil {
		return nil, err
	}
	return res, nil
}
