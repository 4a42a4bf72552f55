package stateres

import (
	"cmp"
	"container/heap"
	"fmt"
	"math"
	"slices"

	"maunium.net/go/mautrix/id"
)

// powerItem is one event's reverse topological power ordering key.
type powerItem struct {
	id    id.EventID
	power int64
	ts    int64
}

// comparePower orders by sender power level descending, then origin_server_ts
// ascending, then event ID ascending.
func comparePower(a, b powerItem) int {
	if c := cmp.Compare(b.power, a.power); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ts, b.ts); c != 0 {
		return c
	}
	return cmp.Compare(a.id, b.id)
}

// powerHeap is a min-heap of Kahn's candidate events under comparePower.
type powerHeap []powerItem

func (h powerHeap) Len() int           { return len(h) }
func (h powerHeap) Less(i, j int) bool { return comparePower(h[i], h[j]) < 0 }
func (h powerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *powerHeap) Push(x any)        { *h = append(*h, x.(powerItem)) }
func (h *powerHeap) Pop() any {
	old := *h
	item := old[len(old)-1]
	*h = old[:len(old)-1]
	return item
}

// authDAG is the auth DAG restricted to a set of events: parents come before children.
type authDAG struct {
	children map[id.EventID][]id.EventID
	inDegree map[id.EventID]int
}

// restrictedDAG links each event of set to its nearest ancestors in set, walking
// through auth events outside set, so the order keeps every auth-chain relation
// between members and not only direct auth_events links.
func (r *resolver) restrictedDAG(set eventSet) authDAG {
	dag := authDAG{children: make(map[id.EventID][]id.EventID), inDegree: make(map[id.EventID]int, len(set))}
	reaches := newAncestry(r.g, set)
	for evtID := range set {
		dag.inDegree[evtID] = 0
	}
	seen := make(map[id.EventID]id.EventID) // event -> child whose walk last visited it
	for child := range set {
		stack := slices.Clone(r.authEventsOf(child))
		for len(stack) > 0 {
			cur := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[cur] == child {
				continue
			}
			seen[cur] = child
			if set.has(cur) {
				dag.children[cur] = append(dag.children[cur], child)
				dag.inDegree[child]++
			} else if reaches.below(cur) {
				stack = append(stack, r.authEventsOf(cur)...)
			}
		}
	}
	return dag
}

// authEventsOf returns the auth_events of a loaded event, or nil.
func (r *resolver) authEventsOf(evtID id.EventID) []id.EventID {
	if evt := r.g.get(evtID); evt != nil {
		return evt.AuthEvents
	}
	return nil
}

// reverseTopologicalPowerSort orders set by Kahn's algorithm over the auth DAG,
// always taking the smallest candidate under comparePower. Every event of set
// must be loaded.
func (r *resolver) reverseTopologicalPowerSort(set eventSet) ([]id.EventID, error) {
	items := make(map[id.EventID]powerItem, len(set))
	for evtID := range set {
		evt := r.g.get(evtID)
		power, err := r.senderPower(evt)
		if err != nil {
			return nil, err
		}
		items[evtID] = powerItem{id: evtID, power: power, ts: evt.OriginServerTS}
	}
	dag := r.restrictedDAG(set)
	ready := make(powerHeap, 0, len(set))
	for evtID, degree := range dag.inDegree {
		if degree == 0 {
			ready = append(ready, items[evtID])
		}
	}
	heap.Init(&ready)
	out := make([]id.EventID, 0, len(set))
	for ready.Len() > 0 {
		next := heap.Pop(&ready).(powerItem)
		out = append(out, next.id)
		for _, child := range dag.children[next.id] {
			if dag.inDegree[child]--; dag.inDegree[child] == 0 {
				heap.Push(&ready, items[child])
			}
		}
	}
	if len(out) != len(set) {
		return nil, fmt.Errorf("%w among %d power events", ErrAuthCycle, len(set)-len(out))
	}
	return out, nil
}

// noMainlinePosition is the position of events whose power levels chain never meets the mainline.
const noMainlinePosition = math.MaxInt

// mainlineItem is one event's mainline ordering key.
type mainlineItem struct {
	id       id.EventID
	position int
	ts       int64
}

// mainlineSort orders events by the mainline of the power levels event plID
// (empty for none): mainline position descending, then origin_server_ts
// ascending, then event ID ascending.
func (r *resolver) mainlineSort(events []id.EventID, plID id.EventID) ([]id.EventID, error) {
	mainline, err := r.mainline(plID)
	if err != nil {
		return nil, err
	}
	memo := make(map[id.EventID]int)
	items := make([]mainlineItem, 0, len(events))
	for _, evtID := range events {
		evt := r.g.get(evtID)
		position, err := r.mainlinePosition(evtID, mainline, memo)
		if err != nil {
			return nil, err
		}
		items = append(items, mainlineItem{id: evtID, position: position, ts: evt.OriginServerTS})
	}
	slices.SortFunc(items, func(a, b mainlineItem) int {
		if c := cmp.Compare(b.position, a.position); c != 0 {
			return c
		}
		if c := cmp.Compare(a.ts, b.ts); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	out := make([]id.EventID, len(items))
	for i, item := range items {
		out[i] = item.id
	}
	return out, nil
}

// mainline returns the index of each event in the mainline of plID:
// plID at 0, the power levels event in its auth events at 1, and so on.
func (r *resolver) mainline(plID id.EventID) (map[id.EventID]int, error) {
	mainline := make(map[id.EventID]int)
	for cur := plID; cur != ""; {
		if _, loop := mainline[cur]; loop {
			break
		}
		mainline[cur] = len(mainline)
		evt, err := r.g.fetch(cur)
		if err != nil || evt == nil {
			return mainline, err
		}
		if cur, _, err = r.g.authEventOfType(evt, powerLevelsKey); err != nil {
			return nil, err
		}
	}
	return mainline, nil
}

// mainlinePosition returns the mainline index of the first power levels event
// in evtID's chain of power levels auth events (evtID itself excluded), or
// noMainlinePosition. memo caches, per power levels event, the answer for the
// chain starting at (and including) it, so shared chains are walked once.
func (r *resolver) mainlinePosition(evtID id.EventID, mainline, memo map[id.EventID]int) (int, error) {
	evt, err := r.g.fetch(evtID)
	if err != nil || evt == nil {
		return noMainlinePosition, err
	}
	cur, _, err := r.g.authEventOfType(evt, powerLevelsKey)
	if err != nil {
		return 0, err
	}
	var path []id.EventID
	position := noMainlinePosition
	onPath := make(eventSet)
	for cur != "" && !onPath.has(cur) {
		if i, ok := mainline[cur]; ok {
			position = i
			break
		}
		if i, ok := memo[cur]; ok {
			position = i
			break
		}
		path = append(path, cur)
		onPath.add(cur)
		plEvt, err := r.g.fetch(cur)
		if err != nil {
			return 0, err
		} else if plEvt == nil {
			break
		}
		if cur, _, err = r.g.authEventOfType(plEvt, powerLevelsKey); err != nil {
			return 0, err
		}
	}
	for _, walked := range path {
		memo[walked] = position
	}
	return position, nil
}
