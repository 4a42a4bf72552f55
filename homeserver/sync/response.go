package sync

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/parley-chat/parley/e2ee"
	"github.com/parley-chat/parley/homeserver/filter"
	"github.com/parley-chat/parley/homeserver/rooms"
)

// Response is a sync response.
type Response struct {
	NextBatch   string         `json:"next_batch"`
	Rooms       *Rooms         `json:"rooms,omitempty"`
	AccountData *Events        `json:"account_data,omitempty"`
	Presence    *Events        `json:"presence,omitempty"`
	ToDevice    *Events        `json:"to_device,omitempty"`
	DeviceLists *DeviceLists   `json:"device_lists,omitempty"`
	OTKCounts   map[string]int `json:"device_one_time_keys_count,omitempty"`
	Fallback    *[]string      `json:"device_unused_fallback_key_types,omitempty"`
	FallbackOld *[]string      `json:"org.matrix.msc2732.device_unused_fallback_key_types,omitempty"`
	// Next is NextBatch decoded, for the WebSocket gateway.
	Next Token `json:"-"`
}

// Rooms are the room sections of a response.
type Rooms struct {
	Join   map[string]*JoinedRoom  `json:"join,omitempty"`
	Invite map[string]*InvitedRoom `json:"invite,omitempty"`
	Leave  map[string]*LeftRoom    `json:"leave,omitempty"`
	Knock  map[string]*KnockedRoom `json:"knock,omitempty"`
}

// Events is a list of events.
type Events struct {
	Events []json.RawMessage `json:"events"`
}

// ClientEvents is a list of room events.
type ClientEvents struct {
	Events []*rooms.ClientEvent `json:"events"`
}

// Timeline is a room's timeline section.
type Timeline struct {
	Events    []*rooms.ClientEvent `json:"events"`
	Limited   bool                 `json:"limited"`
	PrevBatch string               `json:"prev_batch,omitempty"`
}

// UnreadCounts are a room's or thread's counts.
type UnreadCounts struct {
	Notification int `json:"notification_count"`
	Highlight    int `json:"highlight_count"`
}

// JoinedRoom is a joined room's section.
type JoinedRoom struct {
	AccountData   *Events                 `json:"account_data,omitempty"`
	Ephemeral     *Events                 `json:"ephemeral,omitempty"`
	State         *ClientEvents           `json:"state,omitempty"`
	StateAfter    *ClientEvents           `json:"state_after,omitempty"`
	StateAfterMSC *ClientEvents           `json:"org.matrix.msc4222.state_after,omitempty"`
	Summary       *rooms.Summary          `json:"summary,omitempty"`
	Timeline      *Timeline               `json:"timeline,omitempty"`
	Unread        *UnreadCounts           `json:"unread_notifications,omitempty"`
	UnreadThreads map[string]UnreadCounts `json:"unread_thread_notifications,omitempty"`
}

// InvitedRoom is an invite.
type InvitedRoom struct {
	InviteState Events `json:"invite_state"`
}

// KnockedRoom is a knock.
type KnockedRoom struct {
	KnockState Events `json:"knock_state"`
}

// LeftRoom is a room left (or banned from).
type LeftRoom struct {
	AccountData   *Events       `json:"account_data,omitempty"`
	State         *ClientEvents `json:"state,omitempty"`
	StateAfter    *ClientEvents `json:"state_after,omitempty"`
	StateAfterMSC *ClientEvents `json:"org.matrix.msc4222.state_after,omitempty"`
	Timeline      *Timeline     `json:"timeline,omitempty"`
}

// DeviceLists are device list changes.
type DeviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// empty reports whether a response carries nothing a client waits for.
func (r *Response) empty() bool {
	if r.Rooms != nil && (len(r.Rooms.Join) > 0 || len(r.Rooms.Invite) > 0 || len(r.Rooms.Leave) > 0 || len(r.Rooms.Knock) > 0) {
		return false
	}
	return r.AccountData == nil && r.Presence == nil && r.ToDevice == nil && r.DeviceLists == nil
}

// builder assembles one response.
type builder struct {
	e      *Engine
	ctx    context.Context
	req    Request
	since  Token
	now    Token
	f      *filter.Filter
	resp   *Response
	delta  e2ee.MembershipDelta
	roomAD map[string][]json.RawMessage
	// read are the positions as read for this build (now may be raised
	// to the since token).
	read Token
	// joinedRooms caches joinedNow.
	joinedRooms []string
	joinedRead  bool
	// noMemberChange: the window holds no membership change of the user;
	// receiptRooms have receipts in it. Together with the timelines they
	// tell in which rooms the inputs of unread counts stayed (quietRooms).
	noMemberChange bool
	receiptRooms   map[string]bool
	// ownNews, when known (the joined rooms were cached), holds the rooms
	// where the user has an event in the window.
	ownNews map[string]bool
}

// build computes the response for (since, now].
func (e *Engine) build(ctx context.Context, req Request, now Token) (*Response, error) {
	b := &builder{e: e, ctx: ctx, req: req, now: now, read: now, f: req.Filter, resp: &Response{Rooms: &Rooms{}}, roomAD: map[string][]json.RawMessage{}}
	if req.Since != nil {
		b.since = *req.Since
		// A token from the future (another instance, a restored backup)
		// must not make us skip: read from the smaller of the two.
		b.now = now.max(b.since)
	}
	steps := []func() error{b.accountData, b.rooms, b.presence, b.toDevice, b.deviceLists, b.keyCounts}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	if b.resp.Rooms.empty() {
		b.resp.Rooms = nil
	}
	b.resp.Next = b.now
	b.resp.NextBatch = b.now.String()
	return b.resp, nil
}

func (r *Rooms) empty() bool {
	return len(r.Join) == 0 && len(r.Invite) == 0 && len(r.Leave) == 0 && len(r.Knock) == 0
}

func (b *builder) initial() bool { return b.req.Since == nil }

// accountData collects global and per-room account data.
func (b *builder) accountData() error {
	from := b.since.AccountData
	if b.initial() {
		from = 0
	} else if from >= b.now.AccountData {
		return nil
	}
	entries, err := b.e.d.DB.Accounts().AccountDataSince(b.ctx, b.req.UserID, from, b.now.AccountData)
	if err != nil {
		return err
	}
	var global []json.RawMessage
	for _, d := range entries {
		ev, _ := json.Marshal(map[string]any{"type": d.Type, "content": json.RawMessage(d.Content)})
		if d.RoomID == "" {
			if b.f.AccountData.Allows(d.Type, "") {
				global = append(global, ev)
			}
			continue
		}
		var rf *filter.RoomEventFilter
		if b.f.Room != nil {
			rf = b.f.Room.AccountData
		}
		if rf.AllowsEvent(d.Type, "", nil) && rf.AllowsRoom(d.RoomID) {
			b.roomAD[d.RoomID] = append(b.roomAD[d.RoomID], ev)
		}
	}
	if b.initial() && b.e.d.PushRules != nil && b.f.AccountData.Allows("m.push_rules", "") {
		// Users who never changed their push rules have no stored copy,
		// yet clients expect the defaults in an initial sync.
		have := false
		for _, d := range entries {
			have = have || (d.RoomID == "" && d.Type == "m.push_rules")
		}
		if !have {
			c, err := b.e.d.PushRules.AccountDataContent(b.ctx, b.req.UserID)
			if err != nil {
				return err
			}
			ev, _ := json.Marshal(map[string]any{"type": "m.push_rules", "content": c})
			global = append(global, ev)
		}
	}
	if len(global) > 0 {
		b.resp.AccountData = &Events{Events: global}
	}
	return nil
}

// roomFilter returns the room filter (never nil).
func (b *builder) roomFilter() *filter.RoomFilter {
	if b.f == nil || b.f.Room == nil {
		return &filter.RoomFilter{}
	}
	return b.f.Room
}

func (b *builder) timelineLimit() int {
	rf := b.roomFilter()
	if rf.Timeline == nil {
		return DefaultTimelineLimit
	}
	return rf.Timeline.LimitOr(DefaultTimelineLimit, MaxTimelineLimit)
}

// rooms fills the rooms sections.
func (b *builder) rooms() error {
	rf := b.roomFilter()
	targets, err := b.roomTargets()
	if err != nil {
		return err
	}
	for _, t := range targets {
		if !rf.AllowsRoom(t.m.RoomID) {
			continue
		}
		if err := b.room(t); err != nil {
			return err
		}
	}
	// Joined rooms with only ephemeral news or account data.
	current, err := b.joinedNow()
	if err != nil {
		return err
	}
	var allJoined []string
	for _, r := range current {
		if rf.AllowsRoom(r) {
			allJoined = append(allJoined, r)
		}
	}
	if err := b.ephemeral(allJoined); err != nil {
		return err
	}
	for room, evs := range b.roomAD {
		if jr := b.joined(room, allJoined); jr != nil {
			jr.AccountData = &Events{Events: evs}
		}
	}
	return b.counts(allJoined)
}

// joined returns the response entry of a joined room, creating it if the
// room is joined and has something to show.
func (b *builder) joined(room string, allJoined []string) *JoinedRoom {
	if jr, ok := b.resp.Rooms.Join[room]; ok {
		return jr
	}
	if !slices.Contains(allJoined, room) {
		return nil
	}
	if b.resp.Rooms.Join == nil {
		b.resp.Rooms.Join = map[string]*JoinedRoom{}
	}
	jr := &JoinedRoom{}
	b.resp.Rooms.Join[room] = jr
	return jr
}

// joinedNow lists the rooms the user is joined to now, read once per build.
func (b *builder) joinedNow() ([]string, error) {
	if b.joinedRead {
		return b.joinedRooms, nil
	}
	rs, err := b.e.d.Rooms.MembershipsNow(b.ctx, b.req.UserID)
	if err != nil {
		return nil, err
	}
	for _, r := range rs {
		if r.Membership == "join" {
			b.joinedRooms = append(b.joinedRooms, r.RoomID)
		}
	}
	b.joinedRead = true
	// Read after the positions: a change after them is in the next
	// window's membership changes, which then does not reuse this.
	b.e.joined.Put(b.req.UserID, joinedAt{pos: b.now.Events, rooms: b.joinedRooms})
	return b.joinedRooms, nil
}

// target is a room that goes into the response and how.
type target struct {
	m       rooms.RoomMembership
	initial bool
}

// roomTargetsFor is roomTargets for an incremental window, also filling
// the membership delta.
func (b *builder) roomTargetsFor() ([]target, error) { return b.roomTargets() }

// roomTargets decides which rooms the response shows.
func (b *builder) roomTargets() ([]target, error) {
	rf := b.roomFilter()
	if b.initial() {
		ms, err := b.e.d.Rooms.MembershipsNow(b.ctx, b.req.UserID)
		if err != nil {
			return nil, err
		}
		var out []target
		for _, m := range ms {
			switch m.Membership {
			case "leave", "ban":
				if !rf.IncludeLeave {
					continue
				}
				if forgot, _ := b.e.d.Rooms.Forgotten(b.ctx, b.req.UserID, m.RoomID); forgot {
					continue
				}
			}
			out = append(out, target{m: m, initial: true})
		}
		return out, nil
	}
	var changes []rooms.RoomMembership
	var news map[string]rooms.RoomNews // read with the changes, for the joined rooms as cached
	c, cached := b.e.joined.Get(b.req.UserID)
	cached = cached && c.pos == b.since.Events
	var err error
	if cached {
		// Joined rooms known as of since: their news and the user's
		// membership changes in one read.
		changes, news, err = b.e.d.Rooms.WindowNews(b.ctx, b.req.UserID, b.since.Events, b.now.Events, c.rooms)
	} else {
		changes, err = b.e.d.Rooms.MembershipChanges(b.ctx, b.req.UserID, b.since.Events, b.now.Events)
	}
	if err != nil {
		return nil, err
	}
	b.noMemberChange = len(changes) == 0
	if cached {
		b.ownNews = map[string]bool{}
		for r, n := range news {
			if n.LastOwn > b.since.Events {
				b.ownNews[r] = true
			}
		}
	}
	if cached && len(changes) == 0 {
		// No membership change since the build that read them.
		b.joinedRooms, b.joinedRead = c.rooms, true
		b.e.joined.Put(b.req.UserID, joinedAt{pos: b.now.Events, rooms: c.rooms})
	} else {
		news = nil
	}
	var out []target
	changed := map[string]bool{}
	for _, c := range changes {
		changed[c.RoomID] = true
		t := target{m: c}
		if c.Membership == "join" {
			before, err := b.e.d.Rooms.MembershipAt(b.ctx, b.req.UserID, c.RoomID, b.since.Events)
			if err != nil {
				return nil, err
			}
			t.initial = before != "join"
			if t.initial {
				b.newlyShared(c.RoomID)
			}
		}
		if c.Membership == "leave" || c.Membership == "ban" {
			b.noLongerShared(c.RoomID)
		}
		out = append(out, t)
	}
	joined, err := b.joinedNow()
	if err != nil {
		return nil, err
	}
	var rest []string
	for _, r := range joined {
		if !changed[r] {
			rest = append(rest, r)
		}
	}
	if news == nil {
		if news, err = b.e.d.Rooms.RoomsWithEvents(b.ctx, rest, b.since.Events); err != nil {
			return nil, err
		}
	}
	for _, r := range rest {
		if n, ok := news[r]; ok {
			out = append(out, target{m: rooms.RoomMembership{RoomID: r, Membership: "join"}})
			if n.LastMember <= b.since.Events {
				continue // no one joined or left in the window
			}
			if err := b.memberChanges(r); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// room computes one room's section.
func (b *builder) room(t target) error {
	rf := b.roomFilter()
	q := rooms.SyncRoomQuery{
		Who:        rooms.Requester{UserID: b.req.UserID, DeviceID: b.req.DeviceID},
		RoomID:     t.m.RoomID,
		Membership: t.m,
		Since:      b.since.Events,
		To:         b.now.Events,
		Committed:  b.read.Events,
		Initial:    t.initial,
		Limit:      b.timelineLimit(),
		Timeline:   rf.Timeline,
		State:      rf.State,
		FullState:  b.req.FullState,
		StateAfter: b.req.UseStateAfter,
	}
	sr, err := b.e.d.Rooms.SyncRoom(b.ctx, q)
	if err != nil {
		return err
	}
	rs := b.resp.Rooms
	switch t.m.Membership {
	case "invite":
		// Invites from ignored users are not shown (spec: ignoring users).
		if ignored, err := b.e.d.Rooms.IgnoredUsers(b.ctx, b.req.UserID); err != nil {
			return err
		} else if ignored[sr.Inviter] {
			return nil
		}
		if rs.Invite == nil {
			rs.Invite = map[string]*InvitedRoom{}
		}
		rs.Invite[t.m.RoomID] = &InvitedRoom{InviteState: Events{Events: sr.Stripped}}
	case "knock":
		if rs.Knock == nil {
			rs.Knock = map[string]*KnockedRoom{}
		}
		rs.Knock[t.m.RoomID] = &KnockedRoom{KnockState: Events{Events: sr.Stripped}}
	case "join":
		if rs.Join == nil {
			rs.Join = map[string]*JoinedRoom{}
		}
		jr := &JoinedRoom{Summary: sr.Summary, Timeline: timeline(sr)}
		b.setState(&jr.State, &jr.StateAfter, &jr.StateAfterMSC, sr.State)
		rs.Join[t.m.RoomID] = jr
	default:
		if rs.Leave == nil {
			rs.Leave = map[string]*LeftRoom{}
		}
		lr := &LeftRoom{Timeline: timeline(sr)}
		b.setState(&lr.State, &lr.StateAfter, &lr.StateAfterMSC, sr.State)
		rs.Leave[t.m.RoomID] = lr
	}
	return nil
}

func (b *builder) setState(state, after, afterMSC **ClientEvents, evs []*rooms.ClientEvent) {
	if evs == nil {
		evs = []*rooms.ClientEvent{}
	}
	ce := &ClientEvents{Events: evs}
	if b.req.UseStateAfter {
		*after, *afterMSC = ce, ce
		return
	}
	*state = ce
}

func timeline(sr *rooms.SyncRoom) *Timeline {
	evs := sr.Timeline
	if evs == nil {
		evs = []*rooms.ClientEvent{}
	}
	return &Timeline{Events: evs, Limited: sr.Limited, PrevBatch: sr.PrevBatch}
}

// newlyShared records that the user now shares a room with its members.
func (b *builder) newlyShared(room string) {
	members, err := b.e.d.Rooms.JoinedMemberIDs(b.ctx, room)
	if err == nil {
		b.delta.Joined = append(b.delta.Joined, members...)
	}
}

// noLongerShared records that the user left a room's members.
func (b *builder) noLongerShared(room string) {
	members, err := b.e.d.Rooms.JoinedMemberIDs(b.ctx, room)
	if err == nil {
		b.delta.Left = append(b.delta.Left, members...)
	}
}

// memberChanges records who joined or left a room the user stayed in.
func (b *builder) memberChanges(room string) error {
	j, l, err := b.e.d.Rooms.MemberChangesIn(b.ctx, room, b.since.Events, b.now.Events)
	if err != nil {
		return err
	}
	b.delta.Joined = append(b.delta.Joined, j...)
	b.delta.Left = append(b.delta.Left, l...)
	return nil
}

// ephemeral adds typing and receipts to joined rooms.
func (b *builder) ephemeral(joined []string) error {
	var ef *filter.RoomEventFilter
	if b.f.Room != nil {
		ef = b.f.Room.Ephemeral
	}
	add := func(room string, ev json.RawMessage, typ string) {
		if !ef.AllowsEvent(typ, "", nil) || !ef.AllowsRoom(room) {
			return
		}
		if jr := b.joined(room, joined); jr != nil {
			if jr.Ephemeral == nil {
				jr.Ephemeral = &Events{}
			}
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
		}
	}
	if t := b.e.d.Typing; t != nil && len(joined) > 0 {
		var typing map[string][]string
		if b.initial() {
			typing = t.Current(joined)
		} else {
			typing = t.Since(joined, b.since.Typing)
		}
		for room, users := range typing {
			if users == nil {
				users = []string{}
			}
			ev, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
			add(room, ev, "m.typing")
		}
	}
	if r := b.e.d.Receipts; r != nil && len(joined) > 0 {
		var recs map[string]json.RawMessage
		var err error
		if b.initial() {
			recs, err = r.Current(b.ctx, b.req.UserID, joined)
		} else if b.since.Receipts < b.now.Receipts {
			recs, err = r.Since(b.ctx, b.req.UserID, joined, b.since.Receipts, b.now.Receipts)
		}
		if err != nil {
			return err
		}
		b.receiptRooms = make(map[string]bool, len(recs))
		for room, content := range recs {
			b.receiptRooms[room] = true
			ev, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
			add(room, ev, "m.receipt")
		}
	}
	return nil
}

// counts adds unread counts to the joined rooms in the response.
func (b *builder) counts(joined []string) error {
	if b.e.d.Counts == nil || len(b.resp.Rooms.Join) == 0 {
		return nil
	}
	var ids []string
	for r := range b.resp.Rooms.Join {
		ids = append(ids, r)
	}
	threads := b.f.Room != nil && b.f.Room.Timeline != nil && b.f.Room.Timeline.UnreadThreadNotifications
	// Up to the positions as read, not as raised to a since token from
	// the future: counts are cached as complete up to it.
	counts, err := b.e.d.Counts.Counts(b.ctx, b.req.UserID, ids, threads, b.read.Events, b.quietRooms(ids))
	if err != nil {
		return err
	}
	for _, r := range ids {
		c := counts[r]
		jr := b.resp.Rooms.Join[r]
		jr.Unread = &UnreadCounts{Notification: c.Notification, Highlight: c.Highlight}
		if threads && len(c.Threads) > 0 {
			jr.UnreadThreads = map[string]UnreadCounts{}
			for t, tc := range c.Threads {
				jr.UnreadThreads[t] = UnreadCounts(tc)
			}
		}
	}
	return nil
}

// quietRooms tells in which of the joined rooms nothing that unread counts
// start from changed in the window: no membership change of the user (in
// any room), no receipt in the room, and no event of the user's, as the
// rooms' news tell or else as a complete, unfiltered timeline shows. The
// counts of the build that ended at since then start from the same inputs.
func (b *builder) quietRooms(ids []string) Quiet {
	if b.initial() || !b.noMemberChange || b.e.d.Receipts == nil || b.ownNews == nil && b.timelineFiltered() {
		// Without the receipts the window's are not known either.
		return Quiet{}
	}
	q := Quiet{Since: b.since.Events, Rooms: make(map[string]bool, len(ids))}
	for _, r := range ids {
		if b.receiptRooms[r] {
			continue
		}
		if b.ownNews != nil {
			q.Rooms[r] = !b.ownNews[r]
			continue
		}
		quiet := true
		if tl := b.resp.Rooms.Join[r].Timeline; tl != nil {
			quiet = !tl.Limited
			for _, ev := range tl.Events {
				if !quiet {
					break
				}
				quiet = ev.Sender != b.req.UserID
			}
		}
		q.Rooms[r] = quiet
	}
	return q
}

// timelineFiltered reports whether the timeline filter may hide events
// of the window (types, senders, rooms, URLs, a zero limit).
func (b *builder) timelineFiltered() bool {
	t := b.roomFilter().Timeline
	if t == nil {
		return false
	}
	return len(t.Types) > 0 || len(t.NotTypes) > 0 || len(t.Senders) > 0 || len(t.NotSenders) > 0 ||
		len(t.Rooms) > 0 || len(t.NotRooms) > 0 || t.ContainsURL != nil || b.timelineLimit() == 0
}

// presence adds presence of users sharing rooms with the user.
func (b *builder) presence() error {
	p := b.e.d.Presence
	if p == nil || !p.Enabled() {
		return nil
	}
	since := b.since.Presence
	if b.initial() {
		since = 0
	}
	if !b.initial() && since >= b.now.Presence {
		return nil
	}
	evs, err := p.Since(b.ctx, b.req.UserID, since)
	if err != nil {
		return err
	}
	var kept []json.RawMessage
	for _, ev := range evs {
		var h struct {
			Type   string `json:"type"`
			Sender string `json:"sender"`
		}
		_ = json.Unmarshal(ev, &h)
		if b.f.Presence.Allows(h.Type, h.Sender) {
			kept = append(kept, ev)
		}
	}
	if len(kept) > 0 {
		b.resp.Presence = &Events{Events: kept}
	}
	return nil
}

// toDevice adds the device's pending to-device messages.
func (b *builder) toDevice() error {
	k := b.e.d.Keys
	if k == nil || b.req.DeviceID == "" {
		return nil
	}
	if !b.initial() && b.since.ToDevice >= b.now.ToDevice {
		b.now.ToDevice = b.since.ToDevice
		return nil
	}
	msgs, next, err := k.ToDeviceSince(b.ctx, b.req.UserID, b.req.DeviceID, b.since.ToDevice, toDeviceLimit)
	if err != nil {
		return err
	}
	b.now.ToDevice = max(next, b.since.ToDevice)
	if len(msgs) > 0 {
		evs := make([]json.RawMessage, len(msgs))
		for i, m := range msgs {
			evs[i], _ = json.Marshal(m)
		}
		b.resp.ToDevice = &Events{Events: evs}
	}
	return nil
}

// deviceLists adds device list changes (incremental syncs only).
func (b *builder) deviceLists() error {
	k := b.e.d.Keys
	if k == nil || b.initial() {
		return nil
	}
	if b.since.DeviceLists >= b.now.DeviceLists && len(b.delta.Joined) == 0 && len(b.delta.Left) == 0 {
		return nil
	}
	changed, left, err := k.DeviceListChanges(b.ctx, b.req.UserID, b.since.DeviceLists, b.now.DeviceLists, b.delta)
	if err != nil {
		return err
	}
	if len(changed) > 0 || len(left) > 0 {
		b.resp.DeviceLists = &DeviceLists{Changed: changed, Left: left}
	}
	return nil
}

// keyCounts adds one-time key counts and unused fallback key types.
func (b *builder) keyCounts() error {
	k := b.e.d.Keys
	if k == nil || b.req.DeviceID == "" {
		return nil
	}
	counts, fb, err := k.KeyCounts(b.ctx, b.req.UserID, b.req.DeviceID)
	if err != nil {
		return err
	}
	if counts == nil {
		counts = map[string]int{}
	}
	b.resp.OTKCounts = counts
	if fb == nil {
		fb = []string{}
	}
	b.resp.Fallback, b.resp.FallbackOld = &fb, &fb
	return nil
}
