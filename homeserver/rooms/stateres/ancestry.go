package stateres

import "maunium.net/go/mautrix/id"

// Memo states of ancestry.below.
const (
	memoUnknown uint8 = iota
	memoVisiting
	memoYes
	memoNo
)

// ancestry answers, with memoization, whether an event has some event of
// targets strictly below it in the auth DAG (in its auth chain). It walks only
// events already loaded into the graph; missing events end a path.
type ancestry struct {
	g       *graph
	targets eventSet
	memo    map[id.EventID]uint8
}

// newAncestry prepares reachability queries towards targets.
func newAncestry(g *graph, targets eventSet) *ancestry {
	return &ancestry{g: g, targets: targets, memo: make(map[id.EventID]uint8)}
}

// below reports whether a target is in evtID's auth chain. An auth cycle
// (impossible for hash-referenced events, possible for malformed input) is cut
// where it is entered, so the walk always terminates.
func (a *ancestry) below(evtID id.EventID) bool {
	switch a.memo[evtID] {
	case memoYes:
		return true
	case memoNo, memoVisiting:
		return false
	}
	a.memo[evtID] = memoVisiting
	found := false
	if evt := a.g.get(evtID); evt != nil {
		for _, authID := range evt.AuthEvents {
			if a.targets.has(authID) || a.below(authID) {
				found = true
				break
			}
		}
	}
	if found {
		a.memo[evtID] = memoYes
	} else {
		a.memo[evtID] = memoNo
	}
	return found
}
