package storage

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Stmt is one statement of a batch.
type Stmt struct {
	SQL  string
	Args []any
	// rows, when set, makes this statement the place where every row
	// queued for rows' INSERT goes in (Batch.AddRow).
	rows *RowInsert
}

// RowInsert is a multi-row INSERT that Batch.AddRow fills row by row:
// all of a batch's rows go in by a few statements, each of insertChunk
// rows or a power of two below, so that few statement shapes are prepared.
type RowInsert struct {
	cols  int
	stmts map[int]string // chunk size → SQL
}

// NewRowInsert describes "INSERT INTO table (columns) VALUES … suffix" with
// cols columns; suffix is an ON CONFLICT clause or empty.
func NewRowInsert(table, columns string, cols int, suffix string) *RowInsert {
	ri := &RowInsert{cols: cols, stmts: map[int]string{}}
	for size := 1; size <= insertChunk; size *= 2 {
		ri.stmts[size] = `INSERT INTO ` + table + ` (` + columns + `) VALUES ` + valuesRows(1, size, cols) + ` ` + suffix
	}
	return ri
}

// Batch collects statements whose results are not needed, to run them in
// one round trip (a pgx batch on PostgreSQL, a plain loop on SQLite where
// there is no round trip to save).
type Batch struct {
	stmts []Stmt
	// rows holds AddRow's rows per insert, flat, and where they go in.
	rows   map[*RowInsert][]any
	anchor map[*RowInsert]int
}

// Add queues a statement.
func (b *Batch) Add(sql string, args ...any) { b.stmts = append(b.stmts, Stmt{SQL: sql, Args: args}) }

// AddRow queues one row of ri. The batch's rows of ri all go in where its
// first row was queued: callers use it for rows that nothing queued in
// between depends on the absence of (new events, their edges).
func (b *Batch) AddRow(ri *RowInsert, args ...any) {
	if len(args) != ri.cols {
		panic(fmt.Sprintf("storage: AddRow with %d values for %d columns", len(args), ri.cols))
	}
	if b.rows == nil {
		b.rows, b.anchor = map[*RowInsert][]any{}, map[*RowInsert]int{}
	}
	if _, ok := b.anchor[ri]; !ok {
		b.anchor[ri] = len(b.stmts)
		b.stmts = append(b.stmts, Stmt{rows: ri})
	}
	b.rows[ri] = append(b.rows[ri], args...)
}

// AddRows queues statements of ri for rows (flat, ri's columns each) at
// this point of the batch, apart from AddRow's: for rows whose statement
// must not meet rows queued by another call (ON CONFLICT DO UPDATE may
// not touch a row twice).
func (b *Batch) AddRows(ri *RowInsert, rows []any) {
	if len(rows)%ri.cols != 0 {
		panic(fmt.Sprintf("storage: AddRows with %d values for %d columns", len(rows), ri.cols))
	}
	b.stmts = ri.appendChunks(b.stmts, rows)
}

// appendChunks appends to out the statements that insert rows (flat).
func (ri *RowInsert) appendChunks(out []Stmt, rows []any) []Stmt {
	for _, size := range chunkSizes(len(rows) / ri.cols) {
		n := size * ri.cols
		out = append(out, Stmt{SQL: ri.stmts[size], Args: rows[:n:n]})
		rows = rows[n:]
	}
	return out
}

// Mark is a point of a batch to rewind to.
type Mark struct {
	stmts int
	rows  map[*RowInsert]int
}

// Mark returns the batch's current point.
func (b *Batch) Mark() Mark {
	m := Mark{stmts: len(b.stmts), rows: make(map[*RowInsert]int, len(b.rows))}
	for ri, r := range b.rows {
		m.rows[ri] = len(r)
	}
	return m
}

// Rewind drops everything queued after m.
func (b *Batch) Rewind(m Mark) {
	b.stmts = b.stmts[:m.stmts]
	for ri := range b.rows {
		n, ok := m.rows[ri]
		if !ok {
			delete(b.rows, ri)
			delete(b.anchor, ri)
			continue
		}
		b.rows[ri] = b.rows[ri][:n]
	}
}

// Len returns the number of queued statements and row inserts.
func (b *Batch) Len() int { return len(b.stmts) }

// expand returns the statements to run, row inserts split into chunks.
func (b *Batch) expand() []Stmt {
	if len(b.rows) == 0 {
		return b.stmts
	}
	out := make([]Stmt, 0, len(b.stmts)+4)
	for _, s := range b.stmts {
		if s.rows == nil {
			out = append(out, s)
			continue
		}
		out = s.rows.appendChunks(out, b.rows[s.rows])
	}
	return out
}

// ExecBatch runs every statement of b in the transaction, in order (in one
// round trip on PostgreSQL: see Pipeline).
func (tx *Tx) ExecBatch(ctx context.Context, b *Batch) error {
	stmts := b.expand()
	steps := make([]Step, len(stmts))
	for i, st := range stmts {
		steps[i] = Step{SQL: st.SQL, Args: st.Args}
	}
	return tx.Pipeline(ctx, steps)
}

// ExecAtCommit queues b's statements to run as the transaction commits:
// in a WriteLocked transaction on PostgreSQL they go with COMMIT in one
// round trip; elsewhere they run at once. An error in them fails the
// commit, and the transaction's other work with it.
func (tx *Tx) ExecAtCommit(ctx context.Context, b *Batch) error {
	if t, ok := tx.raw.(*pipeTx); ok {
		for _, st := range b.expand() {
			t.atCommit = append(t.atCommit, Step{SQL: st.SQL, Args: st.Args})
		}
		return nil
	}
	return tx.ExecBatch(ctx, b)
}

// Lock takes a transaction-scoped lock named by key: an advisory lock on
// PostgreSQL; nothing on SQLite, whose single writer already serialises
// every transaction.
func (tx *Tx) Lock(ctx context.Context, key int64) error {
	if tx.Dialect() != "postgres" {
		return nil
	}
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, key)
	return err
}

// Step is one statement of Tx.Pipeline; Scan, when set, reads its rows.
type Step struct {
	SQL  string
	Args []any
	Scan func(Rows) error
}

// Pipeline runs steps in order and reads their rows: in one round trip on
// PostgreSQL (a pgx batch), one by one on SQLite. Each statement starts
// after the one before it ended, so it sees what that one did and, on
// PostgreSQL's READ COMMITTED, what others committed meanwhile: a lock
// taken by one step covers the reads of the next. A step whose Scan
// fails ends the pipeline with its error.
func (tx *Tx) Pipeline(ctx context.Context, steps []Step) error {
	if len(steps) == 0 {
		return nil
	}
	switch raw := tx.raw.(type) {
	case pgx.Tx:
		return pgPipeline(ctx, raw, nil, steps)
	case *pipeTx:
		return pgPipeline(ctx, raw.conn, raw.opening(), steps)
	}
	for i, s := range steps {
		if err := tx.step(ctx, s); err != nil {
			return fmt.Errorf("statement %d of %d: %w", i, len(steps), err)
		}
	}
	return nil
}

// pgPipeline sends open (the steps that begin a transaction) and steps in
// one pgx batch and reads their results in order.
func pgPipeline(ctx context.Context, b pgBatcher, open, steps []Step) error {
	all := append(open, steps...)
	pb := &pgx.Batch{}
	for _, s := range all {
		pb.Queue(s.SQL, s.Args...)
	}
	res := b.SendBatch(ctx, pb)
	for i, s := range all {
		if err := pgStep(res, s); err != nil {
			_ = res.Close()
			if i < len(open) {
				return fmt.Errorf("storage: begin: %w", err)
			}
			return fmt.Errorf("statement %d of %d: %w", i-len(open), len(steps), err)
		}
	}
	return pgErr(res.Close())
}

// pgBatcher sends a pgx batch: pgx.Tx, or the connection of a pipeTx.
type pgBatcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// pgStep reads one step's result from a pgx batch.
func pgStep(res pgx.BatchResults, s Step) error {
	if s.Scan == nil {
		_, err := res.Exec()
		return pgErr(err)
	}
	rows, err := res.Query()
	if err != nil {
		return pgErr(err)
	}
	defer rows.Close()
	if err := s.Scan(pgRows{rows}); err != nil {
		return err
	}
	rows.Close()
	return pgErr(rows.Err())
}

// step runs one step on its own.
func (tx *Tx) step(ctx context.Context, s Step) error {
	if s.Scan == nil {
		_, err := tx.Exec(ctx, s.SQL, s.Args...)
		return err
	}
	rows, err := tx.Query(ctx, s.SQL, s.Args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if err := s.Scan(rows); err != nil {
		return err
	}
	return rows.Err()
}
