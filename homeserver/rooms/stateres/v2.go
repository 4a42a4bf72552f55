package stateres

import (
	"context"
	"slices"

	"maunium.net/go/mautrix/id"
)

// resolveV2 runs state resolution v2, or v2.1 when v21 is set (see the package doc).
func resolveV2(ctx context.Context, version id.RoomVersion, v21 bool, sets []StateMap, src Source) (StateMap, error) {
	p := partitionSets(sets, true)
	if len(p.conflicted) == 0 {
		return p.unconflicted, nil
	}
	r := newResolver(ctx, version, src)
	fcs, err := r.fullConflictedSet(p, v21)
	if err != nil {
		return nil, err
	}
	// Step 1: the power events and their auth chains within the full conflicted set.
	powerSet := r.powerClosure(fcs)
	powerOrder, err := r.reverseTopologicalPowerSort(powerSet)
	if err != nil {
		return nil, err
	}
	// Step 2: v2 starts from the unconflicted state map, v2.1 from an empty one.
	start := p.unconflicted
	if v21 {
		start = StateMap{}
	}
	state := newAuthState(start)
	if err = r.iterativeAuthChecks(state, powerOrder); err != nil {
		return nil, err
	}
	// Step 3: everything else, by the mainline of the resolved power levels.
	plID, _ := state.get(powerLevelsKey)
	rest, err := r.mainlineSort(sortedDifference(fcs, powerSet), plID)
	if err != nil {
		return nil, err
	}
	// Step 4: authorize them in that order on top of the partial state.
	if err = r.iterativeAuthChecks(state, rest); err != nil {
		return nil, err
	}
	// Step 5: the unconflicted state map wins wherever it has an entry.
	return overlayUnconflicted(p.unconflicted, state.over), nil
}

// overlayUnconflicted adds the resolved entries to the unconflicted state map
// (which the caller owns and gives up) wherever it has none.
func overlayUnconflicted(unconflicted, resolved StateMap) StateMap {
	for key, evtID := range resolved {
		if _, ok := unconflicted[key]; !ok {
			unconflicted[key] = evtID
		}
	}
	return unconflicted
}

// sortedDifference returns the events of a that are not in b, sorted by ID.
func sortedDifference(a, b eventSet) []id.EventID {
	out := make([]id.EventID, 0, len(a))
	for evtID := range a {
		if !b.has(evtID) {
			out = append(out, evtID)
		}
	}
	slices.Sort(out)
	return out
}

// fullConflictedSet returns the conflicted state set plus the auth difference
// (plus, in v2.1, the conflicted state subgraph), with every event loaded.
// Events the Source lacks, and non-state events, are dropped: they can be
// neither ordered nor authorized.
func (r *resolver) fullConflictedSet(p *partition, v21 bool) (eventSet, error) {
	conflicted := make(eventSet)
	for _, ids := range p.conflicted {
		for _, evtID := range ids {
			conflicted.add(evtID)
		}
	}
	authDiff, conflictedChains, err := r.authDifference(p)
	if err != nil {
		return nil, err
	}
	// Every walk below stays inside the conflicted events and their auth chains.
	toLoad := make(eventSet, len(conflicted)+len(conflictedChains))
	for _, set := range []eventSet{conflicted, conflictedChains} {
		for evtID := range set {
			toLoad.add(evtID)
		}
	}
	if err = r.g.loadSet(toLoad); err != nil {
		return nil, err
	}
	fcs := authDiff
	for evtID := range conflicted {
		fcs.add(evtID)
	}
	if v21 {
		for evtID := range r.conflictedSubgraph(conflicted, conflictedChains) {
			fcs.add(evtID)
		}
	}
	for evtID := range fcs {
		if _, ok := keyOf(r.g.get(evtID)); !ok {
			delete(fcs, evtID)
		}
	}
	return fcs, nil
}

// authDifference returns ∪Cᵢ − ∩Cᵢ, where Cᵢ is the full auth chain of set i,
// and the union of the conflicted events' auth chains.
//
// Every set contains the unconflicted state U, so Cᵢ = A ∪ Bᵢ with A the auth
// chain of U and Bᵢ that of set i's conflicted events. Then
// ∪Cᵢ − ∩Cᵢ = ∪Bᵢ − A − ∩Bᵢ: the (large) chain A is computed once and only
// used for membership tests, and only the (small) Bᵢ are computed per set.
func (r *resolver) authDifference(p *partition) (diff, union eventSet, err error) {
	unconflictedIDs := make([]id.EventID, 0, len(p.unconflicted))
	for _, evtID := range p.unconflicted {
		unconflictedIDs = append(unconflictedIDs, evtID)
	}
	common, err := r.g.authChain(unconflictedIDs)
	if err != nil {
		return nil, nil, err
	}
	chains := make([]map[id.EventID]struct{}, len(p.perSet))
	union = make(eventSet)
	for i, ids := range p.perSet {
		if chains[i], err = r.g.authChain(ids); err != nil {
			return nil, nil, err
		}
		for evtID := range chains[i] {
			union.add(evtID)
		}
	}
	diff = make(eventSet)
	for evtID := range union {
		if _, inCommon := common[evtID]; !inCommon && !inEvery(chains, evtID) {
			diff.add(evtID)
		}
	}
	return diff, union, nil
}

// inEvery reports whether evtID is in every chain.
func inEvery(chains []map[id.EventID]struct{}, evtID id.EventID) bool {
	for _, chain := range chains {
		if _, ok := chain[evtID]; !ok {
			return false
		}
	}
	return true
}

// conflictedSubgraph returns the events, other than conflicted ones, that lie on
// an auth_events path between two conflicted events: those in the auth chain of
// a conflicted event (chains) that have a conflicted event in their own auth chain.
func (r *resolver) conflictedSubgraph(conflicted, chains eventSet) eventSet {
	reaches := newAncestry(r.g, conflicted)
	out := make(eventSet)
	for evtID := range chains {
		if !conflicted.has(evtID) && reaches.below(evtID) {
			out.add(evtID)
		}
	}
	return out
}

// powerClosure returns the power events of fcs together with every event of
// fcs in their auth chains. The walk follows the whole auth chain, not only
// links between members of fcs, since a member may sit behind a non-member.
func (r *resolver) powerClosure(fcs eventSet) eventSet {
	closure := make(eventSet)
	var stack []id.EventID
	for evtID := range fcs {
		if isPowerEvent(r.g.get(evtID)) {
			closure.add(evtID)
			stack = append(stack, evtID)
		}
	}
	visited := make(eventSet)
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, authID := range r.authEventsOf(cur) {
			if visited.has(authID) {
				continue
			}
			visited.add(authID)
			if fcs.has(authID) {
				closure.add(authID)
			}
			stack = append(stack, authID)
		}
	}
	return closure
}
