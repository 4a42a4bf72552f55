package stateres

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha1"
	"slices"

	"maunium.net/go/mautrix/id"
)

// resolveV1 runs the room version 1 state resolution algorithm: power levels,
// then join rules, then membership conflicts are resolved by replaying each
// key's events in (depth, sha1) order until one fails authorization; every other
// conflict takes the deepest event that passes authorization.
func resolveV1(ctx context.Context, version id.RoomVersion, sets []StateMap, src Source) (StateMap, error) {
	p := partitionSets(sets, false)
	if len(p.conflicted) == 0 {
		return p.unconflicted, nil
	}
	r := newResolver(ctx, version, src)
	all := make([]id.EventID, 0, 2*len(p.conflicted))
	for _, ids := range p.conflicted {
		all = append(all, ids...)
	}
	if err := r.g.load(all); err != nil {
		return nil, err
	}
	resolved := p.unconflicted // R: grows into the result
	for _, group := range v1Groups(p.conflicted) {
		// Keys of one group are resolved against R as it stood before the
		// group, so that the outcome does not depend on the order of keys.
		winners := make(StateMap, len(group.keys))
		for _, key := range group.keys {
			winner, err := group.resolve(r, resolved, key, p.conflicted[key])
			if err != nil {
				return nil, err
			}
			if winner != "" {
				winners[key] = winner
			}
		}
		for key, winner := range winners {
			resolved[key] = winner
		}
	}
	return resolved, nil
}

// v1Group is one pass of the v1 algorithm: the conflicted keys it covers and
// how each is resolved.
type v1Group struct {
	keys    []StateKey
	resolve func(r *resolver, resolved StateMap, key StateKey, ids []id.EventID) (id.EventID, error)
}

// v1Groups splits the conflicted keys into the passes of the v1 algorithm, in order.
func v1Groups(conflicted map[StateKey][]id.EventID) []v1Group {
	groups := []v1Group{
		{resolve: (*resolver).resolveV1AuthConflict},
		{resolve: (*resolver).resolveV1AuthConflict},
		{resolve: (*resolver).resolveV1AuthConflict},
		{resolve: (*resolver).resolveV1NormalConflict},
	}
	for key := range conflicted {
		i := 3
		switch key.Type {
		case powerLevelsKey.Type:
			i = 0
		case joinRulesKey.Type:
			i = 1
		case memberType:
			i = 2
		}
		groups[i].keys = append(groups[i].keys, key)
	}
	for _, group := range groups {
		slices.SortFunc(group.keys, func(a, b StateKey) int {
			return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.StateKey, b.StateKey))
		})
	}
	return groups
}

// v1Candidate is a conflicting event with its v1 sort key.
type v1Candidate struct {
	id    id.EventID
	depth int64
	sha1  [sha1.Size]byte
}

// v1Candidates returns the loaded state events of ids sorted by ascending depth,
// then descending sha1(event_id).
func (r *resolver) v1Candidates(ids []id.EventID) []v1Candidate {
	out := make([]v1Candidate, 0, len(ids))
	for _, evtID := range ids {
		if evt := r.g.get(evtID); evt != nil && evt.StateKey != nil {
			out = append(out, v1Candidate{id: evtID, depth: evt.Depth, sha1: sha1.Sum([]byte(evtID))})
		}
	}
	slices.SortFunc(out, func(a, b v1Candidate) int {
		return cmp.Or(cmp.Compare(a.depth, b.depth), bytes.Compare(b.sha1[:], a.sha1[:]))
	})
	return out
}

// resolveV1AuthConflict resolves a conflict of an auth-affecting key: the first
// candidate is taken as is, then each next one replaces it while it passes
// authorization against R, stopping at the first that fails.
func (r *resolver) resolveV1AuthConflict(resolved StateMap, key StateKey, ids []id.EventID) (id.EventID, error) {
	candidates := r.v1Candidates(ids)
	if len(candidates) == 0 {
		return "", nil
	}
	view := newAuthState(resolved)
	view.set(key, candidates[0].id)
	for _, candidate := range candidates[1:] {
		allowed, err := r.allowedInState(candidate.id, view)
		if err != nil {
			return "", err
		}
		if !allowed {
			break
		}
		view.set(key, candidate.id)
	}
	winner, _ := view.get(key)
	return winner, nil
}

// resolveV1NormalConflict picks the deepest candidate (lowest sha1 on ties) that
// passes authorization against R; if none does, the key is left out.
func (r *resolver) resolveV1NormalConflict(resolved StateMap, _ StateKey, ids []id.EventID) (id.EventID, error) {
	candidates := r.v1Candidates(ids)
	view := newAuthState(resolved)
	for i := len(candidates) - 1; i >= 0; i-- {
		allowed, err := r.allowedInState(candidates[i].id, view)
		if err != nil {
			return "", err
		}
		if allowed {
			return candidates[i].id, nil
		}
	}
	return "", nil
}

// allowedInState reports whether a loaded event passes authorization with its
// auth events taken from state alone.
func (r *resolver) allowedInState(evtID id.EventID, state *authState) (bool, error) {
	if err := r.ctx.Err(); err != nil {
		return false, err
	}
	evt := r.g.get(evtID)
	authEvents, err := r.stateSelectedAuthEvents(evt, state)
	if err != nil {
		return false, err
	}
	return r.authorize(evt, authEvents) == nil, nil
}
