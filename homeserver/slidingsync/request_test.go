package slidingsync

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/parley-chat/parley/internal/mxerr"
)

func decode(t *testing.T, body string) *Request {
	t.Helper()
	var r Request
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return &r
}

func TestRequiredStateShapes(t *testing.T) {
	const me = "@me:x"
	cases := []struct {
		name   string
		json   string
		lazy   bool
		compat bool
		match  []string // "type|key" that must match
		miss   []string // and must not
	}{
		{"object", `{"include":[{"type":"m.room.name","state_key":""}]}`, false, false,
			[]string{"m.room.name|"}, []string{"m.room.topic|", "m.room.name|x"}},
		{"everything but create", `{"include":[{}],"exclude":[{"type":"m.room.create","state_key":""}]}`, false, false,
			[]string{"m.room.name|", "m.room.member|@a:x"}, []string{"m.room.create|"}},
		{"lazy members", `{"include":[{}, {"type":"m.room.member","state_key":"$ME"}],"lazy_members":true}`, true, false,
			[]string{"m.room.name|", "m.room.member|" + me}, []string{"m.room.member|@a:x"}},
		{"state key over all types", `{"include":[{"state_key":""}]}`, false, false,
			[]string{"m.room.name|", "m.room.topic|"}, []string{"m.room.member|@a:x"}},
		{"pairs", `[["m.room.member","$LAZY"],["m.room.member","$ME"],["m.room.name",""]]`, true, true,
			[]string{"m.room.name|", "m.room.member|" + me}, []string{"m.room.member|@a:x", "m.room.topic|"}},
		{"pair wildcards", `[["*","*"]]`, false, true,
			[]string{"m.room.name|", "m.room.member|@a:x", "x|y"}, nil},
		{"type wildcard", `[["m.call.member","*"]]`, false, true,
			[]string{"m.call.member|@a:x_D"}, []string{"m.room.name|"}},
		{"wildcard members beat $LAZY", `[["m.room.member","$LAZY"],["m.room.member","*"]]`, false, true,
			[]string{"m.room.member|@a:x"}, nil},
		{"$LAZY as a state key", `{"include":[{"type":"m.room.member","state_key":"$LAZY"}]}`, true, false,
			nil, []string{"m.room.member|@a:x"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var rs RequiredState
			if err := json.Unmarshal([]byte(c.json), &rs); err != nil {
				t.Fatal(err)
			}
			spec := roomSpec(nil).add(newSpec(&rs, me))
			if spec.lazy() != c.lazy || rs.compat != c.compat {
				t.Fatalf("lazy %v compat %v", spec.lazy(), rs.compat)
			}
			for _, m := range c.match {
				typ, key, _ := strings.Cut(m, "|")
				if !spec.match(typ, key) {
					t.Errorf("%s does not match", m)
				}
			}
			for _, m := range c.miss {
				typ, key, _ := strings.Cut(m, "|")
				if spec.match(typ, key) {
					t.Errorf("%s matches", m)
				}
			}
		})
	}
}

func TestSpecUnion(t *testing.T) {
	lazy := newSpec(&RequiredState{Include: []StateElement{{}}, LazyMembers: true}, "@me:x")
	names := newSpec(&RequiredState{Include: []StateElement{{Type: ptr("m.room.name"), StateKey: ptr("")}}}, "@me:x")
	members := newSpec(&RequiredState{Include: []StateElement{{Type: ptr("m.room.member")}}}, "@me:x")

	u := roomSpec(nil).add(names).add(lazy).add(names)
	if len(u) != 2 || !u.lazy() || !u.match("m.room.topic", "") || u.match("m.room.member", "@a:x") {
		t.Fatalf("lazy union %+v", u)
	}
	// A config returning every member turns lazy loading off.
	u2 := u.add(members)
	if u2.lazy() || !u2.match("m.room.member", "@a:x") {
		t.Fatalf("members union %+v", u2)
	}
	// Canonical: the order configs come in does not matter.
	if roomSpec(nil).add(lazy).add(names).key() != roomSpec(nil).add(names).add(lazy).key() {
		t.Fatal("spec keys differ by order")
	}
	back, ok := parseSpec(u.key())
	if !ok || back.key() != u.key() {
		t.Fatalf("round trip %v %v", back, ok)
	}
	if _, ok := parseSpec("not json"); ok {
		t.Fatal("garbage parsed as a spec")
	}
	if specDigest("") != "" || len(specDigest(u.key())) != 24 || specDigest(u.key()) == specDigest(u2.key()) {
		t.Fatal("digests")
	}
}

func ptr[T any](v T) *T { return &v }

func TestValidate(t *testing.T) {
	many := func(n int, f func(i int) string) string {
		var parts []string
		for i := range n {
			parts = append(parts, f(i))
		}
		return strings.Join(parts, ",")
	}
	cfg := `{"timeline_limit":1,"required_state":{}}`
	cases := []struct {
		name, body, code string
	}{
		{"empty", `{}`, ""},
		{"full", `{"conn_id":"c","lists":{"a":{"range":[0,9],"timeline_limit":5,"required_state":{"include":[{}]},
			"filters":{"is_dm":true,"spaces":["!s:x"],"room_types":[null,"m.space"],"tags":["u.t"]}}},
			"room_subscriptions":{"!r:x":` + cfg + `},"extensions":{"to_device":{"enabled":true,"since":"5","limit":10}}}`, ""},
		{"earlier drafts", `{"lists":{"a":{"ranges":[[0,9],[20,29]],"timeline_limit":1,"required_state":[["*","*"]],
			"filters":{"is_invite":false,"not_room_types":["m.space"]},"include_heroes":true,"bump_event_types":["m.room.message"]}},
			"unsubscribe_rooms":["!r:x"],"txn_id":"t"}`, ""},
		{"101 lists", `{"lists":{` + many(101, func(i int) string { return fmt.Sprintf(`"l%d":%s`, i, cfg) }) + `}}`, "M_INVALID_PARAM"},
		{"100 lists", `{"lists":{` + many(100, func(i int) string { return fmt.Sprintf(`"l%d":%s`, i, cfg) }) + `}}`, ""},
		{"101 subscriptions", `{"room_subscriptions":{` + many(101, func(i int) string { return fmt.Sprintf(`"!r%d:x":%s`, i, cfg) }) + `}}`, "M_INVALID_PARAM"},
		{"100 subscriptions", `{"room_subscriptions":{` + many(100, func(i int) string { return fmt.Sprintf(`"!r%d:x":%s`, i, cfg) }) + `}}`, ""},
		{"101 required_state", `{"lists":{"a":{"required_state":{"include":[` + many(101, func(int) string { return `{}` }) + `]}}}}`, "M_INVALID_PARAM"},
		{"101 required_state pairs", `{"lists":{"a":{"required_state":[` + many(101, func(int) string { return `["a","b"]` }) + `]}}}`, "M_INVALID_PARAM"},
		{"100 required_state excludes", `{"lists":{"a":{"required_state":{"exclude":[` + many(100, func(int) string { return `{}` }) + `]}}}}`, ""},
		{"11 ranges", `{"lists":{"a":{"ranges":[` + many(11, func(int) string { return `[0,1]` }) + `]}}}`, "M_INVALID_PARAM"},
		{"range backwards", `{"lists":{"a":{"range":[3,2]}}}`, "M_INVALID_PARAM"},
		{"range of one", `{"lists":{"a":{"range":[3]}}}`, "M_INVALID_PARAM"},
		{"list name", `{"lists":{"":{}}}`, "M_INVALID_PARAM"},
		{"list null", `{"lists":{"a":null}}`, "M_BAD_JSON"},
		{"long conn_id", `{"conn_id":"` + strings.Repeat("c", 256) + `"}`, "M_INVALID_PARAM"},
		{"timeout", `{"timeout":-1}`, "M_INVALID_PARAM"},
		{"huge timeout", `{"timeout":9223372036854775807}`, ""},
		{"NUL in conn_id", `{"conn_id":"a\u0000b"}`, "M_INVALID_PARAM"},
		{"presence", `{"set_presence":"away"}`, "M_INVALID_PARAM"},
		{"subscription room ID", `{"room_subscriptions":{"#alias:x":{}}}`, "M_INVALID_PARAM"},
		{"space room ID", `{"lists":{"a":{"filters":{"spaces":["x"]}}}}`, "M_INVALID_PARAM"},
		{"101 spaces across lists", `{"lists":{` + many(3, func(l int) string {
			return fmt.Sprintf(`"l%d":{"filters":{"spaces":[%s]}}`, l, many(40, func(i int) string { return fmt.Sprintf(`"!s%d_%d:x"`, l, i) }))
		}) + `}}`, "M_INVALID_PARAM"},
		{"101 not_tags", `{"lists":{"a":{"filters":{"not_tags":[` + many(101, func(int) string { return `"t"` }) + `]}}}}`, "M_INVALID_PARAM"},
		{"negative timeline_limit", `{"room_subscriptions":{"!r:x":{"timeline_limit":-1}}}`, "M_INVALID_PARAM"},
		{"long state key", `{"room_subscriptions":{"!r:x":{"required_state":{"include":[{"state_key":"` + strings.Repeat("k", 256) + `"}]}}}}`, "M_INVALID_PARAM"},
		{"extension rooms", `{"extensions":{"receipts":{"enabled":true,"rooms":[` + many(201, func(int) string { return `"!r:x"` }) + `]}}}`, "M_INVALID_PARAM"},
		{"to_device since", `{"extensions":{"to_device":{"enabled":true,"since":"-3"}}}`, "M_INVALID_PARAM"},
		{"to_device limit", `{"extensions":{"to_device":{"enabled":true,"limit":-3}}}`, "M_INVALID_PARAM"},
		{"pos too long", `{"pos":"` + strings.Repeat("s", 201) + `"}`, "M_UNKNOWN_POS"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r Request
			err := json.Unmarshal([]byte(c.body), &r)
			if err == nil {
				err = r.Validate()
			} else {
				err = mxerr.BadJSON("%v", err)
			}
			if c.code == "" {
				if err != nil {
					t.Fatalf("unexpected %v", err)
				}
				return
			}
			if !mxerr.IsCode(err, c.code) {
				t.Fatalf("got %v, want %s", err, c.code)
			}
			if me, _ := mxerr.As(err); me.Status != 400 {
				t.Fatalf("status %d", me.Status)
			}
		})
	}
}

func TestRequestHelpers(t *testing.T) {
	r := decode(t, `{"lists":{"a":{"range":[0,4],"ranges":[[10,12]],"timeline_limit":100000}},
		"room_subscriptions":{"!r:x":{"timeline_limit":7}}}`)
	l := r.Lists["a"]
	if got := l.ranges(); !slices.Equal(got, [][2]int64{{0, 4}, {10, 12}}) {
		t.Fatalf("ranges %v", got)
	}
	if l.timelineLimit() != MaxTimelineLimit || r.Subscriptions["!r:x"].timelineLimit() != 7 {
		t.Fatal("timeline_limit is not capped")
	}
	if (&RoomConfig{}).timelineLimit() != 0 || (&List{}).ranges() != nil {
		t.Fatal("defaults")
	}
	if !r.usesCompat() || decode(t, `{"lists":{"a":{"range":[0,1]}}}`).usesCompat() {
		t.Fatal("compat detection")
	}
}

func TestPosToken(t *testing.T) {
	p := posToken{Events: 42, Conn: 7, Seq: 3}
	got, ok := parsePos(p.String())
	if !ok || got != p || p.String() != "s42_7_3" {
		t.Fatalf("%v %v", got, ok)
	}
	for _, bad := range []string{"", "s", "s1_2", "s1_2_3_4", "t1_2_3", "s-1_2_3", "s1_0_3", "s1_2_0", "s1_x_3", "s1_2_3 "} {
		if _, ok := parsePos(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestScope(t *testing.T) {
	c := &connection{scope: decodeScope(encodeScope([]string{"!b:x", "!a:x", "!a:x"}))}
	if len(c.scope) != 2 || !c.inScope("!a:x") || !c.inScope("!b:x") || c.inScope("!c:x") {
		t.Fatalf("scope %v", c.scope)
	}
	if (&connection{isNew: true}).inScope("!a:x") {
		t.Fatal("a new connection has no scope")
	}
}

func TestRoomJSON(t *testing.T) {
	name := "n"
	cases := []struct {
		room Room
		want string
	}{
		{Room{}, `{}`},
		{Room{Name: Nullable{Set: true}, Avatar: Nullable{Set: true, Value: &name}}, `{"name":null,"avatar":"n"}`},
		{Room{RequiredState: []any{StateStub{Type: "m.room.topic", StateKey: ""}}}, `{"required_state":[{"type":"m.room.topic","state_key":""}]}`},
		{Room{StrippedState: &[]json.RawMessage{}}, `{"stripped_state":[]}`},
	}
	for _, c := range cases {
		b, err := json.Marshal(c.room)
		if err != nil || string(b) != c.want {
			t.Errorf("%s (%v), want %s", b, err, c.want)
		}
	}
	b, _ := json.Marshal(Response{Pos: "p", Lists: map[string]ListResult{}})
	if string(b) != `{"pos":"p","lists":{},"extensions":{}}` {
		t.Errorf("response %s", b)
	}
}
