package sytest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// Simplified sliding sync (MSC4186), as Element X uses it.

const ssPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

type ssResp struct {
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
	} `json:"lists"`
	Rooms      map[string]ssRoom `json:"rooms"`
	Extensions struct {
		ToDevice *struct {
			NextBatch string      `json:"next_batch"`
			Events    []syncEvent `json:"events"`
		} `json:"to_device"`
		E2EE *struct {
			DeviceLists *struct {
				Changed []string `json:"changed"`
			} `json:"device_lists"`
			OTKCounts map[string]int `json:"device_one_time_keys_count"`
			Fallback  []string       `json:"device_unused_fallback_key_types"`
		} `json:"e2ee"`
		AccountData *struct {
			Global []syncEvent            `json:"global"`
			Rooms  map[string][]syncEvent `json:"rooms"`
		} `json:"account_data"`
		Receipts *struct {
			Rooms map[string]syncEvent `json:"rooms"`
		} `json:"receipts"`
		Typing *struct {
			Rooms map[string]syncEvent `json:"rooms"`
		} `json:"typing"`
	} `json:"extensions"`
	raw []byte
}

type ssRoom struct {
	Name   *string `json:"name"`
	Heroes []struct {
		UserID      string `json:"user_id"`
		DisplayName string `json:"displayname"`
	} `json:"heroes"`
	IsDM             *bool       `json:"is_dm"`
	Initial          bool        `json:"initial"`
	Expanded         bool        `json:"expanded_timeline"`
	ExpandedUnstable bool        `json:"unstable_expanded_timeline"`
	RequiredState    []syncEvent `json:"required_state"`
	Timeline         []syncEvent `json:"timeline"`
	PrevBatch        string      `json:"prev_batch"`
	Limited          bool        `json:"limited"`
	NumLive          *int        `json:"num_live"`
	JoinedCount      *int        `json:"joined_count"`
	InvitedCount     *int        `json:"invited_count"`
	BumpStamp        *int64      `json:"bump_stamp"`
	Membership       string      `json:"membership"`
	Lists            []string    `json:"lists"`
	StrippedState    []syncEvent `json:"stripped_state"`
	InviteState      []syncEvent `json:"invite_state"`
}

// ss runs one sliding sync request and decodes the answer.
func (u *User) ss(t testing.TB, body map[string]any) ssResp {
	t.Helper()
	r := Must(t, u.Do(t, "POST", ssPath, body), 200)
	var out ssResp
	if err := json.Unmarshal(r.Body, &out); err != nil {
		t.Fatalf("sliding sync response: %v\n%s", err, r.Body)
	}
	if out.Pos == "" || out.Lists == nil {
		t.Fatalf("sliding sync response without pos or lists: %s", r.Body)
	}
	out.raw = r.Body
	return out
}

// stateKeys returns the state keys of a room's required_state, "type|key".
func (r ssRoom) stateKeys() []string {
	var out []string
	for _, e := range r.RequiredState {
		k := ""
		if e.StateKey != nil {
			k = *e.StateKey
		}
		out = append(out, e.Type+"|"+k)
	}
	slices.Sort(out)
	return out
}

func listReq(rng []int, limit int, rs any, filters map[string]any) map[string]any {
	l := map[string]any{"timeline_limit": limit, "required_state": rs}
	if rng != nil {
		l["range"] = rng
	}
	if filters != nil {
		l["filters"] = filters
	}
	return l
}

func roomIDs(r ssResp) []string {
	var out []string
	for id := range r.Rooms {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func sorted(ids ...string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func TestSlidingSyncListsOrderAndRanges(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "ss-alice")
		var rs []string
		for i := range 4 {
			rs = append(rs, alice.createRoom(t, map[string]any{"name": fmt.Sprint("room ", i)}))
			alice.send(t, rs[i], fmt.Sprint("hello ", i))
		}
		nameOnly := map[string]any{"include": []any{map[string]any{"type": "m.room.name", "state_key": ""}}}
		req := map[string]any{"conn_id": "main", "lists": map[string]any{"all": listReq([]int{0, 1}, 1, nameOnly, nil)}}
		r := alice.ss(t, req)
		if r.Lists["all"].Count != 4 {
			t.Fatalf("count = %d, want 4", r.Lists["all"].Count)
		}
		// The two most recently active rooms.
		if got, want := roomIDs(r), sorted(rs[3], rs[2]); !slices.Equal(got, want) {
			t.Fatalf("rooms %v, want %v", got, want)
		}
		top := r.Rooms[rs[3]]
		if !top.Initial || top.Name == nil || *top.Name != "room 3" || top.Membership != "join" || !slices.Equal(top.Lists, []string{"all"}) {
			t.Fatalf("room: %s", r.raw)
		}
		if len(top.Timeline) != 1 || top.Timeline[0].body() != "hello 3" || !top.Limited || top.PrevBatch == "" {
			t.Fatalf("timeline: %s", r.raw)
		}
		if top.BumpStamp == nil || *top.BumpStamp <= *r.Rooms[rs[2]].BumpStamp {
			t.Fatalf("bump stamps do not order the rooms: %s", r.raw)
		}
		if top.NumLive == nil || *top.NumLive != 0 {
			t.Fatalf("num_live of an initial sync = %v", top.NumLive)
		}
		if got := top.stateKeys(); !slices.Equal(got, []string{"m.room.name|"}) {
			t.Fatalf("required_state %v", got)
		}
		if top.JoinedCount == nil || *top.JoinedCount != 1 || top.InvitedCount == nil || *top.InvitedCount != 0 {
			t.Fatalf("counts: %s", r.raw)
		}

		t.Run("sending into an older room moves it to the top", func(t *testing.T) {
			alice.send(t, rs[0], "bump")
			req["pos"] = r.Pos
			r2 := alice.ss(t, req)
			if got := roomIDs(r2); !slices.Equal(got, []string{rs[0]}) {
				t.Fatalf("rooms %v, want only the bumped room", got)
			}
			x := r2.Rooms[rs[0]]
			if !x.Initial || len(x.Timeline) != 1 || x.Timeline[0].body() != "bump" || x.NumLive == nil || *x.NumLive != 1 {
				t.Fatalf("bumped room: %s", r2.raw)
			}
			// A room already sent gets only its news.
			alice.send(t, rs[3], "news")
			req["pos"] = r2.Pos
			r3 := alice.ss(t, req)
			y, ok := r3.Rooms[rs[3]]
			if !ok || y.Initial || y.Name != nil || len(y.Timeline) != 1 || y.Timeline[0].body() != "news" || y.Limited || *y.NumLive != 1 {
				t.Fatalf("incremental room: %s", r3.raw)
			}
			// Widening the range sends only the rooms not sent yet.
			req["pos"] = r3.Pos
			req["lists"] = map[string]any{"all": listReq([]int{0, 3}, 1, nameOnly, nil)}
			r4 := alice.ss(t, req)
			if got := roomIDs(r4); !slices.Equal(got, []string{rs[1]}) {
				t.Fatalf("widened range sent %v, want only %s", got, rs[1])
			}
			// The pos works as a /messages token.
			m := Must(t, alice.Do(t, "GET", roomPath(rs[3])+"/messages?dir=b&limit=1&from="+url.QueryEscape(r4.Pos), nil), 200)
			if got := chunkBodies(m); !slices.Equal(got, []string{"news"}) {
				t.Fatalf("/messages from a pos: %v", got)
			}
		})
	})
}

func TestSlidingSyncFilters(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "ss-falice")
		bob := s.Register(t, "ss-fbob")
		plain := alice.createRoom(t, nil)
		dm := alice.createRoom(t, map[string]any{"is_direct": true, "invite": []string{bob.ID}})
		Must(t, alice.Do(t, "PUT", v3+"/user/"+url.PathEscape(alice.ID)+"/account_data/m.direct",
			map[string]any{bob.ID: []string{dm}}), 200)
		enc := alice.createRoom(t, map[string]any{"initial_state": []any{map[string]any{
			"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}})
		space := alice.createRoom(t, map[string]any{"creation_content": map[string]any{"type": "m.space"}})
		alice.putState(t, space, "m.space.child", plain, map[string]any{"via": []string{s.Name}})
		Must(t, alice.Do(t, "PUT", v3+"/user/"+url.PathEscape(alice.ID)+"/rooms/"+url.PathEscape(enc)+"/account_data/m.tag",
			map[string]any{"tags": map[string]any{"m.favourite": map[string]any{"order": 0.5}}}), 200)
		invite := bob.createRoom(t, map[string]any{"invite": []string{alice.ID}})

		none := map[string]any{}
		lists := map[string]any{
			"dm":         listReq(nil, 0, none, map[string]any{"is_dm": true}),
			"not_dm":     listReq(nil, 0, none, map[string]any{"is_dm": false}),
			"invites":    listReq(nil, 0, none, map[string]any{"is_invited": true}),
			"encrypted":  listReq(nil, 0, none, map[string]any{"is_encrypted": true}),
			"spaces":     listReq(nil, 0, none, map[string]any{"room_types": []any{"m.space"}}),
			"not_spaces": listReq(nil, 0, none, map[string]any{"not_room_types": []any{"m.space"}, "is_invited": false}),
			"untyped":    listReq(nil, 0, none, map[string]any{"room_types": []any{nil}, "not_room_types": []any{nil}}),
			"in_space":   listReq(nil, 0, none, map[string]any{"spaces": []string{space}}),
			"favourites": listReq(nil, 0, none, map[string]any{"tags": []string{"m.favourite"}}),
			"not_fav":    listReq(nil, 0, none, map[string]any{"not_tags": []string{"m.favourite"}, "is_invited": false}),
		}
		r := alice.ss(t, map[string]any{"lists": lists})
		want := map[string][]string{
			"dm": {dm}, "not_dm": sorted(plain, enc, space, invite), "invites": {invite}, "encrypted": {enc},
			"spaces": {space}, "not_spaces": sorted(plain, dm, enc), "untyped": nil, "in_space": {plain},
			"favourites": {enc}, "not_fav": sorted(plain, dm, space),
		}
		inList := map[string][]string{}
		for id, room := range r.Rooms {
			for _, l := range room.Lists {
				inList[l] = append(inList[l], id)
			}
		}
		for l, w := range want {
			got := sorted(inList[l]...)
			if !slices.Equal(got, w) || r.Lists[l].Count != len(w) {
				t.Errorf("list %s: rooms %v (count %d), want %v", l, got, r.Lists[l].Count, w)
			}
		}
		if d := r.Rooms[dm]; d.IsDM == nil || !*d.IsDM {
			t.Errorf("DM room without is_dm: %s", r.raw)
		}
		// A room without a name comes with heroes.
		if d := r.Rooms[dm]; len(d.Heroes) != 1 || d.Heroes[0].UserID != bob.ID || d.Name != nil ||
			*d.JoinedCount != 1 || *d.InvitedCount != 1 {
			t.Errorf("DM room summary: %s", r.raw)
		}
		if p := r.Rooms[plain]; p.IsDM != nil {
			t.Errorf("non-DM room with is_dm: %s", r.raw)
		}
		inv := r.Rooms[invite]
		if inv.Membership != "invite" || len(inv.StrippedState) == 0 || inv.Timeline != nil || inv.InviteState != nil {
			t.Errorf("invite: %s", r.raw)
		}

		t.Run("is_dm changes are sent", func(t *testing.T) {
			Must(t, alice.Do(t, "PUT", v3+"/user/"+url.PathEscape(alice.ID)+"/account_data/m.direct",
				map[string]any{bob.ID: []string{dm, plain}}), 200)
			r2 := alice.ss(t, map[string]any{"pos": r.Pos, "lists": lists})
			p, ok := r2.Rooms[plain]
			if !ok || p.IsDM == nil || !*p.IsDM || p.Initial {
				t.Fatalf("room that became a DM: %s", r2.raw)
			}
			if r2.Lists["dm"].Count != 2 {
				t.Fatalf("dm count %d", r2.Lists["dm"].Count)
			}
		})

		t.Run("earlier drafts' shapes", func(t *testing.T) {
			r := alice.ss(t, map[string]any{"lists": map[string]any{"inv": map[string]any{
				"ranges": [][]int{{0, 9}}, "timeline_limit": 1, "required_state": [][]string{{"m.room.create", ""}},
				"filters": map[string]any{"is_invite": true},
			}}})
			inv := r.Rooms[invite]
			if len(inv.InviteState) == 0 || inv.StrippedState != nil || len(r.Rooms) != 1 {
				t.Fatalf("invite in compat mode: %s", r.raw)
			}
		})
	})
}

func TestSlidingSyncRequiredState(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "ss-ralice")
		bob := s.Register(t, "ss-rbob")
		carol := s.Register(t, "ss-rcarol")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "lazy", "topic": "t"})
		bob.join(t, room)
		carol.join(t, room)
		carol.send(t, room, "from carol")
		bob.send(t, room, "from bob")

		// Lazy members: only the timeline's sender, plus $ME.
		r := alice.ss(t, map[string]any{"lists": map[string]any{"l": map[string]any{
			"ranges": [][]int{{0, 0}}, "timeline_limit": 1,
			"required_state": [][]string{{"m.room.member", "$LAZY"}, {"m.room.member", "$ME"}, {"m.room.topic", ""}},
		}}})
		got := r.Rooms[room].stateKeys()
		want := sorted("m.room.member|"+bob.ID, "m.room.member|"+alice.ID, "m.room.topic|")
		if !slices.Equal(got, want) {
			t.Fatalf("$LAZY: %v, want %v", got, want)
		}

		t.Run("include, exclude and lazy_members", func(t *testing.T) {
			r := alice.ss(t, map[string]any{"room_subscriptions": map[string]any{room: map[string]any{
				"timeline_limit": 1,
				"required_state": map[string]any{"include": []any{map[string]any{}},
					"exclude": []any{map[string]any{"type": "m.room.create"}}, "lazy_members": true},
			}}})
			keys := r.Rooms[room].stateKeys()
			for _, k := range keys {
				if k == "m.room.create|" || k == "m.room.member|"+carol.ID || k == "m.room.member|"+alice.ID {
					t.Fatalf("unexpected %s in %v", k, keys)
				}
			}
			for _, k := range []string{"m.room.name|", "m.room.power_levels|", "m.room.member|" + bob.ID} {
				if !slices.Contains(keys, k) {
					t.Fatalf("missing %s in %v", k, keys)
				}
			}
			if r.Rooms[room].Lists != nil {
				t.Fatalf("a subscribed room names lists: %s", r.raw)
			}
		})

		t.Run("wildcards", func(t *testing.T) {
			r := alice.ss(t, map[string]any{"room_subscriptions": map[string]any{room: map[string]any{
				"timeline_limit": 0, "required_state": [][]string{{"m.room.member", "*"}},
			}}})
			if got := len(r.Rooms[room].RequiredState); got != 3 {
				t.Fatalf("members wildcard gave %d events", got)
			}
			r = alice.ss(t, map[string]any{"room_subscriptions": map[string]any{room: map[string]any{
				"timeline_limit": 0, "required_state": map[string]any{"include": []any{map[string]any{"state_key": ""}}},
			}}})
			for _, k := range r.Rooms[room].stateKeys() {
				if !strings.HasSuffix(k, "|") {
					t.Fatalf("state_key wildcard over types let %s through", k)
				}
			}
		})

		t.Run("grown required_state is sent at once, changes after", func(t *testing.T) {
			small := map[string]any{"timeline_limit": 1, "required_state": map[string]any{"include": []any{map[string]any{"type": "m.room.name", "state_key": ""}}}}
			req := map[string]any{"conn_id": "grow", "room_subscriptions": map[string]any{room: small}}
			r1 := alice.ss(t, req)
			if got := r1.Rooms[room].stateKeys(); !slices.Equal(got, []string{"m.room.name|"}) {
				t.Fatalf("small: %v", got)
			}
			big := map[string]any{"timeline_limit": 1, "required_state": map[string]any{"include": []any{
				map[string]any{"type": "m.room.name", "state_key": ""}, map[string]any{"type": "m.room.topic", "state_key": ""}}}}
			req["pos"], req["room_subscriptions"] = r1.Pos, map[string]any{room: big}
			r2 := alice.ss(t, req)
			if got := r2.Rooms[room].stateKeys(); !slices.Equal(got, []string{"m.room.topic|"}) {
				t.Fatalf("expansion sent %v, want only the topic: %s", got, r2.raw)
			}
			alice.putState(t, room, "m.room.topic", "", map[string]any{"topic": "new"})
			req["pos"] = r2.Pos
			r3 := alice.ss(t, req)
			x := r3.Rooms[room]
			if got := x.stateKeys(); !slices.Equal(got, []string{"m.room.topic|"}) || x.Initial {
				t.Fatalf("topic change: %s", r3.raw)
			}
		})
	})
}

func TestSlidingSyncTimeline(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "ss-talice")
		room := alice.createRoom(t, nil)
		for i := range 8 {
			alice.send(t, room, fmt.Sprint("m", i))
		}
		sub := func(limit int) map[string]any {
			return map[string]any{room: map[string]any{"timeline_limit": limit, "required_state": map[string]any{}}}
		}
		req := map[string]any{"room_subscriptions": sub(3)}
		r := alice.ss(t, req)
		x := r.Rooms[room]
		if got := bodies(x.Timeline); !slices.Equal(got, []string{"m5", "m6", "m7"}) || !x.Limited {
			t.Fatalf("timeline %v limited %v", got, x.Limited)
		}
		m := Must(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=3&from="+url.QueryEscape(x.PrevBatch), nil), 200)
		if got := chunkBodies(m); !slices.Equal(got, []string{"m4", "m3", "m2"}) {
			t.Fatalf("/messages from prev_batch: %v", got)
		}

		t.Run("a larger timeline_limit sends history at once", func(t *testing.T) {
			req["pos"], req["room_subscriptions"] = r.Pos, sub(6)
			r2 := alice.ss(t, req)
			y, ok := r2.Rooms[room]
			if !ok || !y.Expanded || y.Initial {
				t.Fatalf("expanded timeline: %s", r2.raw)
			}
			if got := bodies(y.Timeline); !slices.Equal(got, []string{"m2", "m3", "m4", "m5", "m6", "m7"}) || *y.NumLive != 0 {
				t.Fatalf("expanded timeline %v num_live %d", got, *y.NumLive)
			}
			// Going back down and up within what was sent: nothing to send.
			req["pos"], req["room_subscriptions"] = r2.Pos, sub(2)
			r3 := alice.ss(t, req)
			req["pos"], req["room_subscriptions"] = r3.Pos, sub(5)
			r4 := alice.ss(t, req)
			if _, ok := r4.Rooms[room]; ok {
				t.Fatalf("timeline re-sent: %s", r4.raw)
			}
		})

		t.Run("gappy incremental", func(t *testing.T) {
			r := alice.ss(t, map[string]any{"conn_id": "gap", "room_subscriptions": sub(2)})
			for i := range 5 {
				alice.send(t, room, fmt.Sprint("g", i))
			}
			r2 := alice.ss(t, map[string]any{"conn_id": "gap", "pos": r.Pos, "room_subscriptions": sub(2)})
			y := r2.Rooms[room]
			if got := bodies(y.Timeline); !slices.Equal(got, []string{"g3", "g4"}) || !y.Limited || *y.NumLive != 2 || y.Initial {
				t.Fatalf("gappy: %s", r2.raw)
			}
		})
	})
}

func TestSlidingSyncSubscriptionsAndInvites(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "ss-salice")
		bob := s.Register(t, "ss-sbob")
		mine := alice.createRoom(t, nil)
		other := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		cfg := map[string]any{"timeline_limit": 1, "required_state": map[string]any{}}
		r := alice.ss(t, map[string]any{"room_subscriptions": map[string]any{
			mine: cfg, other: cfg, "!unknown:" + s.Name: cfg,
		}})
		if got := roomIDs(r); !slices.Equal(got, []string{mine}) {
			t.Fatalf("subscriptions returned %v, want only the user's room", got)
		}

		t.Run("unsubscribing stops updates", func(t *testing.T) {
			alice.send(t, mine, "one")
			r2 := alice.ss(t, map[string]any{"pos": r.Pos, "room_subscriptions": map[string]any{}})
			if len(r2.Rooms) != 0 {
				t.Fatalf("unsubscribed room sent: %s", r2.raw)
			}
			// Subscribing again brings the news from where the client was.
			r3 := alice.ss(t, map[string]any{"pos": r2.Pos, "room_subscriptions": map[string]any{mine: cfg}})
			if got := bodies(r3.Rooms[mine].Timeline); !slices.Equal(got, []string{"one"}) || r3.Rooms[mine].Initial {
				t.Fatalf("resubscribed: %s", r3.raw)
			}
		})

		t.Run("invite then join", func(t *testing.T) {
			Must(t, bob.Do(t, "POST", roomPath(other)+"/invite", map[string]any{"user_id": alice.ID}), 200)
			req := map[string]any{"conn_id": "inv", "lists": map[string]any{"all": listReq([]int{0, 9}, 1, map[string]any{}, nil)}}
			r := alice.ss(t, req)
			inv := r.Rooms[other]
			if inv.Membership != "invite" || len(inv.StrippedState) == 0 || inv.Timeline != nil {
				t.Fatalf("invite: %s", r.raw)
			}
			alice.join(t, other)
			req["pos"] = r.Pos
			r2 := alice.ss(t, req)
			j := r2.Rooms[other]
			if j.Membership != "join" || !j.Initial || len(j.Timeline) != 1 || j.StrippedState != nil {
				t.Fatalf("joined: %s", r2.raw)
			}
			// Leaving keeps the room in the list of this connection.
			Must(t, alice.Do(t, "POST", roomPath(other)+"/leave", map[string]any{}), 200)
			req["pos"] = r2.Pos
			r3 := alice.ss(t, req)
			if l := r3.Rooms[other]; l.Membership != "leave" || l.Initial {
				t.Fatalf("left: %s", r3.raw)
			}
			// A new connection does not list a room the user left.
			r4 := alice.ss(t, map[string]any{"conn_id": "inv2", "lists": req["lists"]})
			if _, ok := r4.Rooms[other]; ok {
				t.Fatalf("left room on a new connection: %s", r4.raw)
			}
		})
	})
}

func TestSlidingSyncLongPoll(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "ss-lalice")
		bob := s.Register(t, "ss-lbob")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		req := map[string]any{"lists": map[string]any{"all": listReq([]int{0, 9}, 5, map[string]any{}, nil)}}
		r := bob.ss(t, req)
		// Nothing new and no timeout: an immediate, empty answer that keeps the pos.
		req["pos"] = r.Pos
		empty := bob.ss(t, req)
		if len(empty.Rooms) != 0 || empty.Pos != r.Pos {
			t.Fatalf("empty sync: %s", empty.raw)
		}
		done := make(chan ssResp, 1)
		req["timeout"] = 30000
		go func() { done <- bob.ss(t, req) }()
		// No sleep: the long-poll may start before or after the send.
		alice.send(t, room, "wake up")
		select {
		case got := <-done:
			if !slices.Contains(bodies(got.Rooms[room].Timeline), "wake up") {
				req["pos"] = got.Pos
				again := bob.ss(t, req)
				if !slices.Contains(bodies(again.Rooms[room].Timeline), "wake up") {
					t.Fatalf("message never arrived: %s / %s", got.raw, again.raw)
				}
			}
		case <-time.After(25 * time.Second):
			t.Fatal("long-poll did not wake")
		}
	})
}

func TestSlidingSyncExtensions(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "ss-xalice")
		bob := s.Register(t, "ss-xbob")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		on := map[string]any{"enabled": true}
		req := map[string]any{
			"lists":      map[string]any{"all": listReq([]int{0, 9}, 1, map[string]any{}, nil)},
			"extensions": map[string]any{"to_device": on, "e2ee": on, "account_data": on, "receipts": on, "typing": on},
		}
		r := alice.ss(t, req)
		if r.Extensions.E2EE == nil || r.Extensions.E2EE.OTKCounts == nil || r.Extensions.ToDevice == nil {
			t.Fatalf("e2ee and to_device missing: %s", r.raw)
		}
		next := func(t *testing.T, what string, ok func(ssResp) bool) {
			t.Helper()
			req["pos"], req["timeout"] = r.Pos, 10000
			for range 5 {
				got := alice.ss(t, req)
				req["pos"] = got.Pos
				r = got
				if ok(got) {
					return
				}
			}
			t.Fatalf("%s never arrived: %s", what, r.raw)
		}

		t.Run("to_device", func(t *testing.T) {
			Must(t, bob.Do(t, "PUT", v3+"/sendToDevice/m.test/ss1", map[string]any{"messages": map[string]any{
				alice.ID: map[string]any{alice.DeviceID: map[string]any{"hello": "ss"}}}}), 200)
			next(t, "to-device message", func(r ssResp) bool {
				td := r.Extensions.ToDevice
				return td != nil && len(td.Events) == 1 && td.Events[0].Type == "m.test" && td.NextBatch != ""
			})
			// Acknowledged by the next request: not sent again.
			req["timeout"] = 0
			again := alice.ss(t, req)
			if td := again.Extensions.ToDevice; td != nil && len(td.Events) > 0 {
				t.Fatalf("to-device sent twice: %s", again.raw)
			}
		})

		t.Run("e2ee", func(t *testing.T) {
			keysDevice(t, bob).uploadKeys(t, 1)
			next(t, "device list change", func(r ssResp) bool {
				e := r.Extensions.E2EE
				return e != nil && e.DeviceLists != nil && slices.Contains(e.DeviceLists.Changed, bob.ID)
			})
			// Alice's own keys: her counts.
			keysDevice(t, alice).uploadKeys(t, 3)
			req["timeout"] = 0
			r2 := alice.ss(t, req)
			if e := r2.Extensions.E2EE; e == nil || e.OTKCounts["signed_curve25519"] != 3 || !slices.Equal(e.Fallback, []string{"signed_curve25519"}) {
				t.Fatalf("key counts: %s", r2.raw)
			}
			r = r2
		})

		t.Run("account_data", func(t *testing.T) {
			Must(t, alice.Do(t, "PUT", v3+"/user/"+url.PathEscape(alice.ID)+"/account_data/org.example.ss", map[string]any{"a": 1}), 200)
			Must(t, alice.Do(t, "PUT", v3+"/user/"+url.PathEscape(alice.ID)+"/rooms/"+url.PathEscape(room)+"/account_data/org.example.room", map[string]any{"b": 2}), 200)
			var global, inRoom bool
			next(t, "account data", func(r ssResp) bool {
				if ad := r.Extensions.AccountData; ad != nil {
					for _, e := range ad.Global {
						global = global || e.Type == "org.example.ss"
					}
					for _, e := range ad.Rooms[room] {
						inRoom = inRoom || e.Type == "org.example.room"
					}
				}
				return global && inRoom
			})
		})

		t.Run("receipts", func(t *testing.T) {
			ev := bob.send(t, room, "read me")
			rr := alice.Do(t, "POST", roomPath(room)+"/receipt/m.read/"+url.PathEscape(ev), map[string]any{})
			if rr.Status == 404 && rr.Errcode() == "M_UNRECOGNIZED" {
				t.Skip("receipts are not served yet")
			}
			Must(t, rr, 200)
			next(t, "receipt", func(r ssResp) bool {
				rc := r.Extensions.Receipts
				return rc != nil && rc.Rooms[room].Type == "m.receipt" && strings.Contains(string(rc.Rooms[room].Content), ev)
			})
		})

		t.Run("typing", func(t *testing.T) {
			tr := bob.Do(t, "PUT", roomPath(room)+"/typing/"+url.PathEscape(bob.ID), map[string]any{"typing": true, "timeout": 20000})
			if tr.Status == 404 && tr.Errcode() == "M_UNRECOGNIZED" {
				t.Skip("typing is not served yet")
			}
			Must(t, tr, 200)
			next(t, "typing", func(r ssResp) bool {
				ty := r.Extensions.Typing
				return ty != nil && ty.Rooms[room].Type == "m.typing" && strings.Contains(string(ty.Rooms[room].Content), bob.ID)
			})
		})
	})
}

func TestSlidingSyncPosAndBadInput(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "ss-ealice")
		bob := s.Register(t, "ss-ebob")
		room := alice.createRoom(t, nil)
		sub := map[string]any{room: map[string]any{"timeline_limit": 1, "required_state": map[string]any{}}}
		r1 := alice.ss(t, map[string]any{"conn_id": "c", "room_subscriptions": sub})

		t.Run("retrying a pos answers again", func(t *testing.T) {
			alice.send(t, room, "once")
			a := alice.ss(t, map[string]any{"conn_id": "c", "pos": r1.Pos, "room_subscriptions": sub})
			b := alice.ss(t, map[string]any{"conn_id": "c", "pos": r1.Pos, "room_subscriptions": sub})
			if !slices.Equal(bodies(a.Rooms[room].Timeline), []string{"once"}) || !slices.Equal(bodies(b.Rooms[room].Timeline), []string{"once"}) {
				t.Fatalf("retry: %s / %s", a.raw, b.raw)
			}
			// The first answer was never acknowledged: its pos is gone.
			MustErr(t, alice.Do(t, "POST", ssPath, map[string]any{"conn_id": "c", "pos": a.Pos}), 400, "M_UNKNOWN_POS")
			c := alice.ss(t, map[string]any{"conn_id": "c", "pos": b.Pos, "room_subscriptions": sub})
			alice.send(t, room, "twice")
			d := alice.ss(t, map[string]any{"conn_id": "c", "pos": c.Pos, "room_subscriptions": sub})
			if !slices.Equal(bodies(d.Rooms[room].Timeline), []string{"twice"}) {
				t.Fatalf("after retry: %s", d.raw)
			}
			// Older positions expire once a newer one is used.
			MustErr(t, alice.Do(t, "POST", ssPath, map[string]any{"conn_id": "c", "pos": r1.Pos}), 400, "M_UNKNOWN_POS")
		})

		t.Run("unknown pos", func(t *testing.T) {
			for _, pos := range []string{"nonsense", "s1_999999_1", "s0_0_0", strings.Repeat("9", 300)} {
				MustErr(t, alice.Do(t, "POST", ssPath, map[string]any{"pos": pos}), 400, "M_UNKNOWN_POS")
			}
			// Another user's, device's or connection's pos.
			MustErr(t, bob.Do(t, "POST", ssPath, map[string]any{"conn_id": "c", "pos": r1.Pos}), 400, "M_UNKNOWN_POS")
			MustErr(t, s.Do(t, "POST", ssPath, alice.login(t), map[string]any{"conn_id": "c", "pos": r1.Pos}), 400, "M_UNKNOWN_POS")
			MustErr(t, alice.Do(t, "POST", ssPath, map[string]any{"conn_id": "other", "pos": r1.Pos}), 400, "M_UNKNOWN_POS")
			// Starting the connection again replaces it.
			fresh := alice.ss(t, map[string]any{"conn_id": "x"})
			alice.ss(t, map[string]any{"conn_id": "x"})
			MustErr(t, alice.Do(t, "POST", ssPath+"?pos="+url.QueryEscape(fresh.Pos), map[string]any{"conn_id": "x"}), 400, "M_UNKNOWN_POS")
		})

		t.Run("bad input", func(t *testing.T) {
			many := func(n int, f func(i int) (string, any)) map[string]any {
				out := map[string]any{}
				for i := range n {
					k, v := f(i)
					out[k] = v
				}
				return out
			}
			cfg := map[string]any{"timeline_limit": 1, "required_state": map[string]any{}}
			var members []any
			for i := range 101 {
				members = append(members, map[string]any{"type": "m.room.member", "state_key": fmt.Sprint("@u", i, ":x")})
			}
			cases := []struct {
				name   string
				body   any
				status int
				code   string
			}{
				{"not JSON", "{nope", 400, "M_NOT_JSON"},
				{"not an object", "[]", 400, "M_BAD_JSON"},
				{"wrong type", map[string]any{"lists": "all"}, 400, "M_BAD_JSON"},
				{"range end before start", map[string]any{"lists": map[string]any{"a": listReq([]int{5, 1}, 1, map[string]any{}, nil)}}, 400, "M_INVALID_PARAM"},
				{"range negative", map[string]any{"lists": map[string]any{"a": listReq([]int{-1, 1}, 1, map[string]any{}, nil)}}, 400, "M_INVALID_PARAM"},
				{"range of three", map[string]any{"lists": map[string]any{"a": listReq([]int{0, 1, 2}, 1, map[string]any{}, nil)}}, 400, "M_INVALID_PARAM"},
				{"too many ranges", map[string]any{"lists": map[string]any{"a": map[string]any{"timeline_limit": 1, "ranges": slices.Repeat([][]int{{0, 1}}, 11)}}}, 400, "M_INVALID_PARAM"},
				{"too many lists", map[string]any{"lists": many(101, func(i int) (string, any) { return fmt.Sprint("l", i), cfg })}, 400, "M_INVALID_PARAM"},
				{"bad list name", map[string]any{"lists": map[string]any{"a b": cfg}}, 400, "M_INVALID_PARAM"},
				{"too many subscriptions", map[string]any{"room_subscriptions": many(101, func(i int) (string, any) { return fmt.Sprint("!r", i, ":x"), cfg })}, 400, "M_INVALID_PARAM"},
				{"not a room ID", map[string]any{"room_subscriptions": map[string]any{"room": cfg}}, 400, "M_INVALID_PARAM"},
				{"too much required_state", map[string]any{"room_subscriptions": map[string]any{room: map[string]any{"timeline_limit": 1, "required_state": map[string]any{"include": members}}}}, 400, "M_INVALID_PARAM"},
				{"bad required_state pair", map[string]any{"room_subscriptions": map[string]any{room: map[string]any{"timeline_limit": 1, "required_state": [][]string{{"m.room.name"}}}}}, 400, "M_BAD_JSON"},
				{"negative timeline_limit", map[string]any{"room_subscriptions": map[string]any{room: map[string]any{"timeline_limit": -1}}}, 400, "M_INVALID_PARAM"},
				{"negative timeout", map[string]any{"timeout": -5}, 400, "M_INVALID_PARAM"},
				{"NUL in conn_id", map[string]any{"conn_id": "a\u0000b"}, 400, "M_INVALID_PARAM"},
				{"NUL in a subscription", map[string]any{"room_subscriptions": map[string]any{"!a\u0000b:x": cfg}}, 400, "M_INVALID_PARAM"},
				{"bad set_presence", map[string]any{"set_presence": "busy"}, 400, "M_INVALID_PARAM"},
				{"bad to_device since", map[string]any{"extensions": map[string]any{"to_device": map[string]any{"enabled": true, "since": "x"}}}, 400, "M_INVALID_PARAM"},
				{"too many filter entries", map[string]any{"lists": map[string]any{"a": listReq(nil, 1, map[string]any{}, map[string]any{"tags": slices.Repeat([]string{"t"}, 101)})}}, 400, "M_INVALID_PARAM"},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					MustErr(t, alice.Do(t, "POST", ssPath, c.body), c.status, c.code)
				})
			}
			MustErr(t, s.Do(t, "POST", ssPath, "", map[string]any{}), 401, "M_MISSING_TOKEN")
			MustErr(t, alice.Do(t, "GET", ssPath, nil), 405, "M_UNRECOGNIZED")
			MustErr(t, alice.Do(t, "POST", ssPath+"?timeout=soon", map[string]any{}), 400, "M_INVALID_PARAM")
		})

		t.Run("timeline_limit is capped", func(t *testing.T) {
			r := alice.ss(t, map[string]any{"room_subscriptions": map[string]any{room: map[string]any{"timeline_limit": 100000, "required_state": map[string]any{}}}})
			if _, ok := r.Rooms[room]; !ok {
				t.Fatalf("room missing: %s", r.raw)
			}
		})
	})
}

func TestSlidingSyncVersions(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		r := Must(t, s.Do(t, "GET", "/_matrix/client/versions", "", nil), 200)
		feats, _ := r.JSON["unstable_features"].(map[string]any)
		if feats["org.matrix.simplified_msc3575"] != true {
			t.Fatalf("unstable feature not advertised: %s", r.Body)
		}
	})
}

// TestSlidingSyncAcrossInstances continues one connection on two
// instances of one database: the connection's state lives in the
// database, and a long-poll on one instance wakes for a message sent
// through the other.
func TestSlidingSyncAcrossInstances(t *testing.T) {
	t.Parallel()
	a, b := StartPair(t)
	alice := a.Register(t, "ss-multi")
	onB := alice.On(b)
	room := alice.createRoom(t, map[string]any{"name": "multi"})
	req := map[string]any{"conn_id": "m", "lists": map[string]any{"all": listReq([]int{0, 9}, 1, map[string]any{}, nil)}}
	r := alice.ss(t, req)
	if !r.Rooms[room].Initial {
		t.Fatalf("first response: %s", r.raw)
	}
	req["pos"], req["timeout"] = r.Pos, 20000
	done := make(chan ssResp, 1)
	go func() { done <- onB.ss(t, req) }()
	alice.send(t, room, "through A")
	var got ssResp
	select {
	case got = <-done:
	case <-time.After(25 * time.Second):
		t.Fatal("the long-poll on B did not wake")
	}
	for !slices.Contains(bodies(got.Rooms[room].Timeline), "through A") {
		req["pos"] = got.Pos
		got = onB.ss(t, req)
	}
	if got.Rooms[room].Initial {
		t.Fatalf("B sent the room as new: %s", got.raw)
	}
	// Back on A with B's pos: nothing is sent again.
	req["pos"], req["timeout"] = got.Pos, 0
	if again := alice.ss(t, req); len(again.Rooms) != 0 {
		t.Fatalf("A sent again what B had sent: %s", again.raw)
	}
}
