package stateres

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// eventSet is a set of event IDs.
type eventSet map[id.EventID]struct{}

// add inserts evtID.
func (s eventSet) add(evtID id.EventID) { s[evtID] = struct{}{} }

// has reports whether evtID is in the set.
func (s eventSet) has(evtID id.EventID) bool {
	_, ok := s[evtID]
	return ok
}

// graph caches the events one resolution reads, so that each event is fetched
// from the Source at most once and in as few batches as possible.
type graph struct {
	ctx     context.Context
	src     Source
	events  map[id.EventID]*pdu.PDU
	missing eventSet // IDs the Source did not return; never asked for again
}

// newGraph returns an empty cache in front of src.
func newGraph(ctx context.Context, src Source) *graph {
	return &graph{ctx: ctx, src: src, events: make(map[id.EventID]*pdu.PDU), missing: make(eventSet)}
}

// load fetches, in one batch, every event of ids that is not cached yet.
func (g *graph) load(ids []id.EventID) error {
	var want []id.EventID
	queued := make(eventSet)
	for _, evtID := range ids {
		if _, ok := g.events[evtID]; ok || g.missing.has(evtID) || queued.has(evtID) {
			continue
		}
		queued.add(evtID)
		want = append(want, evtID)
	}
	if len(want) == 0 {
		return nil
	}
	if err := g.ctx.Err(); err != nil {
		return err
	}
	got, err := g.src.Events(g.ctx, want)
	if err != nil {
		return fmt.Errorf("stateres: loading events: %w", err)
	}
	for _, evtID := range want {
		if evt := got[evtID]; evt != nil {
			g.events[evtID] = evt
		} else {
			g.missing.add(evtID)
		}
	}
	return nil
}

// loadSet is load for a set of IDs.
func (g *graph) loadSet(ids eventSet) error {
	list := make([]id.EventID, 0, len(ids))
	for evtID := range ids {
		list = append(list, evtID)
	}
	return g.load(list)
}

// get returns a cached event, or nil if it is missing or was never loaded.
func (g *graph) get(evtID id.EventID) *pdu.PDU {
	return g.events[evtID]
}

// fetch returns an event, loading it on a cache miss; nil means the Source lacks it.
func (g *graph) fetch(evtID id.EventID) (*pdu.PDU, error) {
	if evt, ok := g.events[evtID]; ok {
		return evt, nil
	}
	if err := g.load([]id.EventID{evtID}); err != nil {
		return nil, err
	}
	return g.events[evtID], nil
}

// authChain asks the Source for the auth chain of ids; an empty list needs no call.
func (g *graph) authChain(ids []id.EventID) (map[id.EventID]struct{}, error) {
	if len(ids) == 0 {
		return map[id.EventID]struct{}{}, nil
	}
	if err := g.ctx.Err(); err != nil {
		return nil, err
	}
	chain, err := g.src.AuthChain(g.ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("stateres: loading auth chain: %w", err)
	}
	if chain == nil {
		chain = map[id.EventID]struct{}{}
	}
	return chain, nil
}

// authEventOfType returns the auth event of evt with the given state key, loading
// evt's auth events if needed; a nil event means evt cites none (or it is missing).
func (g *graph) authEventOfType(evt *pdu.PDU, key StateKey) (id.EventID, *pdu.PDU, error) {
	if err := g.load(evt.AuthEvents); err != nil {
		return "", nil, err
	}
	for _, authID := range evt.AuthEvents {
		if k, ok := keyOf(g.get(authID)); ok && k == key {
			return authID, g.get(authID), nil
		}
	}
	return "", nil, nil
}
