package stateres

import (
	"testing"

	"maunium.net/go/mautrix/id"
)

// v2Versions are the room versions the shared v2/v2.1 scenarios run under.
var v2Versions = []id.RoomVersion{id.RoomV2, id.RoomV6, id.RoomV10, id.RoomV11, id.RoomV12}

// later is a timestamp after every event sent on the room clock; forks use
// later+n to control the order of concurrent events.
const later = 3_000_000_000_000

// scenario builds a forked room and returns the state sets and the expected resolution.
type scenario func(t *testing.T, version id.RoomVersion) (r *testRoom, sets []StateMap, want StateMap)

func TestResolveV2Scenarios(t *testing.T) {
	scenarios := []struct {
		name  string
		build scenario
	}{
		{"ban vs join race: ban wins", banVsJoin},
		{"ban wins even when the ban is older", banVsJoinBanOlder},
		{"PL race: demotion applied first rejects the demoted mod's change", demoteVsChange},
		{"PL race: higher power sorts first, so a compatible lower-power change lands last", powerBeatsTimestamp},
		{"PL race: equal power falls back to origin_server_ts", equalPowerTimestamp},
		{"PL race: equal power and timestamp fall back to event ID", equalPowerEventID},
		{"PL race: a low-power auth event in the auth difference delays its child", lowPowerJoinDelaysChild},
		{"topic fork: same mainline position, later timestamp wins", topicForkTimestamp},
		{"topic fork: event on the later mainline PL wins despite older timestamp", topicForkMainline},
		{"join rules changed to invite while someone joins: join rejected", joinRulesVsJoin},
		{"event failing auth against resolved state is dropped", topicByDemotedUser},
		{"kick vs rename in an invite-only room: kick wins", kickVsRename},
		{"kick vs rename in a public room: rename is a valid rejoin", kickVsRenamePublic},
		{"self-leave is ordered by timestamp: state set after leaving is dropped", leaveThenStatus},
		{"self-leave is ordered by timestamp: state set before leaving survives", statusThenLeave},
	}
	for _, sc := range scenarios {
		for _, version := range v2Versions {
			t.Run(sc.name+"/v"+string(version), func(t *testing.T) {
				r, sets, want := sc.build(t, version)
				assertState(t, mustResolve(t, r, sets...), want)
				// Swapping the sets must not matter.
				reversed := make([]StateMap, len(sets))
				for i, set := range sets {
					reversed[len(sets)-1-i] = set
				}
				assertState(t, mustResolve(t, r, reversed...), want)
			})
		}
	}
}

// banVsJoin: alice bans bob in one fork while bob changes his displayname in the other.
func banVsJoin(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := standardRoom(t, version)
	a, b := main.fork(), main.fork()
	a.member("ban-bob", alice, bob, "ban")
	b.send("bob-rename", bob, "m.room.member", string(bob), map[string]any{"membership": "join", "displayname": "Bobby"})
	return r, []StateMap{a.state, b.state}, a.state
}

// banVsJoinBanOlder: as banVsJoin, with the ban's timestamp before everything else in the fork.
func banVsJoinBanOlder(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := standardRoom(t, version)
	a, b := main.fork(), main.fork()
	b.send("bob-rename", bob, "m.room.member", string(bob), map[string]any{"membership": "join", "displayname": "Bobby"})
	b.topic("topic-b", bob, "bob was here")
	a.member("ban-bob", alice, bob, "ban", at(later+5))
	// bob's topic is authorized by his (banned) membership only in fork b, so it is dropped too.
	return r, []StateMap{a.state, b.state}, a.state
}

// demoteVsChange: alice demotes bob (who may send power levels) while bob changes
// events_default. alice's event sorts first (power 100 > 50), after which bob's fails.
func demoteVsChange(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := newTestRoom(t, version, nil)
	main.member("alice-join", alice, alice, "join")
	levels := map[string]any{"events": map[string]int{"m.room.power_levels": 50}}
	main.pl("pl0", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 50}, levels))
	main.joinRules("jr-public", alice, "public")
	main.member("bob-join", bob, bob, "join")
	a, b := main.fork(), main.fork()
	b.pl("pl-bob", bob, r.plContent(map[id.UserID]int{alice: 100, bob: 50}, withKey(levels, "events_default", 10)), at(later+1))
	a.pl("pl-alice", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 0}, levels), at(later+2))
	return r, []StateMap{a.state, b.state}, a.state
}

// powerBeatsTimestamp: bob (50) changes kick earlier, alice (100) changes
// events_default later. Sorting by power puts alice first; bob's change is still
// allowed against hers and, applied last, wins. Sorting by timestamp alone
// would have made alice's win.
func powerBeatsTimestamp(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := newTestRoom(t, version, nil)
	main.member("alice-join", alice, alice, "join")
	levels := map[string]any{"events": map[string]int{"m.room.power_levels": 50}}
	users := map[id.UserID]int{alice: 100, bob: 50}
	main.pl("pl0", alice, r.plContent(users, levels))
	main.joinRules("jr-public", alice, "public")
	main.member("bob-join", bob, bob, "join")
	a, b := main.fork(), main.fork()
	bobPL := b.pl("pl-bob", bob, r.plContent(users, withKey(levels, "kick", 40)), at(later+1))
	a.pl("pl-alice", alice, r.plContent(users, withKey(levels, "events_default", 5)), at(later+2))
	return r, []StateMap{a.state, b.state}, with(a.state, bobPL)
}

// equalPowerTimestamp: two admins at 100 make compatible changes; dave's is
// older, so it sorts first and alice's, applied last, wins. In v12 alice is the
// creator with infinite power, so hers sorts first whatever the time and dave's wins.
func equalPowerTimestamp(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := twoAdminRoom(t, version)
	users := map[id.UserID]int{alice: 100, dave: 100}
	a, b := main.fork(), main.fork()
	davePL := b.pl("pl-dave", dave, r.plContent(users, map[string]any{"kick": 60}), at(later+10))
	a.pl("pl-alice", alice, r.plContent(users, map[string]any{"ban": 60}), at(later+20))
	if version.PrivilegedRoomCreators() {
		return r, []StateMap{a.state, b.state}, with(a.state, davePL)
	}
	return r, []StateMap{a.state, b.state}, a.state
}

// equalPowerEventID: two admins at 100 change power levels at the same
// timestamp, so the event IDs decide: $pl-a sorts before $pl-b, and $pl-b,
// applied last, wins. Both admins' joins are cited by unconflicted state, so
// they are not in the auth difference and do not affect the order.
func equalPowerEventID(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := twoAdminRoom(t, version)
	users := map[id.UserID]int{alice: 100, dave: 100, bob: 100}
	main.pl("pl-bob-admin", alice, r.plContent(users, nil))
	main.send("mark-bob", bob, "org.example.marker", string(bob), map[string]any{})
	main.send("mark-dave", dave, "org.example.marker", string(dave), map[string]any{})
	a, b := main.fork(), main.fork()
	second := b.pl("pl-b", dave, r.plContent(users, map[string]any{"kick": 60}), at(later+10))
	a.pl("pl-a", bob, r.plContent(users, map[string]any{"ban": 60}), at(later+10))
	return r, []StateMap{a.state, b.state}, with(a.state, second)
}

// lowPowerJoinDelaysChild: as equalPowerEventID, but bob's and dave's joins are
// only in the auth chains of their own fork's power levels event, so they are
// in the auth difference. bob's join has power 0 (bob was not yet an admin when
// he joined) and sorts after dave's power levels event; Kahn's algorithm can
// only take $pl-a after bob's join, so $pl-a lands last and wins.
func lowPowerJoinDelaysChild(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := twoAdminRoom(t, version)
	users := map[id.UserID]int{alice: 100, dave: 100, bob: 100}
	main.pl("pl-bob-admin", alice, r.plContent(users, nil))
	a, b := main.fork(), main.fork()
	b.pl("pl-b", dave, r.plContent(users, map[string]any{"kick": 60}), at(later+10))
	a.pl("pl-a", bob, r.plContent(users, map[string]any{"ban": 60}), at(later+10))
	return r, []StateMap{a.state, b.state}, a.state
}

// twoAdminRoom is a public room where alice and dave (and, joined, bob) are admins at 100.
func twoAdminRoom(t *testing.T, version id.RoomVersion) (*testRoom, *branch) {
	r, main := newTestRoom(t, version, nil)
	main.member("alice-join", alice, alice, "join")
	main.pl("pl0", alice, r.plContent(map[id.UserID]int{alice: 100, dave: 100}, nil))
	main.joinRules("jr-public", alice, "public")
	main.member("dave-join", dave, dave, "join")
	main.member("bob-join", bob, bob, "join")
	return r, main
}

// topicForkTimestamp: concurrent topics citing the same power levels: later wins.
func topicForkTimestamp(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := standardRoom(t, version)
	main.topic("topic0", alice, "original")
	a, b := main.fork(), main.fork()
	newer := b.topic("topic-b", bob, "from b", at(later+1000))
	a.topic("topic-a", alice, "from a", at(later+500))
	return r, []StateMap{a.state, b.state}, with(a.state, newer)
}

// topicForkMainline: fork a updates the power levels and then sets a topic
// early; fork b sets a topic later citing the old power levels. The resolved
// power levels are a's, so b's topic sits further down the mainline, sorts
// first, and a's topic is applied last.
func topicForkMainline(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := standardRoom(t, version)
	a, b := main.fork(), main.fork()
	a.pl("pl1", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 50}, map[string]any{"redact": 60}), at(later+1))
	a.topic("topic-a", alice, "from a", at(later+2))
	b.topic("topic-b", bob, "from b", at(later+1000))
	return r, []StateMap{a.state, b.state}, a.state
}

// joinRulesVsJoin: alice makes the room invite-only while eve joins the public room.
func joinRulesVsJoin(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := standardRoom(t, version)
	a, b := main.fork(), main.fork()
	a.joinRules("jr-invite", alice, "invite", at(later+1000))
	b.member("eve-join", eve, eve, "join", at(later+1))
	return r, []StateMap{a.state, b.state}, a.state
}

// topicByDemotedUser: alice demotes bob while bob sets the topic; bob's topic no
// longer passes against the resolved power levels and the old topic stays.
func topicByDemotedUser(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := standardRoom(t, version)
	main.topic("topic0", alice, "original")
	a, b := main.fork(), main.fork()
	a.pl("pl-demote", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 0}, nil), at(later+1))
	b.topic("topic-bob", bob, "bob's topic", at(later+1000))
	return r, []StateMap{a.state, b.state}, a.state
}

// kickVsRename: bob kicks carol in one fork while carol changes her displayname
// in the other. In an invite-only room the kick (a power event) is applied first
// and the rename, a join by someone no longer joined or invited, is rejected.
func kickVsRename(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := standardRoom(t, version)
	main.joinRules("jr-invite", alice, "invite")
	a, b := main.fork(), main.fork()
	b.send("carol-rename", carol, "m.room.member", string(carol), map[string]any{"membership": "join", "displayname": "C"}, at(later+1000))
	a.member("kick-carol", bob, carol, "leave", at(later+1))
	return r, []StateMap{a.state, b.state}, a.state
}

// kickVsRenamePublic: as kickVsRename in a public room, where the rename is a
// valid rejoin after the kick, so it wins.
func kickVsRenamePublic(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, main := standardRoom(t, version)
	a, b := main.fork(), main.fork()
	b.send("carol-rename", carol, "m.room.member", string(carol), map[string]any{"membership": "join", "displayname": "C"}, at(later+1))
	a.member("kick-carol", bob, carol, "leave", at(later+1000))
	return r, []StateMap{a.state, b.state}, b.state
}

// leaveThenStatus: carol leaves in one fork and sets a custom state event in the
// other. A self-leave is not a power event, so both are ordered by the mainline
// and then by timestamp: leaving first makes the later state event fail.
func leaveThenStatus(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, a, b := leaveVsStatusRoom(t, version, 1, 2)
	return r, []StateMap{a.state, b.state}, a.state
}

// statusThenLeave: as leaveThenStatus with the state event first: it is still
// authorized when checked and survives, next to the leave.
func statusThenLeave(t *testing.T, version id.RoomVersion) (*testRoom, []StateMap, StateMap) {
	r, a, b := leaveVsStatusRoom(t, version, 2, 1)
	return r, []StateMap{a.state, b.state}, with(a.state, r.event("carol-status"))
}

// leaveVsStatusRoom builds the forks of leaveThenStatus with the given timestamps.
func leaveVsStatusRoom(t *testing.T, version id.RoomVersion, leaveTS, statusTS int64) (*testRoom, *branch, *branch) {
	r, main := standardRoom(t, version)
	main.pl("pl-open", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 50}, map[string]any{"state_default": 0}))
	a, b := main.fork(), main.fork()
	a.member("carol-leave", carol, carol, "leave", at(later+leaveTS))
	b.send("carol-status", carol, "org.example.status", "", map[string]any{"status": "here"}, at(later+statusTS))
	return r, a, b
}

// withKey returns a copy of content with key set.
func withKey(content map[string]any, key string, value any) map[string]any {
	out := make(map[string]any, len(content)+1)
	for k, v := range content {
		out[k] = v
	}
	out[key] = value
	return out
}
