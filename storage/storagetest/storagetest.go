// Package storagetest opens throwaway databases for tests: a SQLite file in
// a temporary folder and, when PostgreSQL is reachable, a fresh schema in
// the test database. Every store's tests run on both through ForEach.
package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/storage"
)

// PostgresURL is the server tests use, from PARLEY_TEST_POSTGRES.
func PostgresURL() string {
	if u := os.Getenv("PARLEY_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

var (
	pgOnce  sync.Once
	pgError error
)

// PostgresAvailable reports whether the test PostgreSQL answers. Outside CI
// an unreachable server skips PostgreSQL tests with one loud line; with
// CI=true the caller must fail.
func PostgresAvailable() error {
	pgOnce.Do(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, PostgresURL())
		if err != nil {
			pgError = err
			return
		}
		pgError = conn.Ping(ctx)
		_ = conn.Close(ctx)
		if pgError != nil {
			return
		}
	})
	return pgError
}

// RequirePostgres skips (or, in CI, fails) t when PostgreSQL is down.
func RequirePostgres(t testing.TB) {
	t.Helper()
	if err := PostgresAvailable(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %s is required in CI: %v", PostgresURL(), err)
		}
		warnOnce.Do(func() {
			fmt.Fprintf(os.Stderr, "\n*** PostgreSQL unreachable at %s (%v): SKIPPING PostgreSQL tests ***\n\n", PostgresURL(), err)
		})
		t.Skipf("PostgreSQL unreachable: %v", err)
	}
}

var warnOnce sync.Once

// NewSchemaURL creates a fresh schema in the test database and returns a
// URL whose connections use it; the schema is dropped when t ends.
func NewSchemaURL(t testing.TB) string {
	t.Helper()
	RequirePostgres(t)
	ctx := context.Background()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "t_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), PostgresURL())
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	})
	u, err := url.Parse(PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// OpenSQLite opens a migrated SQLite database in a temporary folder.
func OpenSQLite(t testing.TB) *storage.DB {
	t.Helper()
	return open(t, "sqlite://"+filepath.Join(t.TempDir(), "test.db"))
}

// OpenPostgres opens a migrated PostgreSQL database in a fresh schema.
func OpenPostgres(t testing.TB) *storage.DB {
	t.Helper()
	return open(t, NewSchemaURL(t))
}

func open(t testing.TB, u string) *storage.DB {
	ctx := context.Background()
	db, err := storage.Open(ctx, u, storage.Options{MaxConns: 8, SQLiteSynchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

// ForEach runs fn as a subtest on SQLite and on PostgreSQL.
func ForEach(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { fn(t, OpenSQLite(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, OpenPostgres(t)) })
}

// OpenSQLiteSync opens a SQLite database with the given synchronous mode
// (FULL to measure durable writes).
func OpenSQLiteSync(t testing.TB, sync string) *storage.DB {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "test.db"), storage.Options{MaxConns: 8, SQLiteSynchronous: sync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}
