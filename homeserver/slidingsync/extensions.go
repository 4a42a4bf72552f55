package slidingsync

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"

	"github.com/parley-chat/parley/e2ee"
)

// extensions fills the extensions' parts. Account data, receipts and
// typing cover the rooms of the lists and subscriptions the extension
// names; a room that was outside that scope at the client's pos counts as
// new to it, and gets its current data rather than the changes.
func (b *builder) extensions() error {
	x := &b.req.Extensions
	type ext struct {
		on  bool
		run func() error
	}
	for _, e := range []ext{
		{x.ToDevice != nil && x.ToDevice.on(), b.toDevice},
		{x.E2EE.on(), b.e2ee},
		{x.AccountData.on(), b.accountData},
		{x.Receipts.on(), b.receipts},
		{x.Typing.on(), b.typing},
	} {
		if e.on {
			if err := e.run(); err != nil {
				return err
			}
		}
	}
	return nil
}

// extRooms are the rooms an extension covers: the rooms in range of the
// lists it names (every list when it names none, or "*") and the
// subscriptions it names (every one when it names none, or "*").
func (b *builder) extRooms(c *ExtensionConfig) []string {
	seen := map[string]bool{}
	var out []string
	add := func(r string) {
		if !seen[r] && b.inScope[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	lists := c.Lists
	if lists == nil || slices.Contains(lists, wildcard) {
		lists = slices.Sorted(maps.Keys(b.listRooms))
	}
	for _, l := range lists {
		for _, r := range b.listRooms[l] {
			add(r)
		}
	}
	subs := c.Rooms
	if subs == nil || slices.Contains(subs, wildcard) {
		subs = slices.Sorted(maps.Keys(b.subscribed))
	}
	for _, r := range subs {
		add(r)
	}
	return out
}

// split separates rooms new to an extension's scope from those the
// client has followed since its pos (all are new when the extension was
// off then).
func (b *builder) split(rooms []string, wasOn bool) (fresh, kept []string) {
	for _, r := range rooms {
		if wasOn && b.conn.inScope(r) {
			kept = append(kept, r)
		} else {
			fresh = append(fresh, r)
		}
	}
	return fresh, kept
}

func eventJSON(typ string, content json.RawMessage) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"type": typ, "content": content})
	return b
}

func (b *builder) toDevice() error {
	k := b.e.d.Keys
	if k == nil || b.req.DeviceID == "" {
		return nil
	}
	td := b.req.Extensions.ToDevice
	var since int64
	switch {
	case td.Since != "":
		since, _ = parseSince(td.Since)
	case b.conn.streams.ToDevice != nil:
		since = *b.conn.streams.ToDevice
	}
	limit := int64(0)
	if td.Limit != nil {
		limit = *td.Limit
	}
	msgs, next, err := k.ToDeviceSince(b.ctx, b.req.UserID, b.req.DeviceID, since, limit)
	if err != nil {
		return err
	}
	next = max(next, since)
	res := &ToDeviceResult{NextBatch: strconv.FormatInt(next, 10), Events: make([]json.RawMessage, 0, len(msgs))}
	for _, m := range msgs {
		ev, _ := json.Marshal(m)
		res.Events = append(res.Events, ev)
	}
	b.nextStreams.ToDevice = &next
	b.resp.Extensions.ToDevice = res
	return nil
}

func (b *builder) e2ee() error {
	k := b.e.d.Keys
	if k == nil {
		return nil
	}
	res := &E2EEResult{}
	if prev := b.conn.streams.DeviceLists; prev != nil && *prev < b.to.deviceLists {
		delta, err := b.membershipDelta(b.conn.eventsPos, b.to.events)
		if err != nil {
			return err
		}
		changed, left, err := k.DeviceListChanges(b.ctx, b.req.UserID, *prev, b.to.deviceLists, delta)
		if err != nil {
			return err
		}
		if len(changed) > 0 || len(left) > 0 {
			res.DeviceLists = &DeviceLists{Changed: changed, Left: left}
		}
	}
	next := b.to.deviceLists
	if prev := b.conn.streams.DeviceLists; prev != nil {
		next = max(next, *prev)
	}
	b.nextStreams.DeviceLists = &next
	if b.req.DeviceID != "" {
		counts, fb, err := k.KeyCounts(b.ctx, b.req.UserID, b.req.DeviceID)
		if err != nil {
			return err
		}
		if counts == nil {
			counts = map[string]int{}
		}
		if fb == nil {
			fb = []string{}
		}
		res.OTKCounts, res.Fallback, res.FallbackMSC2 = counts, fb, fb
	}
	b.resp.Extensions.E2EE = res
	return nil
}

// membershipDelta finds who the user started or stopped sharing a room
// with between two events positions, for device list tracking.
func (b *builder) membershipDelta(from, to int64) (e2ee.MembershipDelta, error) {
	var d e2ee.MembershipDelta
	r := b.e.d.Rooms
	user := b.req.UserID
	if from >= to {
		return d, nil
	}
	changes, err := r.MembershipChanges(b.ctx, user, from, to)
	if err != nil {
		return d, err
	}
	changed := map[string]bool{}
	for _, c := range changes {
		changed[c.RoomID] = true
		switch c.Membership {
		case "join":
			before, err := r.MembershipAt(b.ctx, user, c.RoomID, from)
			if err != nil {
				return d, err
			}
			if before != "join" {
				members, err := r.JoinedMemberIDs(b.ctx, c.RoomID)
				if err != nil {
					return d, err
				}
				d.Joined = append(d.Joined, members...)
			}
		case "leave", "ban":
			members, err := r.JoinedMemberIDs(b.ctx, c.RoomID)
			if err != nil {
				return d, err
			}
			d.Left = append(d.Left, members...)
		}
	}
	joined, err := r.JoinedRooms(b.ctx, user)
	if err != nil {
		return d, err
	}
	var rest []string
	for _, room := range joined {
		if !changed[room] {
			rest = append(rest, room)
		}
	}
	news, err := r.RoomsWithEvents(b.ctx, rest, from)
	if err != nil {
		return d, err
	}
	for _, room := range slices.Sorted(maps.Keys(news)) {
		if news[room].LastMember <= from {
			continue // no one joined or left in the window
		}
		j, l, err := r.MemberChangesIn(b.ctx, room, from, to)
		if err != nil {
			return d, err
		}
		d.Joined = append(d.Joined, j...)
		d.Left = append(d.Left, l...)
	}
	return d, nil
}

func (b *builder) accountData() error {
	cfg := b.req.Extensions.AccountData
	prev := b.conn.streams.AccountData
	from := int64(0)
	if prev != nil {
		from = *prev
	}
	to := max(b.to.accountData, from)
	scoped := b.extRooms(cfg)
	fresh, kept := b.split(scoped, prev != nil)
	keep := map[string]bool{}
	for _, r := range kept {
		keep[r] = true
	}
	res := &AccountDataResult{}
	addRoom := func(room string, ev json.RawMessage) {
		if res.Rooms == nil {
			res.Rooms = map[string][]json.RawMessage{}
		}
		res.Rooms[room] = append(res.Rooms[room], ev)
	}
	if from < to {
		entries, err := b.e.d.DB.Accounts().AccountDataSince(b.ctx, b.req.UserID, from, to)
		if err != nil {
			return err
		}
		for _, d := range entries {
			ev := eventJSON(d.Type, json.RawMessage(d.Content))
			switch {
			case d.RoomID == "":
				res.Global = append(res.Global, ev)
			case keep[d.RoomID]:
				addRoom(d.RoomID, ev)
			}
		}
	}
	if len(fresh) > 0 {
		entries, err := b.e.store.RoomAccountData(b.ctx, b.req.UserID, fresh, to)
		if err != nil {
			return err
		}
		for _, d := range entries {
			addRoom(d.RoomID, eventJSON(d.Type, json.RawMessage(d.Content)))
		}
	}
	b.nextStreams.AccountData = &to
	if len(res.Global) > 0 || len(res.Rooms) > 0 {
		b.resp.Extensions.AccountData = res
	}
	return nil
}

func (b *builder) receipts() error {
	rc := b.e.d.Receipts
	if rc == nil {
		return nil
	}
	prev := b.conn.streams.Receipts
	to := b.to.receipts
	if prev != nil {
		to = max(to, *prev)
	}
	fresh, kept := b.split(b.extRooms(b.req.Extensions.Receipts), prev != nil)
	out := map[string]json.RawMessage{}
	if len(kept) > 0 && *prev < to {
		got, err := rc.Since(b.ctx, b.req.UserID, kept, *prev, to)
		if err != nil {
			return err
		}
		maps.Copy(out, got)
	}
	if len(fresh) > 0 {
		got, err := rc.Current(b.ctx, b.req.UserID, fresh)
		if err != nil {
			return err
		}
		maps.Copy(out, got)
	}
	b.nextStreams.Receipts = &to
	if len(out) > 0 {
		res := &RoomEvents{Rooms: map[string]json.RawMessage{}}
		for room, c := range out {
			res.Rooms[room] = eventJSON("m.receipt", c)
		}
		b.resp.Extensions.Receipts = res
	}
	return nil
}

func (b *builder) typing() error {
	ty := b.e.d.Typing
	if ty == nil {
		return nil
	}
	prev := b.conn.streams.Typing
	to := b.to.typing
	if prev != nil {
		to = max(to, *prev)
	}
	fresh, kept := b.split(b.extRooms(b.req.Extensions.Typing), prev != nil)
	out := map[string][]string{}
	if len(kept) > 0 && *prev < to {
		maps.Copy(out, ty.Since(kept, *prev))
	}
	if len(fresh) > 0 {
		for room, users := range ty.Current(fresh) {
			// Nobody typing is news only to a client that saw someone type.
			if len(users) > 0 {
				out[room] = users
			}
		}
	}
	b.nextStreams.Typing = &to
	if len(out) > 0 {
		res := &RoomEvents{Rooms: map[string]json.RawMessage{}}
		for room, users := range out {
			if users == nil {
				users = []string{}
			}
			c, _ := json.Marshal(map[string]any{"user_ids": users})
			res.Rooms[room] = eventJSON("m.typing", c)
		}
		b.resp.Extensions.Typing = res
	}
	return nil
}
