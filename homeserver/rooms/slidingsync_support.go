package rooms

import (
	"context"
	"encoding/json"
	"slices"
	"sort"

	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/storage"
)

// What simplified sliding sync (MSC4186) reads of rooms. The sliding sync
// engine decides which rooms a response carries and what the client
// already holds; this file computes a room's part from the room's events
// and state, through the same timeline, viewer and rendering as /sync.

// SlidingRoomInfo is a room in a user's sliding sync room list.
type SlidingRoomInfo struct {
	RoomID     string
	Membership string
	// MembershipStream is the stream position of the user's membership
	// event (0 when it is not in the timeline, e.g. an outlier invite).
	MembershipStream int64
	// Kicked: left or banned by someone else.
	Kicked bool
	// EverJoined: for leave and ban, the user was once joined.
	EverJoined bool
	// Activity orders the list: the newest event the user may know of —
	// the room's newest event while joined, their membership otherwise.
	Activity int64
}

// SlidingRooms lists every room where the user has a membership, but the
// rooms they left and forgot.
func (e *Engine) SlidingRooms(ctx context.Context, user string) ([]SlidingRoomInfo, error) {
	rs, err := e.store.SlidingRoomsOfUser(ctx, user)
	if err != nil {
		return nil, err
	}
	var departed []int64
	for _, r := range rs {
		if r.Membership == "leave" || r.Membership == "ban" {
			departed = append(departed, r.RoomNID)
		}
	}
	joined := map[int64]bool{}
	if len(departed) > 0 {
		if joined, err = e.store.EverJoined(ctx, user, departed); err != nil {
			return nil, err
		}
	}
	out := make([]SlidingRoomInfo, 0, len(rs))
	for _, r := range rs {
		info := SlidingRoomInfo{RoomID: r.RoomID, Membership: r.Membership, MembershipStream: r.MemberStream, Activity: r.MemberStream}
		switch r.Membership {
		case "join":
			info.Activity = max(r.LastStream, r.MemberStream)
		case "leave", "ban":
			info.Kicked = r.MemberSender != user
			info.EverJoined = joined[r.RoomNID]
		}
		out = append(out, info)
	}
	return out, nil
}

// RoomKind is what sliding sync filters read of a room's state.
type RoomKind struct {
	// Type is the create event's type (nil: none).
	Type      *string
	Encrypted bool
}

// SlidingRoomKinds returns the type and encryption of rooms (unknown rooms
// are absent).
func (e *Engine) SlidingRoomKinds(ctx context.Context, roomIDs []string) (map[string]RoomKind, error) {
	byNID := map[int64]string{}
	nids := make([]int64, 0, len(roomIDs))
	for _, r := range roomIDs {
		m, err := e.meta(ctx, r)
		if err != nil {
			continue
		}
		byNID[m.NID] = r
		nids = append(nids, m.NID)
	}
	creates, err := e.store.CurrentStateOfType(ctx, nids, "m.room.create", "")
	if err != nil {
		return nil, err
	}
	enc, err := e.store.CurrentStateOfType(ctx, nids, "m.room.encryption", "")
	if err != nil {
		return nil, err
	}
	evNIDs := make([]int64, 0, len(creates))
	for _, ev := range creates {
		evNIDs = append(evNIDs, ev)
	}
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, evNIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]RoomKind, len(nids))
	for _, nid := range nids {
		k := RoomKind{}
		_, k.Encrypted = enc[nid]
		if ev, ok := evs[creates[nid]]; ok {
			if t := gjson.GetBytes(ev.Content(), "type"); t.Type == gjson.String {
				s := t.String()
				k.Type = &s
			}
		}
		out[byNID[nid]] = k
	}
	return out, nil
}

// SpaceChildren lists the rooms a space names in its m.space.child state,
// if the user is joined to the space (nil otherwise, or for an unknown
// space); at most limit.
func (e *Engine) SpaceChildren(ctx context.Context, user, spaceID string, limit int) ([]string, error) {
	m, err := e.meta(ctx, spaceID)
	if err != nil {
		return nil, nil
	}
	if _, mem, err := e.membershipNow(ctx, m, user); err != nil || mem != "join" {
		return nil, err
	}
	entries, err := e.store.CurrentState(ctx, e.db.Read(), m.NID, "m.space.child")
	if err != nil {
		return nil, err
	}
	nids := make([]int64, 0, len(entries))
	for _, en := range entries {
		nids = append(nids, en.EventNID)
	}
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, nids)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, en := range entries {
		ev, ok := evs[en.EventNID]
		// A child without via servers has been removed.
		if !ok || !gjson.GetBytes(ev.Content(), "via").IsArray() || len(gjson.GetBytes(ev.Content(), "via").Array()) == 0 {
			continue
		}
		out = append(out, en.StateKey)
		if len(out) >= limit {
			break
		}
	}
	return out, nil
}

// BumpEventTypes are the events that count as activity for bump_stamp.
var BumpEventTypes = []string{
	"m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite",
	"m.poll.start", "org.matrix.msc3381.poll.start", "m.beacon_info", "org.matrix.msc3672.beacon_info",
}

// StateMatcher tells whether a state key is wanted.
type StateMatcher func(typ, stateKey string) bool

// SlidingRoomQuery asks for one room of a sliding sync response.
type SlidingRoomQuery struct {
	Who              Requester
	RoomID           string
	Membership       string
	MembershipStream int64
	// Stripped asks for the stripped state only (invites, knocks, and
	// rooms the user left or was banned from without ever joining).
	Stripped bool
	// Initial asks for the room as if the client held nothing of it;
	// otherwise the client's copy reaches events position From.
	Initial bool
	From    int64
	// Live: timeline events after this position count in num_live.
	Live int64
	// To is the response's events position.
	To    int64
	Limit int
	// Expand returns the latest Limit events even if the client holds
	// some (the timeline limit grew).
	Expand bool
	// Match selects required_state; PrevMatch, when set, is what the
	// client asked for before: state Match wants and PrevMatch did not is
	// sent in full.
	Match, PrevMatch StateMatcher
	// LazyMembers adds the member events of timeline senders and targets
	// and, when the timeline is not limited, every membership change;
	// LazySent are the members the client holds already.
	LazyMembers bool
	LazySent    map[string]bool
}

// Hero is a member who can name a room that has no name.
type Hero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// SlidingRoomData is one room's part of a sliding sync response.
type SlidingRoomData struct {
	// Upper is the events position the room's data reaches.
	Upper     int64
	BumpStamp int64
	Stripped  []json.RawMessage

	Timeline  []*ClientEvent
	Limited   bool
	PrevBatch string
	NumLive   int
	// Expanded: the timeline holds events from before From.
	Expanded bool
	State    []*ClientEvent
	// Removed is state the client holds that is gone.
	Removed []storage.StateKey
	// Members are the users whose member events State carries.
	Members []string

	// NameChanged / AvatarChanged: Name / Avatar are to be sent (nil:
	// removed or unset).
	NameChanged, AvatarChanged bool
	Name, Avatar               *string
	// HasName: heroes are not needed.
	HasName bool
	Heroes  []Hero
	Joined  *int
	Invited *int
}

// SlidingRoom computes one room of a sliding sync response.
func (e *Engine) SlidingRoom(ctx context.Context, q SlidingRoomQuery) (*SlidingRoomData, error) {
	m, err := e.meta(ctx, q.RoomID)
	if err != nil {
		return nil, err
	}
	out := &SlidingRoomData{Upper: q.To}
	if q.Membership != "join" {
		out.Upper = min(q.To, q.MembershipStream)
	}
	if out.BumpStamp, err = e.bumpStamp(ctx, m, q, out.Upper); err != nil {
		return nil, err
	}
	if q.Stripped {
		sr, err := e.syncStripped(ctx, m, SyncRoomQuery{Who: q.Who})
		if err != nil {
			return nil, err
		}
		out.Stripped = sr.Stripped
		return out, nil
	}
	v, err := e.newViewer(ctx, q.Who.UserID, m)
	if err != nil {
		return nil, err
	}
	lower := q.From
	if q.Initial || q.Expand {
		lower = 0
	}
	tl, mems, limited, err := e.syncTimeline(ctx, m, v, SyncRoomQuery{Who: q.Who, Limit: q.Limit}, lower, out.Upper)
	if err != nil {
		return nil, err
	}
	out.Limited = limited
	if out.Timeline, err = e.renderAll(ctx, tl, mems, FormatOptions{User: q.Who.UserID, DeviceID: q.Who.DeviceID, OmitRoomID: true}); err != nil {
		return nil, err
	}
	for _, ev := range tl {
		if deref(ev.StreamPos) > q.Live {
			out.NumLive++
		}
		if !q.Initial && deref(ev.StreamPos) <= q.From {
			out.Expanded = true
		}
	}
	if len(tl) > 0 {
		out.PrevBatch = Position{Depth: tl[0].Depth, Stream: deref(tl[0].StreamPos)}.String()
	} else {
		p, err := e.topoOfStream(ctx, m, out.Upper, true)
		if err != nil {
			return nil, err
		}
		out.PrevBatch = p.String()
	}
	after, err := e.snapshotAtStream(ctx, m, out.Upper)
	if err != nil {
		return nil, err
	}
	var before int64
	if !q.Initial {
		if before, err = e.snapshotAtStream(ctx, m, q.From); err != nil {
			return nil, err
		}
	}
	if err := e.slidingState(ctx, q, out, tl, before, after); err != nil {
		return nil, err
	}
	if err := e.slidingSummary(ctx, m, q, out, before, after); err != nil {
		return nil, err
	}
	return out, nil
}

// bumpStamp is the position of the room's newest activity event the user
// may know of: their membership when not joined.
func (e *Engine) bumpStamp(ctx context.Context, m *roomMeta, q SlidingRoomQuery, upper int64) (int64, error) {
	if q.Membership != "join" {
		return q.MembershipStream, nil
	}
	p, err := e.store.NewestOfTypes(ctx, m.NID, upper, BumpEventTypes)
	if err != nil || p > 0 {
		return p, err
	}
	return q.MembershipStream, nil
}

// slidingState fills the required state: the state at after that the
// client asked for, as a delta from before unless the room is new to it.
func (e *Engine) slidingState(ctx context.Context, q SlidingRoomQuery, out *SlidingRoomData, tl []*Event, before, after int64) error {
	if !q.Initial && before == after && q.PrevMatch == nil && (!q.LazyMembers || len(tl) == 0) {
		return nil
	}
	now, err := e.snaps.full(ctx, e.db.Read(), nil, after)
	if err != nil {
		return err
	}
	var then StateMap
	if !q.Initial {
		if then, err = e.snaps.full(ctx, e.db.Read(), nil, before); err != nil {
			return err
		}
	}
	keyNIDs := make([]int64, 0, len(now)+len(then))
	for k := range now {
		keyNIDs = append(keyNIDs, k)
	}
	for k := range then {
		if _, ok := now[k]; !ok {
			keyNIDs = append(keyNIDs, k)
		}
	}
	keys, err := e.keysByNID(ctx, e.db.Read(), keyNIDs)
	if err != nil {
		return err
	}
	// Lazy members: senders and targets of the timeline, unless the client
	// holds them; a limited or new timeline makes the client start afresh.
	needed := map[string]bool{}
	held := q.LazySent
	if q.Initial || out.Limited {
		held = nil
	}
	if q.LazyMembers {
		for _, ev := range tl {
			needed[ev.Sender] = true
			if ev.Type == "m.room.member" && ev.StateKey != nil {
				needed[*ev.StateKey] = true
			}
		}
	}
	var wanted []int64
	for k, ev := range now {
		key := keys[k]
		changed := then == nil || then[k] != ev
		match := q.Match != nil && q.Match(key.Type, key.StateKey)
		want := match && changed
		if !want && match && q.PrevMatch != nil && !q.PrevMatch(key.Type, key.StateKey) {
			want = true
		}
		if !want && q.LazyMembers && key.Type == "m.room.member" {
			want = (needed[key.StateKey] && !held[key.StateKey]) || (!q.Initial && !out.Limited && changed)
		}
		if want {
			wanted = append(wanted, ev)
		}
	}
	for k := range then {
		if _, ok := now[k]; ok {
			continue
		}
		if key := keys[k]; q.Match != nil && q.Match(key.Type, key.StateKey) {
			out.Removed = append(out.Removed, key)
		}
	}
	sort.Slice(out.Removed, func(i, j int) bool {
		a, b := out.Removed[i], out.Removed[j]
		return a.Type < b.Type || (a.Type == b.Type && a.StateKey < b.StateKey)
	})
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, wanted)
	if err != nil {
		return err
	}
	list := make([]*Event, 0, len(evs))
	for _, ev := range evs {
		list = append(list, ev)
		if ev.Type == "m.room.member" && ev.StateKey != nil {
			out.Members = append(out.Members, *ev.StateKey)
		}
	}
	slices.Sort(out.Members)
	sort.Slice(list, func(i, j int) bool { return deref(list[i].StreamPos) < deref(list[j].StreamPos) })
	out.State, err = e.renderAll(ctx, list, nil, FormatOptions{User: q.Who.UserID, OmitRoomID: true, NoBundle: true})
	return err
}

// slidingSummary fills name, avatar, heroes and member counts.
func (e *Engine) slidingSummary(ctx context.Context, m *roomMeta, q SlidingRoomQuery, out *SlidingRoomData, before, after int64) error {
	field := func(typ, path string) (*string, bool, error) {
		now, err := e.stateEventAt(ctx, e.db.Read(), after, storage.StateKey{Type: typ})
		if err != nil {
			return nil, false, err
		}
		var val *string
		if now != nil {
			if s := gjson.GetBytes(now.Content(), path).String(); s != "" {
				val = &s
			}
		}
		if q.Initial {
			return val, val != nil, nil
		}
		then, err := e.stateEventAt(ctx, e.db.Read(), before, storage.StateKey{Type: typ})
		if err != nil {
			return nil, false, err
		}
		return val, nid(now) != nid(then), nil
	}
	var err error
	if out.Name, out.NameChanged, err = field("m.room.name", "name"); err != nil {
		return err
	}
	if out.Avatar, out.AvatarChanged, err = field("m.room.avatar", "url"); err != nil {
		return err
	}
	out.HasName = out.Name != nil
	if q.Membership == "join" {
		joined, invited, err := e.store.MemberCounts(ctx, m.NID)
		if err != nil {
			return err
		}
		out.Joined, out.Invited = &joined, &invited
	}
	if !out.HasName {
		if out.Heroes, err = e.slidingHeroes(ctx, m, q, after); err != nil {
			return err
		}
	}
	return nil
}

func nid(ev *Event) int64 {
	if ev == nil {
		return 0
	}
	return ev.NID
}

// maxHeroes is how many members name a room without a name.
const maxHeroes = 5

// slidingHeroes picks up to five other members, the joined first, then
// the invited, oldest first; if there are none, those who left or were
// banned: from the current state while joined, from the state at the
// user's departure otherwise.
func (e *Engine) slidingHeroes(ctx context.Context, m *roomMeta, q SlidingRoomQuery, snap int64) ([]Hero, error) {
	var nids []int64
	if q.Membership == "join" {
		for _, mems := range [][]string{{"join", "invite"}, {"leave", "ban"}} {
			entries, err := e.store.MembersByOrder(ctx, m.NID, q.Who.UserID, mems, maxHeroes)
			if err != nil {
				return nil, err
			}
			for _, en := range entries {
				nids = append(nids, en.EventNID)
			}
			if len(nids) > 0 {
				break
			}
		}
	} else {
		var err error
		if nids, err = e.heroesAt(ctx, q.Who.UserID, snap); err != nil {
			return nil, err
		}
	}
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, nids)
	if err != nil {
		return nil, err
	}
	out := make([]Hero, 0, len(nids))
	for _, n := range nids {
		ev, ok := evs[n]
		if !ok || ev.StateKey == nil {
			continue
		}
		h := Hero{UserID: *ev.StateKey}
		h.DisplayName = gjson.GetBytes(ev.Content(), "displayname").String()
		h.AvatarURL = gjson.GetBytes(ev.Content(), "avatar_url").String()
		out = append(out, h)
	}
	return out, nil
}

// heroesAt picks heroes from a snapshot, reading member events oldest
// first until enough joined or invited members are found.
func (e *Engine) heroesAt(ctx context.Context, user string, snap int64) ([]int64, error) {
	st, err := e.snaps.full(ctx, e.db.Read(), nil, snap)
	if err != nil {
		return nil, err
	}
	keyNIDs := make([]int64, 0, len(st))
	for k := range st {
		keyNIDs = append(keyNIDs, k)
	}
	keys, err := e.keysByNID(ctx, e.db.Read(), keyNIDs)
	if err != nil {
		return nil, err
	}
	var members []int64
	for k, ev := range st {
		if key := keys[k]; key.Type == "m.room.member" && key.StateKey != user {
			members = append(members, ev)
		}
	}
	slices.Sort(members)
	var joined, invited, gone []int64
	for start := 0; start < len(members) && len(joined) < maxHeroes; start += 64 {
		chunk := members[start:min(start+64, len(members))]
		evs, err := e.eventsByNID(ctx, e.db.Read(), nil, chunk)
		if err != nil {
			return nil, err
		}
		for _, n := range chunk {
			ev, ok := evs[n]
			if !ok {
				continue
			}
			var to *[]int64
			switch membershipOf(ev.PDU.Content) {
			case "join":
				to = &joined
			case "invite":
				to = &invited
			case "leave", "ban":
				to = &gone
			default:
				continue
			}
			if len(*to) < maxHeroes {
				*to = append(*to, n)
			}
		}
	}
	if present := append(joined, invited...); len(present) > 0 {
		return present[:min(len(present), maxHeroes)], nil
	}
	return gone, nil
}
