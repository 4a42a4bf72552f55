package push

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"testing"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// TestCountsFromMemory checks the push log's counts against the
// database's for every user, room, thread and kind of bound, over rows of
// every kind: shared rows with skips, own rows, highlights, threads, an
// ignorer, members who joined late.
func TestCountsFromMemory(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		en := newEnv(t, db)
		u := func(n string) string { return "@" + n + ":" + server }
		alice, bob, carol, dave, erin := u("alice"), u("bob"), u("carol"), u("dave"), u("erin")
		users := []string{alice, bob, carol, dave, erin}
		big := en.publicRoom(t, alice, bob, carol, dave)
		dm, err := en.rooms.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "trusted_private_chat", Invite: []string{bob}, IsDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := en.rooms.Join(ctx, rooms.MembershipParams{RoomID: dm, Sender: bob}); err != nil {
			t.Fatal(err)
		}
		start, err := en.rooms.StreamPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			_, err := db.Accounts().AccountDataSet(ctx, tx, dave, "", "m.ignored_user_list", `{"ignored_users":{"`+carol+`":{}}}`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		en.push.ForgetUser(dave)
		root := en.send(t, big, alice, "m.room.message", msg("root", nil))
		en.send(t, big, bob, "m.room.message", msg("carol!", map[string]any{"m.mentions": map[string]any{"user_ids": []string{carol}}}))
		en.send(t, big, carol, "m.room.message", msg("to all", nil))
		en.send(t, big, alice, "m.room.message", msg("threaded", map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}))
		en.send(t, big, bob, "m.room.message", msg("@room", map[string]any{"m.mentions": map[string]any{"room": true}}))
		if _, err := en.rooms.Join(ctx, rooms.MembershipParams{RoomID: big, Sender: erin}); err != nil {
			t.Fatal(err)
		}
		en.send(t, dm, alice, "m.room.message", msg("bob?", nil))
		en.send(t, big, alice, "m.room.message", msg("erin too", map[string]any{"m.mentions": map[string]any{"user_ids": []string{erin}}}))
		en.send(t, big, dave, "m.room.message", msg("threaded mention of alice", map[string]any{
			"m.mentions":   map[string]any{"user_ids": []string{alice}},
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}))
		end, err := en.rooms.StreamPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}

		sorted := func(c []storage.PushCount) []storage.PushCount {
			c = append([]storage.PushCount(nil), c...)
			sort.Slice(c, func(i, j int) bool {
				return c[i].RoomID+"|"+c[i].ThreadID < c[j].RoomID+"|"+c[j].ThreadID
			})
			return c
		}
		mid := (start + end) / 2
		bounds := [][3]int64{ // After, MainAfter, SharedFrom
			{start, 0, 0}, {mid, 0, 0}, {start, mid, 0}, {start, 0, mid}, {start, end, 0}, {start, 0, notJoined}, {end, 0, 0},
		}
		compared := 0
		for _, user := range users {
			for _, b := range bounds {
				for _, upper := range []int64{mid, end} {
					for _, threads := range []bool{false, true} {
						var want []storage.PushAfter
						for _, room := range []string{big, dm} {
							w := storage.PushAfter{RoomID: room, After: b[0], MainAfter: b[1], SharedFrom: b[2]}
							if !threads {
								want = append(want, w)
								continue
							}
							for _, thread := range []string{mainThread, root} {
								w.ThreadID = thread
								want = append(want, w)
							}
						}
						name := fmt.Sprintf("%s %v upper=%d threads=%v", user, b, upper, threads)
						got, ok := en.push.recent.counts(user, want, threads, upper, 0)
						if !ok {
							t.Fatalf("%s: not held in memory", name)
						}
						fromDB, err := db.Push().PushCountsBetween(ctx, user, want, threads, upper)
						if err != nil {
							t.Fatal(err)
						}
						if !reflect.DeepEqual(sorted(got), sorted(fromDB)) {
							t.Fatalf("%s: memory %+v, database %+v", name, sorted(got), sorted(fromDB))
						}
						if len(fromDB) > 0 {
							compared++
						}
					}
				}
			}
		}
		if compared < 50 {
			t.Fatalf("only %d comparisons had rows: the scenario does not exercise the counts", compared)
		}

		// Rows decided before the bound may have been pruned: not held.
		all := []storage.PushAfter{{RoomID: big, After: start}}
		if _, ok := en.push.recent.counts(bob, all, false, end, en.push.now().UnixMilli()+1); ok {
			t.Fatal("rows older than the bound answered from memory")
		}
		// Positions another instance took: windows across them are not
		// held, and Counts still agree with the database.
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			_, err := tx.NextStreamPos(ctx, storage.EventsStream, 2)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		en.send(t, big, alice, "m.room.message", msg("after the gap", nil))
		last, err := en.rooms.StreamPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := en.push.recent.counts(bob, all, false, last, 0); ok {
			t.Fatal("a window across another instance's positions answered from memory")
		}
		if _, ok := en.push.recent.counts(bob, []storage.PushAfter{{RoomID: big, After: last - 1}}, false, last, 0); !ok {
			t.Fatal("the commit after the gap is not held")
		}
	})
}
