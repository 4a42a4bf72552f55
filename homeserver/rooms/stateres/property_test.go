package stateres

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"maunium.net/go/mautrix/id"
)

// randomUsers are the members of random rooms; alice creates them.
var randomUsers = []id.UserID{alice, bob, carol, dave, eve, frank}

// randomRoom grows a random room: a common history, then forks that each try
// random actions (kept only if eventauth allows them against the fork's state),
// occasionally forking again. It returns the states of 2–4 of the forks.
func randomRoom(t *testing.T, rng *rand.Rand, version id.RoomVersion) (*testRoom, []StateMap) {
	r, main := newTestRoom(t, version, nil)
	main.member("alice-join", alice, alice, "join")
	main.pl("pl0", alice, r.plContent(randomLevels(rng), map[string]any{"events": map[string]int{"m.room.power_levels": 50}}))
	main.joinRules("jr0", alice, "public")
	for _, user := range randomUsers[1:] {
		if rng.IntN(4) > 0 {
			main.member(string(user.Localpart())+"-join", user, user, "join")
		}
	}
	branches := []*branch{main.fork(), main.fork()}
	for i := range 6 + rng.IntN(20) {
		b := branches[rng.IntN(len(branches))]
		if rng.IntN(6) == 0 {
			branches = append(branches, b.fork())
			continue
		}
		randomAction(r, b, rng, fmt.Sprintf("e%d", i))
	}
	rng.Shuffle(len(branches), func(i, j int) { branches[i], branches[j] = branches[j], branches[i] })
	sets := make([]StateMap, 0, 4)
	for _, b := range branches[:min(len(branches), 2+rng.IntN(3))] {
		sets = append(sets, b.state)
	}
	return r, sets
}

// randomLevels returns random user levels for the non-creator users.
func randomLevels(rng *rand.Rand) map[id.UserID]int {
	levels := map[id.UserID]int{alice: 100}
	for _, user := range randomUsers[1:] {
		levels[user] = []int{0, 0, 50, 100}[rng.IntN(4)]
	}
	return levels
}

// randomAction tries one random event on b. Timestamps are drawn from a small
// range so that ties (broken by event ID) happen.
func randomAction(r *testRoom, b *branch, rng *rand.Rand, name string) {
	sender := randomUsers[rng.IntN(len(randomUsers))]
	target := randomUsers[rng.IntN(len(randomUsers))]
	opts := []sendOpt{mayFail(), at(later + int64(rng.IntN(8)))}
	switch rng.IntN(6) {
	case 0:
		b.topic(name, sender, name, opts...)
	case 1:
		membership := []string{"join", "leave", "ban", "invite"}[rng.IntN(4)]
		if membership == "join" {
			target = sender
		}
		b.member(name, sender, target, membership, opts...)
	case 2:
		b.pl(name, sender, r.plContent(randomLevels(rng), map[string]any{
			"events": map[string]int{"m.room.power_levels": 50}, "kick": []int{0, 50, 100}[rng.IntN(3)],
		}), opts...)
	case 3:
		b.joinRules(name, sender, []string{"public", "invite"}[rng.IntN(2)], opts...)
	case 4:
		b.member(name, sender, sender, "leave", opts...)
	default:
		b.member(name, target, target, "join", opts...)
	}
}

// shuffledSource returns a MemorySource built from the room's events in random order.
func shuffledSource(r *testRoom, rng *rand.Rand) *MemorySource {
	events := slices.Clone(r.events)
	rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	return NewMemorySource(events)
}

// rebuilt copies set, inserting its entries in random order.
func rebuilt(set StateMap, rng *rand.Rand) StateMap {
	keys := slices.Collect(maps.Keys(set))
	slices.SortFunc(keys, func(a, b StateKey) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.StateKey, b.StateKey))
	})
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	out := make(StateMap, len(keys))
	for _, key := range keys {
		out[key] = set[key]
	}
	return out
}

func TestResolveIsOrderIndependent(t *testing.T) {
	const roomsPerVersion = 60
	for _, version := range []id.RoomVersion{id.RoomV1, id.RoomV6, id.RoomV10, id.RoomV11, id.RoomV12} {
		t.Run("v"+string(version), func(t *testing.T) {
			for seed := range uint64(roomsPerVersion) {
				rng := rand.New(rand.NewPCG(seed, uint64(len(version))))
				r, sets := randomRoom(t, rng, version)
				checkOrderIndependence(t, rng, r, sets, seed)
			}
		})
	}
}

// checkOrderIndependence resolves sets in several orders, with maps and the
// source built in random order, and expects one answer.
func checkOrderIndependence(t *testing.T, rng *rand.Rand, r *testRoom, sets []StateMap, seed uint64) {
	t.Helper()
	ctx := context.Background()
	want, err := Resolve(ctx, r.version, sets, r.source())
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	for range 4 {
		perm := make([]StateMap, len(sets))
		for i, j := range rng.Perm(len(sets)) {
			perm[i] = rebuilt(sets[j], rng)
		}
		got, err := Resolve(ctx, r.version, perm, shuffledSource(r, rng))
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("seed %d: result depends on input order:\n got %v\nwant %v", seed, got, want)
		}
	}
	for _, set := range sets {
		for _, n := range []int{1, 3} {
			same := slices.Repeat([]StateMap{set}, n)
			got, err := Resolve(ctx, r.version, same, r.source())
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			if !maps.Equal(got, set) {
				t.Fatalf("seed %d: resolving %d identical set(s) changed it:\n got %v\nwant %v", seed, n, got, set)
			}
		}
	}
}

func TestRandomRoomsExerciseConflicts(t *testing.T) {
	// Guard against a generator that silently stops producing conflicts.
	conflicted, power := 0, 0
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 11))
		r, sets := randomRoom(t, rng, id.RoomV11)
		p := partitionSets(sets, true)
		conflicted += len(p.conflicted)
		for _, ids := range p.conflicted {
			for _, evtID := range ids {
				if isPowerEvent(r.byID[evtID]) {
					power++
				}
			}
		}
	}
	if conflicted < 40 || power < 20 {
		t.Fatalf("random rooms too tame: %d conflicted keys, %d conflicted power events", conflicted, power)
	}
}

func TestAuthDifferenceMatchesDefinition(t *testing.T) {
	// The resolver computes ∪Bᵢ − A − ∩Bᵢ; check it against the definition
	// ∪Cᵢ − ∩Cᵢ with every full auth chain Cᵢ computed from scratch, and the
	// conflicted state subgraph against a brute-force path check.
	ctx := context.Background()
	for seed := range uint64(80) {
		rng := rand.New(rand.NewPCG(seed, 12))
		r, sets := randomRoom(t, rng, id.RoomV12)
		src := r.source()
		p := partitionSets(sets, true)
		res := newResolver(ctx, r.version, src)
		got, _, err := res.authDifference(p)
		if err != nil {
			t.Fatal(err)
		}
		var chains []map[id.EventID]struct{}
		union := make(eventSet)
		for _, set := range sets {
			chain, _ := src.AuthChain(ctx, slices.Collect(maps.Values(set)))
			chains = append(chains, chain)
			for evtID := range chain {
				union.add(evtID)
			}
		}
		want := make(eventSet)
		for evtID := range union {
			if !inEvery(chains, evtID) {
				want.add(evtID)
			}
		}
		if !maps.Equal(got, want) {
			t.Fatalf("seed %d: auth difference = %v, want %v", seed, got, want)
		}
		checkSubgraph(t, seed, res, src, p)
	}
}

// checkSubgraph compares conflictedSubgraph with a brute-force evaluation of
// its definition: v is on a path c₁ → … → v → … → c₂ between conflicted events.
func checkSubgraph(t *testing.T, seed uint64, res *resolver, src *MemorySource, p *partition) {
	ctx := context.Background()
	conflicted := make(eventSet)
	for _, ids := range p.conflicted {
		for _, evtID := range ids {
			conflicted.add(evtID)
		}
	}
	below := make(eventSet) // events in the auth chain of some conflicted event
	for evtID := range conflicted {
		chain, _ := src.AuthChain(ctx, []id.EventID{evtID})
		for a := range chain {
			below.add(a)
		}
	}
	if err := res.g.loadSet(below); err != nil {
		t.Fatal(err)
	}
	want := make(eventSet)
	for v := range below {
		chain, _ := src.AuthChain(ctx, []id.EventID{v})
		for c := range conflicted {
			if _, ok := chain[c]; ok && !conflicted.has(v) {
				want.add(v)
			}
		}
	}
	if got := res.conflictedSubgraph(conflicted, below); !maps.Equal(got, want) {
		t.Fatalf("seed %d: conflicted subgraph = %v, want %v", seed, got, want)
	}
}
