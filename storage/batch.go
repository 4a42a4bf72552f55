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
}

// Batch collects statements whose results are not needed, to run them in
// one round trip (a pgx batch on PostgreSQL, a plain loop on SQLite where
// there is no round trip to save).
type Batch struct{ stmts []Stmt }

// Add queues a statement.
func (b *Batch) Add(sql string, args ...any) { b.stmts = append(b.stmts, Stmt{SQL: sql, Args: args}) }

// Len returns the number of queued statements.
func (b *Batch) Len() int { return len(b.stmts) }

// ExecBatch runs every statement of b in the transaction, in order.
func (tx *Tx) ExecBatch(ctx context.Context, b *Batch) error {
	if len(b.stmts) == 0 {
		return nil
	}
	if ptx, ok := tx.raw.(pgx.Tx); ok {
		pb := &pgx.Batch{}
		for _, s := range b.stmts {
			pb.Queue(s.SQL, s.Args...)
		}
		res := ptx.SendBatch(ctx, pb)
		for i := range b.stmts {
			if _, err := res.Exec(); err != nil {
				_ = res.Close()
				return fmt.Errorf("batch statement %d: %w", i, pgErr(err))
			}
		}
		return pgErr(res.Close())
	}
	for i, s := range b.stmts {
		if _, err := tx.Exec(ctx, s.SQL, s.Args...); err != nil {
			return fmt.Errorf("batch statement %d: %w", i, err)
		}
	}
	return nil
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

// Truncate drops the statements queued after the first n.
func (b *Batch) Truncate(n int) { b.stmts = b.stmts[:n] }
