package sytest

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

func rxAliasPath(alias string) string { return v3 + "/directory/room/" + url.PathEscape(alias) }

func rxVisibilityPath(room string) string { return v3 + "/directory/list/room/" + url.PathEscape(room) }

func TestDirectoryAliases(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "alice")
		bob := s.Register(t, "bob")
		carol := s.Register(t, "carol")
		admin := s.RegisterAdmin(t, "admin")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		tag := "rx" + randHex(4)
		a1, a2, a3 := "#"+tag+"-one:"+s.Name, "#"+tag+"-two:"+s.Name, "#"+tag+"-three:"+s.Name

		t.Run("create and resolve", func(t *testing.T) {
			Must(t, alice.Do(t, "PUT", rxAliasPath(a1), map[string]any{"room_id": room}), 200)
			r := Must(t, s.Do(t, "GET", rxAliasPath(a1), "", nil), 200)
			servers, _ := r.JSON["servers"].([]any)
			if r.Str("room_id") != room || len(servers) == 0 || servers[0] != s.Name {
				t.Fatalf("resolve: %s", r)
			}
			MustErr(t, alice.Do(t, "PUT", rxAliasPath(a1), map[string]any{"room_id": room}), 409, "M_UNKNOWN")
			// Only joined members may add aliases; any joined member may.
			MustErr(t, bob.Do(t, "PUT", rxAliasPath(a2), map[string]any{"room_id": room}), 403, "M_FORBIDDEN")
			bob.join(t, room)
			Must(t, bob.Do(t, "PUT", rxAliasPath(a2), map[string]any{"room_id": room}), 200)
			// Joining by alias works with what was created.
			carol.join(t, a2)
		})
		t.Run("local aliases of a room", func(t *testing.T) {
			r := Must(t, carol.Do(t, "GET", roomPath(room)+"/aliases", nil), 200)
			aliases, _ := r.JSON["aliases"].([]any)
			if len(aliases) != 2 || !slices.Contains(aliases, any(a1)) || !slices.Contains(aliases, any(a2)) {
				t.Fatalf("aliases: %s", r)
			}
			outsider := s.Register(t, "outsider")
			MustErr(t, outsider.Do(t, "GET", roomPath(room)+"/aliases", nil), 403, "M_FORBIDDEN")
			MustErr(t, outsider.Do(t, "GET", roomPath("!unknown:localhost")+"/aliases", nil), 403, "M_FORBIDDEN")
			Must(t, admin.Do(t, "GET", roomPath(room)+"/aliases", nil), 200)
			readable := alice.createRoom(t, map[string]any{"preset": "private_chat", "initial_state": []any{map[string]any{
				"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
			r = Must(t, outsider.Do(t, "GET", roomPath(readable)+"/aliases", nil), 200)
			if got, _ := r.JSON["aliases"].([]any); got == nil || len(got) != 0 {
				t.Fatalf("world-readable room without aliases: %s", r)
			}
		})
		t.Run("delete", func(t *testing.T) {
			// Carol neither created a2 nor moderates the room.
			MustErr(t, carol.Do(t, "DELETE", rxAliasPath(a2), nil), 403, "M_FORBIDDEN")
			Must(t, bob.Do(t, "DELETE", rxAliasPath(a2), nil), 200)
			MustErr(t, s.Do(t, "GET", rxAliasPath(a2), "", nil), 404, "M_NOT_FOUND")
			MustErr(t, bob.Do(t, "DELETE", rxAliasPath(a2), nil), 404, "M_NOT_FOUND")
			// A moderator may delete anyone's alias; a server admin too.
			Must(t, carol.Do(t, "PUT", rxAliasPath(a3), map[string]any{"room_id": room}), 200)
			Must(t, admin.Do(t, "DELETE", rxAliasPath(a3), nil), 200)
			Must(t, carol.Do(t, "PUT", rxAliasPath(a3), map[string]any{"room_id": room}), 200)
			Must(t, alice.Do(t, "DELETE", rxAliasPath(a3), nil), 200)
		})
		t.Run("deleting the canonical alias updates the room", func(t *testing.T) {
			Must(t, alice.Do(t, "PUT", rxAliasPath(a2), map[string]any{"room_id": room}), 200)
			alice.putState(t, room, "m.room.canonical_alias", "", map[string]any{"alias": a1, "alt_aliases": []string{a2}})
			Must(t, alice.Do(t, "DELETE", rxAliasPath(a1), nil), 200)
			r := Must(t, alice.Do(t, "GET", roomPath(room)+"/state/m.room.canonical_alias/", nil), 200)
			if _, ok := r.JSON["alias"]; ok {
				t.Fatalf("deleted alias still canonical: %s", r)
			}
			if alts, _ := r.JSON["alt_aliases"].([]any); len(alts) != 1 || alts[0] != a2 {
				t.Fatalf("alt_aliases: %s", r)
			}
		})
		t.Run("bad input", func(t *testing.T) {
			for _, bad := range []string{"nocolon", "#nocolon", "#:" + s.Name, "!room:" + s.Name} {
				MustErr(t, s.Do(t, "GET", rxAliasPath(bad), "", nil), 400, "M_INVALID_PARAM")
				MustErr(t, alice.Do(t, "PUT", rxAliasPath(bad), map[string]any{"room_id": room}), 400, "M_INVALID_PARAM")
				MustErr(t, alice.Do(t, "DELETE", rxAliasPath(bad), nil), 400, "M_INVALID_PARAM")
			}
			MustErr(t, alice.Do(t, "PUT", rxAliasPath("#"+tag+":elsewhere.example"), map[string]any{"room_id": room}), 400, "M_INVALID_PARAM")
			MustErr(t, s.Do(t, "GET", rxAliasPath("#"+tag+":elsewhere.example"), "", nil), 404, "M_NOT_FOUND")
			MustErr(t, s.Do(t, "GET", rxAliasPath("#"+tag+"-none:"+s.Name), "", nil), 404, "M_NOT_FOUND")
			MustErr(t, alice.Do(t, "PUT", rxAliasPath("#"+tag+"-x:"+s.Name), map[string]any{}), 400, "M_MISSING_PARAM")
			MustErr(t, alice.Do(t, "PUT", rxAliasPath("#"+tag+"-x:"+s.Name), map[string]any{"room_id": "nope"}), 400, "M_INVALID_PARAM")
			MustErr(t, alice.Do(t, "PUT", rxAliasPath("#"+tag+"-x:"+s.Name), map[string]any{"room_id": 7}), 400, "M_BAD_JSON")
			MustErr(t, alice.Do(t, "PUT", rxAliasPath("#"+tag+"-x:"+s.Name), "{not json"), 400, "M_NOT_JSON")
			MustErr(t, alice.Do(t, "PUT", rxAliasPath("#"+tag+"-x:"+s.Name), map[string]any{"room_id": "!unknown:" + s.Name}), 403, "M_FORBIDDEN")
			MustErr(t, admin.Do(t, "PUT", rxAliasPath("#"+tag+"-x:"+s.Name), map[string]any{"room_id": "!unknown:" + s.Name}), 404, "M_NOT_FOUND")
			MustErr(t, s.Do(t, "PUT", rxAliasPath("#"+tag+"-x:"+s.Name), "", map[string]any{"room_id": room}), 401, "M_MISSING_TOKEN")
			MustErr(t, alice.Do(t, "PUT", rxAliasPath("#"+strings.Repeat("a", 300)+":"+s.Name), map[string]any{"room_id": room}), 400, "M_INVALID_PARAM")
		})
	})
}

func TestPublicRooms(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "alice")
		bob := s.Register(t, "bob")
		carol := s.Register(t, "carol")
		tag := "rx" + randHex(5)
		big := alice.createRoom(t, map[string]any{"preset": "public_chat", "visibility": "public", "name": tag + " big",
			"topic": "Big " + tag + " topic", "room_alias_name": tag + "-big"})
		bob.join(t, big)
		carol.join(t, big)
		mid := alice.createRoom(t, map[string]any{"preset": "public_chat", "visibility": "public", "name": tag + " mid"})
		bob.join(t, mid)
		space := alice.createRoom(t, map[string]any{"preset": "public_chat", "visibility": "public", "name": tag + " space",
			"creation_content": map[string]any{"type": "m.space"}})
		hidden := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": tag + " hidden"})
		search := func(t *testing.T, body map[string]any) *Response {
			t.Helper()
			filter, _ := body["filter"].(map[string]any)
			if filter == nil {
				filter = map[string]any{}
				body["filter"] = filter
			}
			if _, ok := filter["generic_search_term"]; !ok {
				filter["generic_search_term"] = tag
			}
			return Must(t, bob.Do(t, "POST", v3+"/publicRooms", body), 200)
		}

		t.Run("listing, order and entries", func(t *testing.T) {
			r := search(t, map[string]any{})
			if got := rxRoomIDs(r); !slices.Equal(got, rxSortByID([]string{big}, []string{mid}, []string{space})) {
				t.Fatalf("rooms %v", got)
			}
			if n, _ := r.JSON["total_room_count_estimate"].(float64); n != 3 {
				t.Fatalf("total: %s", r)
			}
			chunk, _ := r.JSON["chunk"].([]any)
			first := chunk[0].(map[string]any)
			if first["num_joined_members"] != float64(3) || first["name"] != tag+" big" || first["topic"] != "Big "+tag+" topic" ||
				first["canonical_alias"] != "#"+tag+"-big:"+s.Name || first["join_rule"] != "public" ||
				first["world_readable"] != false || first["guest_can_join"] != false {
				t.Fatalf("entry: %v", first)
			}
			if chunk[2].(map[string]any)["room_type"] != "m.space" {
				t.Fatalf("space entry: %v", chunk[2])
			}
			// Unauthenticated GET works too.
			g := Must(t, s.Do(t, "GET", v3+"/publicRooms?limit=500&server="+s.Name, "", nil), 200)
			if ids := rxRoomIDs(g); !slices.Contains(ids, big) || slices.Contains(ids, hidden) {
				t.Fatalf("GET listing: %v", ids)
			}
		})
		t.Run("search fields and room types", func(t *testing.T) {
			for term, want := range map[string][]string{
				"BIG " + strings.ToUpper(tag) + " TOPIC": {big},
				"#" + tag + "-big":                       {big},
				strings.TrimPrefix(mid, "!"):             {mid},
			} {
				r := search(t, map[string]any{"filter": map[string]any{"generic_search_term": term}})
				if got := rxRoomIDs(r); !slices.Equal(got, want) {
					t.Fatalf("search %q: %v, want %v", term, got, want)
				}
			}
			r := search(t, map[string]any{"filter": map[string]any{"room_types": []any{nil}}})
			if got := rxRoomIDs(r); slices.Contains(got, space) || len(got) != 2 {
				t.Fatalf("untyped rooms: %v", got)
			}
			r = search(t, map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}})
			if got := rxRoomIDs(r); !slices.Equal(got, []string{space}) {
				t.Fatalf("spaces: %v", got)
			}
			r = search(t, map[string]any{"third_party_instance_id": "irc"})
			if got := rxRoomIDs(r); len(got) != 0 {
				t.Fatalf("no bridged networks: %v", got)
			}
			r = search(t, map[string]any{"include_all_networks": true})
			if got := rxRoomIDs(r); len(got) != 3 {
				t.Fatalf("all networks: %v", got)
			}
		})
		t.Run("pagination both ways", func(t *testing.T) {
			want := rxRoomIDs(search(t, map[string]any{}))
			var got []string
			var tokens []string
			since := ""
			for range 5 {
				body := map[string]any{"limit": 1}
				if since != "" {
					body["since"] = since
				}
				r := search(t, body)
				got = append(got, rxRoomIDs(r)...)
				since = r.Str("next_batch")
				tokens = append(tokens, r.Str("prev_batch"))
				if since == "" {
					break
				}
			}
			if !slices.Equal(got, want) || tokens[0] != "" {
				t.Fatalf("pages %v (prev tokens %q), want %v", got, tokens, want)
			}
			back := search(t, map[string]any{"limit": 1, "since": tokens[2]})
			if ids := rxRoomIDs(back); !slices.Equal(ids, want[1:2]) {
				t.Fatalf("previous page: %v, want %v", ids, want[1:2])
			}
		})
		t.Run("visibility", func(t *testing.T) {
			r := Must(t, s.Do(t, "GET", rxVisibilityPath(hidden), "", nil), 200)
			if r.Str("visibility") != "private" {
				t.Fatalf("visibility: %s", r)
			}
			bob.join(t, hidden)
			MustErr(t, bob.Do(t, "PUT", rxVisibilityPath(hidden), map[string]any{"visibility": "public"}), 403, "M_FORBIDDEN")
			MustErr(t, carol.Do(t, "PUT", rxVisibilityPath(hidden), map[string]any{"visibility": "public"}), 403, "M_FORBIDDEN")
			Must(t, alice.Do(t, "PUT", rxVisibilityPath(hidden), map[string]any{"visibility": "public"}), 200)
			if got := rxRoomIDs(search(t, map[string]any{})); !slices.Contains(got, hidden) {
				t.Fatalf("published room missing: %v", got)
			}
			if r := Must(t, s.Do(t, "GET", rxVisibilityPath(hidden), "", nil), 200); r.Str("visibility") != "public" {
				t.Fatalf("visibility: %s", r)
			}
			Must(t, alice.Do(t, "PUT", rxVisibilityPath(hidden), map[string]any{"visibility": "private"}), 200)
			if got := rxRoomIDs(search(t, map[string]any{})); slices.Contains(got, hidden) {
				t.Fatalf("hidden room listed: %v", got)
			}
		})
		t.Run("bad input", func(t *testing.T) {
			MustErr(t, s.Do(t, "GET", rxVisibilityPath("!unknown:"+s.Name), "", nil), 404, "M_NOT_FOUND")
			MustErr(t, s.Do(t, "GET", rxVisibilityPath("nope"), "", nil), 400, "M_INVALID_PARAM")
			MustErr(t, alice.Do(t, "PUT", rxVisibilityPath("!unknown:"+s.Name), map[string]any{"visibility": "public"}), 404, "M_NOT_FOUND")
			MustErr(t, alice.Do(t, "PUT", rxVisibilityPath(big), map[string]any{"visibility": "secret"}), 400, "M_INVALID_PARAM")
			MustErr(t, alice.Do(t, "PUT", rxVisibilityPath(big), "[1]"), 400, "M_BAD_JSON")
			MustErr(t, s.Do(t, "PUT", rxVisibilityPath(big), "", map[string]any{"visibility": "public"}), 401, "M_MISSING_TOKEN")
			for _, q := range []string{"limit=0", "limit=x", "since=garbage", "server=bad%20name"} {
				MustErr(t, s.Do(t, "GET", v3+"/publicRooms?"+q, "", nil), 400, "M_INVALID_PARAM")
			}
			MustErr(t, s.Do(t, "GET", v3+"/publicRooms?server=elsewhere.example", "", nil), 404, "M_NOT_FOUND")
			MustErr(t, bob.Do(t, "POST", v3+"/publicRooms", map[string]any{"limit": 0}), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "POST", v3+"/publicRooms", map[string]any{"include_all_networks": true, "third_party_instance_id": "irc"}), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "POST", v3+"/publicRooms", map[string]any{"filter": map[string]any{"generic_search_term": strings.Repeat("x", 600)}}), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "POST", v3+"/publicRooms", map[string]any{"filter": map[string]any{"room_types": make([]any, 51)}}), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "POST", v3+"/publicRooms", map[string]any{"filter": "x"}), 400, "M_BAD_JSON")
			MustErr(t, bob.Do(t, "POST", v3+"/publicRooms", "nope"), 400, "M_NOT_JSON")
			MustErr(t, s.Do(t, "POST", v3+"/publicRooms", "", map[string]any{}), 401, "M_MISSING_TOKEN")
		})
	})
}

// rxRoomIDs returns the room IDs of a directory chunk.
func rxRoomIDs(r *Response) []string {
	var out []string
	chunk, _ := r.JSON["chunk"].([]any)
	for _, c := range chunk {
		id, _ := rxDig(c, "room_id").(string)
		out = append(out, id)
	}
	return out
}

// rxSortByID concatenates groups of rooms with equal member counts, each
// sorted by room ID (the directory's tie-break).
func rxSortByID(groups ...[]string) []string {
	var out []string
	for _, g := range groups {
		g = slices.Clone(g)
		slices.Sort(g)
		out = append(out, g...)
	}
	return out
}
