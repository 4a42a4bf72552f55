package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

type postgres struct {
	pool *pgxpool.Pool
	q    pgQuerier
}

func openPostgres(ctx context.Context, url string, opts Options) (*postgres, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("storage: parse PostgreSQL URL: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = int32(opts.MaxConns)
	}
	// Statements are prepared once per connection and cached by pgx
	// (QueryExecModeCacheStatement), which is what hot paths need.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	// PostgreSQL replans a prepared statement on every execution for as
	// long as it estimates a custom plan cheaper than the generic one,
	// which it did for the sync build's counting queries: planning was a
	// large part of the server's CPU under load. Parley's statements look
	// rows up by index whatever the values (partial indexes are matched
	// by literals, never by parameters), so generic plans serve them;
	// load run, 2 cores: 1,050 -> 1,290 msgs/s. A database URL may set
	// plan_cache_mode itself (plan_cache_mode=auto restores the default).
	if _, ok := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !ok {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: connect to PostgreSQL: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("storage: connect to PostgreSQL: %w", err)
	}
	return &postgres{pool: pool, q: pgQuerier{pool}}, nil
}

func (p *postgres) name() string        { return "postgres" }
func (p *postgres) reader() Querier     { return p.q }
func (p *postgres) writer() Querier     { return p.q }
func (p *postgres) close() error        { p.pool.Close(); return nil }
func (p *postgres) Pool() *pgxpool.Pool { return p.pool }

func (p *postgres) stats() Stats {
	s := p.pool.Stat()
	return Stats{OpenConns: int(s.TotalConns()), InUse: int(s.AcquiredConns()), Idle: int(s.IdleConns())}
}

func (p *postgres) inTx(ctx context.Context, tx *Tx, fn func() error) error {
	if tx.lock != nil {
		return p.inPipeTx(ctx, tx, fn)
	}
	ptx, err := p.pool.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		return fmt.Errorf("storage: begin: %w", pgErr(err))
	}
	tx.raw = ptx
	tx.Querier = pgQuerier{ptx}
	if err := fn(); err != nil {
		_ = ptx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := ptx.Commit(ctx); err != nil {
		return fmt.Errorf("storage: commit: %w", pgErr(err))
	}
	return nil
}

// pipeTx is the transaction of WriteLocked, which spends no round trip of
// its own: BEGIN and the lock go with its first statements (with all of
// a first Pipeline), and COMMIT with the statements queued by
// ExecAtCommit. The persister, which commits one batch after another,
// otherwise waited on two extra replies per batch. It is not a pgx.Tx:
// River cannot enqueue jobs in it.
type pipeTx struct {
	conn *pgxpool.Conn
	lock int64
	// begun: BEGIN has been sent.
	begun bool
	// atCommit goes with COMMIT.
	atCommit []Step
}

// opening returns the steps that begin the transaction, once.
func (t *pipeTx) opening() []Step {
	if t.begun {
		return nil
	}
	t.begun = true
	return []Step{{SQL: "BEGIN"}, {SQL: "SELECT pg_advisory_xact_lock($1)", Args: []any{t.lock}}}
}

// begin sends the opening steps on their own, before a lone statement.
func (t *pipeTx) begin(ctx context.Context) error {
	if open := t.opening(); open != nil {
		return pgPipeline(ctx, t.conn, open, nil)
	}
	return nil
}

func (t *pipeTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.begin(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.conn.Exec(ctx, sql, args...)
}

func (t *pipeTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.begin(ctx); err != nil {
		return nil, err
	}
	return t.conn.Query(ctx, sql, args...)
}

func (t *pipeTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.begin(ctx); err != nil {
		return errRow{err}
	}
	return t.conn.QueryRow(ctx, sql, args...)
}

func (p *postgres) inPipeTx(ctx context.Context, tx *Tx, fn func() error) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("storage: begin: %w", pgErr(err))
	}
	// A connection released inside a transaction is closed by the pool
	// rather than handed out again.
	defer conn.Release()
	t := &pipeTx{conn: conn, lock: *tx.lock}
	tx.raw = t
	tx.Querier = pgQuerier{t}
	rollback := func() {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}
	if err := fn(); err != nil {
		rollback()
		return err
	}
	if !t.begun && len(t.atCommit) == 0 {
		return nil
	}
	if conn.Conn().PgConn().TxStatus() == 'E' {
		// A statement failed and the caller went on: COMMIT would only
		// roll back.
		rollback()
		return errors.New("storage: commit: the transaction failed earlier")
	}
	steps := append(t.atCommit, Step{SQL: "COMMIT"})
	t.atCommit = nil
	if err := tx.Pipeline(ctx, steps); err != nil {
		rollback()
		return fmt.Errorf("storage: commit: %w", err)
	}
	return nil
}

func (p *postgres) sqlType(token string) (string, bool) {
	switch token {
	case "serial":
		return "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", true
	case "bytes":
		return "BYTEA", true
	case "json":
		return "TEXT", true
	}
	return "", false
}

// pgConn is what pgxpool.Pool, pgx.Conn and pgx.Tx have in common.
type pgConn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type pgQuerier struct{ c pgConn }

func (q pgQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.c.Exec(ctx, query, args...)
	if err != nil {
		return 0, pgErr(err)
	}
	return tag.RowsAffected(), nil
}

func (q pgQuerier) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	rows, err := q.c.Query(ctx, query, args...)
	if err != nil {
		return nil, pgErr(err)
	}
	return pgRows{rows}, nil
}

func (q pgQuerier) QueryRow(ctx context.Context, query string, args ...any) Row {
	return pgRow{q.c.QueryRow(ctx, query, args...)}
}

type pgRows struct{ pgx.Rows }

func (r pgRows) Err() error { return pgErr(r.Rows.Err()) }

func (r pgRows) Scan(dest ...any) error { return pgErr(r.Rows.Scan(dest...)) }

type pgRow struct{ r pgx.Row }

func (r pgRow) Scan(dest ...any) error { return pgErr(r.r.Scan(dest...)) }

// pgErr translates PostgreSQL errors into the package's errors.
func pgErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505":
			return fmt.Errorf("%w: %s", ErrConflict, pe.ConstraintName)
		case "22021", "22P05", "22001", "54000":
			// NUL bytes, text that cannot be stored, values too long.
			return fmt.Errorf("%w: %s", ErrInvalidInput, pe.Message)
		}
	}
	return err
}
