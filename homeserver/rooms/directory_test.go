package rooms

import (
	"context"
	"slices"
	"testing"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

func TestDirTokens(t *testing.T) {
	for _, tok := range []dirToken{
		{next: true, key: dirKey{joined: 0, roomID: "!a:x"}},
		{next: false, key: dirKey{joined: 12345, roomID: "!b|c:x"}},
	} {
		got, err := parseDirToken(tok.String())
		if err != nil || got != tok {
			t.Errorf("round trip of %+v: %+v, %v", tok, got, err)
		}
	}
	for _, bad := range []string{"", "!!", "eA", dirToken{key: dirKey{roomID: "x"}}.String(), "bjEyfA", "cTF8IWE6eA"} {
		if _, err := parseDirToken(bad); !mxerr.IsCode(err, "M_INVALID_PARAM") {
			t.Errorf("parseDirToken(%q) = %v, want M_INVALID_PARAM", bad, err)
		}
	}
}

func TestPageDirectory(t *testing.T) {
	rooms := []PublicRoom{
		{RoomID: "!e:x", NumJoinedMembers: 9},
		{RoomID: "!a:x", NumJoinedMembers: 5},
		{RoomID: "!b:x", NumJoinedMembers: 5},
		{RoomID: "!c:x", NumJoinedMembers: 1},
		{RoomID: "!d:x", NumJoinedMembers: 0},
	}
	ids := func(p *PublicRoomsPage) []string {
		var out []string
		for _, r := range p.Chunk {
			out = append(out, r.RoomID)
		}
		return out
	}
	parse := func(s string) *dirToken {
		t.Helper()
		if s == "" {
			t.Fatal("missing token")
		}
		tok, err := parseDirToken(s)
		if err != nil {
			t.Fatal(err)
		}
		return &tok
	}
	p1 := pageDirectory(rooms, nil, 2)
	if !slices.Equal(ids(p1), []string{"!e:x", "!a:x"}) || p1.PrevBatch != "" || p1.Total != 5 {
		t.Fatalf("page 1: %+v", p1)
	}
	p2 := pageDirectory(rooms, parse(p1.NextBatch), 2)
	if !slices.Equal(ids(p2), []string{"!b:x", "!c:x"}) || p2.PrevBatch == "" {
		t.Fatalf("page 2: %+v", p2)
	}
	p3 := pageDirectory(rooms, parse(p2.NextBatch), 2)
	if !slices.Equal(ids(p3), []string{"!d:x"}) || p3.NextBatch != "" {
		t.Fatalf("page 3: %+v", p3)
	}
	back := pageDirectory(rooms, parse(p3.PrevBatch), 2)
	if !slices.Equal(ids(back), ids(p2)) {
		t.Fatalf("back from page 3: %v", ids(back))
	}
	first := pageDirectory(rooms, parse(p2.PrevBatch), 2)
	if !slices.Equal(ids(first), ids(p1)) || first.PrevBatch != "" {
		t.Fatalf("back to page 1: %+v", first)
	}
	// A token whose room has gone still places the page.
	gone := &dirToken{next: true, key: dirKey{joined: 5, roomID: "!aa:x"}}
	if got := ids(pageDirectory(rooms, gone, 2)); !slices.Equal(got, []string{"!b:x", "!c:x"}) {
		t.Fatalf("after a vanished room: %v", got)
	}
	if p := pageDirectory(nil, nil, 10); len(p.Chunk) != 0 || p.Chunk == nil || p.NextBatch != "" {
		t.Fatalf("empty directory: %+v", p)
	}
}

func TestFilterDirectory(t *testing.T) {
	rooms := []PublicRoom{
		{RoomID: "!one:x", Name: "Tea Lovers"},
		{RoomID: "!two:x", Topic: "All about COFFEE"},
		{RoomID: "!three:x", CanonicalAlias: "#herbal:x", RoomType: "m.space"},
		{RoomID: "!four:x", RoomType: "org.example.custom"},
	}
	for _, c := range []struct {
		term  string
		types []string
		want  []string
	}{
		{"", nil, []string{"!one:x", "!two:x", "!three:x", "!four:x"}},
		{"tea", nil, []string{"!one:x"}},
		{"coffee", nil, []string{"!two:x"}},
		{"#herb", nil, []string{"!three:x"}},
		{"four", nil, []string{"!four:x"}},
		{"", []string{""}, []string{"!one:x", "!two:x"}},
		{"", []string{"m.space", "org.example.custom"}, []string{"!three:x", "!four:x"}},
		{"tea", []string{"m.space"}, nil},
	} {
		var got []string
		for _, r := range filterDirectory(rooms, c.term, c.types) {
			got = append(got, r.RoomID)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("filter %q %v: %v, want %v", c.term, c.types, got, c.want)
		}
	}
}

func TestDirectoryEntry(t *testing.T) {
	state := map[string]string{
		"m.room.name":               `{"name":"Room"}`,
		"m.room.topic":              `{"topic":"fallback","m.topic":{"m.text":[{"mimetype":"text/html","body":"<b>rich</b>"},{"body":"plain"}]}}`,
		"m.room.canonical_alias":    `{"alias":"not an alias"}`,
		"m.room.avatar":             `{"url":"https://not-mxc"}`,
		"m.room.join_rules":         `{"join_rule":"knock"}`,
		"m.room.history_visibility": `{"history_visibility":"world_readable"}`,
		"m.room.guest_access":       `{"guest_access":"can_join"}`,
		"m.room.create":             `{"type":7}`,
	}
	r := directoryEntry("!r:x", 3, func(typ string) []byte { return []byte(state[typ]) })
	want := PublicRoom{RoomID: "!r:x", Name: "Room", Topic: "plain", NumJoinedMembers: 3, WorldReadable: true,
		GuestCanJoin: true, JoinRule: "knock"}
	if r != want {
		t.Fatalf("entry %+v, want %+v", r, want)
	}
	if got := plainTopic([]byte(`{"topic":"only this"}`)); got != "only this" {
		t.Fatalf("plain topic fallback: %q", got)
	}
}

func TestValidServerName(t *testing.T) {
	for s, want := range map[string]bool{
		"example.org": true, "example.org:8448": true, "1.2.3.4": true, "[::1]": true, "[2001:db8::1]:443": true,
		"localhost": true, "": false, "bad name": false, "a:": false, "a:0": false, "a:70000": false, "[::1": false,
		"[1.2.3.4]": false, "[::1]x": false, "ex_ample.org": false, ":80": false,
	} {
		if got := ValidServerName(s); got != want {
			t.Errorf("ValidServerName(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestDirectoryListing checks the listing through the engine: publishing,
// entries and the cache's invalidation when events are persisted.
func TestDirectoryListing(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice, bob := "@alice:local.test", "@bob:local.test"
		room, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", Visibility: "public", Name: ptr("Before")})
		if err != nil {
			t.Fatal(err)
		}
		list := func() []PublicRoom {
			t.Helper()
			p, err := e.PublicRooms(ctx, PublicRoomsQuery{})
			if err != nil {
				t.Fatal(err)
			}
			return p.Chunk
		}
		if got := list(); len(got) != 1 || got[0].Name != "Before" || got[0].NumJoinedMembers != 1 || got[0].JoinRule != "public" {
			t.Fatalf("listing: %+v", got)
		}
		if _, err := e.Join(ctx, MembershipParams{RoomID: room, Sender: bob}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: room, Sender: alice, Type: "m.room.name", StateKey: ptr(""),
			Content: content(map[string]string{"name": "After"})}); err != nil {
			t.Fatal(err)
		}
		if got := list(); len(got) != 1 || got[0].Name != "After" || got[0].NumJoinedMembers != 2 {
			t.Fatalf("listing after changes: %+v", got)
		}
		if err := e.SetDirectoryVisibility(ctx, bob, false, room, "private"); !mxerr.IsCode(err, "M_FORBIDDEN") {
			t.Fatalf("bob may not hide the room: %v", err)
		}
		if err := e.SetDirectoryVisibility(ctx, bob, true, room, "private"); err != nil {
			t.Fatal(err)
		}
		if got := list(); len(got) != 0 {
			t.Fatalf("hidden room listed: %+v", got)
		}
		if v, err := e.DirectoryVisibility(ctx, room); err != nil || v != "private" {
			t.Fatalf("visibility: %q %v", v, err)
		}
	})
}
