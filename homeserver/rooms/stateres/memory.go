package stateres

import (
	"context"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// MemorySource is a Source backed by an in-memory map of events keyed by InternalMeta.EventID.
//
// It is not safe for concurrent use while events are being added.
type MemorySource struct {
	events map[id.EventID]*pdu.PDU
}

var _ Source = (*MemorySource)(nil)

// NewMemorySource returns a MemorySource holding the given events.
func NewMemorySource(events []*pdu.PDU) *MemorySource {
	m := &MemorySource{events: make(map[id.EventID]*pdu.PDU, len(events))}
	m.Add(events...)
	return m
}

// Add stores events, replacing any earlier event with the same ID; nil events
// and events without InternalMeta.EventID are ignored because nothing can refer to them.
func (m *MemorySource) Add(events ...*pdu.PDU) {
	for _, evt := range events {
		if evt != nil && evt.InternalMeta.EventID != "" {
			m.events[evt.InternalMeta.EventID] = evt
		}
	}
}

// Events implements Source.
func (m *MemorySource) Events(ctx context.Context, ids []id.EventID) (map[id.EventID]*pdu.PDU, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make(map[id.EventID]*pdu.PDU, len(ids))
	for _, evtID := range ids {
		if evt, ok := m.events[evtID]; ok {
			out[evtID] = evt
		}
	}
	return out, nil
}

// AuthChain implements Source with a depth-first walk over auth_events.
func (m *MemorySource) AuthChain(ctx context.Context, ids []id.EventID) (map[id.EventID]struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	chain := make(map[id.EventID]struct{})
	// The start events are expanded without being recorded: they only join the
	// chain when reached from another event. Expanding a start twice (once as a
	// start, once when reached) is harmless and avoids a second large set when
	// there are many starts, as with a big room's unconflicted state.
	queue := make([]id.EventID, 0, 64)
	for _, start := range ids {
		queue = m.expand(start, chain, queue)
		for len(queue) > 0 {
			next := queue[len(queue)-1]
			queue = m.expand(next, chain, queue[:len(queue)-1])
		}
	}
	return chain, nil
}

// expand records the unseen auth events of evtID in chain and queues them.
func (m *MemorySource) expand(evtID id.EventID, chain map[id.EventID]struct{}, queue []id.EventID) []id.EventID {
	evt := m.events[evtID]
	if evt == nil {
		return queue
	}
	for _, authID := range evt.AuthEvents {
		if _, seen := chain[authID]; !seen {
			chain[authID] = struct{}{}
			queue = append(queue, authID)
		}
	}
	return queue
}
