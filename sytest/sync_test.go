package sytest

import (
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"
)

func TestSyncBasics(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "sync-alice")
		bob := s.Register(t, "sync-bob")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Sync room"})
		bob.join(t, room)
		alice.send(t, room, "first")

		init := bob.sync(t, "", nil)
		jr, ok := init.Rooms.Join[room]
		if !ok {
			t.Fatalf("initial sync lacks the joined room")
		}
		if got := bodies(jr.Timeline.Events); !slices.Contains(got, "first") {
			t.Fatalf("initial timeline: %v", got)
		}
		var sawName bool
		for _, e := range append(jr.State.Events, jr.Timeline.Events...) {
			sawName = sawName || e.Type == "m.room.name"
		}
		if !sawName {
			t.Fatal("room name missing from initial sync state")
		}

		t.Run("long-poll wakes on a message", func(t *testing.T) {
			done := make(chan syncResp, 1)
			go func() { done <- bob.sync(t, init.NextBatch, url.Values{"timeout": {"30000"}}) }()
			// No sleep: the long-poll may start before or after the send;
			// either way the message must come back.
			alice.send(t, room, "wake up")
			select {
			case r := <-done:
				got := r.Rooms.Join[room]
				if !slices.Contains(bodies(got.Timeline.Events), "wake up") {
					// The sync returned early with something else; the next one must have it.
					r2 := bob.sync(t, r.NextBatch, url.Values{"timeout": {"30000"}})
					if !slices.Contains(bodies(r2.Rooms.Join[room].Timeline.Events), "wake up") {
						t.Fatalf("message never arrived: %+v %+v", got, r2.Rooms.Join[room])
					}
				}
			case <-time.After(20 * time.Second):
				t.Fatal("long-poll did not wake")
			}
		})

		t.Run("incremental sync neither loses nor duplicates", func(t *testing.T) {
			since := bob.sync(t, "", nil).NextBatch
			var want []string
			for i := range 7 {
				b := fmt.Sprintf("inc %d", i)
				want = append(want, b)
				alice.send(t, room, b)
			}
			var got []string
			for len(got) < len(want) {
				r := bob.sync(t, since, url.Values{"timeout": {"10000"}})
				got = append(got, bodies(r.Rooms.Join[room].Timeline.Events)...)
				since = r.NextBatch
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			// Nothing new: an immediate sync with timeout 0 is empty.
			r := bob.sync(t, since, url.Values{"timeout": {"0"}})
			if len(r.Rooms.Join[room].Timeline.Events) != 0 {
				t.Fatalf("duplicate events: %v", bodies(r.Rooms.Join[room].Timeline.Events))
			}
		})

		t.Run("limited timelines paginate back seamlessly", func(t *testing.T) {
			since := bob.sync(t, "", nil).NextBatch
			var want []string
			for i := range 15 {
				b := fmt.Sprintf("burst %d", i)
				want = append(want, b)
				alice.send(t, room, b)
			}
			f := `{"room":{"timeline":{"limit":5}}}`
			r := bob.sync(t, since, url.Values{"filter": {f}})
			tl := r.Rooms.Join[room].Timeline
			if !tl.Limited || len(tl.Events) != 5 {
				t.Fatalf("want a limited timeline of 5, got limited=%v n=%d", tl.Limited, len(tl.Events))
			}
			got := bodies(tl.Events)
			from := tl.PrevBatch
			for len(got) < len(want) {
				m := Must(t, bob.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=4&from="+url.QueryEscape(from), nil), 200)
				older := chunkBodies(m)
				if len(older) == 0 {
					break
				}
				slices.Reverse(older)
				got = append(older, got...)
				from = m.Str("end")
			}
			got = got[len(got)-len(want):]
			if !slices.Equal(got, want) {
				t.Fatalf("paginated history %v, want %v", got, want)
			}
		})

		t.Run("leaving shows the room under leave", func(t *testing.T) {
			carol := s.Register(t, "sync-carol")
			carol.join(t, room)
			since := carol.sync(t, "", nil).NextBatch
			Must(t, carol.Do(t, "POST", roomPath(room)+"/leave", map[string]any{}), 200)
			r := carol.sync(t, since, url.Values{"timeout": {"10000"}})
			if _, ok := r.Rooms.Leave[room]; !ok {
				t.Fatalf("left room not reported")
			}
			alice.send(t, room, "after carol left")
			r = carol.sync(t, r.NextBatch, url.Values{"timeout": {"500"}})
			if _, ok := r.Rooms.Join[room]; ok {
				t.Fatal("departed user still gets the room's events")
			}
		})

		t.Run("invites", func(t *testing.T) {
			dave := s.Register(t, "sync-dave")
			since := dave.sync(t, "", nil).NextBatch
			priv := alice.createRoom(t, map[string]any{"preset": "private_chat", "name": "Secret", "invite": []string{dave.ID}})
			r := dave.sync(t, since, url.Values{"timeout": {"10000"}})
			inv, ok := r.Rooms.Invite[priv]
			if !ok {
				t.Fatalf("invite not synced")
			}
			if fmt.Sprint(inv["invite_state"]) == "" {
				t.Fatal("no invite_state")
			}
		})

		t.Run("bad input", func(t *testing.T) {
			MustErr(t, bob.Do(t, "GET", v3+"/sync?since=garbage", nil), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "GET", v3+"/sync?timeout=soon", nil), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "GET", v3+"/sync?filter=99999", nil), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "GET", v3+"/sync?filter={bad", nil), 400, "M_BAD_JSON")
			MustErr(t, bob.Do(t, "GET", v3+"/sync?set_presence=dancing", nil), 400, "M_INVALID_PARAM")
			MustErr(t, s.Do(t, "GET", v3+"/sync", "", nil), 401, "M_MISSING_TOKEN")
		})
	})
}
