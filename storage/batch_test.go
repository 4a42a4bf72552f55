package storage_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// TestBatchRows checks that rows queued one by one go in where the first
// was queued, in chunks of every size, and that rewinding drops exactly
// what came after the mark.
func TestBatchRows(t *testing.T) {
	ins := storage.NewRowInsert("server_settings", "name, value", 2, "")
	cases := []struct {
		name       string
		rows, keep int // rows queued, rows kept by a rewind (-1: no rewind)
		anchorLast bool
	}{
		{"one row", 1, -1, false},
		{"a chunk and powers of two", 32 + 16 + 4 + 1, -1, false},
		{"rewind inside the rows", 40, 23, false},
		{"rewind before the first row", 5, 0, false},
		{"a statement after the rows sees them", 3, -1, true},
	}
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for ci, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				prefix := fmt.Sprintf("batch%d-", ci)
				want := c.rows
				err := db.Write(ctx, func(tx *storage.Tx) error {
					b := &storage.Batch{}
					var mark storage.Mark
					for i := range c.rows {
						if i == c.keep {
							mark = b.Mark()
						}
						b.AddRow(ins, fmt.Sprintf("%s%03d", prefix, i), "v")
					}
					if c.keep >= 0 {
						b.Rewind(mark)
						want = c.keep
					}
					if c.anchorLast {
						// Queued after the rows: runs after all of them.
						b.Add(`UPDATE server_settings SET value = 'w' WHERE name LIKE $1`, prefix+"%")
					}
					return tx.ExecBatch(ctx, b)
				})
				if err != nil {
					t.Fatal(err)
				}
				var n, w int
				if err := db.Read().QueryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN value = 'w' THEN 1 ELSE 0 END), 0)
					FROM server_settings WHERE name LIKE $1`, prefix+"%").Scan(&n, &w); err != nil {
					t.Fatal(err)
				}
				if n != want {
					t.Fatalf("%d rows stored, want %d", n, want)
				}
				if c.anchorLast && w != want {
					t.Fatalf("the later statement saw %d rows, want %d", w, want)
				}
			})
		}
	})
}

// TestTxnLookup finds stored transaction IDs among missing ones, in one
// call and across chunks, on both dialects (they run different SQL).
func TestTxnLookup(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := db.Rooms()
		var stored, missing []storage.TxnKey
		for i := range 70 {
			k := storage.TxnKey{UserID: "@u:x", DeviceID: "D", Scope: "send/!r:x/m.room.message", TxnID: fmt.Sprintf("t%d", i)}
			if i%3 == 0 {
				missing = append(missing, k)
			} else {
				stored = append(stored, k)
			}
		}
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			b := &storage.Batch{}
			for _, k := range stored {
				rs.AddTxn(b, k.UserID, k.DeviceID, k.Scope, k.TxnID, "$"+k.TxnID, 1)
			}
			return tx.ExecBatch(ctx, b)
		}); err != nil {
			t.Fatal(err)
		}
		for _, keys := range [][]storage.TxnKey{append(append([]storage.TxnKey{}, stored...), missing...), stored[:1], missing[:2], nil} {
			got, err := rs.TxnLookup(ctx, db.Read(), keys)
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			for _, k := range keys {
				if strings.HasPrefix(k.TxnID, "t") && !slices.Contains(missing, k) {
					want++
					if got[k] != "$"+k.TxnID {
						t.Fatalf("%v: got %q", k, got[k])
					}
				}
			}
			if len(got) != want {
				t.Fatalf("%d found, want %d", len(got), want)
			}
		}
	})
}

// TestPipeline: steps run in order, each seeing the ones before it, their
// rows reach their Scan, and a failing step fails the whole.
func TestPipeline(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		count := func(dst *int) func(storage.Rows) error {
			return func(r storage.Rows) error {
				for r.Next() {
					if err := r.Scan(dst); err != nil {
						return err
					}
				}
				return r.Err()
			}
		}
		if err := db.Write(ctx, func(tx *storage.Tx) error { return tx.Pipeline(ctx, nil) }); err != nil {
			t.Fatalf("an empty pipeline: %v", err)
		}
		var before, after int
		err := db.Write(ctx, func(tx *storage.Tx) error {
			return tx.Pipeline(ctx, []storage.Step{
				{SQL: `SELECT COUNT(*) FROM server_settings WHERE name = $1`, Args: []any{"pipe"}, Scan: count(&before)},
				{SQL: `INSERT INTO server_settings (name, value) VALUES ($1, $2)`, Args: []any{"pipe", "v"}},
				{SQL: `SELECT COUNT(*) FROM server_settings WHERE name = $1`, Args: []any{"pipe"}, Scan: count(&after)},
			})
		})
		if err != nil || before != 0 || after != 1 {
			t.Fatalf("counts %d then %d, %v", before, after, err)
		}
		err = db.Write(ctx, func(tx *storage.Tx) error {
			return tx.Pipeline(ctx, []storage.Step{
				{SQL: `INSERT INTO server_settings (name, value) VALUES ($1, $2)`, Args: []any{"pipe2", "v"}},
				{SQL: `INSERT INTO server_settings (name, value) VALUES ($1, $2)`, Args: []any{"pipe", "again"}},
			})
		})
		if !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("duplicate key in a pipeline: %v", err)
		}
		var n int
		if err := db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM server_settings WHERE name = $1`, "pipe2").Scan(&n); err != nil || n != 0 {
			t.Fatalf("the failed pipeline's first row: %d, %v", n, err)
		}
	})
}
