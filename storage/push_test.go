package storage_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

func TestPush(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		p := db.Push()
		write := func(fn func(tx *storage.Tx) error) {
			t.Helper()
			if err := db.Write(ctx, fn); err != nil {
				t.Fatal(err)
			}
		}
		const alice, bob = "@alice:x", "@bob:x"

		t.Run("rules documents", func(t *testing.T) {
			if _, err := p.PushRulesGet(ctx, db.Read(), alice); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("no document yet: %v", err)
			}
			for _, doc := range []string{`{"v":1}`, `{"v":2}`} {
				write(func(tx *storage.Tx) error {
					if err := p.PushRulesLock(ctx, tx, alice); err != nil {
						return err
					}
					return p.PushRulesPut(ctx, tx, alice, doc, 1)
				})
			}
			got, err := p.PushRulesGet(ctx, db.Read(), alice)
			if err != nil || got != `{"v":2}` {
				t.Fatalf("%q %v", got, err)
			}
			m, err := p.PushRulesForUsers(ctx, []string{alice, bob, "@c:x"})
			if err != nil || len(m) != 1 || m[alice] != `{"v":2}` {
				t.Fatalf("%v %v", m, err)
			}
		})

		t.Run("ignored user lists", func(t *testing.T) {
			write(func(tx *storage.Tx) error {
				_, err := db.Accounts().AccountDataSet(ctx, tx, bob, "", "m.ignored_user_list", `{"ignored_users":{"@spam:x":{}}}`)
				return err
			})
			m, err := p.IgnoredUserLists(ctx, []string{alice, bob})
			if err != nil || len(m) != 1 || m[bob] == "" {
				t.Fatalf("%v %v", m, err)
			}
		})

		t.Run("actions, counts and pages", func(t *testing.T) {
			// Rooms and events the rows point at.
			var roomA, roomB int64
			write(func(tx *storage.Tx) error {
				var err error
				if roomA, err = db.Rooms().RoomCreate(ctx, tx, "!a:x", "12", 1); err != nil {
					return err
				}
				roomB, err = db.Rooms().RoomCreate(ctx, tx, "!b:x", "12", 1)
				return err
			})
			b := &storage.Batch{}
			event := func(nid, room, pos int64) {
				b.Add(`INSERT INTO events (event_nid, event_id, room_nid, type, sender, depth, origin_ts, stream_pos, json)
					VALUES ($1, $2, $3, 'm.room.message', $4, 1, 1, $5, $6)`, nid, fmt.Sprintf("$e%d", pos), room, alice, pos, []byte("{}"))
			}
			// 150 rows make the inserts span several chunk shapes.
			var rows []storage.PushAction
			for i := int64(1); i <= 150; i++ {
				thread := "main"
				if i%3 == 0 {
					thread = "$root"
				}
				event(i, roomA, i)
				rows = append(rows, storage.PushAction{UserID: alice, RoomNID: roomA, StreamPos: i,
					ThreadID: thread, Highlight: i%10 == 0, Actions: `["notify"]`, TS: 1000 + i})
			}
			event(200, roomB, 200)
			rows = append(rows, storage.PushAction{UserID: alice, RoomNID: roomB, StreamPos: 200, ThreadID: "main",
				Highlight: true, Actions: `["notify"]`, TS: 5000})
			p.AddPushActions(b, rows)
			p.AddPushActions(b, rows[:1]) // a repeat is ignored
			write(func(tx *storage.Tx) error { return tx.ExecBatch(ctx, b) })

			counts, err := p.PushCountsBetween(ctx, alice, []storage.PushAfter{{RoomID: "!a:x", After: 100}, {RoomID: "!b:x"}, {RoomID: "!none:x"}}, false, 0)
			if err != nil {
				t.Fatal(err)
			}
			sortCounts(counts)
			want := []storage.PushCount{
				{RoomID: "!a:x", ThreadID: "$root", Notifications: 17, Highlight: 2}, // 102..150 step 3; 120, 150
				{RoomID: "!a:x", ThreadID: "main", Notifications: 33, Highlight: 3},  // 110, 130, 140
				{RoomID: "!b:x", ThreadID: "main", Notifications: 1, Highlight: 1},
			}
			if !slices.Equal(counts, want) {
				t.Fatalf("counts %+v", counts)
			}
			counts, err = p.PushCountsBetween(ctx, alice, []storage.PushAfter{{RoomID: "!a:x", ThreadID: "$root", After: 140}}, true, 0)
			if err != nil || len(counts) != 1 || counts[0].Notifications != 4 || counts[0].Highlight != 1 { // 141, 144, 147, 150
				t.Fatalf("thread counts %+v %v", counts, err)
			}
			// Many rooms in one query (more than one chunk).
			var many []storage.PushAfter
			for i := range 300 {
				many = append(many, storage.PushAfter{RoomID: fmt.Sprintf("!r%d:x", i)})
			}
			many = append(many, storage.PushAfter{RoomID: "!b:x", After: 199})
			if counts, err = p.PushCountsBetween(ctx, alice, many, false, 0); err != nil || len(counts) != 1 {
				t.Fatalf("many rooms %+v %v", counts, err)
			}

			page, err := p.NotificationsPage(ctx, alice, 0, 3, false, nil)
			if err != nil || len(page) != 3 || page[0].StreamPos != 200 || page[1].StreamPos != 150 || page[0].Actions != `["notify"]` ||
				page[0].RoomID != "!b:x" || page[0].EventID != "$e200" || page[1].RoomID != "!a:x" {
				t.Fatalf("page %+v %v", page, err)
			}
			page, err = p.NotificationsPage(ctx, alice, 150, 2, true, nil)
			if err != nil || len(page) != 2 || page[0].StreamPos != 140 || page[1].StreamPos != 130 || !page[0].Highlight {
				t.Fatalf("highlight page %+v %v", page, err)
			}

			// Pruning: pairs with old rows, their threads, deletion.
			pairs, err := p.PushActionPairs(ctx, storage.PushUserRoom{}, 1100, 10)
			if err != nil || len(pairs) != 1 || pairs[0] != (storage.PushUserRoom{UserID: alice, RoomNID: roomA, RoomID: "!a:x"}) {
				t.Fatalf("pairs %+v %v", pairs, err)
			}
			if pairs, _ = p.PushActionPairs(ctx, pairs[0], 1100, 10); len(pairs) != 0 {
				t.Fatalf("pairs after the last %+v", pairs)
			}
			threads, err := p.PushActionThreads(ctx, storage.PushUserRoom{UserID: alice, RoomNID: roomA}, 1010)
			sort.Strings(threads)
			if err != nil || !slices.Equal(threads, []string{"$root", "main"}) {
				t.Fatalf("threads %v %v", threads, err)
			}
			n, err := p.PushActionsPrune(ctx, storage.PushUserRoom{UserID: alice, RoomNID: roomA}, "$root", 150, 1010)
			if err != nil || n != 3 { // 3, 6, 9
				t.Fatalf("pruned %d %v", n, err)
			}
			n, err = p.PushActionsPrune(ctx, storage.PushUserRoom{UserID: alice, RoomNID: roomA}, "", 5, 2000)
			if err != nil || n != 4 { // 1, 2, 4, 5
				t.Fatalf("pruned %d %v", n, err)
			}
		})

		t.Run("own reads", func(t *testing.T) {
			b := &storage.Batch{}
			p.AddOwnReads(b, []storage.OwnRead{
				{UserID: bob, RoomID: "!a:x", ThreadID: "main", StreamPos: 10},
				{UserID: bob, RoomID: "!a:x", ThreadID: "main", StreamPos: 7}, // never moves back
				{UserID: bob, RoomID: "!a:x", ThreadID: "$t", StreamPos: 12},
				{UserID: bob, RoomID: "!b:x", ThreadID: "main", StreamPos: 3},
			})
			// A second call in the same batch meets the first's rows in
			// the database, not in its statement.
			p.AddOwnReads(b, []storage.OwnRead{
				{UserID: bob, RoomID: "!a:x", ThreadID: "$t", StreamPos: 11}, // lower: kept at 12
				{UserID: bob, RoomID: "!b:x", ThreadID: "main", StreamPos: 4},
			})
			// More rows than one statement takes.
			var many []storage.OwnRead
			for i := range 70 {
				many = append(many, storage.OwnRead{UserID: bob, RoomID: "!d:x", ThreadID: fmt.Sprintf("$m%d", i), StreamPos: int64(i)})
			}
			p.AddOwnReads(b, many)
			write(func(tx *storage.Tx) error { return tx.ExecBatch(ctx, b) })
			got, err := p.OwnReadsGet(ctx, bob, []string{"!a:x", "!c:x", "!a:x"})
			if err != nil {
				t.Fatal(err)
			}
			sort.Slice(got, func(i, j int) bool { return got[i].ThreadID < got[j].ThreadID })
			want := []storage.OwnRead{{UserID: bob, RoomID: "!a:x", ThreadID: "$t", StreamPos: 12}, {UserID: bob, RoomID: "!a:x", ThreadID: "main", StreamPos: 10}}
			if !slices.Equal(got, want) {
				t.Fatalf("%+v", got)
			}
			if got, err := p.OwnReadsGet(ctx, bob, []string{"!b:x"}); err != nil || len(got) != 1 || got[0].StreamPos != 4 {
				t.Fatalf("!b:x: %+v %v", got, err)
			}
			if got, err := p.OwnReadsGet(ctx, bob, []string{"!d:x"}); err != nil || len(got) != 70 {
				t.Fatalf("!d:x: %d rows, %v", len(got), err)
			}
			// The combined read gives the same own reads (rooms unknown to
			// the rooms table have no membership start).
			in, err := p.CountInputsGet(ctx, bob, []string{"!a:x", "!c:x", "!a:x"})
			if err != nil {
				t.Fatal(err)
			}
			sort.Slice(in.Own, func(i, j int) bool { return in.Own[i].ThreadID < in.Own[j].ThreadID })
			if !slices.Equal(in.Own, want) || len(in.Starts) != 0 {
				t.Fatalf("count inputs: %+v", in)
			}
		})
	})
}

func sortCounts(c []storage.PushCount) {
	sort.Slice(c, func(i, j int) bool {
		if c[i].RoomID != c[j].RoomID {
			return c[i].RoomID < c[j].RoomID
		}
		return c[i].ThreadID < c[j].ThreadID
	})
}
