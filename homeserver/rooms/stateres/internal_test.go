package stateres

import (
	"context"
	"encoding/json/jsontext"
	"maps"
	"slices"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// rawEvent is a bare event for graph-shape tests: no content rules apply.
func rawEvent(name string, sender id.UserID, ts int64, evtType, content string, auth ...string) *pdu.PDU {
	authIDs := make([]id.EventID, len(auth))
	for i, a := range auth {
		authIDs[i] = id.EventID("$" + a)
	}
	evt := &pdu.PDU{
		Type: evtType, StateKey: ptr(""), Sender: sender, OriginServerTS: ts,
		Content: jsontext.Value(content), AuthEvents: authIDs, RoomID: "!room:example.org",
	}
	evt.InternalMeta.EventID = id.EventID("$" + name)
	return evt
}

func TestReverseTopologicalPowerSort(t *testing.T) {
	// create ← pl (alice 100, bob 50) ← {a1 by alice @30, b1 by bob @10, c1 by carol @10, c2 by carol @10}
	// a1 ← a2 (alice @5): a2 must wait for a1 despite its earlier timestamp.
	pl := `{"users":{"@alice:example.org":100,"@bob:example.org":50}}`
	events := []*pdu.PDU{
		rawEvent("create", alice, 0, "m.room.create", `{"creator":"@alice:example.org"}`),
		rawEvent("pl", alice, 1, "m.room.power_levels", pl, "create"),
		rawEvent("a1", alice, 30, "m.room.join_rules", `{}`, "create", "pl"),
		rawEvent("a2", alice, 5, "m.room.join_rules", `{}`, "create", "pl", "a1"),
		rawEvent("b1", bob, 10, "m.room.join_rules", `{}`, "create", "pl"),
		rawEvent("c2", carol, 10, "m.room.join_rules", `{}`, "create", "pl"),
		rawEvent("c1", carol, 10, "m.room.join_rules", `{}`, "create", "pl"),
	}
	res := newResolver(context.Background(), id.RoomV10, NewMemorySource(events))
	set := make(eventSet)
	for _, evt := range events {
		set.add(evt.InternalMeta.EventID)
	}
	if err := res.g.loadSet(set); err != nil {
		t.Fatal(err)
	}
	got, err := res.reverseTopologicalPowerSort(set)
	if err != nil {
		t.Fatal(err)
	}
	// create and pl come first as everything else descends from them; then the
	// highest power goes first, and a2 right after a1, its auth parent.
	want := []id.EventID{"$create", "$pl", "$a1", "$a2", "$b1", "$c1", "$c2"}
	if !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
}

func TestRestrictedDAGFollowsPathsThroughOtherEvents(t *testing.T) {
	// x → m → y, with m outside the sorted set: y must still precede x even
	// though y has the lower sender power.
	events := []*pdu.PDU{
		rawEvent("create", alice, 0, "m.room.create", `{"creator":"@alice:example.org"}`),
		rawEvent("pl", alice, 1, "m.room.power_levels", `{"users":{"@alice:example.org":100}}`, "create"),
		rawEvent("y", bob, 50, "m.room.join_rules", `{}`, "create", "pl"),
		rawEvent("m", alice, 2, "m.room.topic", `{}`, "create", "pl", "y"),
		rawEvent("x", alice, 3, "m.room.join_rules", `{}`, "create", "pl", "m"),
	}
	res := newResolver(context.Background(), id.RoomV10, NewMemorySource(events))
	set := eventSet{"$x": {}, "$y": {}}
	if err := res.g.load([]id.EventID{"$create", "$pl", "$x", "$y", "$m"}); err != nil {
		t.Fatal(err)
	}
	got, err := res.reverseTopologicalPowerSort(set)
	if err != nil {
		t.Fatal(err)
	}
	if want := []id.EventID{"$y", "$x"}; !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
}

func TestMainlineSort(t *testing.T) {
	// Mainline: p2 → p1 → p0. Side branch q1 → p0.
	plContent := `{"users":{"@alice:example.org":100}}`
	events := []*pdu.PDU{
		rawEvent("create", alice, 0, "m.room.create", `{}`),
		rawEvent("p0", alice, 1, "m.room.power_levels", plContent, "create"),
		rawEvent("p1", alice, 2, "m.room.power_levels", plContent, "create", "p0"),
		rawEvent("p2", alice, 3, "m.room.power_levels", plContent, "create", "p1"),
		rawEvent("q1", alice, 4, "m.room.power_levels", plContent, "create", "p0"),
		rawEvent("on-p2", alice, 10, "m.room.topic", `{}`, "create", "p2"),      // position 0
		rawEvent("on-p1-late", alice, 20, "m.room.topic", `{}`, "create", "p1"), // position 1
		rawEvent("on-p1-early", alice, 5, "m.room.topic", `{}`, "create", "p1"), // position 1
		rawEvent("on-q1", alice, 1, "m.room.topic", `{}`, "create", "q1"),       // via q1 → p0: position 2
		rawEvent("no-pl", alice, 0, "m.room.topic", `{}`, "create"),             // no power levels: ∞
		rawEvent("on-p1-tie-b", alice, 20, "m.room.topic", `{}`, "create", "p1"),
	}
	res := newResolver(context.Background(), id.RoomV10, NewMemorySource(events))
	list := []id.EventID{"$on-p2", "$on-p1-late", "$on-p1-tie-b", "$on-p1-early", "$on-q1", "$no-pl", "$p2"}
	if err := res.g.load(list); err != nil {
		t.Fatal(err)
	}
	got, err := res.mainlineSort(list, "$p2")
	if err != nil {
		t.Fatal(err)
	}
	// p2 itself is positioned by its own power levels auth event p1 (position 1).
	want := []id.EventID{"$no-pl", "$on-q1", "$p2", "$on-p1-early", "$on-p1-late", "$on-p1-tie-b", "$on-p2"}
	if !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
	// Without a resolved power levels event every position is ∞: timestamps decide.
	got, err = res.mainlineSort(list, "")
	if err != nil {
		t.Fatal(err)
	}
	want = []id.EventID{"$no-pl", "$on-q1", "$p2", "$on-p1-early", "$on-p2", "$on-p1-late", "$on-p1-tie-b"}
	if !slices.Equal(got, want) {
		t.Fatalf("order without mainline = %v, want %v", got, want)
	}
}

func TestPartition(t *testing.T) {
	k := func(s string) StateKey { return StateKey{Type: "t", StateKey: s} }
	sets := []StateMap{
		{k("same"): "$1", k("diff"): "$a", k("only0"): "$x"},
		{k("same"): "$1", k("diff"): "$b", k("only12"): "$y"},
		{k("same"): "$1", k("diff"): "$a", k("only12"): "$y"},
	}
	v2 := partitionSets(sets, true)
	if want := (StateMap{k("same"): "$1"}); !maps.Equal(v2.unconflicted, want) {
		t.Errorf("v2 unconflicted = %v, want %v", v2.unconflicted, want)
	}
	if want := []id.EventID{"$a", "$b"}; !slices.Equal(v2.conflicted[k("diff")], want) {
		t.Errorf("v2 conflicted diff = %v, want %v", v2.conflicted[k("diff")], want)
	}
	if len(v2.conflicted) != 3 {
		t.Errorf("v2 conflicted keys = %v, want diff, only0, only12", v2.conflicted)
	}
	v1 := partitionSets(sets, false)
	if want := (StateMap{k("same"): "$1", k("only0"): "$x", k("only12"): "$y"}); !maps.Equal(v1.unconflicted, want) {
		t.Errorf("v1 unconflicted = %v, want %v", v1.unconflicted, want)
	}
	if len(v1.conflicted) != 1 {
		t.Errorf("v1 conflicted keys = %v, want only diff", v1.conflicted)
	}
}

func TestIsPowerEvent(t *testing.T) {
	member := func(sender id.UserID, target, membership string) *pdu.PDU {
		return &pdu.PDU{Type: "m.room.member", StateKey: &target, Sender: sender, Content: jsontext.Value(`{"membership":"` + membership + `"}`)}
	}
	for _, tc := range []struct {
		name string
		evt  *pdu.PDU
		want bool
	}{
		{"power levels", rawEvent("x", alice, 0, "m.room.power_levels", `{}`), true},
		{"join rules", rawEvent("x", alice, 0, "m.room.join_rules", `{}`), true},
		{"create", rawEvent("x", alice, 0, "m.room.create", `{}`), true},
		{"topic", rawEvent("x", alice, 0, "m.room.topic", `{}`), false},
		{"kick", member(alice, string(bob), "leave"), true},
		{"ban", member(alice, string(bob), "ban"), true},
		{"self-ban", member(bob, string(bob), "ban"), false},
		{"self-leave", member(bob, string(bob), "leave"), false},
		{"invite", member(alice, string(bob), "invite"), false},
		{"join", member(bob, string(bob), "join"), false},
		{"message", &pdu.PDU{Type: "m.room.power_levels"}, false},
		{"nil", nil, false},
	} {
		if got := isPowerEvent(tc.evt); got != tc.want {
			t.Errorf("%s: isPowerEvent = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMemorySourceAuthChain(t *testing.T) {
	events := []*pdu.PDU{
		rawEvent("a", alice, 0, "t", `{}`),
		rawEvent("b", alice, 0, "t", `{}`, "a"),
		rawEvent("c", alice, 0, "t", `{}`, "b", "missing"),
		rawEvent("d", alice, 0, "t", `{}`, "c"),
		nil,
	}
	src := NewMemorySource(events)
	chain, err := src.AuthChain(context.Background(), []id.EventID{"$c", "$d"})
	if err != nil {
		t.Fatal(err)
	}
	// $c is reachable from $d, so it is included; $d is not.
	want := map[id.EventID]struct{}{"$a": {}, "$b": {}, "$c": {}, "$missing": {}}
	if !maps.Equal(chain, want) {
		t.Fatalf("chain = %v, want %v", chain, want)
	}
	got, _ := src.Events(context.Background(), []id.EventID{"$a", "$nope"})
	if len(got) != 1 || got["$a"] == nil {
		t.Fatalf("Events = %v", got)
	}
}
