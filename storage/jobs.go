package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
)

// JobsConfig describes the job queue a server runs.
type JobsConfig struct {
	// Workers holds every job kind's worker; engines add theirs before the
	// queue is built.
	Workers *river.Workers
	// Queues names the queues this instance works and their concurrency.
	Queues map[string]river.QueueConfig
	// Periodic jobs (retention, cleanup), scheduled by the elected leader.
	Periodic []*river.PeriodicJob
	Logger   *slog.Logger
	// InsertOnly builds a client that only enqueues (admin commands).
	InsertOnly bool
}

// Jobs is the durable job queue (River) on whichever database the server
// uses. Jobs inserted in a transaction become visible, and run, only if it
// commits.
type Jobs struct {
	db   *DB
	pg   *river.Client[pgx.Tx]
	lite *river.Client[*sql.Tx]

	stopOnce sync.Once
	started  bool
}

// Jobs returns an unbuilt job queue handle: engines keep it to enqueue
// work, and the server builds it with every worker once they are known.
func (db *DB) Jobs() *Jobs { return &Jobs{db: db} }

// NewJobs builds the job queue on db.
func (db *DB) NewJobs(cfg JobsConfig) (*Jobs, error) {
	j := db.Jobs()
	return j, j.Build(cfg)
}

// Build creates the River client; call once, before Start or Insert.
func (j *Jobs) Build(cfg JobsConfig) error {
	db := j.db
	rc := &river.Config{
		Logger:                      cfg.Logger,
		MaxAttempts:                 25,
		CompletedJobRetentionPeriod: 24 * time.Hour,
		JobTimeout:                  5 * time.Minute,
		PeriodicJobs:                cfg.Periodic,
	}
	if !cfg.InsertOnly {
		rc.Workers = cfg.Workers
		rc.Queues = cfg.Queues
	}
	var err error
	switch d := db.d.(type) {
	case *postgres:
		j.pg, err = river.NewClient(riverpgxv5.New(d.pool), rc)
	case *sqliteDB:
		// SQLite has no LISTEN/NOTIFY: jobs inserted outside a transaction
		// wake the producer at once; transactional inserts wait for a poll.
		rc.FetchPollInterval = 200 * time.Millisecond
		rc.FetchCooldown = 20 * time.Millisecond
		j.lite, err = river.NewClient(riversqlite.New(d.w), rc)
	default:
		err = errors.New("unknown dialect")
	}
	if err != nil {
		return fmt.Errorf("storage: build job queue: %w", err)
	}
	return nil
}

// Start begins working jobs; it returns at once.
func (j *Jobs) Start(ctx context.Context) error {
	var err error
	if j.pg != nil {
		err = j.pg.Start(ctx)
	} else {
		err = j.lite.Start(ctx)
	}
	if err != nil {
		return fmt.Errorf("storage: start job queue: %w", err)
	}
	j.started = true
	return nil
}

// Stop waits for running jobs to finish (or ctx to end) and stops the
// queue. It is idempotent.
func (j *Jobs) Stop(ctx context.Context) error {
	var err error
	j.stopOnce.Do(func() {
		if !j.started {
			return
		}
		if j.pg != nil {
			err = j.pg.Stop(ctx)
		} else {
			err = j.lite.Stop(ctx)
		}
	})
	return err
}

// Insert enqueues a job outside any transaction.
func (j *Jobs) Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) error {
	var err error
	if j.pg != nil {
		_, err = j.pg.Insert(ctx, args, opts)
	} else {
		_, err = j.lite.Insert(ctx, args, opts)
	}
	if err != nil {
		return fmt.Errorf("storage: enqueue %s: %w", args.Kind(), err)
	}
	return nil
}

// InsertTx enqueues a job inside tx: it exists if and only if tx commits.
func (j *Jobs) InsertTx(ctx context.Context, tx *Tx, args river.JobArgs, opts *river.InsertOpts) error {
	var err error
	switch raw := tx.raw.(type) {
	case pgx.Tx:
		_, err = j.pg.InsertTx(ctx, raw, args, opts)
	case *sql.Tx:
		_, err = j.lite.InsertTx(ctx, raw, args, opts)
	default:
		err = errors.New("transaction of unknown kind")
	}
	if err != nil {
		return fmt.Errorf("storage: enqueue %s: %w", args.Kind(), err)
	}
	return nil
}

// QueueDepth counts jobs waiting or scheduled to run, for metrics.
func (db *DB) QueueDepth(ctx context.Context) (int64, error) {
	var n int64
	err := db.Read().QueryRow(ctx,
		`SELECT COUNT(*) FROM river_job WHERE state IN ('available', 'scheduled', 'retryable')`).Scan(&n)
	return n, err
}

func (db *DB) migrateRiver(ctx context.Context) error {
	var err error
	switch d := db.d.(type) {
	case *postgres:
		var m *rivermigrate.Migrator[pgx.Tx]
		if m, err = rivermigrate.New(riverpgxv5.New(d.pool), nil); err == nil {
			_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
		}
	case *sqliteDB:
		var m *rivermigrate.Migrator[*sql.Tx]
		if m, err = rivermigrate.New(riversqlite.New(d.w), nil); err == nil {
			_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
		}
	}
	if err != nil {
		return fmt.Errorf("storage: migrate job queue: %w", err)
	}
	return nil
}
