package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Bus carries small messages between the instances that share a database,
// through PostgreSQL's LISTEN/NOTIFY. A message published by an instance
// is delivered to every other instance, not to itself: callers act locally
// first and publish to tell the others. On SQLite there is only one
// instance, so publishing does nothing.
type Bus struct {
	db       *DB
	log      *slog.Logger
	instance string

	mu       sync.RWMutex
	handlers map[string][]func(payload string)
	resumed  []func()

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// MaxBusPayload is the largest payload a message may carry (PostgreSQL
// allows 8000 bytes including our prefix).
const MaxBusPayload = 7900

// NewBus builds the bus; subscribe before Start.
func (db *DB) NewBus(log *slog.Logger) *Bus {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Bus{db: db, log: log, instance: hex.EncodeToString(b), handlers: map[string][]func(string){}}
}

// Instance identifies this process among those sharing the database.
func (b *Bus) Instance() string { return b.instance }

// Subscribe registers fn for messages on channel (a lower-case SQL
// identifier). fn runs on the bus's goroutine and must not block long.
func (b *Bus) Subscribe(channel string, fn func(payload string)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handlers[channel] = append(b.handlers[channel], fn)
}

// OnResume registers fn to run after the listener reconnects: messages
// sent while it was away are lost, so subscribers resynchronise (drop
// caches, wake every waiter).
func (b *Bus) OnResume(fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.resumed = append(b.resumed, fn)
}

// Publish sends payload to the other instances.
func (b *Bus) Publish(ctx context.Context, channel, payload string) error {
	return b.PublishTx(ctx, nil, channel, payload)
}

// PublishTx sends payload when tx commits (at once if tx is nil).
func (b *Bus) PublishTx(ctx context.Context, tx *Tx, channel, payload string) error {
	if b.db.Dialect() != "postgres" {
		return nil
	}
	if len(payload) > MaxBusPayload {
		return errors.New("storage: bus payload too large")
	}
	msg := b.instance + ":" + payload
	var q Querier = b.db.d.writer()
	if tx != nil {
		q = tx
	}
	_, err := q.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, msg)
	return err
}

// Start listens in the background; it returns at once.
func (b *Bus) Start(ctx context.Context) error {
	pg, ok := b.db.d.(*postgres)
	if !ok {
		return nil
	}
	ctx, b.cancel = context.WithCancel(context.WithoutCancel(ctx))
	b.done = make(chan struct{})
	go b.listen(ctx, pg)
	return nil
}

// Stop ends listening and waits for the listener; idempotent.
func (b *Bus) Stop() {
	b.once.Do(func() {
		if b.cancel != nil {
			b.cancel()
			<-b.done
		}
	})
}

func (b *Bus) channels() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]string, 0, len(b.handlers))
	for c := range b.handlers {
		out = append(out, c)
	}
	return out
}

// listen holds one connection in LISTEN, reconnecting with backoff.
func (b *Bus) listen(ctx context.Context, pg *postgres) {
	defer close(b.done)
	backoff := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		err := b.listenOnce(ctx, pg, !first)
		if ctx.Err() != nil {
			return
		}
		b.log.Warn("bus: listener connection lost; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (b *Bus) listenOnce(ctx context.Context, pg *postgres, resumed bool) error {
	pc, err := pg.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection is spent on LISTEN; take it out of the pool and close
	// it afterwards rather than return it in a listening state.
	conn := pc.Hijack()
	defer conn.Close(context.Background())
	for _, c := range b.channels() {
		if _, err := conn.Exec(ctx, `LISTEN "`+strings.ReplaceAll(c, `"`, ``)+`"`); err != nil {
			return err
		}
	}
	if resumed {
		// What other instances committed meanwhile went unannounced.
		b.db.commits.Add(1)
		b.mu.RLock()
		fns := b.resumed
		b.mu.RUnlock()
		for _, fn := range fns {
			fn()
		}
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		origin, payload, ok := strings.Cut(n.Payload, ":")
		if !ok || origin == b.instance {
			continue
		}
		// Another instance's news: its commits come before its messages.
		b.db.commits.Add(1)
		b.mu.RLock()
		hs := b.handlers[n.Channel]
		b.mu.RUnlock()
		for _, h := range hs {
			h(payload)
		}
	}
}
