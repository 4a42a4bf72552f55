package e2ee

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// TestKeyCountsRemembered: a count is remembered until this instance
// changes the keys, or for keyCountsTTL when another instance does.
func TestKeyCountsRemembered(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg := Config{ServerName: "test"}
		here, other := New(cfg, db, log), New(cfg, db, log)
		now := time.Unix(1_000_000, 0)
		here.now = func() time.Time { return now }
		const user, dev, alg = "@alice:test", "DEV", "signed_curve25519"
		add := func(keyID string) {
			t.Helper()
			if err := db.Write(ctx, func(tx *storage.Tx) error {
				_, _, err := db.Keys().OneTimeKeyAdd(ctx, tx, user, dev, alg, keyID, `{"key":"`+keyID+`"}`)
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		count := func(e *Engine) int {
			t.Helper()
			c, _, err := e.KeyCounts(ctx, user, dev)
			if err != nil {
				t.Fatal(err)
			}
			return c[alg]
		}
		claim := func(e *Engine) {
			t.Helper()
			if _, err := e.ClaimKeys(ctx, map[string]map[string]string{user: {dev: alg}}); err != nil {
				t.Fatal(err)
			}
		}
		add("k1")
		add("k2")
		if n := count(here); n != 2 {
			t.Fatalf("count %d, want 2", n)
		}
		claim(here)
		if n := count(here); n != 1 {
			t.Fatalf("after a claim here: %d, want 1 at once", n)
		}
		claim(other)
		if n := count(here); n != 1 {
			t.Fatalf("after a claim elsewhere: %d, want the remembered 1 within the TTL", n)
		}
		now = now.Add(keyCountsTTL)
		if n := count(here); n != 0 {
			t.Fatalf("after the TTL: %d, want 0", n)
		}
	})
}
