package stateres

import (
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// authState is a partially resolved state: the events applied so far over an
// immutable base. The overlay keeps a large base (a big room's unconflicted
// state) from being copied.
type authState struct {
	base StateMap
	over StateMap
}

// newAuthState returns a state that starts out equal to base, which it never modifies.
func newAuthState(base StateMap) *authState {
	return &authState{base: base, over: make(StateMap)}
}

// get returns the event ID at key.
func (s *authState) get(key StateKey) (id.EventID, bool) {
	if evtID, ok := s.over[key]; ok {
		return evtID, true
	}
	evtID, ok := s.base[key]
	return evtID, ok
}

// set puts evtID at key.
func (s *authState) set(key StateKey, evtID id.EventID) {
	s.over[key] = evtID
}

// iterativeAuthChecks applies each event of list, in order, to state if the
// authorization rules allow it against that state; disallowed events are skipped.
func (r *resolver) iterativeAuthChecks(state *authState, list []id.EventID) error {
	selections, err := r.prefetchAuthEvents(state, list)
	if err != nil {
		return err
	}
	for i, evtID := range list {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		evt := r.g.get(evtID)
		key, ok := keyOf(evt)
		if !ok {
			continue
		}
		if r.authorize(evt, r.authEventsFor(evt, selections[i], state)) == nil {
			state.set(key, evtID)
		}
	}
	return nil
}

// prefetchAuthEvents loads, in one batch, every event that the checks of list
// may read: each event's own auth events and the base state's entries for the
// keys the auth events selection asks for. It returns those selections.
func (r *resolver) prefetchAuthEvents(state *authState, list []id.EventID) ([]pdu.AuthEventSelection, error) {
	selections := make([]pdu.AuthEventSelection, len(list))
	var want []id.EventID
	for i, evtID := range list {
		evt := r.g.get(evtID)
		if evt == nil {
			continue
		}
		selections[i] = evt.AuthEventSelection(r.version)
		want = append(want, evt.AuthEvents...)
		for _, key := range selections[i] {
			if baseID, ok := state.base[key]; ok {
				want = append(want, baseID)
			}
		}
	}
	return selections, r.g.load(want)
}

// authEventsFor picks evt's auth events for the iterative auth checks: for each
// key of the auth events selection, the event in the partially resolved state,
// or else evt's own auth event for that key. Rejected events are never used, as
// auth events are not re-authorized here; a rejected state entry falls back to
// evt's own auth event.
func (r *resolver) authEventsFor(evt *pdu.PDU, selection pdu.AuthEventSelection, state *authState) []*pdu.PDU {
	out := make([]*pdu.PDU, 0, len(selection))
	for _, key := range selection {
		if stateID, ok := state.get(key); ok {
			if candidate := r.g.get(stateID); usableAuthEvent(candidate, key) {
				out = append(out, candidate)
				continue
			}
		}
		for _, authID := range evt.AuthEvents {
			if candidate := r.g.get(authID); usableAuthEvent(candidate, key) {
				out = append(out, candidate)
				break
			}
		}
	}
	return out
}

// usableAuthEvent reports whether evt can serve as the auth event for key:
// present, not rejected, and really a state event at key (a state map entry
// pointing at some other event must not confuse eventauth).
func usableAuthEvent(evt *pdu.PDU, key StateKey) bool {
	evtKey, ok := keyOf(evt)
	return ok && evtKey == key && !evt.InternalMeta.Rejected
}

// stateSelectedAuthEvents picks evt's auth events purely from state, without
// falling back to evt's own auth events (state res v1 checks against R alone).
func (r *resolver) stateSelectedAuthEvents(evt *pdu.PDU, state *authState) ([]*pdu.PDU, error) {
	selection := evt.AuthEventSelection(r.version)
	ids := make([]id.EventID, 0, len(selection))
	for _, key := range selection {
		if stateID, ok := state.get(key); ok {
			ids = append(ids, stateID)
		}
	}
	if err := r.g.load(ids); err != nil {
		return nil, err
	}
	out := make([]*pdu.PDU, 0, len(selection))
	for _, key := range selection {
		if stateID, ok := state.get(key); ok {
			if candidate := r.g.get(stateID); candidate != nil {
				if candidateKey, ok := keyOf(candidate); ok && candidateKey == key {
					out = append(out, candidate)
				}
			}
		}
	}
	return out, nil
}
