package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

func TestPresenceStore(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.Presence()
		put := func(p storage.PresenceRow) {
			t.Helper()
			if err := db.Write(ctx, func(tx *storage.Tx) error { return s.PresencePut(ctx, tx, p) }); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.PresenceGet(ctx, db.Read(), "@nobody:x"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing: %v", err)
		}
		if pos, err := s.PresenceMaxPos(ctx, db.Read()); err != nil || pos != 0 {
			t.Fatalf("empty max: %d %v", pos, err)
		}
		put(storage.PresenceRow{UserID: "@a:x", State: "online", StatusMsg: "hi", CurrentlyActive: true, LastActiveTS: 1000, LastSeenTS: 1000, StreamPos: 10})
		put(storage.PresenceRow{UserID: "@b:x", State: "unavailable", LastActiveTS: 500, LastSeenTS: 900, ExplicitState: "unavailable", ExplicitTS: 800, StreamPos: 20})
		put(storage.PresenceRow{UserID: "@c:x", State: "offline", LastActiveTS: 1, LastSeenTS: 1, StreamPos: 5})
		got, err := s.PresenceGet(ctx, db.Read(), "@b:x")
		if err != nil || got.ExplicitState != "unavailable" || got.ExplicitTS != 800 || got.StatusMsg != "" || got.LastSeenTS != 900 {
			t.Fatalf("get: %+v %v", got, err)
		}
		// A second put replaces the row.
		put(storage.PresenceRow{UserID: "@a:x", State: "online", StatusMsg: "", CurrentlyActive: false, LastActiveTS: 1000, LastSeenTS: 1500, StreamPos: 30})
		got, _ = s.PresenceGet(ctx, db.Read(), "@a:x")
		if got.StatusMsg != "" || got.CurrentlyActive || got.StreamPos != 30 || got.LastSeenTS != 1500 {
			t.Fatalf("replaced: %+v", got)
		}
		many, err := s.PresenceGetMany(ctx, db.Read(), []string{"@a:x", "@c:x", "@zz:x", "@a:x"})
		if err != nil || len(many) != 2 || many["@c:x"].State != "offline" {
			t.Fatalf("many: %+v %v", many, err)
		}
		since, err := s.PresenceSince(ctx, 5, 10)
		if err != nil || len(since) != 2 || since[0].UserID != "@b:x" || since[1].UserID != "@a:x" {
			t.Fatalf("since: %+v %v", since, err)
		}
		if since, _ := s.PresenceSince(ctx, 0, 1); len(since) != 1 || since[0].UserID != "@c:x" {
			t.Fatalf("limit: %+v", since)
		}
		if pos, _ := s.PresenceMaxPos(ctx, db.Read()); pos != 30 {
			t.Fatalf("max: %d", pos)
		}
		for _, c := range []struct {
			seen, idle, active int64
			want               []string
		}{
			{0, 0, 0, nil},
			{900, 0, 0, []string{"@b:x"}},                // not seen since
			{0, 1000, 0, []string{"@a:x"}},               // online and idle; b is already unavailable
			{0, 0, 1000, nil},                            // nobody is currently active any more
			{2000, 2000, 2000, []string{"@a:x", "@b:x"}}, // c is offline already
		} {
			due, err := s.PresenceDue(ctx, c.seen, c.idle, c.active, 100)
			if err != nil || len(due) != len(c.want) {
				t.Fatalf("due(%d, %d, %d) = %v %v, want %v", c.seen, c.idle, c.active, due, err, c.want)
			}
			for _, u := range c.want {
				found := false
				for _, d := range due {
					found = found || d == u
				}
				if !found {
					t.Fatalf("due(%d, %d, %d) = %v, want %v", c.seen, c.idle, c.active, due, c.want)
				}
			}
		}
	})
}
