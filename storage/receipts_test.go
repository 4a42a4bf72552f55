package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

func TestReceipts(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.Receipts()
		put := func(r storage.Receipt) (int64, bool) {
			t.Helper()
			var pos int64
			var moved bool
			err := db.Write(ctx, func(tx *storage.Tx) error {
				var err error
				pos, moved, err = s.ReceiptPut(ctx, tx, r)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return pos, moved
		}
		deliver := func(d storage.DeliveryReceipt) (int64, bool) {
			t.Helper()
			var pos int64
			var added bool
			err := db.Write(ctx, func(tx *storage.Tx) error {
				var err error
				pos, added, err = s.DeliveryPut(ctx, tx, d)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return pos, added
		}
		const alice, bob, r1, r2 = "@alice:x", "@bob:x", "!r1", "!r2"

		p1, moved := put(storage.Receipt{RoomID: r1, UserID: alice, Type: "m.read", EventID: "$e5", EventPos: 5, TS: 100})
		if !moved || p1 <= 0 {
			t.Fatalf("first receipt: pos %d moved %v", p1, moved)
		}
		// Backwards and same-event receipts do not move the marker.
		for _, ev := range []struct {
			id  string
			pos int64
		}{{"$e3", 3}, {"$e5", 5}} {
			if _, moved := put(storage.Receipt{RoomID: r1, UserID: alice, Type: "m.read", EventID: ev.id, EventPos: ev.pos, TS: 101}); moved {
				t.Fatalf("%s moved the marker back", ev.id)
			}
		}
		p2, moved := put(storage.Receipt{RoomID: r1, UserID: alice, Type: "m.read", EventID: "$e7", EventPos: 7, TS: 102})
		if !moved || p2 <= p1 {
			t.Fatalf("forward: pos %d (after %d) moved %v", p2, p1, moved)
		}
		// Threads and types are separate markers.
		p3, _ := put(storage.Receipt{RoomID: r1, UserID: alice, Type: "m.read", ThreadID: "main", EventID: "$e4", EventPos: 4, TS: 103})
		p4, _ := put(storage.Receipt{RoomID: r1, UserID: alice, Type: "m.read.private", EventID: "$e9", EventPos: 9, TS: 104})
		p5, _ := put(storage.Receipt{RoomID: r1, UserID: bob, Type: "m.read.private", EventID: "$e8", EventPos: 8, TS: 105})
		p6, _ := put(storage.Receipt{RoomID: r2, UserID: bob, Type: "m.read", ThreadID: "$root", EventID: "$e10", EventPos: 10, TS: 106})
		if !(p2 < p3 && p3 < p4 && p4 < p5 && p5 < p6) {
			t.Fatalf("positions out of order: %d %d %d %d %d", p2, p3, p4, p5, p6)
		}

		t.Run("read up to", func(t *testing.T) {
			for _, c := range []struct {
				user, room, thread string
				want               int64
			}{
				{alice, r1, "", 9}, // the private receipt is ahead
				{alice, r1, "main", 4},
				{alice, r1, "$other", 0},
				{bob, r1, "", 8},
				{bob, r2, "$root", 10},
				{bob, r2, "", 0},
			} {
				got, err := s.ReceiptReadUpTo(ctx, c.user, c.room, c.thread)
				if err != nil || got != c.want {
					t.Errorf("ReadUpTo(%s, %s, %q) = %d, %v; want %d", c.user, c.room, c.thread, got, err, c.want)
				}
				// The bulk read of push counting agrees (absent: 0).
				in, err := db.Push().CountInputsGet(ctx, c.user, []string{r1, r2})
				if err != nil || in.Receipts[[2]string{c.room, c.thread}] != c.want {
					t.Errorf("CountInputsGet(%s).Receipts[%s %q] = %d, %v; want %d", c.user, c.room, c.thread, in.Receipts[[2]string{c.room, c.thread}], err, c.want)
				}
			}
		})

		t.Run("since, by range and by room", func(t *testing.T) {
			for _, to := range []int64{p6, p6 + 100_000} { // both query shapes
				got, err := s.ReceiptsSince(ctx, alice, []string{r1, r2}, p1, to)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, r := range got {
					ids = append(ids, r.UserID+r.Type+r.EventID)
				}
				want := []string{alice + "m.read$e7", alice + "m.read$e4", alice + "m.read.private$e9", bob + "m.read$e10"}
				if len(ids) != len(want) {
					t.Fatalf("to %d: %v, want %v", to, ids, want)
				}
				for i := range want {
					if ids[i] != want[i] {
						t.Fatalf("to %d: %v, want %v", to, ids, want)
					}
				}
			}
			if got, _ := s.ReceiptsSince(ctx, alice, []string{r1}, p3, p3); len(got) != 0 {
				t.Fatalf("empty range: %+v", got)
			}
			if got, _ := s.ReceiptsSince(ctx, alice, nil, 0, p6); len(got) != 0 {
				t.Fatalf("no rooms: %+v", got)
			}
			got, _ := s.ReceiptsSince(ctx, bob, []string{r1}, 0, p6)
			if len(got) != 3 || got[2].UserID != bob || got[2].Type != "m.read.private" {
				t.Fatalf("bob sees: %+v", got)
			}
		})

		t.Run("current", func(t *testing.T) {
			got, err := s.ReceiptsCurrent(ctx, bob, []string{r1, r2, r1})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 4 || got[0].EventID != "$e7" || got[3].EventID != "$e10" {
				t.Fatalf("current: %+v", got)
			}
			for _, r := range got {
				if r.Type == "m.read.private" && r.UserID != bob {
					t.Fatalf("another user's private receipt: %+v", r)
				}
			}
		})

		t.Run("delivery", func(t *testing.T) {
			d1, added := deliver(storage.DeliveryReceipt{RoomID: r1, EventID: "$m1", EventSender: alice, UserID: bob, TS: 1000})
			if !added || d1 <= p6 {
				t.Fatalf("delivery: pos %d added %v", d1, added)
			}
			if _, added := deliver(storage.DeliveryReceipt{RoomID: r1, EventID: "$m1", EventSender: alice, UserID: bob, TS: 2000}); added {
				t.Fatal("duplicate delivery receipt stored")
			}
			d2, _ := deliver(storage.DeliveryReceipt{RoomID: r1, EventID: "$m2", EventSender: alice, UserID: bob, TS: 3000})
			d3, _ := deliver(storage.DeliveryReceipt{RoomID: r2, EventID: "$m3", EventSender: alice, UserID: bob, TS: 4000})
			deliver(storage.DeliveryReceipt{RoomID: r1, EventID: "$b1", EventSender: bob, UserID: alice, TS: 5000})
			got, err := s.DeliveriesSince(ctx, alice, d1, d3)
			if err != nil || len(got) != 2 || got[0].EventID != "$m2" || got[1].StreamPos != d3 {
				t.Fatalf("since: %+v %v", got, err)
			}
			if got[0].StreamPos != d2 || got[0].TS != 3000 || got[0].UserID != bob || got[0].RoomID != r1 {
				t.Fatalf("fields: %+v", got[0])
			}
			recent, err := s.DeliveriesRecent(ctx, alice, 1500, 10)
			if err != nil || len(recent) != 2 {
				t.Fatalf("recent after ts 1500: %+v %v", recent, err)
			}
			recent, _ = s.DeliveriesRecent(ctx, alice, 0, 1)
			if len(recent) != 2 || recent[0].EventID != "$m2" || recent[1].EventID != "$m3" {
				t.Fatalf("newest one per room: %+v", recent)
			}
			n, err := s.DeliveriesPrune(ctx, 3500)
			if err != nil || n != 2 {
				t.Fatalf("prune: %d %v", n, err)
			}
			if got, _ := s.DeliveriesSince(ctx, alice, 0, d3); len(got) != 1 {
				t.Fatalf("after prune: %+v", got)
			}
		})

		t.Run("stream position", func(t *testing.T) {
			pos, err := db.StreamPos(ctx, storage.ReceiptsStream)
			if err != nil || pos < p6 {
				t.Fatalf("stream position %d %v", pos, err)
			}
			if err := db.Write(ctx, func(tx *storage.Tx) error {
				if _, _, err := s.ReceiptPut(ctx, tx, storage.Receipt{RoomID: r2, UserID: alice, Type: "m.read", EventID: "$x", EventPos: 1}); err != nil {
					return err
				}
				return errors.New("roll back")
			}); err == nil {
				t.Fatal("no error")
			}
			if after, _ := db.StreamPos(ctx, storage.ReceiptsStream); after != pos {
				t.Fatalf("a rolled back receipt moved the stream: %d → %d", pos, after)
			}
		})
	})
}
