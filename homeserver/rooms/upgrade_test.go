package rooms

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

func TestPowerInt(t *testing.T) {
	for _, c := range []struct {
		in   any
		want int64
		ok   bool
	}{
		{json.Number("50"), 50, true},
		{json.Number("-5"), -5, true},
		{json.Number("50.0"), 50, true},
		{json.Number("50.5"), 0, false},
		{json.Number("1e3"), 1000, true},
		{json.Number("9007199254740992"), 0, false},
		{" 75 ", 75, true},
		{"x", 0, false},
		{true, 0, false},
		{nil, 0, false},
	} {
		got, ok := powerInt(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("powerInt(%#v) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestNormalizePowerLevels(t *testing.T) {
	got := normalizePowerLevels([]byte(`{"ban":"50","kick":40.0,"redact":"x","users":{"@a:x":"100","bad":5,"@b:x":1.5},
		"events":{"m.room.name":"60"},"notifications":{"room":"20"},"users_default":0,"historical":100,"events_default":{}}`))
	b, _ := json.Marshal(got)
	want := `{"ban":50,"events":{"m.room.name":60},"historical":100,"kick":40,"notifications":{"room":20},"users":{"@a:x":100},"users_default":0}`
	if string(b) != want {
		t.Fatalf("normalized:\n%s\nwant\n%s", b, want)
	}
	if len(normalizePowerLevels([]byte(`[1]`))) != 0 {
		t.Fatal("non-object content")
	}
}

func TestUpgradePowerLevels(t *testing.T) {
	e := &Engine{}
	old := func(c string) *Event {
		return &Event{Event: storage.Event{EventID: "$pl"}, PDU: pduWithContent(c)}
	}
	users := func(b json.RawMessage) string { return gjson.GetBytes(b, "users").Raw }
	for _, c := range []struct {
		name           string
		pl             string
		version        id.RoomVersion
		oldLv          levels
		initial, final string
	}{
		{"v12 drops the creators", `{"users":{"@u:x":100,"@c:x":50,"@o:x":50}}`, id.RoomV12, levels{},
			`{"@o:x":50}`, `{"@o:x":50}`},
		{"enough power: no raise", `{"users":{"@u:x":100},"events":{"m.room.server_acl":100}}`, id.RoomV11, levels{},
			`{"@u:x":100}`, `{"@u:x":100}`},
		{"raised for the copy", `{"users":{"@u:x":50},"events":{"m.room.server_acl":100},"ban":70}`, id.RoomV11, levels{},
			`{"@u:x":100}`, `{"@u:x":50}`},
		{"users_default counts", `{"users_default":60,"state_default":60}`, id.RoomV9, levels{},
			`{}`, `{}`},
		{"old privileged creator keeps 100", `{"users":{"@o:x":50}}`, id.RoomV11, levels{creators: map[string]bool{"@u:x": true}},
			`{"@o:x":50,"@u:x":100}`, `{"@o:x":50,"@u:x":100}`},
	} {
		initial, final := upgradePowerLevels(e, old(c.pl), "@u:x", c.version, []string{"@u:x", "@c:x"}, c.oldLv)
		if !jsonEqual(users(initial), c.initial) || !jsonEqual(users(final), c.final) {
			t.Errorf("%s: users while copying %s (want %s), after %s (want %s)", c.name, users(initial), c.initial, users(final), c.final)
		}
	}
	initial, final := upgradePowerLevels(e, nil, "@u:x", id.RoomV11, []string{"@u:x"}, levels{})
	if gjson.GetBytes(final, `users.\@u:x`).Int() != 100 || string(initial) != string(final) {
		t.Fatalf("no old power levels: defaults with the upgrader at 100: %s", final)
	}
}

func jsonEqual(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

func TestUpgradeContentHelpers(t *testing.T) {
	jr := json.RawMessage(`{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!old:x"},{"type":"m.room_membership","room_id":"!space:x"}]}`)
	got := retargetAllow(jr, "!old:x", "!new:x")
	if gjson.GetBytes(got, "allow.0.room_id").Str != "!new:x" || gjson.GetBytes(got, "allow.1.room_id").Str != "!space:x" {
		t.Fatalf("retargeted: %s", got)
	}
	if retargetAllow(jr, "!other:x", "!new:x") != nil || retargetAllow(nil, "a", "b") != nil {
		t.Fatal("nothing to retarget")
	}
	ca := json.RawMessage(`{"alias":"#a:here","alt_aliases":["#b:here","#r:remote","#b:here"]}`)
	if got := movedCanonicalAlias(ca, []string{"#a:here", "#b:here"}); string(got) != `{"alias":"#a:here","alt_aliases":["#b:here"]}` {
		t.Fatalf("moved canonical alias: %s", got)
	}
	if got := movedCanonicalAlias(ca, []string{"#b:here"}); string(got) != `{"alt_aliases":["#b:here"]}` {
		t.Fatalf("only alt aliases moved: %s", got)
	}
	if got := movedCanonicalAlias(ca, nil); got != nil {
		t.Fatalf("nothing moved: %s", got)
	}
	if got, err := additionalCreators("@u:x", id.RoomV12, []string{"@a:x", "@u:x", "@a:x"}); err != nil || len(got) != 1 {
		t.Fatalf("additional creators: %v %v", got, err)
	}
	if got, err := additionalCreators("@u:x", id.RoomV11, []string{"junk"}); err != nil || got != nil {
		t.Fatalf("ignored before v12: %v %v", got, err)
	}
	if _, err := additionalCreators("@u:x", id.RoomV12, []string{"junk"}); !mxerr.IsCode(err, "M_INVALID_PARAM") {
		t.Fatalf("invalid creator: %v", err)
	}
	many := make([]string, maxAdditionalCreators+1)
	for i := range many {
		many[i] = "@u" + strconv.Itoa(i) + ":x"
	}
	if _, err := additionalCreators("@u:x", id.RoomV12, many); !mxerr.IsCode(err, "M_INVALID_PARAM") {
		t.Fatalf("too many creators: %v", err)
	}
}

// TestUpgradeRoom runs an upgrade through the engine and checks both rooms.
func TestUpgradeRoom(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice, bob := "@alice:local.test", "@bob:local.test"
		old, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: "11", Name: ptr("Old"),
			RoomAliasName: "upgrade", Visibility: "public"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Join(ctx, MembershipParams{RoomID: old, Sender: bob}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.UpgradeRoom(ctx, bob, old, UpgradeRequest{NewVersion: "12"}); !mxerr.IsCode(err, "M_FORBIDDEN") {
			t.Fatalf("bob may not upgrade: %v", err)
		}
		if _, err := e.UpgradeRoom(ctx, alice, old, UpgradeRequest{NewVersion: "13"}); !mxerr.IsCode(err, "M_UNSUPPORTED_ROOM_VERSION") {
			t.Fatalf("unknown version: %v", err)
		}
		nu, err := e.UpgradeRoom(ctx, alice, old, UpgradeRequest{NewVersion: "12"})
		if err != nil {
			t.Fatal(err)
		}
		state := func(room, typ string) json.RawMessage {
			t.Helper()
			ev, err := e.StateEvent(ctx, alice, room, typ, "")
			if err != nil {
				t.Fatalf("%s in %s: %v", typ, room, err)
			}
			return ev.Content
		}
		if gjson.GetBytes(state(nu, "m.room.create"), "predecessor.room_id").Str != old {
			t.Fatal("predecessor")
		}
		if gjson.GetBytes(state(nu, "m.room.name"), "name").Str != "Old" {
			t.Fatal("name not copied")
		}
		if gjson.GetBytes(state(nu, "m.room.canonical_alias"), "alias").Str != "#upgrade:local.test" {
			t.Fatal("canonical alias not moved")
		}
		if gjson.GetBytes(state(old, "m.room.canonical_alias"), "alias").Exists() {
			t.Fatal("old canonical alias kept")
		}
		if gjson.GetBytes(state(old, "m.room.tombstone"), "replacement_room").Str != nu {
			t.Fatal("tombstone")
		}
		if a, err := e.ResolveAlias(ctx, "#upgrade:local.test"); err != nil || a.RoomID != nu {
			t.Fatalf("alias: %+v %v", a, err)
		}
		if v, _ := e.DirectoryVisibility(ctx, nu); v != "public" {
			t.Fatal("new room not published")
		}
		if v, _ := e.DirectoryVisibility(ctx, old); v != "private" {
			t.Fatal("old room still published")
		}
	})
}
