package rooms

import (
	"context"
	"encoding/json"

	"github.com/parley-chat/parley/storage"
)

// FormatOptions shape client events for one reader.
type FormatOptions struct {
	// User and DeviceID receive transaction_id on their own events.
	User, DeviceID string
	// OmitRoomID leaves room_id out (sync nests events under their room).
	OmitRoomID bool
	// NoBundle skips bundled aggregations.
	NoBundle bool
	// RelationsAt, a committed events-stream position, bounds the
	// children that bundled aggregations look for (0: all); with it, which
	// events have any is remembered for the members syncing the same
	// window.
	RelationsAt int64
}

// render turns an event into the client format.
func (e *Engine) render(ctx context.Context, ev *Event, mem string, o FormatOptions) (*ClientEvent, error) {
	ce := &ClientEvent{
		Content:        ev.Content(),
		EventID:        ev.EventID,
		OriginServerTS: ev.OriginTS,
		Sender:         ev.Sender,
		StateKey:       ev.StateKey,
		Type:           ev.Type,
	}
	if !o.OmitRoomID {
		ce.RoomID = ev.RoomID
	}
	if ev.Type == "m.room.redaction" {
		ce.Redacts = ev.redactsTarget()
	}
	u := &Unsigned{Membership: mem}
	age := max(e.now().UnixMilli()-ev.OriginTS, 0)
	u.Age = &age
	if o.User != "" && ev.Sender == o.User && ev.TxnID != nil && ev.TxnDevice != nil && *ev.TxnDevice == o.DeviceID {
		u.TransactionID = *ev.TxnID
	}
	if ev.IsState() && ev.StateBefore != nil {
		prev, err := e.stateEventAt(ctx, e.db.Read(), *ev.StateBefore, ev.Key())
		if err != nil {
			return nil, err
		}
		if prev != nil {
			u.PrevContent = prev.Content()
			u.PrevSender = prev.Sender
			u.ReplacesState = prev.EventID
		}
	}
	if ev.RedactedBy != nil {
		if red, err := e.eventByID(ctx, *ev.RedactedBy); err == nil {
			rc, err := e.render(ctx, red, "", FormatOptions{OmitRoomID: o.OmitRoomID, NoBundle: true})
			if err != nil {
				return nil, err
			}
			u.RedactedBecause = rc
		}
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil && (membershipOf(ev.PDU.Content) == "invite" || membershipOf(ev.PDU.Content) == "knock") {
		if rs := e.strippedRoomState(ctx, ev); len(rs) > 0 {
			u.InviteRoomState = rs
		}
	}
	if !u.empty() {
		ce.Unsigned = u
	}
	return ce, nil
}

// renderAll renders events, with bundled aggregations when asked.
func (e *Engine) renderAll(ctx context.Context, evs []*Event, mems []string, o FormatOptions) ([]*ClientEvent, error) {
	out := make([]*ClientEvent, 0, len(evs))
	for i, ev := range evs {
		mem := ""
		if i < len(mems) {
			mem = mems[i]
		}
		ce, err := e.render(ctx, ev, mem, o)
		if err != nil {
			return nil, err
		}
		out = append(out, ce)
	}
	if !o.NoBundle && len(evs) > 0 {
		if err := e.bundle(ctx, o.User, o.RelationsAt, evs, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// strippedStateKeys are the state sent with invites and knocks, so that the
// invitee can show the room before joining.
var strippedStateKeys = []string{
	"m.room.create", "m.room.name", "m.room.avatar", "m.room.topic", "m.room.join_rules",
	"m.room.canonical_alias", "m.room.encryption",
}

// strippedRoomState returns the stripped state at an invite or knock.
func (e *Engine) strippedRoomState(ctx context.Context, ev *Event) []json.RawMessage {
	var out []json.RawMessage
	snap := deref(ev.StateAfter)
	for _, t := range strippedStateKeys {
		s, err := e.stateEventAt(ctx, e.db.Read(), snap, storage.StateKey{Type: t})
		if err != nil || s == nil {
			continue
		}
		b, _ := json.Marshal(s.Stripped())
		out = append(out, b)
	}
	if s, err := e.stateEventAt(ctx, e.db.Read(), snap, storage.StateKey{Type: "m.room.member", StateKey: ev.Sender}); err == nil && s != nil {
		b, _ := json.Marshal(s.Stripped())
		out = append(out, b)
	}
	return out
}
