package rooms

import (
	"context"
	"encoding/json"
	"slices"
	"sort"

	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/homeserver/filter"
	"github.com/parley-chat/parley/storage"
)

// RoomMembership is a room a user belongs to, or left, as sync sees it.
type RoomMembership struct {
	RoomID     string
	Membership string
	// EventStream is the stream position of the membership event.
	EventStream int64
}

// MembershipsAt lists every room in which the user has a membership now
// (initial sync), with the position of their membership event.
func (e *Engine) MembershipsNow(ctx context.Context, user string) ([]RoomMembership, error) {
	rs, err := e.store.RoomsOfUser(ctx, user)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, len(rs))
	for i, r := range rs {
		nids[i] = r.EventNID
	}
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, nids)
	if err != nil {
		return nil, err
	}
	out := make([]RoomMembership, 0, len(rs))
	for _, r := range rs {
		m := RoomMembership{RoomID: r.RoomID, Membership: r.Membership}
		if ev, ok := evs[r.EventNID]; ok {
			m.EventStream = deref(ev.StreamPos)
		}
		out = append(out, m)
	}
	return out, nil
}

// MembershipChanges lists the user's membership changes with
// from < stream ≤ to, the latest per room.
func (e *Engine) MembershipChanges(ctx context.Context, user string, from, to int64) ([]RoomMembership, error) {
	cs, err := e.store.MembershipChanges(ctx, user, from, to)
	if err != nil {
		return nil, err
	}
	return latestMemberships(cs), nil
}

// latestMemberships keeps each room's newest change, rooms in the order
// of their first change.
func latestMemberships(cs []storage.MembershipChange) []RoomMembership {
	latest := map[string]RoomMembership{}
	var order []string
	for _, c := range cs {
		if _, ok := latest[c.RoomID]; !ok {
			order = append(order, c.RoomID)
		}
		latest[c.RoomID] = RoomMembership{RoomID: c.RoomID, Membership: c.Membership, EventStream: c.StreamPos}
	}
	out := make([]RoomMembership, 0, len(order))
	for _, r := range order {
		out = append(out, latest[r])
	}
	return out
}

// WindowNews is MembershipChanges and RoomsWithEvents read together, for
// a sync that expects the user's memberships unchanged (one round trip,
// or none when the window is among the events committed last); its news
// also tell how far the user's own events in each room reached (LastOwn).
// The positions in the news are to be compared with from only: they may
// stop at the newest inside the window or go past it.
func (e *Engine) WindowNews(ctx context.Context, user string, from, to int64, roomIDs []string) ([]RoomMembership, map[string]RoomNews, error) {
	nids, byNID := e.roomNIDs(ctx, roomIDs)
	cs, latest, ok := e.news.window(user, from, to, nids)
	if !ok {
		var err error
		if cs, latest, err = e.store.WindowNews(ctx, user, from, to, nids); err != nil {
			return nil, nil, err
		}
	}
	return latestMemberships(cs), newsAfter(latest, byNID, from), nil
}

// roomNIDs resolves room IDs to numeric IDs, leaving out unknown rooms.
func (e *Engine) roomNIDs(ctx context.Context, roomIDs []string) ([]int64, map[int64]string) {
	nids := make([]int64, 0, len(roomIDs))
	byNID := make(map[int64]string, len(roomIDs))
	for _, r := range roomIDs {
		m, err := e.meta(ctx, r)
		if err != nil {
			continue
		}
		nids = append(nids, m.NID)
		byNID[m.NID] = r
	}
	return nids, byNID
}

// RoomNews is how far a room with news has reached: its newest event, its
// newest membership event and, from WindowNews, the user's newest event
// (0: none).
type RoomNews = storage.RoomStreams

// RoomsWithEvents returns which of the rooms have timeline events after
// from, and how far they and their membership events have reached: a
// room whose membership events all come before from has no member
// changes to read.
func (e *Engine) RoomsWithEvents(ctx context.Context, roomIDs []string, from int64) (map[string]RoomNews, error) {
	nids, byNID := e.roomNIDs(ctx, roomIDs)
	latest, err := e.store.LatestStreamPos(ctx, nids)
	if err != nil {
		return nil, err
	}
	return newsAfter(latest, byNID, from), nil
}

// newsAfter keeps the rooms whose timeline moved after from, by ID.
func newsAfter(latest map[int64]storage.RoomStreams, byNID map[int64]string, from int64) map[string]RoomNews {
	out := map[string]RoomNews{}
	for nid, st := range latest {
		if id, ok := byNID[nid]; ok && st.Last > from {
			out[id] = st
		}
	}
	return out
}

// StreamPosition is the newest committed position of the events stream.
func (e *Engine) StreamPosition(ctx context.Context) (int64, error) {
	return e.db.StreamPos(ctx, storage.EventsStream)
}

// SyncRoomQuery asks for one room's section of a sync response.
type SyncRoomQuery struct {
	Who        Requester
	RoomID     string
	Membership RoomMembership
	// Since is the events position of the since token; Initial asks for
	// the room as if never synced (initial sync, or a room just joined).
	Since, To int64
	// Committed is an events position the caller read as committed
	// (0: unknown); what the room looked like at or before it is final.
	Committed  int64
	Initial    bool
	Limit      int
	Timeline   *filter.RoomEventFilter
	State      *filter.RoomEventFilter
	FullState  bool
	StateAfter bool
}

// Summary is a room's summary in sync.
type Summary struct {
	Heroes  []string `json:"m.heroes,omitempty"`
	Joined  *int     `json:"m.joined_member_count,omitempty"`
	Invited *int     `json:"m.invited_member_count,omitempty"`
}

// SyncRoom is one room's section of a sync response.
type SyncRoom struct {
	Timeline  []*ClientEvent
	Limited   bool
	PrevBatch string
	State     []*ClientEvent
	Summary   *Summary
	// Stripped is the invite or knock state.
	Stripped []json.RawMessage
	// BumpStamp is the position of the newest event that bumps the room.
	BumpStamp int64
	// Inviter sent the invite or accepted the knock (invite/knock only).
	Inviter string
}

// maxTimelineScan bounds how many events one room's timeline looks at
// while skipping filtered or invisible ones.
const maxTimelineScan = 500

// SyncRoom computes one room's section of a sync response.
func (e *Engine) SyncRoom(ctx context.Context, q SyncRoomQuery) (*SyncRoom, error) {
	m, err := e.meta(ctx, q.RoomID)
	if err != nil {
		return nil, err
	}
	switch q.Membership.Membership {
	case "invite", "knock":
		return e.syncStripped(ctx, m, q)
	}
	upper := q.To
	if q.Membership.Membership == "leave" || q.Membership.Membership == "ban" {
		// A departed user sees the room up to their departure.
		upper = min(upper, q.Membership.EventStream)
	}
	lower := q.Since
	if q.Initial {
		lower = 0
	}
	v, err := e.newViewer(ctx, q.Who.UserID, m)
	if err != nil {
		return nil, err
	}
	tl, mems, limited, err := e.syncTimeline(ctx, m, v, q, lower, upper)
	if err != nil {
		return nil, err
	}
	out := &SyncRoom{Limited: limited}
	fo := FormatOptions{User: q.Who.UserID, DeviceID: q.Who.DeviceID, OmitRoomID: true}
	if upper <= q.Committed {
		fo.RelationsAt = upper
	}
	if out.Timeline, err = e.renderAll(ctx, tl, mems, fo); err != nil {
		return nil, err
	}
	if len(tl) > 0 {
		out.PrevBatch = Position{Depth: tl[0].Depth, Stream: deref(tl[0].StreamPos)}.String()
	} else {
		p, err := e.topoOfStream(ctx, m, upper, true)
		if err != nil {
			return nil, err
		}
		out.PrevBatch = p.String()
	}
	if out.State, err = e.syncState(ctx, m, q, tl, lower, upper); err != nil {
		return nil, err
	}
	if q.Membership.Membership == "join" && (q.Initial || q.FullState || touchesSummary(tl, out.State)) {
		if out.Summary, err = e.summary(ctx, m, q.Who.UserID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// syncTimeline returns the newest visible, filtered events in
// (lower, upper], oldest first, and whether more were left out.
func (e *Engine) syncTimeline(ctx context.Context, m *roomMeta, v *viewer, q SyncRoomQuery, lower, upper int64) ([]*Event, []string, bool, error) {
	limit := q.Limit
	ignored, err := e.IgnoredUsers(ctx, q.Who.UserID)
	if err != nil {
		return nil, nil, false, err
	}
	var kept []*Event
	var mems []string
	cursor := upper
	scanned := 0
	for len(kept) < limit && scanned < maxTimelineScan {
		n := limit - len(kept) + 1
		// Numeric IDs only: the events themselves are mostly in the
		// cache the persister fills, as every member syncs the same ones.
		rows, err := e.timelineNIDs(ctx, m, lower, cursor, n, q.Committed)
		if err != nil {
			return nil, nil, false, err
		}
		if len(rows) == 0 {
			break
		}
		for _, row := range rows {
			scanned++
			cursor = row.Stream - 1
			ev, err := e.eventByNID(ctx, e.db.Read(), nil, row.NID)
			if err != nil {
				return nil, nil, false, err
			}
			if hiddenByIgnore(ignored, ev) || !q.Timeline.AllowsEvent(ev.Type, ev.Sender, ev.PDU.Content) {
				continue
			}
			ok, mem, err := v.allowed(ev)
			if err != nil {
				return nil, nil, false, err
			}
			if !ok {
				continue
			}
			if len(kept) == limit {
				// One more visible event than asked for: the timeline is limited.
				slices.Reverse(kept)
				slices.Reverse(mems)
				return kept, mems, true, nil
			}
			kept = append(kept, ev)
			mems = append(mems, mem)
		}
		if len(rows) < n {
			break
		}
	}
	limited := scanned >= maxTimelineScan
	if len(kept) == limit && !limited {
		// Check whether anything visible is older.
		more, err := e.timelineNIDs(ctx, m, lower, cursor, 1, q.Committed)
		if err != nil {
			return nil, nil, false, err
		}
		limited = len(more) > 0
	}
	slices.Reverse(kept)
	slices.Reverse(mems)
	return kept, mems, limited, nil
}

// timelineKey names one read of a room's timeline window.
type timelineKey struct {
	room, lower, upper int64
	limit              int
}

// timelineNIDs is TimelineNIDsByStream, remembered when the window ends
// at or below committed: the members woken by one commit read the same
// window, and events never leave a committed stream position.
func (e *Engine) timelineNIDs(ctx context.Context, m *roomMeta, lower, upper int64, limit int, committed int64) ([]storage.NIDPos, error) {
	return finalAt(e.windows, timelineKey{m.NID, lower, upper, limit}, upper <= committed, func() ([]storage.NIDPos, error) {
		if nids, ok := e.news.timeline(m.NID, lower, upper, limit); ok {
			return nids, nil
		}
		return e.store.TimelineNIDsByStream(ctx, m.NID, lower, upper, limit)
	})
}

// syncState returns the state section: the state at the start of the
// timeline (or, with StateAfter, at its end), as a delta from the since
// position unless the room is new to the client, filtered and lazily
// loaded as asked.
func (e *Engine) syncState(ctx context.Context, m *roomMeta, q SyncRoomQuery, tl []*Event, lower, upper int64) ([]*ClientEvent, error) {
	var target int64
	switch {
	case q.StateAfter && len(tl) > 0:
		target = deref(tl[len(tl)-1].StateAfter)
	case len(tl) > 0:
		target = deref(tl[0].StateBefore)
	default:
		s, err := e.committedSnapshotAt(ctx, m, upper, q.Committed)
		if err != nil {
			return nil, err
		}
		target = s
	}
	incremental := !q.Initial && !q.FullState
	var since int64
	if incremental {
		var err error
		if since, err = e.committedSnapshotAt(ctx, m, lower, q.Committed); err != nil {
			return nil, err
		}
		if since == target {
			// The same snapshot: nothing changed, the usual case of a
			// window of messages.
			return nil, nil
		}
	}
	after, err := e.snaps.full(ctx, e.db.Read(), nil, target)
	if err != nil {
		return nil, err
	}
	var before StateMap
	if incremental {
		if before, err = e.snaps.full(ctx, e.db.Read(), nil, since); err != nil {
			return nil, err
		}
	}
	inTimeline := map[int64]bool{}
	if !q.StateAfter {
		for _, ev := range tl {
			inTimeline[ev.NID] = true
		}
	}
	var keyNIDs, evNIDs []int64
	for k, v := range after {
		if before != nil && before[k] == v {
			continue
		}
		if inTimeline[v] {
			continue
		}
		keyNIDs = append(keyNIDs, k)
		evNIDs = append(evNIDs, v)
	}
	keys, err := e.keysByNID(ctx, e.db.Read(), keyNIDs)
	if err != nil {
		return nil, err
	}
	lazy := q.State != nil && q.State.LazyLoadMembers
	needed := map[string]bool{q.Who.UserID: true}
	for _, ev := range tl {
		needed[ev.Sender] = true
	}
	var wanted []int64
	for i, kn := range keyNIDs {
		k := keys[kn]
		if lazy && k.Type == "m.room.member" && !needed[k.StateKey] {
			continue
		}
		wanted = append(wanted, evNIDs[i])
	}
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, wanted)
	if err != nil {
		return nil, err
	}
	list := make([]*Event, 0, len(evs))
	for _, ev := range evs {
		if q.State.AllowsEvent(ev.Type, ev.Sender, ev.PDU.Content) {
			list = append(list, ev)
		}
	}
	if lazy && e.needsHeroes(ctx, m) {
		// Heroes must come with their member events.
		for _, h := range e.heroes(ctx, m, q.Who.UserID, after) {
			if needed[h] {
				continue
			}
			kn, _ := e.keyNID(ctx, e.db.Read(), nil, storage.StateKey{Type: "m.room.member", StateKey: h})
			if nid, ok := after[kn]; ok && kn != 0 && (before == nil || before[kn] != nid) {
				if ev, err := e.eventByNID(ctx, e.db.Read(), nil, nid); err == nil {
					list = append(list, ev)
				}
			}
		}
	}
	sort.Slice(list, func(i, j int) bool { return deref(list[i].StreamPos) < deref(list[j].StreamPos) })
	return e.renderAll(ctx, list, nil, FormatOptions{User: q.Who.UserID, OmitRoomID: true, NoBundle: true})
}

// heroes picks up to five other members to name a room that has no name.
func (e *Engine) heroes(ctx context.Context, m *roomMeta, user string, state StateMap) []string {
	entries, err := e.store.CurrentState(ctx, e.db.Read(), m.NID, "m.room.member")
	if err != nil {
		return nil
	}
	var out []string
	for _, en := range entries {
		if en.StateKey == user || en.Membership == nil {
			continue
		}
		if *en.Membership == "join" || *en.Membership == "invite" {
			out = append(out, en.StateKey)
		}
	}
	slices.Sort(out)
	if len(out) > 5 {
		out = out[:5]
	}
	return out
}

// touchesSummary reports whether an incremental window changed what the
// room summary is made of (members, name, canonical alias); clients keep
// the summary they have otherwise, as the spec's "if changed" allows.
func touchesSummary(tl []*Event, state []*ClientEvent) bool {
	affects := func(typ string) bool {
		return typ == "m.room.member" || typ == "m.room.name" || typ == "m.room.canonical_alias"
	}
	for _, ev := range tl {
		if ev.StateKey != nil && affects(ev.Type) {
			return true
		}
	}
	for _, ev := range state {
		if affects(ev.Type) {
			return true
		}
	}
	return false
}

// summary returns the room summary for a member.
func (e *Engine) summary(ctx context.Context, m *roomMeta, user string) (*Summary, error) {
	joined, invited, err := e.store.MemberCounts(ctx, m.NID)
	if err != nil {
		return nil, err
	}
	s := &Summary{Joined: &joined, Invited: &invited}
	if e.needsHeroes(ctx, m) {
		s.Heroes = e.heroes(ctx, m, user, nil)
	}
	return s, nil
}

// needsHeroes reports whether a room has neither a name nor a canonical
// alias, so that clients name it after its heroes.
func (e *Engine) needsHeroes(ctx context.Context, m *roomMeta) bool {
	name, _ := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.name", "")
	alias, _ := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.canonical_alias", "")
	hasName := name != nil && gjson.GetBytes(name.Content(), "name").String() != ""
	hasAlias := alias != nil && gjson.GetBytes(alias.Content(), "alias").String() != ""
	return !hasName && !hasAlias
}

// syncStripped returns the stripped state of an invite or knock.
func (e *Engine) syncStripped(ctx context.Context, m *roomMeta, q SyncRoomQuery) (*SyncRoom, error) {
	ev, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.member", q.Who.UserID)
	if err != nil || ev == nil {
		return &SyncRoom{}, err
	}
	out := &SyncRoom{Stripped: e.strippedRoomState(ctx, ev), Inviter: ev.Sender}
	b, _ := json.Marshal(ev.Stripped())
	// The invite itself, with the event's unsigned and ID as clients expect.
	var withID map[string]any
	_ = json.Unmarshal(b, &withID)
	withID["event_id"] = ev.EventID
	withID["origin_server_ts"] = ev.OriginTS
	b, _ = json.Marshal(withID)
	out.Stripped = append(out.Stripped, b)
	return out, nil
}

// MembershipAt returns a user's membership in a room as of a stream
// position ("leave" if none).
func (e *Engine) MembershipAt(ctx context.Context, user, roomID string, stream int64) (string, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return "", err
	}
	snap, err := e.snapshotAtStream(ctx, m, stream)
	if err != nil || snap == 0 {
		return "leave", err
	}
	ev, err := e.stateEventAt(ctx, e.db.Read(), snap, storage.StateKey{Type: "m.room.member", StateKey: user})
	if err != nil || ev == nil {
		return "leave", err
	}
	return membershipOf(ev.PDU.Content), nil
}

// MemberChangesIn lists who joined and who left a room's membership
// between two stream positions (for device-list tracking).
func (e *Engine) MemberChangesIn(ctx context.Context, roomID string, from, to int64) (joined, left []string, err error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	rows, err := e.store.MemberChangesBetween(ctx, m.NID, from, to)
	if err != nil {
		return nil, nil, err
	}
	// Newest first: the first event seen for a user is their latest.
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.UserID] {
			continue
		}
		seen[r.UserID] = true
		switch r.Membership {
		case "join":
			joined = append(joined, r.UserID)
		case "leave", "ban":
			left = append(left, r.UserID)
		}
	}
	return joined, left, nil
}
