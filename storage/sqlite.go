package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteDB is SQLite in WAL mode: exactly one writer connection, because
// SQLite has one writer anyway and queueing in Go is cheaper than busy
// retries, and a pool of read-only connections that never wait for it.
type sqliteDB struct {
	path   string
	w, r   *sql.DB
	wq, rq *liteQuerier
	// stop ends checkpointLoop, which closes stopped.
	stop, stopped chan struct{}
	stopOnce      sync.Once
	log           *slog.Logger
}

func openSQLite(ctx context.Context, rawURL string, opts Options) (*sqliteDB, error) {
	path := strings.TrimPrefix(strings.TrimPrefix(rawURL, "sqlite:"), "//")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path == "" {
		return nil, errors.New("storage: SQLite URL names no file")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("storage: create SQLite directory: %w", err)
		}
	}
	sync := strings.ToUpper(opts.SQLiteSynchronous)
	if sync == "" {
		sync = "FULL"
	}
	if sync != "FULL" && sync != "NORMAL" {
		return nil, fmt.Errorf("storage: SQLite synchronous must be FULL or NORMAL, not %q", opts.SQLiteSynchronous)
	}
	common := url.Values{}
	common.Add("_pragma", "busy_timeout(10000)")
	common.Add("_pragma", "journal_mode(WAL)")
	common.Add("_pragma", "synchronous("+sync+")")
	common.Add("_pragma", "foreign_keys(1)")
	wv := url.Values{}
	for k, v := range common {
		wv[k] = append([]string(nil), v...)
	}
	wv.Set("_txlock", "immediate")
	// Multi-row statements and savepoints inside a write transaction keep
	// a statement journal of every page they touch; in a temporary file
	// that was as many write syscalls as the WAL itself. In memory it
	// holds one transaction's pages at most.
	wv.Add("_pragma", "temp_store(MEMORY)")
	// Checkpoints run in the background (checkpointLoop); the writer's own
	// automatic one is only a backstop should that fall behind.
	wv.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", backstopCheckpoint))
	w, err := sql.Open("sqlite", "file:"+path+"?"+wv.Encode())
	if err != nil {
		return nil, fmt.Errorf("storage: open SQLite: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("storage: open SQLite %s: %w", path, err)
	}
	// The database holds password hashes and keys: owner only.
	_ = os.Chmod(path, 0o600)
	rv := url.Values{}
	for k, v := range common {
		rv[k] = append([]string(nil), v...)
	}
	rv.Add("_pragma", "query_only(1)")
	r, err := sql.Open("sqlite", "file:"+path+"?"+rv.Encode())
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("storage: open SQLite readers: %w", err)
	}
	n := opts.MaxConns
	if n <= 0 {
		n = max(4, runtime.GOMAXPROCS(0)*2)
	}
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	s := &sqliteDB{path: path, w: w, r: r, wq: newLiteQuerier(w), rq: newLiteQuerier(r),
		stop: make(chan struct{}), stopped: make(chan struct{}), log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	go s.checkpointLoop()
	return s, nil
}

// Checkpoint cadence. SQLite's automatic checkpoint runs inside the commit
// that crosses 1,000 WAL pages, so every few hundred milliseconds under
// load one event batch also copied the WAL back into the database file.
// A passive checkpoint from a reader connection runs beside the writer
// instead, and a longer interval copies each hot page once for many
// commits.
const (
	checkpointEvery    = 250 * time.Millisecond
	backstopCheckpoint = 20000 // pages, ~80 MiB of WAL
)

// checkpointLoop copies the WAL into the database file until close.
// Passive checkpoints never wait for readers or the writer; query_only
// connections may run them.
func (s *sqliteDB) checkpointLoop() {
	defer close(s.stopped)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if err := s.checkpoint(context.Background()); err != nil {
			s.log.Warn("SQLite checkpoint failed", "err", err)
		}
	}
}

// checkpoint runs one passive checkpoint; the frame counts the pragma
// answers with are not needed.
func (s *sqliteDB) checkpoint(ctx context.Context) error {
	var busy, frames, done int
	if err := s.r.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &done); err != nil {
		return fmt.Errorf("storage: checkpoint: %w", liteErr(err))
	}
	return nil
}

func (s *sqliteDB) name() string    { return "sqlite" }
func (s *sqliteDB) reader() Querier { return s.rq }
func (s *sqliteDB) writer() Querier { return s.wq }

func (s *sqliteDB) close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.stopped
	s.rq.closeStmts()
	s.wq.closeStmts()
	return errors.Join(s.r.Close(), s.w.Close())
}

func (s *sqliteDB) stats() Stats {
	a, b := s.w.Stats(), s.r.Stats()
	return Stats{OpenConns: a.OpenConnections + b.OpenConnections, InUse: a.InUse + b.InUse, Idle: a.Idle + b.Idle}
}

// Writer is the single-connection writer pool, which River shares.
func (s *sqliteDB) Writer() *sql.DB { return s.w }

func (s *sqliteDB) inTx(ctx context.Context, tx *Tx, fn func() error) error {
	stx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("storage: begin: %w", liteErr(err))
	}
	tx.raw = stx
	tx.Querier = &liteTxQuerier{parent: s.wq, tx: stx}
	defer s.wq.preparePending(context.WithoutCancel(ctx))
	if err := fn(); err != nil {
		_ = stx.Rollback()
		return err
	}
	if err := stx.Commit(); err != nil {
		return fmt.Errorf("storage: commit: %w", liteErr(err))
	}
	return nil
}

// liteSnapshot is a read transaction carried by a context (ReadSnapshot).
type liteSnapshot struct {
	owner *liteQuerier
	tx    *sql.Tx
	ended atomic.Bool
}

type snapshotKey struct{}

func (s *sqliteDB) readSnapshot(ctx context.Context) (context.Context, func()) {
	if sn, ok := ctx.Value(snapshotKey{}).(*liteSnapshot); ok && !sn.ended.Load() {
		return ctx, func() {} // already in one: keep its view
	}
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		// Reads then go to the pool one by one and report their own errors.
		return ctx, func() {}
	}
	sn := &liteSnapshot{owner: s.rq, tx: tx}
	return context.WithValue(ctx, snapshotKey{}, sn), func() {
		sn.ended.Store(true)
		_ = tx.Rollback()
	}
}

// bind moves a pool statement into the context's read snapshot, if it
// carries one of this pool's that has not ended.
func (q *liteQuerier) bind(ctx context.Context, st *sql.Stmt) *sql.Stmt {
	if sn, ok := ctx.Value(snapshotKey{}).(*liteSnapshot); ok && sn.owner == q && !sn.ended.Load() {
		return sn.tx.StmtContext(ctx, st)
	}
	return st
}

func (s *sqliteDB) sqlType(token string) (string, bool) {
	switch token {
	case "serial":
		return "INTEGER PRIMARY KEY AUTOINCREMENT", true
	case "bytes":
		return "BLOB", true
	case "json":
		return "TEXT", true
	}
	return "", false
}

// liteQuerier prepares each distinct statement once per pool and keeps it.
type liteQuerier struct {
	db    *sql.DB
	mu    sync.RWMutex
	stmts map[string]*sql.Stmt
	// pending holds statements first met inside a transaction. They cannot
	// be prepared on the pool then (its only connection is the
	// transaction's), so they are prepared once the transaction ends.
	pending map[string]struct{}
}

func newLiteQuerier(db *sql.DB) *liteQuerier {
	return &liteQuerier{db: db, stmts: make(map[string]*sql.Stmt), pending: make(map[string]struct{})}
}

func (q *liteQuerier) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st := q.cached(query); st != nil {
		return st, nil
	}
	// Prepare without holding the lock: preparing on the writer waits for
	// its connection, which a transaction may hold while it looks up other
	// statements here.
	st, err := q.db.PrepareContext(ctx, rebindSQLite(query))
	if err != nil {
		return nil, liteErr(err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if prev, ok := q.stmts[query]; ok {
		_ = st.Close()
		return prev, nil
	}
	q.stmts[query] = st
	return st, nil
}

func (q *liteQuerier) cached(query string) *sql.Stmt {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.stmts[query]
}

func (q *liteQuerier) want(query string) {
	q.mu.Lock()
	q.pending[query] = struct{}{}
	q.mu.Unlock()
}

// preparePending prepares the statements that transactions asked for.
func (q *liteQuerier) preparePending(ctx context.Context) {
	q.mu.Lock()
	if len(q.pending) == 0 {
		q.mu.Unlock()
		return
	}
	todo := make([]string, 0, len(q.pending))
	for k := range q.pending {
		todo = append(todo, k)
	}
	clear(q.pending)
	q.mu.Unlock()
	for _, query := range todo {
		_, _ = q.stmt(ctx, query)
	}
}

func (q *liteQuerier) closeStmts() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, st := range q.stmts {
		_ = st.Close()
		delete(q.stmts, k)
	}
}

func (q *liteQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	st, err := q.stmt(ctx, query)
	if err != nil {
		return 0, err
	}
	res, err := st.ExecContext(ctx, args...)
	if err != nil {
		return 0, liteErr(err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

func (q *liteQuerier) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	st, err := q.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := q.bind(ctx, st).QueryContext(ctx, args...)
	if err != nil {
		return nil, liteErr(err)
	}
	return liteRows{rows}, nil
}

func (q *liteQuerier) QueryRow(ctx context.Context, query string, args ...any) Row {
	st, err := q.stmt(ctx, query)
	if err != nil {
		return errRow{err}
	}
	return liteRow{q.bind(ctx, st).QueryRowContext(ctx, args...)}
}

// liteTxQuerier runs the parent's prepared statements inside a transaction.
type liteTxQuerier struct {
	parent *liteQuerier
	tx     *sql.Tx
}

func (q *liteTxQuerier) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st := q.parent.cached(query); st != nil {
		return q.tx.StmtContext(ctx, st), nil
	}
	q.parent.want(query)
	st, err := q.tx.PrepareContext(ctx, rebindSQLite(query))
	return st, liteErr(err)
}

func (q *liteTxQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	st, err := q.stmt(ctx, query)
	if err != nil {
		return 0, err
	}
	res, err := st.ExecContext(ctx, args...)
	if err != nil {
		return 0, liteErr(err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

func (q *liteTxQuerier) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	st, err := q.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, liteErr(err)
	}
	return liteRows{rows}, nil
}

func (q *liteTxQuerier) QueryRow(ctx context.Context, query string, args ...any) Row {
	st, err := q.stmt(ctx, query)
	if err != nil {
		return errRow{err}
	}
	return liteRow{st.QueryRowContext(ctx, args...)}
}

type liteRows struct{ r *sql.Rows }

func (r liteRows) Next() bool             { return r.r.Next() }
func (r liteRows) Scan(dest ...any) error { return liteErr(r.r.Scan(dest...)) }
func (r liteRows) Err() error             { return liteErr(r.r.Err()) }
func (r liteRows) Close()                 { _ = r.r.Close() }

type liteRow struct{ r *sql.Row }

func (r liteRow) Scan(dest ...any) error { return liteErr(r.r.Scan(dest...)) }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// liteErr translates SQLite errors into the package's errors.
func liteErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %s", ErrConflict, se.Error())
		}
	}
	return err
}

// rebindSQLite turns PostgreSQL's $N placeholders into SQLite's ?N,
// leaving string literals and quoted identifiers alone.
func rebindSQLite(q string) string {
	if !strings.Contains(q, "$") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q))
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '$' && i+1 < len(q) && q[i+1] >= '0' && q[i+1] <= '9':
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}
