package stateres

import (
	"context"
	"testing"

	"maunium.net/go/mautrix/id"
)

// stateResetRoom builds the motivating case of the conflicted state subgraph.
// alice (pl1: bob 50, power levels need 50) promotes bob to 100 (pl2), after
// which dave joins (citing pl2) and bob raises ban to 100 (pl3). A faulty
// server's state set has been reset to pl1 while keeping dave's join. pl2 lies
// on the auth path pl3 → pl2 → pl1 between the two conflicted events, but it is
// in every set's auth chain (through dave's join), so only v2.1 considers it.
func stateResetRoom(t *testing.T, version id.RoomVersion) (r *testRoom, good, reset StateMap) {
	r, main := newTestRoom(t, version, nil)
	main.member("alice-join", alice, alice, "join")
	levels := map[string]any{"events": map[string]int{"m.room.power_levels": 50}}
	main.pl("pl1", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 50}, levels))
	main.joinRules("jr-public", alice, "public")
	main.member("bob-join", bob, bob, "join")
	main.pl("pl2", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 100}, levels))
	main.member("dave-join", dave, dave, "join")
	main.pl("pl3", bob, r.plContent(map[id.UserID]int{alice: 100, bob: 100}, withKey(levels, "ban", 100)))
	reset = with(main.state, r.event("pl1"))
	return r, main.state, reset
}

func TestConflictedSubgraphPullsInIntermediateEvent(t *testing.T) {
	for _, tc := range []struct {
		version        id.RoomVersion
		wantSubgraph   bool
		wantPL         string
		explainOutcome string
	}{
		{id.RoomV11, false, "pl1", "v2 checks pl3 against pl1, where bob has 50: the reset sticks"},
		{id.RoomV12, true, "pl3", "v2.1 replays pl1 → pl2 → pl3: the reset is repaired"},
	} {
		t.Run("v"+string(tc.version), func(t *testing.T) {
			r, good, reset := stateResetRoom(t, tc.version)
			res := newResolver(context.Background(), tc.version, r.source())
			fcs, err := res.fullConflictedSet(partitionSets([]StateMap{good, reset}, true), tc.version == id.RoomV12)
			if err != nil {
				t.Fatal(err)
			}
			if got := fcs.has("$pl2"); got != tc.wantSubgraph {
				t.Errorf("pl2 in full conflicted set = %v, want %v", got, tc.wantSubgraph)
			}
			want := with(good, r.event(tc.wantPL))
			assertState(t, mustResolve(t, r, good, reset), want)
			assertState(t, mustResolve(t, r, reset, good), want)
		})
	}
}

// leftAdminRoom: bob, an admin, changes the power levels and, concurrently,
// leaves. One state set merged both; the other only has the leave. bob's leave
// is unconflicted.
func leftAdminRoom(t *testing.T, version id.RoomVersion) (r *testRoom, merged, leaveOnly StateMap) {
	r, main := newTestRoom(t, version, nil)
	main.member("alice-join", alice, alice, "join")
	users := map[id.UserID]int{alice: 100, bob: 100}
	main.pl("pl0", alice, r.plContent(users, nil))
	main.joinRules("jr-public", alice, "public")
	main.member("bob-join", bob, bob, "join")
	a, leave := main.fork(), main.fork()
	a.pl("pl-bob", bob, r.plContent(users, map[string]any{"state_default": 60}), at(later+1))
	leave.member("bob-leave", bob, bob, "leave", at(later+2))
	return r, with(a.state, r.event("bob-leave")), leave.state
}

func TestEmptyStartingStateMatters(t *testing.T) {
	// v2 authorizes bob's power levels event against the unconflicted state,
	// where bob has already left, and drops it. v2.1 starts from the empty map,
	// so bob's membership comes from the event's own auth events (his join),
	// and the change he made while still in the room stands.
	for _, tc := range []struct {
		version id.RoomVersion
		wantPL  string
	}{
		{id.RoomV11, "pl0"},
		{id.RoomV12, "pl-bob"},
	} {
		t.Run("v"+string(tc.version), func(t *testing.T) {
			r, merged, leaveOnly := leftAdminRoom(t, tc.version)
			want := with(leaveOnly, r.event(tc.wantPL))
			assertState(t, mustResolve(t, r, merged, leaveOnly), want)
			assertState(t, mustResolve(t, r, leaveOnly, merged), want)
		})
	}
}

// creatorsRoom: bob (100) and dave change power levels concurrently, bob
// earlier. With privileged creators (v12) dave is an additional creator of
// infinite power; otherwise he is a plain admin at 100.
func creatorsRoom(t *testing.T, version id.RoomVersion) (r *testRoom, a, b *branch) {
	var extra map[string]any
	users := map[id.UserID]int{alice: 100, bob: 100, dave: 100}
	if version.PrivilegedRoomCreators() {
		extra = map[string]any{"additional_creators": []id.UserID{dave}}
		users = map[id.UserID]int{bob: 100}
	}
	r, main := newTestRoom(t, version, extra)
	main.member("alice-join", alice, alice, "join")
	main.pl("pl0", alice, r.plContent(users, nil))
	main.joinRules("jr-public", alice, "public")
	main.member("bob-join", bob, bob, "join")
	main.member("dave-join", dave, dave, "join")
	// Markers cite both joins, keeping them out of the auth difference.
	main.send("mark-bob", bob, "org.example.marker", string(bob), map[string]any{})
	main.send("mark-dave", dave, "org.example.marker", string(dave), map[string]any{})
	a, b = main.fork(), main.fork()
	a.pl("pl-bob", bob, r.plContent(users, map[string]any{"kick": 60}), at(later+10))
	b.pl("pl-dave", dave, r.plContent(users, map[string]any{"redact": 60}), at(later+20))
	return r, a, b
}

func TestCreatorsHaveInfinitePower(t *testing.T) {
	// v11: equal power, so bob's older event sorts first and dave's lands last.
	// v12: dave, an additional creator, sorts first despite his later
	// timestamp, and bob's compatible change lands last.
	for _, tc := range []struct {
		version id.RoomVersion
		wantPL  string
	}{
		{id.RoomV11, "pl-dave"},
		{id.RoomV12, "pl-bob"},
	} {
		t.Run("v"+string(tc.version), func(t *testing.T) {
			r, a, b := creatorsRoom(t, tc.version)
			want := with(a.state, r.event(tc.wantPL))
			assertState(t, mustResolve(t, r, a.state, b.state), want)
			assertState(t, mustResolve(t, r, b.state, a.state), want)
		})
	}
}

func TestSenderPowerOfCreators(t *testing.T) {
	r, _, _ := creatorsRoom(t, id.RoomV12)
	res := newResolver(context.Background(), r.version, r.source())
	for _, tc := range []struct {
		event string
		want  int64
	}{
		{"alice-join", infinitePower}, // sender of the create event
		{"dave-join", infinitePower},  // listed in additional_creators
		{"pl-bob", 100},
		{"mark-bob", 100},
	} {
		got, err := res.senderPower(r.event(tc.event))
		if err != nil || got != tc.want {
			t.Errorf("senderPower(%s) = %d, %v; want %d", tc.event, got, err, tc.want)
		}
	}
	create, err := res.senderPower(r.byID[r.createID])
	if err != nil || create != infinitePower {
		t.Errorf("senderPower(create) = %d, %v; want infinite", create, err)
	}
}
