package storage_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

func TestSlidingSyncStore(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.SlidingSync()
		commit := func(c storage.SlidingCommit) (int64, int64) {
			t.Helper()
			if c.UserID == "" {
				c.UserID, c.DeviceID, c.ConnID = "@a:x", "DEV", "main"
			}
			if c.Streams == "" {
				c.Streams = "{}"
			}
			if c.Scope == nil {
				c.Scope = []byte{}
			}
			nid, seq, err := s.Commit(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			return nid, seq
		}
		states := func(nid, seq int64, rooms ...string) map[string]string {
			t.Helper()
			got, err := s.RoomStates(ctx, nid, seq, rooms)
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		gone := func(nid, seq int64) bool {
			_, err := s.PositionGet(ctx, nid, seq)
			return errors.Is(err, storage.ErrNotFound)
		}

		nid, s1 := commit(storage.SlidingCommit{EventsPos: 10, Scope: []byte{1, 2}, Rooms: map[string]string{"!a": "a1", "!b": "b1"}, Now: 1})
		p, err := s.PositionGet(ctx, nid, s1)
		if err != nil || p.UserID != "@a:x" || p.DeviceID != "DEV" || p.ConnID != "main" || p.EventsPos != 10 || !slices.Equal(p.Scope, []byte{1, 2}) {
			t.Fatalf("position %+v %v", p, err)
		}
		_, s2 := commit(storage.SlidingCommit{ConnNID: nid, Parent: s1, EventsPos: 11, Rooms: map[string]string{"!a": "a2"}, Now: 2})
		if got := states(nid, s1, "!a", "!b", "!c"); !maps.Equal(got, map[string]string{"!a": "a1", "!b": "b1"}) {
			t.Fatalf("at s1: %v", got)
		}
		if got := states(nid, s2, "!a", "!b"); !maps.Equal(got, map[string]string{"!a": "a2", "!b": "b1"}) {
			t.Fatalf("at s2: %v", got)
		}

		// The client comes back with s1 again: s2 was never acknowledged.
		_, s3 := commit(storage.SlidingCommit{ConnNID: nid, Parent: s1, EventsPos: 12, Rooms: map[string]string{"!b": "b3"}, Now: 3})
		if !gone(nid, s2) || gone(nid, s1) {
			t.Fatal("the unacknowledged branch should be gone, the parent kept")
		}
		if got := states(nid, s3, "!a", "!b"); !maps.Equal(got, map[string]string{"!a": "a1", "!b": "b3"}) {
			t.Fatalf("at s3: %v", got)
		}
		// A commit from the abandoned branch fails.
		if _, _, err := s.Commit(ctx, storage.SlidingCommit{ConnNID: nid, Parent: s2, Streams: "{}", Scope: []byte{}, Now: 4}); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("commit from a dropped pos: %v", err)
		}
		// Moving on from s3 drops s1 and the rows s3 superseded.
		_, s4 := commit(storage.SlidingCommit{ConnNID: nid, Parent: s3, EventsPos: 13, Now: 5})
		if !gone(nid, s1) || gone(nid, s3) {
			t.Fatal("positions before the parent should be gone")
		}
		if got := states(nid, s4, "!a", "!b"); !maps.Equal(got, map[string]string{"!a": "a1", "!b": "b3"}) {
			t.Fatalf("at s4: %v", got)
		}
		var rows int
		if err := db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM sliding_sync_rooms WHERE conn_nid = $1`, nid).Scan(&rows); err != nil || rows != 2 {
			t.Fatalf("rows kept: %d %v", rows, err)
		}

		// Configs are remembered up to the bound, once each.
		commit(storage.SlidingCommit{ConnNID: nid, Parent: s4, EventsPos: 14, Now: 5,
			Specs: map[string]string{"d1": "one", "d2": "two", "d3": "three"}, MaxSpecs: 2})
		specs, err := s.Specs(ctx, nid, []string{"d1", "d2", "d3", "d4"})
		if err != nil || !maps.Equal(specs, map[string]string{"d1": "one", "d2": "two"}) {
			t.Fatalf("specs %v %v", specs, err)
		}

		// Starting the connection again replaces it.
		nid2, _ := commit(storage.SlidingCommit{EventsPos: 20, Now: 6})
		if nid2 == nid || !gone(nid, s4) {
			t.Fatal("a new connection with the same key must replace the old one")
		}
		if specs, _ := s.Specs(ctx, nid, []string{"d1"}); len(specs) != 0 {
			t.Fatal("the replaced connection's configs survived")
		}

		// A device keeps at most MaxPerDevice connections.
		var nids []int64
		for i, id := range []string{"c1", "c2", "c3"} {
			n, _ := commit(storage.SlidingCommit{UserID: "@b:x", DeviceID: "D", ConnID: id, Now: int64(10 + i), MaxPerDevice: 2})
			nids = append(nids, n)
		}
		if !gone(nids[0], 1) || gone(nids[1], 1) || gone(nids[2], 1) {
			t.Fatal("the least recently used connection should have been dropped")
		}

		// Expiry and device deletion.
		if err := s.Touch(ctx, nids[2], 1000); err != nil {
			t.Fatal(err)
		}
		n, err := s.ExpireConnections(ctx, 100, 10)
		if err != nil || n != 2 || !gone(nids[1], 1) || gone(nids[2], 1) {
			t.Fatalf("expired %d (%v)", n, err)
		}
		if err := db.Write(ctx, func(tx *storage.Tx) error { return s.DeleteDeviceConnections(ctx, tx, "@b:x", "D") }); err != nil {
			t.Fatal(err)
		}
		if !gone(nids[2], 1) {
			t.Fatal("device deletion kept a connection")
		}

		// Account data reads.
		err = db.Write(ctx, func(tx *storage.Tx) error {
			for _, d := range []storage.AccountData{
				{RoomID: "!r1", Type: "m.tag", Content: `{"tags":{"u.x":{}}}`},
				{RoomID: "!r2", Type: "m.tag", Content: `{"tags":{}}`},
				{RoomID: "!r1", Type: "org.other", Content: `{}`},
				{RoomID: "", Type: "m.tag", Content: `{}`},
			} {
				if _, err := db.Accounts().AccountDataSet(ctx, tx, "@t:x", d.RoomID, d.Type, d.Content); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		tags, err := s.RoomTags(ctx, "@t:x")
		if err != nil || len(tags) != 2 || tags["!r1"] != `{"tags":{"u.x":{}}}` {
			t.Fatalf("tags %v %v", tags, err)
		}
		ad, err := s.RoomAccountData(ctx, "@t:x", []string{"!r1"}, 1<<40)
		if err != nil || len(ad) != 2 {
			t.Fatalf("room account data %v %v", ad, err)
		}
	})
}
