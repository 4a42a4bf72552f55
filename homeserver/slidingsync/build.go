package slidingsync

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/storage"
)

// positions are the streams' positions a response is built up to.
type positions struct {
	events, accountData, receipts, typing, deviceLists int64
}

// builder assembles one response.
type builder struct {
	e    *Engine
	ctx  context.Context
	req  *Request
	conn *connection
	to   positions
	resp *Response

	// rooms are the user's rooms, most recently active first.
	rooms []*rooms.SlidingRoomInfo
	byID  map[string]*rooms.SlidingRoomInfo
	dm    map[string]bool
	// memo holds what is read of the connection's state at the pos.
	memo *memo

	// scope are the rooms in a list's range or subscribed, in order.
	scope      []string
	inScope    map[string]bool
	subscribed map[string]bool
	listsOf    map[string][]string
	listRooms  map[string][]string
	// configs are the combined room configs, by the rules that make them.
	configs map[string]*combined

	// touched are the rooms whose stored state this response changes;
	// newSpecs the configs it names (digest → config).
	touched     map[string]*roomState
	newSpecs    map[string]string
	nextStreams streams
}

// memo is what a request reads of its connection's state at its pos,
// kept while it waits: that state does not change.
type memo struct {
	// states are what the client holds of the rooms looked up (nil: the
	// room was never sent).
	states map[string]*roomState
	// specs are configs rooms were sent with, by digest ("": unknown).
	specs map[string]string
}

func newMemo() *memo {
	return &memo{states: map[string]*roomState{}, specs: map[string]string{}}
}

func (e *Engine) build(ctx context.Context, req *Request, conn *connection, m *memo) (*builder, error) {
	b := &builder{
		e: e, ctx: ctx, req: req, conn: conn, memo: m,
		resp:       &Response{TxnID: req.TxnID, Lists: map[string]ListResult{}},
		byID:       map[string]*rooms.SlidingRoomInfo{},
		inScope:    map[string]bool{},
		subscribed: map[string]bool{},
		listsOf:    map[string][]string{},
		listRooms:  map[string][]string{},
		configs:    map[string]*combined{},
		touched:    map[string]*roomState{},
		newSpecs:   map[string]string{},
	}
	if len(req.Lists) > 0 || len(req.Subscriptions) > 0 {
		if err := b.loadRooms(); err != nil {
			return nil, err
		}
	}
	// Positions are read after the room list, so that every membership
	// and activity the list saw is at or below them.
	steps := []func() error{b.positions, b.lists, b.subscriptions, b.roomResults, b.extensions}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// empty reports whether the response carries nothing the client waits for.
func (b *builder) empty() bool {
	return len(b.resp.Rooms) == 0 && b.resp.Extensions.empty()
}

func (b *builder) loadRooms() error {
	list, err := b.e.d.Rooms.SlidingRooms(b.ctx, b.req.UserID)
	if err != nil {
		return err
	}
	b.rooms = make([]*rooms.SlidingRoomInfo, len(list))
	for i := range list {
		b.rooms[i] = &list[i]
		b.byID[list[i].RoomID] = &list[i]
	}
	slices.SortFunc(b.rooms, func(x, y *rooms.SlidingRoomInfo) int {
		if c := cmp.Compare(y.Activity, x.Activity); c != 0 {
			return c
		}
		return cmp.Compare(x.RoomID, y.RoomID)
	})
	b.dm, err = b.e.directRooms(b.ctx, b.req.UserID)
	return err
}

// directRooms reads the rooms m.direct names.
func (e *Engine) directRooms(ctx context.Context, user string) (map[string]bool, error) {
	c, err := e.d.DB.Accounts().AccountDataGet(ctx, user, "", "m.direct")
	if errors.Is(err, storage.ErrNotFound) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	gjson.Parse(c).ForEach(func(_, rs gjson.Result) bool {
		for _, r := range rs.Array() {
			out[r.String()] = true
		}
		return true
	})
	return out, nil
}

func (b *builder) positions() error {
	var err error
	if b.to.events, err = b.e.d.Rooms.StreamPosition(b.ctx); err != nil {
		return err
	}
	// A pos from an instance that read further must not make us go back.
	b.to.events = max(b.to.events, b.conn.eventsPos)
	x := &b.req.Extensions
	if x.AccountData.on() {
		if b.to.accountData, err = b.e.d.DB.StreamPos(b.ctx, storage.AccountDataStream); err != nil {
			return err
		}
	}
	if x.Receipts.on() && b.e.d.Receipts != nil {
		if b.to.receipts, err = b.e.d.Receipts.Position(b.ctx); err != nil {
			return err
		}
	}
	if x.Typing.on() && b.e.d.Typing != nil {
		b.to.typing = b.e.d.Typing.Position()
	}
	if x.E2EE.on() && b.e.d.Keys != nil {
		ps, err := b.e.d.Keys.CurrentPositions(b.ctx)
		if err != nil {
			return err
		}
		b.to.deviceLists = ps[storage.DeviceListsStream]
	}
	return nil
}

// lookup reads what the client holds of rooms not looked up yet.
func (b *builder) lookup(ids []string) error {
	var missing []string
	for _, id := range ids {
		if _, ok := b.memo.states[id]; !ok {
			missing = append(missing, id)
			b.memo.states[id] = nil
		}
	}
	if b.conn.isNew || len(missing) == 0 {
		return nil
	}
	found, err := b.e.store.RoomStates(b.ctx, b.conn.nid, b.conn.seq, missing)
	if err != nil {
		return err
	}
	for id, s := range found {
		st, err := decodeRoomState(s)
		if err != nil {
			return err
		}
		b.memo.states[id] = st
	}
	return nil
}

// prevSpecs reads the configs of the given digests not read yet.
func (b *builder) prevSpecs(digests []string) error {
	var missing []string
	for _, d := range digests {
		if _, ok := b.memo.specs[d]; !ok && d != "" {
			missing = append(missing, d)
			b.memo.specs[d] = ""
		}
	}
	if b.conn.isNew || len(missing) == 0 {
		return nil
	}
	found, err := b.e.store.Specs(b.ctx, b.conn.nid, missing)
	if err != nil {
		return err
	}
	maps.Copy(b.memo.specs, found)
	return nil
}

// combined is the room config of the rules a room matches.
type combined struct {
	spec   roomSpec
	digest string
	limit  int
}

// config returns a room's combined config — the largest timeline limit,
// the union of the required_state — shared by the rooms matching the same
// rules, and remembers its required_state for the commit.
func (b *builder) config(room string) *combined {
	lists := b.listsOf[room]
	sig := strings.Join(lists, "\x00")
	if b.subscribed[room] {
		sig += "\x00" + room
	}
	if c, ok := b.configs[sig]; ok {
		return c
	}
	c := &combined{}
	add := func(rc *RoomConfig) {
		c.spec = c.spec.add(newSpec(rc.RequiredState, b.req.UserID))
		c.limit = max(c.limit, rc.timelineLimit())
	}
	for _, l := range lists {
		add(&b.req.Lists[l].RoomConfig)
	}
	if b.subscribed[room] {
		add(b.req.Subscriptions[room])
	}
	key := c.spec.key()
	c.digest = specDigest(key)
	if c.digest != "" && len(key) <= maxStoredSpec {
		b.newSpecs[c.digest] = key
	}
	b.configs[sig] = c
	return c
}

// include puts a room in scope under a list (or a subscription, with an
// empty name).
func (b *builder) include(room, list string) {
	if !b.inScope[room] {
		b.inScope[room] = true
		b.scope = append(b.scope, room)
	}
	if list != "" && !slices.Contains(b.listsOf[room], list) {
		b.listsOf[room] = append(b.listsOf[room], list)
		b.listRooms[list] = append(b.listRooms[list], room)
	}
}

// lists fills the lists' counts and puts the rooms in their ranges in
// scope.
func (b *builder) lists() error {
	if len(b.req.Lists) == 0 {
		return nil
	}
	// Rooms the user left themselves stay listed only on connections
	// that were sent them.
	var selfLeft []string
	for _, r := range b.rooms {
		if r.Membership == "leave" && !r.Kicked {
			selfLeft = append(selfLeft, r.RoomID)
		}
	}
	if err := b.lookup(selfLeft); err != nil {
		return err
	}
	var eligible []*rooms.SlidingRoomInfo
	for _, r := range b.rooms {
		switch {
		case r.Membership == "ban" && !r.EverJoined:
		case r.Membership == "leave" && !r.Kicked && b.memo.states[r.RoomID] == nil:
		default:
			eligible = append(eligible, r)
		}
	}
	f, err := b.filterData(eligible)
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(b.req.Lists)) {
		l := b.req.Lists[name]
		var matched []*rooms.SlidingRoomInfo
		for _, r := range eligible {
			if f.passes(l.Filters, r) {
				matched = append(matched, r)
			}
		}
		b.resp.Lists[name] = ListResult{Count: len(matched)}
		rgs := l.ranges()
		if rgs == nil {
			rgs = [][2]int64{{0, int64(len(matched)) - 1}}
		}
		for _, rg := range rgs {
			for i := rg[0]; i <= rg[1] && i < int64(len(matched)); i++ {
				b.include(matched[i].RoomID, name)
			}
		}
	}
	return nil
}

// subscriptions puts the subscribed rooms the user may see in scope;
// others are ignored.
func (b *builder) subscriptions() error {
	for _, room := range slices.Sorted(maps.Keys(b.req.Subscriptions)) {
		r := b.byID[room]
		if r == nil || (r.Membership == "ban" && !r.EverJoined) {
			continue
		}
		b.subscribed[room] = true
		b.include(room, "")
	}
	return nil
}

// stripped reports whether the user sees only a room's stripped state.
func stripped(r *rooms.SlidingRoomInfo) bool {
	switch r.Membership {
	case "invite", "knock":
		return true
	case "leave", "ban":
		return !r.EverJoined
	}
	return false
}

// pending is a room that may go into the response.
type pending struct {
	info        *rooms.SlidingRoomInfo
	st          *roomState
	initial     bool
	expand      bool
	specChanged bool
	// quiet: only the required_state changed; the room goes out only if
	// that brings something.
	quiet bool
}

// roomResults decides which rooms in scope the client needs and computes
// them.
func (b *builder) roomResults() error {
	if err := b.lookup(b.scope); err != nil {
		return err
	}
	var todo []pending
	for _, room := range b.scope {
		r, st := b.byID[room], b.memo.states[room]
		p := pending{info: r, st: st}
		strip := stripped(r)
		if st == nil || st.Stripped != strip {
			p.initial = true
			todo = append(todo, p)
			continue
		}
		news := min(r.Activity, b.to.events) > st.Pos
		dmChanged := b.dm[room] != st.DM
		if !strip {
			c := b.config(room)
			p.expand = st.Have >= 0 && c.limit > st.Have
			p.specChanged = c.digest != st.Spec
		}
		if !news && !dmChanged && !p.expand && !p.specChanged {
			continue
		}
		p.quiet = !news && !dmChanged && !p.expand
		todo = append(todo, p)
	}
	slices.SortStableFunc(todo, func(x, y pending) int {
		sx, sy := b.subscribed[x.info.RoomID], b.subscribed[y.info.RoomID]
		if sx != sy {
			if sx {
				return -1
			}
			return 1
		}
		return cmp.Compare(y.info.Activity, x.info.Activity)
	})
	if len(todo) > b.e.cfg.MaxRoomsPerResponse {
		todo = todo[:b.e.cfg.MaxRoomsPerResponse]
	}
	var digests []string
	for _, p := range todo {
		if p.specChanged {
			digests = append(digests, p.st.Spec)
		}
	}
	if err := b.prevSpecs(digests); err != nil {
		return err
	}
	for _, p := range todo {
		if err := b.room(p); err != nil {
			return err
		}
	}
	return nil
}

// never matches no state.
func never(string, string) bool { return false }

// room computes one room and records what the client will hold of it.
func (b *builder) room(p pending) error {
	r, st := p.info, p.st
	id := r.RoomID
	c := b.config(id)
	spec, digest := c.spec, c.digest
	strip := stripped(r)
	live := b.to.events
	if !b.conn.isNew {
		live = b.conn.eventsPos
	}
	q := rooms.SlidingRoomQuery{
		Who: rooms.Requester{UserID: b.req.UserID, DeviceID: b.req.DeviceID}, RoomID: id,
		Membership: r.Membership, MembershipStream: r.MembershipStream, Stripped: strip,
		Initial: p.initial, Live: live, To: b.to.events, Limit: c.limit,
		Match: spec.match, LazyMembers: spec.lazy(),
	}
	if !p.initial {
		q.From, q.Expand = st.Pos, p.expand
		q.LazySent = map[string]bool{}
		for _, u := range st.Lazy {
			q.LazySent[u] = true
		}
		if p.specChanged {
			// A config not remembered counts as none: everything the new
			// one asks for is sent.
			q.PrevMatch = never
			if prev, ok := parseSpec(b.memo.specs[st.Spec]); ok && len(prev) > 0 {
				q.PrevMatch = prev.match
			}
		}
	}
	d, err := b.e.d.Rooms.SlidingRoom(b.ctx, q)
	if errors.Is(err, rooms.ErrUnknownRoom) {
		return nil
	}
	if err != nil {
		return err
	}
	isDM := b.dm[id]
	if p.quiet && len(d.State) == 0 && len(d.Removed) == 0 && len(d.Timeline) == 0 && !d.Limited {
		// Nothing new to send; remember the new required_state so that
		// this is not computed again.
		ns := *st
		ns.Spec = digest
		b.touched[id] = &ns
		return nil
	}
	out := &Room{Membership: r.Membership, Lists: b.listsOf[id], Initial: p.initial, BumpStamp: &d.BumpStamp}
	switch {
	case p.initial && isDM:
		out.IsDM = &isDM
	case !p.initial && isDM != st.DM:
		out.IsDM = &isDM
	}
	ns := &roomState{Pos: d.Upper, Stripped: strip, DM: isDM}
	if strip {
		s := d.Stripped
		if s == nil {
			s = []json.RawMessage{}
		}
		if b.req.Compat {
			out.InviteState = &s
		} else {
			out.StrippedState = &s
		}
	} else {
		b.fullRoom(p, q, d, out, ns)
		ns.Spec = digest
	}
	if b.resp.Rooms == nil {
		b.resp.Rooms = map[string]*Room{}
	}
	b.resp.Rooms[id] = out
	b.touched[id] = ns
	return nil
}

// fullRoom fills the fields of a room the user is or was joined to.
func (b *builder) fullRoom(p pending, q rooms.SlidingRoomQuery, d *rooms.SlidingRoomData, out *Room, ns *roomState) {
	st := p.st
	if d.NameChanged {
		out.Name = Nullable{Set: true, Value: d.Name}
	}
	if d.AvatarChanged {
		out.Avatar = Nullable{Set: true, Value: d.Avatar}
	}
	if !d.HasName {
		ns.Heroes = digest(d.Heroes)
		if p.initial || ns.Heroes != st.Heroes {
			out.Heroes = d.Heroes
		}
	}
	out.JoinedCount, out.InvitedCount = d.Joined, d.Invited
	for _, ev := range d.State {
		out.RequiredState = append(out.RequiredState, ev)
	}
	for _, k := range d.Removed {
		out.RequiredState = append(out.RequiredState, StateStub{Type: k.Type, StateKey: k.StateKey})
	}
	out.Timeline, out.PrevBatch, out.Limited = d.Timeline, d.PrevBatch, d.Limited
	n := d.NumLive
	out.NumLive = &n
	if d.Expanded {
		if b.req.Compat {
			out.ExpandedTimelineUnstable = true
		} else {
			out.ExpandedTimeline = true
		}
	}
	switch {
	case p.initial || q.Expand:
		ns.Have = -1
		if d.Limited {
			ns.Have = len(d.Timeline)
		}
	case d.Limited:
		ns.Have = len(d.Timeline)
	case st.Have < 0:
		ns.Have = -1
	default:
		ns.Have = min(st.Have+len(d.Timeline), MaxTimelineLimit)
	}
	if q.LazyMembers {
		// The members just sent first: when the bound is reached, the
		// longest held are forgotten (and sent again when needed).
		all := slices.Clone(d.Members)
		if !p.initial && !d.Limited {
			all = append(all, st.Lazy...)
		}
		seen := map[string]bool{}
		for _, u := range all {
			if !seen[u] && len(ns.Lazy) < maxLazyRemembered {
				seen[u] = true
				ns.Lazy = append(ns.Lazy, u)
			}
		}
	}
}
