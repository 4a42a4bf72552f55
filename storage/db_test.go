package storage_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

func TestCore(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		t.Run("migrations are idempotent", func(t *testing.T) {
			applied, err := db.Migrate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(applied) != 0 {
				t.Fatalf("second run applied %d migrations", len(applied))
			}
			st, err := db.MigrationStatuses(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range st {
				if !s.Applied {
					t.Errorf("migration %d not applied", s.Version)
				}
			}
		})
		t.Run("errors translate", func(t *testing.T) {
			if _, err := db.Exec(ctx, `INSERT INTO server_settings (name, value) VALUES ($1, $2)`, "k", "v"); err != nil {
				t.Fatal(err)
			}
			_, err := db.Exec(ctx, `INSERT INTO server_settings (name, value) VALUES ($1, $2)`, "k", "v")
			if !errors.Is(err, storage.ErrConflict) {
				t.Fatalf("duplicate insert: got %v, want ErrConflict", err)
			}
			var v string
			err = db.Read().QueryRow(ctx, `SELECT value FROM server_settings WHERE name = $1`, "missing").Scan(&v)
			if !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("missing row: got %v, want ErrNotFound", err)
			}
		})
		t.Run("a read snapshot keeps one view until it ends", func(t *testing.T) {
			read := func(ctx context.Context) int {
				var n int
				if err := db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM server_settings WHERE name LIKE 'snap%'`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			insert := func(name string) {
				if _, err := db.Exec(ctx, `INSERT INTO server_settings (name, value) VALUES ($1, 'v')`, name); err != nil {
					t.Fatal(err)
				}
			}
			insert("snap1")
			sctx, end := db.ReadSnapshot(ctx)
			if got := read(sctx); got != 1 {
				t.Fatalf("snapshot read %d rows, want 1", got)
			}
			insert("snap2")
			// Nested snapshots keep the outer view.
			inner, endInner := db.ReadSnapshot(sctx)
			got, gotInner := read(sctx), read(inner)
			endInner()
			if db.Dialect() == "sqlite" && (got != 1 || gotInner != 1) {
				t.Fatalf("SQLite snapshot saw a later commit: %d, %d rows", got, gotInner)
			}
			if db.Dialect() == "postgres" && got != 2 {
				t.Fatalf("PostgreSQL reads are not held in a transaction: %d rows, want 2", got)
			}
			if got := read(ctx); got != 2 {
				t.Fatalf("read outside the snapshot saw %d rows, want 2", got)
			}
			end()
			// A ctx that outlives its snapshot reads from the pool again.
			if got := read(sctx); got != 2 {
				t.Fatalf("read with an ended snapshot saw %d rows, want 2", got)
			}
		})
		t.Run("rollback keeps nothing and skips hooks", func(t *testing.T) {
			ran := false
			boom := errors.New("boom")
			err := db.Write(ctx, func(tx *storage.Tx) error {
				tx.AfterCommit(func() { ran = true })
				if _, err := tx.Exec(ctx, `INSERT INTO server_settings (name, value) VALUES ($1, $2)`, "rb", "v"); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) || ran {
				t.Fatalf("err=%v ran=%v", err, ran)
			}
			var n int
			if err := db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM server_settings WHERE name = $1`, "rb").Scan(&n); err != nil || n != 0 {
				t.Fatalf("row survived rollback: n=%d err=%v", n, err)
			}
		})
		t.Run("stream positions are dense and ordered under concurrency", func(t *testing.T) {
			const writers, each = 8, 20
			var mu sync.Mutex
			seen := map[int64]bool{}
			var wg sync.WaitGroup
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range each {
						err := db.Write(ctx, func(tx *storage.Tx) error {
							p, err := tx.NextStreamPos(ctx, "test", 2)
							if err != nil {
								return err
							}
							tx.AfterCommit(func() {
								mu.Lock()
								seen[p], seen[p+1] = true, true
								mu.Unlock()
							})
							return nil
						})
						if err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			for p := int64(1); p <= writers*each*2; p++ {
				if !seen[p] {
					t.Fatalf("position %d never handed out", p)
				}
			}
			pos, err := db.StreamPos(ctx, "test")
			if err != nil || pos != writers*each*2 {
				t.Fatalf("StreamPos = %d, %v", pos, err)
			}
		})
		t.Run("WriteLocked holds its lock from its first statement", func(t *testing.T) {
			// The first statement alone, or a first pipeline: either way
			// BEGIN and the lock go before it.
			for _, first := range []func(tx *storage.Tx) error{
				func(tx *storage.Tx) error { var one int; return tx.QueryRow(ctx, `SELECT 1`).Scan(&one) },
				func(tx *storage.Tx) error {
					return tx.Pipeline(ctx, []storage.Step{{SQL: `SELECT 1`}, {SQL: `SELECT 2`}})
				},
			} {
				ran := false
				err := db.WriteLocked(ctx, 4242, func(tx *storage.Tx) error {
					ran = true
					if err := first(tx); err != nil {
						return err
					}
					if db.Dialect() != "postgres" {
						return nil // the single writer is the lock
					}
					var free bool
					err := db.Write(ctx, func(other *storage.Tx) error {
						return other.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, int64(4242)).Scan(&free)
					})
					if err != nil || free {
						t.Errorf("another transaction took the lock: %v, %v", free, err)
					}
					return nil
				})
				if err != nil || !ran {
					t.Fatalf("%v, ran %v", err, ran)
				}
			}
		})
		t.Run("ExecAtCommit runs with the commit, and fails it", func(t *testing.T) {
			if _, err := db.Exec(ctx, `CREATE TABLE at_commit (k INTEGER PRIMARY KEY)`); err != nil {
				t.Fatal(err)
			}
			count := func() int {
				t.Helper()
				var n int
				if err := db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM at_commit`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			rows := func(keys ...int) *storage.Batch {
				b := &storage.Batch{}
				for _, k := range keys {
					b.Add(`INSERT INTO at_commit (k) VALUES ($1)`, k)
				}
				return b
			}
			for _, tc := range []struct {
				name   string
				before bool // a statement of its own before
				keys   []int
				ok     bool
				total  int
			}{
				{"only at commit", false, []int{1, 2}, true, 2},
				{"after a statement", true, []int{3}, true, 4},
				{"a failing row rolls back the rest", true, []int{5, 1}, false, 4},
				{"failing alone", false, []int{2}, false, 4},
			} {
				err := db.WriteLocked(ctx, 4243, func(tx *storage.Tx) error {
					if tc.before {
						if _, err := tx.Exec(ctx, `INSERT INTO at_commit (k) VALUES ($1)`, 100+len(tc.name)); err != nil {
							return err
						}
					}
					return tx.ExecAtCommit(ctx, rows(tc.keys...))
				})
				if (err == nil) != tc.ok {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if n := count(); n != tc.total {
					t.Fatalf("%s: %d rows, want %d", tc.name, n, tc.total)
				}
			}
			// The connections went back to the pool usable.
			for range 20 {
				if err := db.WriteLocked(ctx, 4243, func(tx *storage.Tx) error {
					var one int
					return tx.QueryRow(ctx, `SELECT 1`).Scan(&one)
				}); err != nil {
					t.Fatal(err)
				}
			}
		})
		t.Run("the commit epoch moves with stream positions, before the hooks", func(t *testing.T) {
			boom := errors.New("boom")
			for _, tc := range []struct {
				name  string
				move  bool
				fail  error
				moved bool
			}{
				{"no position taken", false, nil, false},
				{"a position taken", true, nil, true},
				{"a position taken, rolled back", true, boom, true},
			} {
				before := db.CommitEpoch()
				var inHook uint64
				err := db.Write(ctx, func(tx *storage.Tx) error {
					if tc.move {
						if _, err := tx.NextStreamPos(ctx, "epoch", 1); err != nil {
							return err
						}
					}
					tx.AfterCommit(func() { inHook = db.CommitEpoch() })
					return tc.fail
				})
				if !errors.Is(err, tc.fail) {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if moved := db.CommitEpoch() > before; moved != tc.moved {
					t.Fatalf("%s: epoch moved %v, want %v", tc.name, moved, tc.moved)
				}
				if tc.fail == nil && inHook != db.CommitEpoch() {
					t.Fatalf("%s: the hook saw epoch %d, then %d", tc.name, inHook, db.CommitEpoch())
				}
			}
		})
	})
}

// TestPostgresPlanCacheMode checks the generic-plan default and that the
// database URL can set the mode itself.
func TestPostgresPlanCacheMode(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ param, want string }{
		{"", "force_generic_plan"},
		{"auto", "auto"},
	} {
		u := storagetest.NewSchemaURL(t)
		if tc.param != "" {
			u += "&plan_cache_mode=" + tc.param
		}
		db, err := storage.Open(ctx, u, storage.Options{MaxConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		var mode string
		err = db.Read().QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&mode)
		_ = db.Close()
		if err != nil || mode != tc.want {
			t.Fatalf("URL parameter %q: plan_cache_mode %q, %v; want %q", tc.param, mode, err, tc.want)
		}
	}
}
