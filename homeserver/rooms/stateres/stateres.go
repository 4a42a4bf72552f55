package stateres

import (
	"context"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// StateKey is an event's (type, state_key).
type StateKey = pdu.StateKey

// StateMap maps (type, state_key) to an event ID.
type StateMap map[StateKey]id.EventID

// Source is what state resolution reads from the room's event graph.
type Source interface {
	// Events loads events by ID. Missing events are absent from the map (not an error).
	// Every returned PDU has InternalMeta.EventID set to its event ID, and
	// InternalMeta.Rejected set if the event was rejected.
	Events(ctx context.Context, ids []id.EventID) (map[id.EventID]*pdu.PDU, error)
	// AuthChain returns every event reachable from ids by following auth_events
	// recursively (the ids themselves are included only if reachable from another).
	AuthChain(ctx context.Context, ids []id.EventID) (map[id.EventID]struct{}, error)
}

// ErrAuthCycle is returned when the auth events of the events being sorted form a cycle.
var ErrAuthCycle = errors.New("stateres: auth events form a cycle")

// Well-known state keys used by the algorithms.
var (
	createKey      = StateKey{Type: "m.room.create", StateKey: ""}
	powerLevelsKey = StateKey{Type: "m.room.power_levels", StateKey: ""}
	joinRulesKey   = StateKey{Type: "m.room.join_rules", StateKey: ""}
)

const memberType = "m.room.member"

// Resolve resolves the state sets of a room of the given version: state res v1 for
// room version 1, v2 for versions 2–11 and v2.1 for version 12.
//
// Resolving zero sets yields an empty map (the state before a create event); a
// single set, or identical sets, resolve to a copy of that set. The returned map
// is always freshly allocated and never aliases an input.
func Resolve(ctx context.Context, version id.RoomVersion, sets []StateMap, src Source) (StateMap, error) {
	if !version.IsKnown() {
		// StateResVersion panics on unknown versions, so reject them up front.
		return nil, fmt.Errorf("stateres: %w %q", id.ErrUnknownRoomVersion, version)
	}
	if src == nil {
		return nil, errors.New("stateres: nil Source")
	}
	switch version.StateResVersion() {
	case id.StateResV1:
		return resolveV1(ctx, version, sets, src)
	case id.StateResV2_1:
		return resolveV2(ctx, version, true, sets, src)
	default:
		return resolveV2(ctx, version, false, sets, src)
	}
}

// keyOf returns the state key of a state event; ok is false for message events.
func keyOf(evt *pdu.PDU) (StateKey, bool) {
	if evt == nil || evt.StateKey == nil {
		return StateKey{}, false
	}
	return StateKey{Type: evt.Type, StateKey: *evt.StateKey}, true
}
