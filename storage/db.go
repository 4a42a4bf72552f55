// Package storage is the one place in Parley that speaks SQL.
//
// Queries are written once, in PostgreSQL's placeholder style ($1, $2, …),
// and run on either dialect: PostgreSQL through a pgx v5 pool, or SQLite
// (modernc.org/sqlite, pure Go) through one writer connection and a pool of
// readers in WAL mode. The few real differences between the two (identity
// columns, byte types, advisory locks, full-text search) are methods of the
// dialect, so that callers never ask which database they are on.
//
// Each area of the server (accounts, rooms, media, keys, …) has its own
// store type in its own file, built on the shared *DB.
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
)

// Errors every store returns, whatever the dialect.
var (
	// ErrNotFound is returned when a row that was asked for does not exist.
	ErrNotFound = errors.New("storage: not found")
	// ErrConflict is returned when an insert violates a unique constraint.
	ErrConflict = errors.New("storage: conflict")
	// ErrInvalidInput is returned for values the database cannot store
	// (a NUL byte in text, say): the client's input was bad.
	ErrInvalidInput error = invalidInput{}
)

type invalidInput struct{}

func (invalidInput) Error() string { return "storage: invalid input" }

// InvalidInput marks the error as caused by the client's input, so that
// the API edge (which does not import storage) answers 400, not 500.
func (invalidInput) InvalidInput() bool { return true }

// Querier runs statements. It is implemented by the read pool, the writer
// and transactions of both dialects.
type Querier interface {
	// Exec runs a statement and returns the number of rows it affected.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	// Query runs a statement that returns rows.
	Query(ctx context.Context, query string, args ...any) (Rows, error)
	// QueryRow runs a statement expected to return at most one row; Scan
	// returns ErrNotFound when there is none.
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Rows is a result set; Close must be called (it is safe to call twice).
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// Row is a single-row result.
type Row interface {
	Scan(dest ...any) error
}

// Options tune how the database is opened.
type Options struct {
	// MaxConns bounds the PostgreSQL pool and the SQLite read pool.
	MaxConns int
	// SQLiteSynchronous is SQLite's synchronous pragma: FULL (default) or NORMAL.
	SQLiteSynchronous string
	// Logger receives background failures (SQLite checkpoints); nil: none.
	Logger *slog.Logger
}

// DB is a handle on the server's database, shared by every store.
type DB struct {
	d   dialect
	url string
	// commits is the commit epoch (CommitEpoch).
	commits atomic.Uint64
}

// Open connects to the database named by url: "postgres://…" or
// "postgresql://…" for PostgreSQL, "sqlite://path" or "sqlite:path" for SQLite.
func Open(ctx context.Context, url string, opts Options) (*DB, error) {
	var (
		d   dialect
		err error
	)
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		d, err = openPostgres(ctx, url, opts)
	case strings.HasPrefix(url, "sqlite:"):
		d, err = openSQLite(ctx, url, opts)
	default:
		return nil, fmt.Errorf("storage: unsupported database URL scheme in %q (want postgres:// or sqlite://)", redactURL(url))
	}
	if err != nil {
		return nil, err
	}
	return &DB{d: d, url: url}, nil
}

// Close releases every connection.
func (db *DB) Close() error { return db.d.close() }

// Dialect names the database engine: "postgres" or "sqlite".
func (db *DB) Dialect() string { return db.d.name() }

// Read returns a querier on the read pool. On SQLite it never blocks
// behind the writer.
func (db *DB) Read() Querier { return db.d.reader() }

// ReadSnapshot returns ctx carrying one read transaction for the reads
// made with it through Read(), and the function that ends it; reads then
// see one consistent view. On SQLite a statement outside a transaction
// opens one of its own, and under a steady stream of commits each such
// start also drops the connection's page cache, so a request that reads a
// dozen times (a sync build) pays that once. On PostgreSQL ctx comes back
// unchanged: an explicit transaction would cost two round trips. Reads
// with the returned ctx must not run concurrently.
func (db *DB) ReadSnapshot(ctx context.Context) (context.Context, func()) {
	if s, ok := db.d.(snapshotter); ok {
		return s.readSnapshot(ctx)
	}
	return ctx, func() {}
}

// snapshotter is a dialect whose reads gain from one transaction.
type snapshotter interface {
	readSnapshot(ctx context.Context) (context.Context, func())
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	var one int
	return db.Read().QueryRow(ctx, "SELECT 1").Scan(&one)
}

// Stats describes the connection pools, for metrics.
type Stats struct {
	OpenConns, InUse, Idle int
}

// Stats returns the pools' current figures.
func (db *DB) Stats() Stats { return db.d.stats() }

// Tx is a read-write transaction. Work registered with AfterCommit runs once
// the transaction has committed, never if it rolls back.
type Tx struct {
	Querier
	db          *DB
	raw         any
	afterCommit []func()
	// moved: the transaction took stream positions (NextStreamPos).
	moved bool
	// lock, when set, is the advisory lock taken as the transaction
	// begins (WriteLocked).
	lock *int64
}

// AfterCommit registers fn to run after a successful commit (wake-ups,
// cache invalidation).
func (tx *Tx) AfterCommit(fn func()) { tx.afterCommit = append(tx.afterCommit, fn) }

// Dialect names the database engine of the transaction.
func (tx *Tx) Dialect() string { return tx.db.d.name() }

// Write runs fn in a read-write transaction and commits it when fn returns
// nil. On SQLite the transaction holds the single writer (BEGIN IMMEDIATE);
// on PostgreSQL it is a READ COMMITTED transaction from the pool.
func (db *DB) Write(ctx context.Context, fn func(tx *Tx) error) error {
	return db.write(ctx, &Tx{db: db}, fn)
}

// WriteLocked is Write holding the transaction-scoped lock named by key
// (Tx.Lock) from its start, for a writer that takes it in every
// transaction. On PostgreSQL the transaction spends no round trip of its
// own: BEGIN and the lock go with its first statements, and COMMIT with
// what it queued with ExecAtCommit. It cannot enqueue River jobs.
func (db *DB) WriteLocked(ctx context.Context, key int64, fn func(tx *Tx) error) error {
	return db.write(ctx, &Tx{db: db, lock: &key}, fn)
}

func (db *DB) write(ctx context.Context, tx *Tx, fn func(tx *Tx) error) error {
	err := db.d.inTx(ctx, tx, func() error { return fn(tx) })
	if tx.moved {
		// Before the wake-ups of afterCommit, and even after a failed
		// commit, which may have landed: a spare move costs one read.
		db.commits.Add(1)
	}
	if err != nil {
		return err
	}
	for _, f := range tx.afterCommit {
		f()
	}
	return nil
}

// Exec runs a single statement on the writer, outside any explicit
// transaction.
func (db *DB) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	return db.d.writer().Exec(ctx, query, args...)
}

// QueryRowWrite runs a single-row statement (typically INSERT … RETURNING)
// on the writer.
func (db *DB) QueryRowWrite(ctx context.Context, query string, args ...any) Row {
	return db.d.writer().QueryRow(ctx, query, args...)
}

// advanceStream moves a stream by $2 and returns its new position.
const advanceStream = `UPDATE stream_positions SET pos = pos + $2 WHERE stream = $1 RETURNING pos`

// NextStreamPos reserves n consecutive positions on the named stream and
// returns the first. The stream's row stays locked until the transaction
// ends, so positions of one stream commit in the order they are handed out:
// a reader that has seen position P never later finds a smaller one appear.
func (tx *Tx) NextStreamPos(ctx context.Context, stream string, n int64) (int64, error) {
	tx.moved = true
	var last int64
	err := tx.QueryRow(ctx, advanceStream, stream, n).Scan(&last)
	if errors.Is(err, ErrNotFound) {
		if _, err := tx.Exec(ctx, `INSERT INTO stream_positions (stream, pos) VALUES ($1, 0) ON CONFLICT (stream) DO NOTHING`, stream); err != nil {
			return 0, fmt.Errorf("create stream %s: %w", stream, err)
		}
		return tx.NextStreamPos(ctx, stream, n)
	}
	if err != nil {
		return 0, fmt.Errorf("advance stream %s: %w", stream, err)
	}
	return last - n + 1, nil
}

// StreamPos returns the newest committed position of a stream.
func (db *DB) StreamPos(ctx context.Context, stream string) (int64, error) {
	var pos int64
	err := db.Read().QueryRow(ctx, `SELECT pos FROM stream_positions WHERE stream = $1`, stream).Scan(&pos)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	return pos, err
}

// CommitEpoch counts the commits on this instance that moved a stream
// position, and the bus messages heard from the other instances (which
// publish after their commits). It moves after the change it counts is
// visible, so a read of the positions that began at epoch E sees every
// change counted up to E, and stays as good as a new one until the epoch
// moves. A change on another instance counts only once its message
// arrives.
func (db *DB) CommitEpoch() uint64 { return db.commits.Load() }

// StreamPositions returns the newest committed position of every stream
// in one read (streams never advanced are absent: position 0).
func (db *DB) StreamPositions(ctx context.Context) (map[string]int64, error) {
	rows, err := db.Read().Query(ctx, `SELECT stream, pos FROM stream_positions`)
	if err != nil {
		return nil, fmt.Errorf("stream positions: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var s string
		var p int64
		if err := rows.Scan(&s, &p); err != nil {
			return nil, fmt.Errorf("stream positions: %w", err)
		}
		out[s] = p
	}
	return out, rows.Err()
}

func redactURL(u string) string {
	if i := strings.Index(u, "@"); i > 0 {
		if j := strings.Index(u, "://"); j > 0 && j < i {
			return u[:j+3] + "…" + u[i:]
		}
	}
	return u
}

// dialect is what differs between the two databases.
type dialect interface {
	name() string
	reader() Querier
	writer() Querier
	inTx(ctx context.Context, tx *Tx, fn func() error) error
	close() error
	stats() Stats
	// sqlType maps a migration type token ({{serial}}, {{bytes}}, …) to SQL.
	sqlType(token string) (string, bool)
}
