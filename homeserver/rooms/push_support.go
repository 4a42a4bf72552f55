package rooms

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
)

// PushRoom is what evaluating push rules in one room needs: who is joined
// and the power levels. It starts from the last committed state, and the
// push engine keeps it current through the batch being persisted with
// Apply (whose state changes are not committed yet). It is not safe for
// concurrent use.
type PushRoom struct {
	e      *Engine
	roomID string
	nid    int64 // 0: a room created by the batch being persisted
	joined map[string]bool
	// names holds display names known from member events (the batch's,
	// or looked up); a missing entry is not looked up yet.
	names      map[string]string
	create, pl *Event
	lv         levels
	// local caches LocalJoined until membership changes.
	local []string
}

// PushContext returns a room's push evaluation context as of the last
// committed batch. A room this server does not know yet (one created by
// the batch being persisted) starts empty: Apply fills it in.
func (e *Engine) PushContext(ctx context.Context, roomID string) (*PushRoom, error) {
	r := &PushRoom{e: e, roomID: roomID, joined: map[string]bool{}, names: map[string]string{}}
	m, err := e.meta(ctx, roomID)
	if errors.Is(err, ErrUnknownRoom) {
		r.lv = newLevels(nil, nil)
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	r.nid = m.NID
	q := e.db.Read()
	entries, err := e.store.CurrentState(ctx, q, m.NID, "m.room.member")
	if err != nil {
		return nil, err
	}
	for _, en := range entries {
		if en.Membership != nil && *en.Membership == "join" {
			r.joined[en.StateKey] = true
		}
	}
	if r.create, err = e.currentStateEvent(ctx, q, m.NID, "m.room.create", ""); err != nil {
		return nil, err
	}
	if r.pl, err = e.currentStateEvent(ctx, q, m.NID, "m.room.power_levels", ""); err != nil {
		return nil, err
	}
	r.lv = newLevels(r.pl, r.create)
	return r, nil
}

// RoomID is the room's ID.
func (r *PushRoom) RoomID() string { return r.roomID }

// MemberCount is the number of joined members, local or remote (the
// room_member_count push condition).
func (r *PushRoom) MemberCount() int { return len(r.joined) }

// LocalJoined lists this server's joined members, sorted. The slice is
// shared: callers must not modify it.
func (r *PushRoom) LocalJoined() []string {
	if r.local != nil {
		return r.local
	}
	suffix := ":" + r.e.cfg.ServerName
	out := []string{}
	for u := range r.joined {
		if strings.HasSuffix(u, suffix) {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	r.local = out
	return out
}

// Clone returns a copy that Apply can move on without changing r (the
// push engine keeps contexts between batches and must not change a kept
// one for a batch that may roll back).
func (r *PushRoom) Clone() *PushRoom {
	c := *r
	c.joined = maps.Clone(r.joined)
	c.names = maps.Clone(r.names)
	return &c
}

// Changes reports whether Apply would change the context for ev.
func (r *PushRoom) Changes(ev *Event) bool {
	if ev.StateKey == nil {
		return false
	}
	switch ev.Type {
	case "m.room.member":
		return true
	case "m.room.power_levels", "m.room.create":
		return *ev.StateKey == ""
	}
	return false
}

// IsLocal reports whether a user belongs to this server.
func (r *PushRoom) IsLocal(userID string) bool { return r.e.isLocal(userID) }

// Apply moves the context past one accepted event of the batch being
// persisted: membership, display names and power levels follow it.
func (r *PushRoom) Apply(ev *Event) {
	if ev.StateKey == nil {
		return
	}
	switch ev.Type {
	case "m.room.member":
		u := *ev.StateKey
		content := ev.Content()
		if membershipOf(content) == "join" {
			r.joined[u] = true
		} else {
			delete(r.joined, u)
		}
		r.local = nil
		r.names[u] = gjson.GetBytes(content, "displayname").String()
	case "m.room.power_levels", "m.room.create":
		if *ev.StateKey != "" {
			return
		}
		if ev.Type == "m.room.create" {
			r.create = ev
		} else {
			r.pl = ev
		}
		r.lv = newLevels(r.pl, r.create)
	}
}

// UserLevel is a user's power level (room v12 creators: above any number).
func (r *PushRoom) UserLevel(userID string) int64 { return r.lv.user(userID) }

// NotificationLevel is the power level needed to trigger a notification
// of the given kind ("room" for @room), from the power levels'
// notifications object (default 50).
func (r *PushRoom) NotificationLevel(key string) int64 { return r.lv.notification(key) }

// DisplayName returns a member's display name in the room ("" if none).
func (r *PushRoom) DisplayName(ctx context.Context, userID string) string {
	if n, ok := r.names[userID]; ok {
		return n
	}
	name := ""
	if r.nid != 0 {
		ev, err := r.e.currentStateEvent(ctx, r.e.db.Read(), r.nid, "m.room.member", userID)
		if err == nil && ev != nil {
			name = gjson.GetBytes(ev.Content(), "displayname").String()
		}
	}
	r.names[userID] = name
	return name
}

// Relation is the m.relates_to of an event: the event it relates to and
// the relation type.
type Relation struct{ EventID, RelType string }

// EventRelations returns the relation of each of the given committed
// events that has one (the push engine follows relations to find an
// event's thread).
func (e *Engine) EventRelations(ctx context.Context, eventIDs []string) (map[string]Relation, error) {
	evs, err := e.eventsByID(ctx, e.db.Read(), eventIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Relation, len(evs))
	for id, ev := range evs {
		if ev.RelatesTo != nil && *ev.RelatesTo != "" {
			out[id] = Relation{EventID: *ev.RelatesTo, RelType: deref2(ev.RelType)}
		}
	}
	return out, nil
}
