package rooms

import (
	"context"
	"slices"
	"testing"

	"github.com/parley-chat/parley/storage"
)

func TestSlidingSupport(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		e := newTestEngine(t, db)
		ctx := context.Background()
		alice, bob, carol := "@alice:local.test", "@bob:local.test", "@carol:local.test"
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		create := func(creator string, r CreateRoomRequest) string {
			t.Helper()
			id, err := e.CreateRoom(ctx, creator, r)
			must(err)
			return id
		}
		send := func(room, sender, typ string, key *string, c any) {
			t.Helper()
			_, err := e.Send(ctx, SendParams{RoomID: room, Sender: sender, Type: typ, StateKey: key, Content: content(c)})
			must(err)
		}
		msg := func(room, sender, body string) {
			send(room, sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body})
		}

		chat := create(alice, CreateRoomRequest{Preset: "public_chat"})
		_, err := e.Join(ctx, MembershipParams{RoomID: chat, Sender: bob})
		must(err)
		_, err = e.Join(ctx, MembershipParams{RoomID: chat, Sender: carol})
		must(err)
		msg(chat, bob, "hi")
		space := create(alice, CreateRoomRequest{CreationContent: map[string]any{"type": "m.space"},
			InitialState: []StateEventSpec{{Type: "m.room.encryption", Content: content(map[string]any{"algorithm": "m.megolm.v1.aes-sha2"})}}})
		send(space, alice, "m.space.child", ptr(chat), map[string]any{"via": []string{"local.test"}})
		send(space, alice, "m.space.child", ptr("!removed:local.test"), map[string]any{})

		invite := create(carol, CreateRoomRequest{Invite: []string{bob}})
		banned := create(carol, CreateRoomRequest{Preset: "public_chat"})
		must(e.Ban(ctx, MembershipParams{RoomID: banned, Sender: carol, Target: bob}))
		kicked := create(carol, CreateRoomRequest{Preset: "public_chat"})
		_, err = e.Join(ctx, MembershipParams{RoomID: kicked, Sender: bob})
		must(err)
		must(e.Kick(ctx, MembershipParams{RoomID: kicked, Sender: carol, Target: bob}))

		t.Run("room list", func(t *testing.T) {
			list, err := e.SlidingRooms(ctx, bob)
			must(err)
			got := map[string]SlidingRoomInfo{}
			for _, r := range list {
				got[r.RoomID] = r
			}
			if len(got) != 4 {
				t.Fatalf("rooms %+v", list)
			}
			if r := got[chat]; r.Membership != "join" || r.Activity < got[chat].MembershipStream || r.Kicked {
				t.Errorf("chat %+v", r)
			}
			if r := got[invite]; r.Membership != "invite" || r.Activity != r.MembershipStream || r.Activity == 0 {
				t.Errorf("invite %+v", r)
			}
			if r := got[banned]; r.Membership != "ban" || !r.Kicked || r.EverJoined {
				t.Errorf("banned %+v", r)
			}
			if r := got[kicked]; r.Membership != "leave" || !r.Kicked || !r.EverJoined {
				t.Errorf("kicked %+v", r)
			}
			// Activity after leaving is not the user's to see.
			msg(kicked, carol, "after")
			list, _ = e.SlidingRooms(ctx, bob)
			for _, r := range list {
				if r.RoomID == kicked && r.Activity != got[kicked].Activity {
					t.Errorf("activity moved after the kick: %+v", r)
				}
			}
		})

		t.Run("kinds and spaces", func(t *testing.T) {
			kinds, err := e.SlidingRoomKinds(ctx, []string{chat, space, "!unknown:local.test"})
			must(err)
			if k := kinds[space]; k.Type == nil || *k.Type != "m.space" || !k.Encrypted {
				t.Errorf("space %+v", k)
			}
			if k := kinds[chat]; k.Type != nil || k.Encrypted {
				t.Errorf("chat %+v", k)
			}
			if _, ok := kinds["!unknown:local.test"]; ok || len(kinds) != 2 {
				t.Errorf("kinds %v", kinds)
			}
			children, err := e.SpaceChildren(ctx, alice, space, 10)
			must(err)
			if !slices.Equal(children, []string{chat}) {
				t.Errorf("children %v", children)
			}
			if c, err := e.SpaceChildren(ctx, bob, space, 10); err != nil || c != nil {
				t.Errorf("children of a space bob is not in: %v %v", c, err)
			}
		})

		t.Run("room data", func(t *testing.T) {
			to, err := e.StreamPosition(ctx)
			must(err)
			isCreate := func(typ, key string) bool { return typ == "m.room.create" }
			q := SlidingRoomQuery{Who: Requester{UserID: alice}, RoomID: chat, Membership: "join", Initial: true,
				Live: to, To: to, Limit: 1, Match: isCreate, LazyMembers: true}
			d, err := e.SlidingRoom(ctx, q)
			must(err)
			if len(d.Timeline) != 1 || d.Timeline[0].Sender != bob || !d.Limited || d.NumLive != 0 || d.PrevBatch == "" {
				t.Fatalf("timeline %+v", d)
			}
			if types := stateTypes(d.State); !slices.Equal(types, []string{"m.room.create|", "m.room.member|" + bob}) {
				t.Fatalf("state %v", types)
			}
			if !slices.Equal(d.Members, []string{bob}) || d.HasName || d.NameChanged || *d.Joined != 3 || *d.Invited != 0 {
				t.Fatalf("summary %+v", d)
			}
			if len(d.Heroes) != 2 || d.Heroes[0].UserID != bob || d.Heroes[1].UserID != carol {
				t.Fatalf("heroes %+v", d.Heroes)
			}
			bump := d.BumpStamp

			// Incremental: the member events of the new senders lazily, bob's
			// not again; state events do not move the bump stamp.
			msg(chat, carol, "hello")
			send(chat, alice, "m.room.topic", ptr(""), map[string]any{"topic": "t"})
			send(chat, alice, "m.room.name", ptr(""), map[string]any{"name": "Named"})
			to2, _ := e.StreamPosition(ctx)
			q.Initial, q.From, q.Live, q.To, q.Limit = false, d.Upper, d.Upper, to2, 5
			q.LazySent = map[string]bool{bob: true}
			d2, err := e.SlidingRoom(ctx, q)
			must(err)
			if len(d2.Timeline) != 3 || d2.Limited || d2.NumLive != 3 || d2.Expanded {
				t.Fatalf("incremental timeline %+v", d2)
			}
			if types := stateTypes(d2.State); !slices.Equal(types, []string{"m.room.member|" + alice, "m.room.member|" + carol}) {
				t.Fatalf("incremental state %v", types)
			}
			if !d2.NameChanged || d2.Name == nil || *d2.Name != "Named" || !d2.HasName || d2.Heroes != nil {
				t.Fatalf("name %+v", d2)
			}
			if d2.BumpStamp <= bump || d2.BumpStamp >= to2 {
				t.Fatalf("bump stamp %d (was %d, now %d)", d2.BumpStamp, bump, to2)
			}

			// Required state grown: the new part comes in full.
			q.From, q.Live = d2.Upper, d2.Upper
			q.Match = func(typ, key string) bool { return typ == "m.room.create" || typ == "m.room.topic" }
			q.PrevMatch, q.LazyMembers = isCreate, false
			d3, err := e.SlidingRoom(ctx, q)
			must(err)
			if types := stateTypes(d3.State); !slices.Equal(types, []string{"m.room.topic|"}) || len(d3.Timeline) != 0 {
				t.Fatalf("expanded state %v %+v", types, d3.Timeline)
			}

			// Timeline grown: the latest events, flagged as expanded.
			q.PrevMatch, q.Expand, q.Limit = nil, true, 4
			d4, err := e.SlidingRoom(ctx, q)
			must(err)
			if len(d4.Timeline) != 4 || !d4.Expanded || d4.NumLive != 0 || !d4.Limited {
				t.Fatalf("expanded timeline %+v", d4)
			}
		})

		t.Run("stripped", func(t *testing.T) {
			to, _ := e.StreamPosition(ctx)
			list, _ := e.SlidingRooms(ctx, bob)
			for _, r := range list {
				if r.RoomID != invite {
					continue
				}
				d, err := e.SlidingRoom(ctx, SlidingRoomQuery{Who: Requester{UserID: bob}, RoomID: invite, Membership: "invite",
					MembershipStream: r.MembershipStream, Stripped: true, Initial: true, To: to})
				must(err)
				if len(d.Stripped) == 0 || d.Timeline != nil || d.BumpStamp != r.MembershipStream || d.Upper != r.MembershipStream {
					t.Fatalf("stripped %+v", d)
				}
			}
		})
	})
}

func stateTypes(evs []*ClientEvent) []string {
	var out []string
	for _, ev := range evs {
		k := ""
		if ev.StateKey != nil {
			k = *ev.StateKey
		}
		out = append(out, ev.Type+"|"+k)
	}
	slices.Sort(out)
	return out
}
