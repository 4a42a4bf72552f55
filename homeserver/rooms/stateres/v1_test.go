package stateres

import (
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestResolveV1(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(t *testing.T) (*testRoom, []StateMap, StateMap)
	}{
		{"deeper topic wins regardless of timestamp", v1DeeperTopic},
		{"equal depth: lowest sha1(event_id) wins", v1TopicSHA1},
		{"power levels replay stops at the first unauthorized event", v1PowerLevelsStop},
		{"power levels replay: a deeper authorized change replaces the first", v1PowerLevelsReplace},
		{"ban vs rename: the rename fails after the ban", v1BanVsRename},
		{"key missing from a set is not a conflict", v1MissingKeyIsNoConflict},
		{"other conflict: deepest event passing auth wins", v1FallbackToAuthorized},
		{"other conflict: no event passes auth, key left out", v1NothingPasses},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, sets, want := tc.build(t)
			assertState(t, mustResolve(t, r, sets...), want)
			reversed := make([]StateMap, 0, len(sets))
			for i := len(sets) - 1; i >= 0; i-- {
				reversed = append(reversed, sets[i])
			}
			assertState(t, mustResolve(t, r, reversed...), want)
		})
	}
}

// v1Room is standardRoom in room version 1 with power levels sendable at 50.
func v1Room(t *testing.T) (*testRoom, *branch) {
	r, main := newTestRoom(t, id.RoomV1, nil)
	main.member("alice-join", alice, alice, "join")
	main.pl("pl0", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 50}, map[string]any{"events": map[string]int{"m.room.power_levels": 50}}))
	main.joinRules("jr-public", alice, "public")
	main.member("bob-join", bob, bob, "join")
	main.member("carol-join", carol, carol, "join")
	return r, main
}

func v1DeeperTopic(t *testing.T) (*testRoom, []StateMap, StateMap) {
	r, main := v1Room(t)
	a, b := main.fork(), main.fork()
	a.topic("topic-a1", alice, "a1", at(later+1))
	a.topic("topic-a2", alice, "a2", at(later+2))
	b.topic("topic-b", bob, "b", at(later+1000))
	return r, []StateMap{a.state, b.state}, a.state
}

func v1TopicSHA1(t *testing.T) (*testRoom, []StateMap, StateMap) {
	r, main := v1Room(t)
	a, b := main.fork(), main.fork()
	a.topic("topic-x", alice, "x")
	b.topic("topic-y", bob, "y") // sha1("$topic-y") = 120c… < sha1("$topic-x") = 1c3e…
	return r, []StateMap{a.state, b.state}, b.state
}

// v1PowerLevelsStop: pl-demote (shallower) is taken first; bob's deeper change is
// then checked against it, fails since bob is demoted, and the replay stops.
func v1PowerLevelsStop(t *testing.T) (*testRoom, []StateMap, StateMap) {
	r, main := v1Room(t)
	levels := map[string]any{"events": map[string]int{"m.room.power_levels": 50}}
	a, b := main.fork(), main.fork()
	a.pl("pl-demote", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 0}, levels))
	b.topic("topic-b", bob, "b")
	b.pl("pl-bob", bob, r.plContent(map[id.UserID]int{alice: 100, bob: 50}, withKey(levels, "events_default", 10)))
	// bob's topic is not an auth conflict: it is only in b, so it is kept unchecked.
	return r, []StateMap{a.state, b.state}, with(a.state, r.event("topic-b"))
}

// v1PowerLevelsReplace: alice's shallower change is taken first; bob's deeper one
// passes against it and replaces it.
func v1PowerLevelsReplace(t *testing.T) (*testRoom, []StateMap, StateMap) {
	r, main := v1Room(t)
	levels := map[string]any{"events": map[string]int{"m.room.power_levels": 50}}
	users := map[id.UserID]int{alice: 100, bob: 50}
	a, b := main.fork(), main.fork()
	a.pl("pl-alice", alice, r.plContent(users, withKey(levels, "events_default", 5)))
	b.send("mark-bob", bob, "org.example.marker", string(bob), map[string]any{})
	bobPL := b.pl("pl-bob", bob, r.plContent(users, withKey(levels, "kick", 40)))
	return r, []StateMap{a.state, b.state}, with(b.state, bobPL)
}

func v1BanVsRename(t *testing.T) (*testRoom, []StateMap, StateMap) {
	r, main := v1Room(t)
	a, b := main.fork(), main.fork()
	a.member("ban-bob", alice, bob, "ban")
	b.send("mark-bob", bob, "org.example.marker", string(bob), map[string]any{})
	b.send("bob-rename", bob, "m.room.member", string(bob), map[string]any{"membership": "join", "displayname": "B"})
	// The marker exists only in b and is kept, although bob is banned in the result.
	return r, []StateMap{a.state, b.state}, with(a.state, r.event("mark-bob"))
}

// v1MissingKeyIsNoConflict: bob's topic exists only in fork a and is kept
// without any check, although bob is demoted in the result; state res v2 treats
// the missing key as a conflict and drops the topic.
func v1MissingKeyIsNoConflict(t *testing.T) (*testRoom, []StateMap, StateMap) {
	r, main := v1Room(t)
	a, b := main.fork(), main.fork()
	a.topic("topic-bob", bob, "bob's")
	b.pl("pl-demote", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 0}, nil))
	return r, []StateMap{a.state, b.state}, with(a.state, r.event("pl-demote"))
}

func TestMissingKeyIsAConflictInV2(t *testing.T) {
	r, main := standardRoom(t, id.RoomV11)
	a, b := main.fork(), main.fork()
	a.topic("topic-bob", bob, "bob's")
	b.pl("pl-demote", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 0}, nil))
	assertState(t, mustResolve(t, r, a.state, b.state), b.state)
}

// v1FallbackToAuthorized: bob's topics are deeper, but after the power levels
// conflict resolves to bob's demotion they fail; alice's older topic passes.
func v1FallbackToAuthorized(t *testing.T) (*testRoom, []StateMap, StateMap) {
	r, main := v1Room(t)
	main.topic("topic0", alice, "original")
	a, b, c := main.fork(), main.fork(), main.fork()
	a.topic("topic-a", bob, "a")
	b.topic("topic-b", bob, "b")
	c.pl("pl-demote", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 0}, nil))
	return r, []StateMap{a.state, b.state, c.state}, c.state
}

// v1NothingPasses: as v1FallbackToAuthorized without an older topic: neither
// candidate passes and the topic is left out.
func v1NothingPasses(t *testing.T) (*testRoom, []StateMap, StateMap) {
	r, main := v1Room(t)
	a, b, c := main.fork(), main.fork(), main.fork()
	a.topic("topic-a", bob, "a")
	b.topic("topic-b", bob, "b")
	c.pl("pl-demote", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 0}, nil))
	return r, []StateMap{a.state, b.state, c.state}, c.state
}
