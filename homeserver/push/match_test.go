package push

import (
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	"regexp"
	"slices"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/lru"
	"github.com/parley-chat/parley/storage"
)

// fakeRoom is a room context for matching tests.
type fakeRoom struct {
	members int
	levels  map[string]int64
	notif   int64
	names   map[string]string
}

func (f fakeRoom) MemberCount() int                                  { return f.members }
func (f fakeRoom) UserLevel(u string) int64                          { return f.levels[u] }
func (f fakeRoom) NotificationLevel(string) int64                    { return f.notif }
func (f fakeRoom) DisplayName(_ context.Context, user string) string { return f.names[user] }

const me = "@me:local.test"

func testEvent(typ string, stateKey *string, sender string, content any) *rooms.Event {
	b, _ := json.Marshal(content)
	return &rooms.Event{
		Event:  storage.Event{EventID: "$ev", Type: typ, StateKey: stateKey, Sender: sender, OriginTS: 1234},
		PDU:    &pdu.PDU{Content: jsontext.Value(b)},
		RoomID: "!room:local.test",
	}
}

func str(s string) *string { return &s }

func msg(body string, extra map[string]any) map[string]any {
	c := map[string]any{"msgtype": "m.text", "body": body}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// TestDefaultRules checks which server-default rule decides each event.
func TestDefaultRules(t *testing.T) {
	group := fakeRoom{members: 5, levels: map[string]int64{"@mod:x": 50}, notif: 50}
	dm := fakeRoom{members: 2, notif: 50}
	tests := []struct {
		name      string
		room      fakeRoom
		ev        *rooms.Event
		rule      string // "" for none
		notify    bool
		highlight bool
	}{
		{"plain message in a group", group, testEvent("m.room.message", nil, "@a:x", msg("hi", nil)), ".m.rule.message", true, false},
		{"plain message 1:1", dm, testEvent("m.room.message", nil, "@a:x", msg("hi", nil)), ".m.rule.room_one_to_one", true, false},
		{"notice", dm, testEvent("m.room.message", nil, "@a:x", map[string]any{"msgtype": "m.notice", "body": "bot"}), ".m.rule.suppress_notices", false, false},
		{"notice type matched exactly, not as a substring", group, testEvent("m.room.message", nil, "@a:x", map[string]any{"msgtype": "m.noticed", "body": "x"}), ".m.rule.message", true, false},
		{"user mention", group, testEvent("m.room.message", nil, "@a:x", msg("hey", map[string]any{"m.mentions": map[string]any{"user_ids": []string{"@other:x", me}}})), ".m.rule.is_user_mention", true, true},
		{"mention of someone else", group, testEvent("m.room.message", nil, "@a:x", msg("hey", map[string]any{"m.mentions": map[string]any{"user_ids": []string{"@other:x"}}})), ".m.rule.message", true, false},
		{"room mention by a moderator", group, testEvent("m.room.message", nil, "@mod:x", msg("all", map[string]any{"m.mentions": map[string]any{"room": true}})), ".m.rule.is_room_mention", true, true},
		{"room mention without power", group, testEvent("m.room.message", nil, "@a:x", msg("all", map[string]any{"m.mentions": map[string]any{"room": true}})), ".m.rule.message", true, false},
		{"room mention as a string is not true", group, testEvent("m.room.message", nil, "@mod:x", msg("all", map[string]any{"m.mentions": map[string]any{"room": "true"}})), ".m.rule.message", true, false},
		{"legacy body mention does not highlight", group, testEvent("m.room.message", nil, "@a:x", msg("@room me", nil)), ".m.rule.message", true, false},
		{"invite for me", group, testEvent("m.room.member", str(me), "@a:x", map[string]any{"membership": "invite"}), ".m.rule.invite_for_me", true, false},
		{"invite for someone else", group, testEvent("m.room.member", str("@me:local.testx"), "@a:x", map[string]any{"membership": "invite"}), ".m.rule.member_event", false, false},
		{"join", group, testEvent("m.room.member", str("@a:x"), "@a:x", map[string]any{"membership": "join"}), ".m.rule.member_event", false, false},
		{"tombstone", group, testEvent("m.room.tombstone", str(""), "@mod:x", map[string]any{"body": "moved"}), ".m.rule.tombstone", true, true},
		{"tombstone with a state key", group, testEvent("m.room.tombstone", str("x"), "@mod:x", map[string]any{}), "", false, false},
		{"reaction", dm, testEvent("m.reaction", nil, "@a:x", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}), ".m.rule.reaction", false, false},
		{"server ACL", group, testEvent("m.room.server_acl", str(""), "@mod:x", map[string]any{"allow": []string{"*"}}), ".m.rule.room.server_acl", false, false},
		{"edit", dm, testEvent("m.room.message", nil, "@a:x", msg("* fixed", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$x"}})), ".m.rule.suppress_edits", false, false},
		{"call", group, testEvent("m.call.invite", nil, "@a:x", map[string]any{"call_id": "1"}), ".m.rule.call", true, false},
		{"encrypted 1:1", dm, testEvent("m.room.encrypted", nil, "@a:x", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}), ".m.rule.encrypted_room_one_to_one", true, false},
		{"encrypted group", group, testEvent("m.room.encrypted", nil, "@a:x", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}), ".m.rule.encrypted", true, false},
		{"topic change", group, testEvent("m.room.topic", str(""), "@a:x", map[string]any{"topic": "tea"}), "", false, false},
		{"content without body", group, testEvent("m.room.message", nil, "@a:x", map[string]any{"msgtype": "m.text"}), ".m.rule.message", true, false},
	}
	names := lru.New[string, *regexp.Regexp](10)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newView(context.Background(), tc.ev, tc.room, names)
			r := defaultRuleset.match(v, me)
			id := ""
			if r != nil {
				id = r.id
			}
			if id != tc.rule {
				t.Fatalf("rule %q, want %q", id, tc.rule)
			}
			if r != nil && (r.notify != tc.notify || r.highlight != tc.highlight) {
				t.Fatalf("notify %v highlight %v", r.notify, r.highlight)
			}
			// The shared memo must not leak one member's result to another.
			if r2 := defaultRuleset.match(v, "@someone:else"); tc.rule == ".m.rule.is_user_mention" && r2 == r {
				t.Fatal("a mention of me matched someone else")
			}
		})
	}
}

// TestConditions checks each condition kind against the spec's examples.
func TestConditions(t *testing.T) {
	room := fakeRoom{members: 7, levels: map[string]int64{"@a:x": 60}, notif: 50, names: map[string]string{me: "Tea Lover"}}
	lunch := testEvent("m.room.topic", str(""), "@a:x", map[string]any{"topic": "Lunch plans"})
	body := func(s string) *rooms.Event { return testEvent("m.room.message", nil, "@a:x", msg(s, nil)) }
	create := testEvent("m.room.create", str(""), "@a:x", map[string]any{"m.federate": true, "alt": []any{"#a:x", 3, true, nil, map[string]any{}}, "n": 5, "f": 1.5, "m\\foo": "bs"})
	tests := []struct {
		name string
		cond string
		ev   *rooms.Event
		want bool
	}{
		{"glob lunc?*", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, lunch, true},
		{"glob is case-insensitive", `{"kind":"event_match","key":"content.topic","pattern":"LUNCH PLANS"}`, lunch, true},
		{"glob must match the whole value", `{"kind":"event_match","key":"content.topic","pattern":"lunch"}`, lunch, false},
		{"? needs a character", `{"kind":"event_match","key":"content.topic","pattern":"Lunch plans?"}`, lunch, false},
		{"* matches nothing too", `{"kind":"event_match","key":"content.topic","pattern":"Lunch plans*"}`, lunch, true},
		{"absent property", `{"kind":"event_match","key":"content.nope","pattern":"*"}`, lunch, false},
		{"non-string property", `{"kind":"event_match","key":"content.m\\.federate","pattern":"*"}`, create, false},
		{"regexp characters are literal", `{"kind":"event_match","key":"content.topic","pattern":"Lunch.plans"}`, lunch, false},
		{"top-level type", `{"kind":"event_match","key":"type","pattern":"m.room.*"}`, lunch, true},
		{"sender", `{"kind":"event_match","key":"sender","pattern":"@a:x"}`, lunch, true},
		{"state_key of a message is absent", `{"kind":"event_match","key":"state_key","pattern":"*"}`, body("x"), false},
		{"body word", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, body("An example event."), true},
		{"body at start and end", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, body("exple"), true},
		{"body spanning words", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, body("An exciting triple-whammy"), true},
		{"body inside a word", `{"kind":"event_match","key":"content.body","pattern":"ample"}`, body("An example"), false},
		{"body pattern starting with a symbol", `{"kind":"event_match","key":"content.body","pattern":"@room"}`, body("hi @room!"), true},
		{"body underscore is a word character", `{"kind":"event_match","key":"content.body","pattern":"tea"}`, body("my_tea"), false},
		{"property is true", `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`, create, true},
		{"property is not the string", `{"kind":"event_property_is","key":"content.m\\.federate","value":"true"}`, create, false},
		{"property is not 1", `{"kind":"event_property_is","key":"content.m\\.federate","value":1}`, create, false},
		{"property integer", `{"kind":"event_property_is","key":"content.n","value":5}`, create, true},
		{"float never matches", `{"kind":"event_property_is","key":"content.f","value":1}`, create, false},
		{"escaped backslash", `{"kind":"event_property_is","key":"content.m\\\\foo","value":"bs"}`, create, true},
		{"property null", `{"kind":"event_property_is","key":"content.x","value":null}`, testEvent("m.x", nil, "@a:x", map[string]any{"x": nil}), true},
		{"property absent is not null", `{"kind":"event_property_is","key":"content.y","value":null}`, testEvent("m.x", nil, "@a:x", map[string]any{"x": nil}), false},
		{"contains string", `{"kind":"event_property_contains","key":"content.alt","value":"#a:x"}`, create, true},
		{"contains no partial", `{"kind":"event_property_contains","key":"content.alt","value":":x"}`, create, false},
		{"contains integer", `{"kind":"event_property_contains","key":"content.alt","value":3}`, create, true},
		{"contains null", `{"kind":"event_property_contains","key":"content.alt","value":null}`, create, true},
		{"contains on a non-array", `{"kind":"event_property_contains","key":"content.n","value":5}`, create, false},
		{"member count ==", `{"kind":"room_member_count","is":"7"}`, lunch, true},
		{"member count <", `{"kind":"room_member_count","is":"<7"}`, lunch, false},
		{"member count <=", `{"kind":"room_member_count","is":"<=7"}`, lunch, true},
		{"member count >", `{"kind":"room_member_count","is":">2"}`, lunch, true},
		{"member count >=", `{"kind":"room_member_count","is":">=8"}`, lunch, false},
		{"sender permission", `{"kind":"sender_notification_permission","key":"room"}`, lunch, true},
		{"display name", `{"kind":"contains_display_name"}`, body("hey tea lover, hi"), true},
		{"display name inside a word", `{"kind":"contains_display_name"}`, body("hey tea lovers"), false},
		{"unknown condition never matches", `{"kind":"org.example.future"}`, lunch, false},
	}
	names := lru.New[string, *regexp.Regexp](10)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := compileRule("override", "test", true, []json.RawMessage{json.RawMessage(`"notify"`)}, []json.RawMessage{json.RawMessage(tc.cond)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.match(newView(context.Background(), tc.ev, room, names), me); got != tc.want {
				t.Fatalf("matched %v", got)
			}
		})
	}
}

// TestContentRoomSenderRules checks the predefined conditions of the
// other kinds, and the order of kinds.
func TestContentRoomSenderRules(t *testing.T) {
	d := &document{Rules: map[string][]storedRule{
		"content":   {{RuleID: "cake", Enabled: true, Actions: raws(`"notify"`, `{"set_tweak":"highlight"}`), Pattern: str("cake*lie")}},
		"room":      {{RuleID: "!room:local.test", Enabled: true, Actions: raws()}},
		"sender":    {{RuleID: "@boss:x", Enabled: true, Actions: raws(`"notify"`, `{"set_tweak":"highlight","value":false}`)}},
		"underride": {{RuleID: "catchall", Enabled: true, Actions: raws(`"notify"`), Conditions: raws()}},
	}}
	rs := compileRuleset(d)
	names := lru.New[string, *regexp.Regexp](10)
	room := fakeRoom{members: 5}
	decide := func(ev *rooms.Event) string {
		r := rs.match(newView(context.Background(), ev, room, names), me)
		if r == nil {
			return ""
		}
		return r.id
	}
	tests := []struct {
		ev   *rooms.Event
		want string
	}{
		{testEvent("m.room.message", nil, "@a:x", msg("the CAKE is a lie", nil)), "cake"},
		{testEvent("m.room.message", nil, "@a:x", msg("pancakes", nil)), "!room:local.test"},
		{testEvent("m.room.message", nil, "@boss:x", msg("hi", nil)), "!room:local.test"},
		{testEvent("m.room.topic", str(""), "@a:x", map[string]any{"topic": "x"}), "!room:local.test"},
	}
	for _, tc := range tests {
		if got := decide(tc.ev); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.ev.PDU.Content, got, tc.want)
		}
	}
	// Without the room rule the sender rule decides, then underride.
	delete(d.Rules, "room")
	rs = compileRuleset(d)
	if got := decide(testEvent("m.room.message", nil, "@boss:x", msg("hi", nil))); got != "@boss:x" {
		t.Fatalf("sender rule: %q", got)
	}
	if r := rs.sender["@boss:x"]; !r.notify || r.highlight {
		t.Fatal("highlight false is no highlight")
	}
	// User underride rules come before the server-default ones.
	if got := decide(testEvent("m.room.message", nil, "@a:x", msg("hi", nil))); got != "catchall" {
		t.Fatalf("underride: %q", got)
	}
	// The master rule, enabled, silences everything, even user overrides.
	on := true
	d.Defaults = map[string]defaultChange{"override/.m.rule.master": {Enabled: &on}}
	d.Rules["override"] = []storedRule{{RuleID: "all", Enabled: true, Actions: raws(`"notify"`), Conditions: raws()}}
	rs = compileRuleset(d)
	if got := decide(testEvent("m.room.message", nil, "@a:x", msg("the cake is a lie", nil))); got != ".m.rule.master" {
		t.Fatalf("master: %q", got)
	}
}

func raws(s ...string) []json.RawMessage {
	out := []json.RawMessage{}
	for _, x := range s {
		out = append(out, json.RawMessage(x))
	}
	return out
}

func TestSplitPath(t *testing.T) {
	tests := map[string][]string{
		"content.body":                   {"content", "body"},
		`content.m\.relates_to.rel_type`: {"content", "m.relates_to", "rel_type"},
		`content.m\\foo`:                 {"content", `m\foo`},
		`content.m\xfoo`:                 {"content", `m\xfoo`},
		"type":                           {"type"},
	}
	for in, want := range tests {
		if got := splitPath(in); !slices.Equal(got, want) {
			t.Errorf("%s: %q", in, got)
		}
	}
}

func TestDefaultRulesetShape(t *testing.T) {
	rs := (&document{}).ruleset(me)
	var ids []string
	for _, r := range rs.Override {
		ids = append(ids, r.RuleID)
	}
	want := []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction",
		".m.rule.room.server_acl", ".m.rule.suppress_edits"}
	if !slices.Equal(ids, want) {
		t.Fatalf("override %v", ids)
	}
	ids = nil
	for _, r := range rs.Underride {
		ids = append(ids, r.RuleID)
	}
	if !slices.Equal(ids, []string{".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"}) {
		t.Fatalf("underride %v", ids)
	}
	b, _ := json.Marshal(rs)
	for _, s := range []string{`"value":"@me:local.test"`, `"pattern":"@me:local.test"`, `"content":[]`, `"conditions":[]`} {
		if !regexp.MustCompile(regexp.QuoteMeta(s)).Match(b) {
			t.Errorf("ruleset JSON lacks %s: %s", s, b)
		}
	}
	if regexp.MustCompile(`Matrix ID`).Match(b) {
		t.Error("placeholder left in the ruleset")
	}
}

func TestActionFlags(t *testing.T) {
	tests := []struct {
		actions           []json.RawMessage
		notify, highlight bool
	}{
		{raws(), false, false},
		{raws(`"notify"`), true, false},
		{raws(`"notify"`, `{"set_tweak":"highlight"}`), true, true},
		{raws(`"notify"`, `{"set_tweak":"highlight","value":null}`), true, true},
		{raws(`"notify"`, `{"set_tweak":"highlight","value":true}`), true, true},
		{raws(`"notify"`, `{"set_tweak":"highlight","value":false}`), true, false},
		{raws(`"notify"`, `{"set_tweak":"highlight","value":"yes"}`), true, false},
		{raws(`{"set_tweak":"highlight"}`), false, true},
		{raws(`{"set_tweak":"sound","value":"default"}`), false, false},
	}
	for _, tc := range tests {
		n, h := actionFlags(tc.actions)
		if n != tc.notify || h != tc.highlight {
			t.Errorf("%s: notify %v highlight %v", tc.actions, n, h)
		}
	}
}
