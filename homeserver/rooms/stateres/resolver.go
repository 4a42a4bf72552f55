package stateres

import (
	"context"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// resolver carries what one call to Resolve shares between its steps.
type resolver struct {
	ctx     context.Context
	version id.RoomVersion
	g       *graph
	// creates caches the create event per room ID for privileged-creator rooms,
	// whose events do not cite it in auth_events.
	creates map[id.RoomID]*pdu.PDU
}

// newResolver returns a resolver reading from src.
func newResolver(ctx context.Context, version id.RoomVersion, src Source) *resolver {
	return &resolver{ctx: ctx, version: version, g: newGraph(ctx, src), creates: make(map[id.RoomID]*pdu.PDU)}
}

// roomCreate returns the create event of evt's room in versions whose room ID is
// the create event's ID; nil if it is missing.
func (r *resolver) roomCreate(evt *pdu.PDU) (*pdu.PDU, error) {
	if evt.Type == createKey.Type && evt.StateKey != nil && *evt.StateKey == "" {
		return evt, nil
	}
	if len(evt.RoomID) < 2 {
		return nil, nil
	}
	if create, ok := r.creates[evt.RoomID]; ok {
		return create, nil
	}
	create, err := r.g.fetch(id.EventID("$" + evt.RoomID[1:]))
	if err != nil {
		return nil, err
	}
	r.creates[evt.RoomID] = create
	return create, nil
}

// senderPower returns the power level of evt's sender as given by evt's own auth
// events, which is what the reverse topological power ordering compares.
func (r *resolver) senderPower(evt *pdu.PDU) (int64, error) {
	if r.version.PrivilegedRoomCreators() {
		create, err := r.roomCreate(evt)
		if err != nil {
			return 0, err
		}
		if create != nil && isCreator(r.version, create, evt.Sender) {
			return infinitePower, nil
		}
	}
	_, pl, err := r.g.authEventOfType(evt, powerLevelsKey)
	if err != nil {
		return 0, err
	}
	if pl != nil {
		return userLevel(r.version, pl.Content, evt.Sender), nil
	}
	if !r.version.PrivilegedRoomCreators() {
		// Without a power levels event the auth rules give the creator 100.
		_, create, err := r.g.authEventOfType(evt, createKey)
		if err != nil {
			return 0, err
		}
		if create != nil && isCreator(r.version, create, evt.Sender) {
			return defaultCreatorPower, nil
		}
	}
	return 0, nil
}
