package stateres

import (
	"slices"

	"maunium.net/go/mautrix/id"
)

// partition splits the input state sets into the part they agree on and the rest.
type partition struct {
	// unconflicted holds every key on which the sets agree. It is freshly
	// allocated, so the resolvers may grow it into their result.
	unconflicted StateMap
	// conflicted lists, per conflicted key, the distinct event IDs the sets hold for it.
	conflicted map[StateKey][]id.EventID
	// perSet lists, for each set, its events at conflicted keys.
	perSet [][]id.EventID
}

// partitionSets splits sets into unconflicted and conflicted state. When
// missingConflicts is true (state res v2), a key absent from some set is a
// conflict; otherwise (v1) only keys with two different event IDs are.
func partitionSets(sets []StateMap, missingConflicts bool) *partition {
	p := &partition{conflicted: make(map[StateKey][]id.EventID), perSet: make([][]id.EventID, len(sets))}
	if len(sets) == 0 {
		p.unconflicted = StateMap{}
		return p
	}
	base, others := sets[0], sets[1:]
	p.unconflicted = make(StateMap, len(base))
	conflictedKeys := make(map[StateKey]struct{})
	for key, evtID := range base {
		if agrees(others, key, evtID, missingConflicts) {
			p.unconflicted[key] = evtID
		} else {
			conflictedKeys[key] = struct{}{}
		}
	}
	p.classifyKeysMissingFromBase(sets, conflictedKeys, missingConflicts)
	for key := range conflictedKeys {
		p.conflicted[key] = distinctValues(sets, key)
	}
	for i, set := range sets {
		for key := range conflictedKeys {
			if evtID, ok := set[key]; ok {
				p.perSet[i] = append(p.perSet[i], evtID)
			}
		}
	}
	return p
}

// classifyKeysMissingFromBase sorts the keys that the first set lacks.
func (p *partition) classifyKeysMissingFromBase(sets []StateMap, conflictedKeys map[StateKey]struct{}, missingConflicts bool) {
	base := sets[0]
	for _, set := range sets[1:] {
		for key, evtID := range set {
			if _, inBase := base[key]; inBase {
				continue
			}
			if missingConflicts {
				conflictedKeys[key] = struct{}{}
				continue
			}
			if _, conflicted := conflictedKeys[key]; conflicted {
				continue
			}
			if prev, seen := p.unconflicted[key]; !seen {
				p.unconflicted[key] = evtID
			} else if prev != evtID {
				delete(p.unconflicted, key)
				conflictedKeys[key] = struct{}{}
			}
		}
	}
}

// agrees reports whether every set maps key to evtID; with missingConflicts
// false, sets lacking the key do not count against agreement.
func agrees(sets []StateMap, key StateKey, evtID id.EventID, missingConflicts bool) bool {
	for _, set := range sets {
		other, ok := set[key]
		if !ok && !missingConflicts {
			continue
		}
		if !ok || other != evtID {
			return false
		}
	}
	return true
}

// distinctValues returns the distinct event IDs the sets hold for key, sorted
// so that later steps never depend on the order of the input sets.
func distinctValues(sets []StateMap, key StateKey) []id.EventID {
	var out []id.EventID
	for _, set := range sets {
		if evtID, ok := set[key]; ok && !slices.Contains(out, evtID) {
			out = append(out, evtID)
		}
	}
	slices.Sort(out)
	return out
}
