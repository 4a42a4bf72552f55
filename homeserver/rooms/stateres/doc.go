// Package stateres implements Matrix state resolution: given the room states
// at the tips of a forked event graph, it computes the one state that every
// server agrees on.
//
// Resolve picks the algorithm from the room version: v1 for room version 1,
// v2 for versions 2–11 and v2.1 for version 12. All of them read events through
// a Source (MemorySource holds a whole graph in memory) and authorize with
// mautrix's eventauth.Authorize against auth events chosen from the partially
// resolved state rather than from the event's own auth_events.
//
// # State resolution v2 and v2.1
//
//	sets ──partition──► unconflicted map U, conflicted set C
//	                        │
//	          auth difference (+ v2.1: conflicted state subgraph)
//	                        ▼
//	            full conflicted set FCS (events loaded once)
//	              │                                   │
//	   power events of FCS + their                 the rest
//	   auth chains ∩ FCS, in reverse                  │
//	   topological power order                        │
//	              ▼                                   │
//	   iterative auth checks from U ─► partial state  │
//	   (v2.1: from the empty map)          │          │
//	                                       ▼          ▼
//	                       mainline order of the rest, by the
//	                       partial state's power levels event
//	                                       ▼
//	                       iterative auth checks on the partial state
//	                                       ▼
//	                       U re-applied over the result
//
// The auth difference ∪Cᵢ − ∩Cᵢ is computed without building each set's full
// auth chain Cᵢ: every set contains U, so Cᵢ = A ∪ Bᵢ where A is the auth chain
// of U (computed once) and Bᵢ that of set i's conflicted events, which gives
// ∪Bᵢ − A − ∩Bᵢ. A big room's forks share almost all of their state, so A is
// the only large walk and the rest of the work scales with the conflicts.
//
// The reverse topological power ordering is Kahn's algorithm over the auth DAG
// restricted to the events being sorted, taking at each step the candidate
// with the highest sender power level (from that event's own auth events;
// room creators are infinitely powerful in v12), then the lowest
// origin_server_ts, then the lowest event ID. The mainline ordering sorts by
// the position at which an event's chain of power levels auth events meets the
// mainline of the resolved power levels event (earlier meeting first), then by
// origin_server_ts and event ID.
//
// Power events are power levels and join rules events, kicks and bans (a leave
// or ban whose sender is not its target), and the create event.
//
// During the iterative auth checks a key missing from the partial state is
// filled from the event's own auth_events; rejected events are never used as
// auth events, but rejected events in the full conflicted set are re-checked
// like any other, as the specification requires. Server signatures are not
// re-verified (they were checked on receipt and do not depend on state), which
// matters for restricted joins; third-party invite signatures, which are
// checked against keys in the room state, are.
//
// # State resolution v1
//
// Non-conflicting entries form R. Conflicts among power levels, then join
// rules, then memberships are resolved by sorting each key's events by
// ascending depth and descending sha1(event_id), taking the first and then
// each next event while it passes authorization against R. Other conflicts take
// the deepest event (lowest sha1 on ties) that passes authorization against R.
//
// # Inputs
//
// Events are identified only by InternalMeta.EventID (the Source's map keys);
// nothing is hashed. eventauth's rule for the creator's first join calls
// GetEventID on the create event, so callers must set
// pdu.UseInternalMetaForGetEventID. Conflicted events the Source lacks are
// skipped, since they can be neither ordered nor authorized; an auth cycle
// among power events is reported as ErrAuthCycle.
package stateres
