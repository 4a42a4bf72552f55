package rooms

import (
	"context"
	"reflect"
	"testing"

	"github.com/parley-chat/parley/storage"
)

// TestRoomsWithEvents checks that rooms with news report how far their
// membership events reach, which lets sync skip reading member changes.
func TestRoomsWithEvents(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice, bob := "@alice:local.test", "@bob:local.test"
		room, _, created := newRoomAt(t, e, alice)
		news, err := e.RoomsWithEvents(ctx, []string{room}, created)
		if err != nil || len(news) != 0 {
			t.Fatalf("no news yet: %v, %v", news, err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: room, Sender: alice, Type: "m.room.message",
			Content: content(map[string]any{"msgtype": "m.text", "body": "hi"})}); err != nil {
			t.Fatal(err)
		}
		news, err = e.RoomsWithEvents(ctx, []string{room}, created)
		if err != nil || news[room].Last <= created || news[room].LastMember == 0 || news[room].LastMember > created {
			t.Fatalf("a message: %+v, %v", news, err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: room, Sender: bob, Type: "m.room.member", StateKey: ptr(bob),
			Content: content(map[string]any{"membership": "join"})}); err != nil {
			t.Fatal(err)
		}
		news, err = e.RoomsWithEvents(ctx, []string{room}, created)
		if err != nil || news[room].LastMember <= created || news[room].LastMember != news[room].Last {
			t.Fatalf("a join: %+v, %v", news, err)
		}
	})
}

// seenFrom is what a caller of WindowNews may use of the news: which
// rooms moved after from, and whether their membership events did.
func seenFrom(news map[string]RoomNews, from int64) map[string]bool {
	out := map[string]bool{}
	for r, n := range news {
		if n.Last > from {
			out[r] = n.LastMember > from
		}
	}
	return out
}

// TestWindowNews checks the one-read form against its two parts, and the
// answer from the events committed last against the database's, for
// windows the log holds and windows it does not.
func TestWindowNews(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice, bob := "@alice:local.test", "@bob:local.test"
		a, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		// Positions taken as another instance sharing the database would:
		// the log cannot vouch for the windows around them.
		elsewhere := func() int64 {
			t.Helper()
			if err := db.Write(ctx, func(tx *storage.Tx) error {
				_, err := tx.NextStreamPos(ctx, storage.EventsStream, 3)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			pos, err := e.StreamPosition(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return pos
		}
		before := elsewhere()
		if _, err := e.Send(ctx, SendParams{RoomID: a, Sender: alice, Type: "m.room.message",
			Content: content(map[string]any{"msgtype": "m.text", "body": "early"})}); err != nil {
			t.Fatal(err)
		}
		from := elsewhere()
		if _, err := e.Send(ctx, SendParams{RoomID: a, Sender: alice, Type: "m.room.message",
			Content: content(map[string]any{"msgtype": "m.text", "body": "hi"})}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: a, Sender: alice, Type: "m.room.message",
			Content: content(map[string]any{"msgtype": "m.text", "body": "and again"})}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: b, Sender: bob, Type: "m.room.member", StateKey: ptr(bob),
			Content: content(map[string]any{"membership": "join"})}); err != nil {
			t.Fatal(err)
		}
		to, err := e.StreamPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		after := elsewhere()
		nids, _ := e.roomNIDs(ctx, []string{a, b})
		for _, w := range []struct {
			from, to int64
			inLog    bool
		}{
			{from, to, true}, {from + 1, to, true}, {to, to, true},
			{before, to, false}, {0, to, false}, {from, after, false}, {to, after, false},
		} {
			if _, _, inLog := e.news.window(alice, w.from, w.to, nids); inLog != w.inLog {
				t.Fatalf("window %v: from the log %v", w, inLog)
			}
			for _, nid := range nids {
				for _, limit := range []int{1, 2, 50} {
					got, inLog := e.news.timeline(nid, w.from, w.to, limit)
					if inLog != w.inLog {
						t.Fatalf("timeline of %d in %v: from the log %v", nid, w, inLog)
					}
					want, err := db.Rooms().TimelineNIDsByStream(ctx, nid, w.from, w.to, limit)
					if err != nil {
						t.Fatal(err)
					}
					if inLog && !reflect.DeepEqual(got, want) && len(got)+len(want) > 0 {
						t.Fatalf("timeline of %d in %v, limit %d: %v, want %v", nid, w, limit, got, want)
					}
				}
				snap, inLog := e.news.stateAt(nid, w.to)
				want, err := db.Rooms().StateAfterAtStream(ctx, nid, w.to)
				if err != nil {
					t.Fatal(err)
				}
				if inLog && snap != want {
					t.Fatalf("state of %d at %d: %d, want %d", nid, w.to, snap, want)
				}
				if w.to == to && !inLog {
					t.Fatalf("state of %d at %d not from the log", nid, w.to)
				}
			}
			for _, user := range []string{alice, bob} {
				changes, news, err := e.WindowNews(ctx, user, w.from, w.to, []string{a, b})
				if err != nil {
					t.Fatal(err)
				}
				wantChanges, err := e.MembershipChanges(ctx, user, w.from, w.to)
				if err != nil {
					t.Fatal(err)
				}
				wantNews, err := e.RoomsWithEvents(ctx, []string{a, b}, w.from)
				if err != nil {
					t.Fatal(err)
				}
				if len(changes) != 0 || len(wantChanges) != 0 {
					if !reflect.DeepEqual(changes, wantChanges) {
						t.Fatalf("%s %v: changes %+v, want %+v", user, w, changes, wantChanges)
					}
				}
				if got, want := seenFrom(news, w.from), seenFrom(wantNews, w.from); !reflect.DeepEqual(got, want) {
					t.Fatalf("%s %v: news %+v, want %+v", user, w, news, wantNews)
				}
				if w.from == from && w.to == to {
					if len(news) != 2 || (user == bob) != (len(changes) == 1) {
						t.Fatalf("%s: %d rooms with news, changes %+v", user, len(news), changes)
					}
					// Alice wrote in a; bob wrote nothing but his join in b.
					if own := news[a].LastOwn > from; own != (user == alice) {
						t.Fatalf("%s: own events in a: %v", user, own)
					}
					if own := news[b].LastOwn > from; own != (user == bob) {
						t.Fatalf("%s: own events in b: %v", user, own)
					}
				}
			}
		}
		if _, news, err := e.WindowNews(ctx, alice, from, to, nil); err != nil || len(news) != 0 {
			t.Fatalf("no rooms: %v, %v", news, err)
		}
	})
}

// TestWithBundledFromLog checks which events have bundled relations, as
// the log tells, against the database, at every position of a window with
// threads, edits, references and reactions.
func TestWithBundledFromLog(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice := "@alice:local.test"
		room, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		send := func(body string, rel map[string]any) string {
			t.Helper()
			c := map[string]any{"msgtype": "m.text", "body": body}
			if rel != nil {
				c["m.relates_to"] = rel
			}
			id, err := e.Send(ctx, SendParams{RoomID: room, Sender: alice, Type: "m.room.message", Content: content(c)})
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		root, edited, referred, reacted, plain := send("root", nil), send("edited", nil), send("referred", nil), send("reacted", nil), send("plain", nil)
		send("in the thread", map[string]any{"rel_type": "m.thread", "event_id": root})
		send("* edit", map[string]any{"rel_type": "m.replace", "event_id": edited})
		if _, err := e.Send(ctx, SendParams{RoomID: room, Sender: alice, Type: "m.reaction",
			Content: content(map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": reacted, "key": "👍"}})}); err != nil {
			t.Fatal(err)
		}
		send("see above", map[string]any{"rel_type": "m.reference", "event_id": referred})
		end, err := e.StreamPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := e.eventsByID(ctx, db.Read(), []string{root, edited, referred, reacted, plain})
		if err != nil {
			t.Fatal(err)
		}
		var parents []*Event
		var ids []string
		for _, ev := range evs {
			parents = append(parents, ev)
			ids = append(ids, ev.EventID)
		}
		start := *evs[root].StreamPos
		for at := start; at <= end; at++ {
			got, ok := e.news.withBundled(parents, at, e.isLocal)
			if !ok {
				t.Fatalf("at %d: not from the log", at)
			}
			want, err := db.Rooms().WithBundledRelations(ctx, ids, at)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("at %d: %v, want %v", at, got, want)
			}
			if at == end && len(got) != 3 {
				t.Fatalf("at the end: %v, want the root, the edited and the referred", got)
			}
		}
		// Another server's events may have children from before them.
		remote := *evs[plain]
		remote.Sender = "@bob:elsewhere.test"
		if _, ok := e.news.withBundled([]*Event{&remote}, end, e.isLocal); ok {
			t.Fatal("a remote parent answered from the log")
		}
	})
}
