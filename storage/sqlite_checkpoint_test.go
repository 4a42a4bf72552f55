package storage

import (
	"context"
	"path/filepath"
	"testing"
)

// TestSQLiteCheckpointFromReader checks that the background checkpoint,
// run on a query_only reader connection, copies the writer's WAL back.
func TestSQLiteCheckpointFromReader(t *testing.T) {
	ctx := context.Background()
	s, err := openSQLite(ctx, "sqlite://"+filepath.Join(t.TempDir(), "c.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if _, err := s.w.ExecContext(ctx, "CREATE TABLE t (v TEXT)"); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if _, err := s.w.ExecContext(ctx, "INSERT INTO t (v) VALUES (randomblob(3000))"); err != nil {
			t.Fatal(err)
		}
	}
	var busy, frames, done int
	if err := s.r.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &done); err != nil {
		t.Fatal(err)
	}
	if busy != 0 || frames == 0 || done != frames {
		t.Fatalf("checkpoint from a reader: busy=%d frames=%d checkpointed=%d", busy, frames, done)
	}
	if err := s.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
}
