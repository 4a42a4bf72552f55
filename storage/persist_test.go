package storage_test

import (
	"context"
	"testing"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// TestStartPersist: the persister's opening round trip finds used
// transaction keys and hands out numbers that nothing else gets, on a
// fresh stream as on one already moved, and counts as a stream move.
func TestStartPersist(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.Rooms()
		used := storage.TxnKey{UserID: "@a:x", DeviceID: "D", Scope: "send/!r:x/m.room.message", TxnID: "t1"}
		fresh := storage.TxnKey{UserID: "@a:x", DeviceID: "D", Scope: "send/!r:x/m.room.message", TxnID: "t2"}
		var roomNID int64
		err := db.Write(ctx, func(tx *storage.Tx) error {
			var err error
			if roomNID, err = s.RoomCreate(ctx, tx, "!r:x", "11", 1); err != nil {
				return err
			}
			b := &storage.Batch{}
			s.AddTxn(b, used.UserID, used.DeviceID, used.Scope, used.TxnID, "$ev", 1)
			return tx.ExecBatch(ctx, b)
		})
		if err != nil {
			t.Fatal(err)
		}
		var prevNID, prevStream int64
		for _, tc := range []struct {
			name string
			keys []storage.TxnKey
			want map[storage.TxnKey]string
		}{
			{"streams never moved", []storage.TxnKey{used, fresh}, map[storage.TxnKey]string{used: "$ev"}},
			{"streams moved", []storage.TxnKey{fresh}, map[storage.TxnKey]string{}},
			{"no keys", nil, map[storage.TxnKey]string{}},
		} {
			epoch := db.CommitEpoch()
			var st storage.PersistStart
			var afterNID, afterStream int64
			err := db.WriteLocked(ctx, 8200401, func(tx *storage.Tx) error {
				var err error
				if st, err = s.StartPersist(ctx, tx, tc.keys, 4, 2, []int64{roomNID, roomNID + 1000}); err != nil {
					return err
				}
				if afterNID, err = s.ReserveNIDs(ctx, tx, "event", 1); err != nil {
					return err
				}
				afterStream, err = tx.NextStreamPos(ctx, storage.EventsStream, 1)
				return err
			})
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if len(st.Txns) != len(tc.want) || st.Txns[used] != tc.want[used] {
				t.Errorf("%s: txns %v, want %v", tc.name, st.Txns, tc.want)
			}
			if st.FirstNID <= prevNID || afterNID != st.FirstNID+4 {
				t.Errorf("%s: nids from %d (then %d), after %d before", tc.name, st.FirstNID, afterNID, prevNID)
			}
			if st.FirstStream <= prevStream || afterStream != st.FirstStream+2 {
				t.Errorf("%s: positions from %d (then %d), after %d before", tc.name, st.FirstStream, afterStream, prevStream)
			}
			// PostgreSQL reads the rows in the same round trip; SQLite
			// leaves them to RoomForUpdate.
			if db.Dialect() == "postgres" {
				if r, ok := st.Rooms[roomNID]; !ok || r.RoomID != "!r:x" || len(st.Rooms) != 1 {
					t.Errorf("%s: rooms %+v", tc.name, st.Rooms)
				}
			} else if st.Rooms != nil {
				t.Errorf("%s: rooms %+v on SQLite", tc.name, st.Rooms)
			}
			if db.CommitEpoch() == epoch {
				t.Errorf("%s: the commit epoch did not move", tc.name)
			}
			prevNID, prevStream = afterNID, afterStream
		}
	})
}
