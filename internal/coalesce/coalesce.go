// Package coalesce shares one read among the callers that ask for it at
// the same time, without ever handing a caller a value older than it may
// have.
package coalesce

import (
	"context"
	"sync"
)

// Reader runs a read for many callers at once. Read gives a caller the
// result of a call that started after it asked, so what it learns is no
// older than its question: one that arrives while a call runs waits for
// the next one, which then serves everyone who arrived meanwhile. At most
// one call runs at a time.
//
// A Reader with an epoch (NewEpochReader) also serves Current, for callers
// that only need every change counted by the epoch when they ask: the
// epoch counts the changes the read can see, moved after each change is
// made, so a call that started at the caller's epoch already sees them
// all, and its result can be reused until the epoch moves.
type Reader[T any] struct {
	read  func(context.Context) (T, error)
	epoch func() uint64

	mu      sync.Mutex
	running *flight[T] // the call running now
	next    *flight[T] // the call the callers arriving now will share
	last    *flight[T] // the newest call that succeeded
}

type flight[T any] struct {
	done    chan struct{}
	v       T
	err     error
	epoch   uint64 // the epoch when the call started
	callers int    // how many share it (read by tests)
}

// NewReader returns a Reader of read. read gets a context without the
// caller's cancellation (others share its result) and must not depend on
// values in the context that differ between callers.
func NewReader[T any](read func(context.Context) (T, error)) *Reader[T] {
	return &Reader[T]{read: read}
}

// NewEpochReader returns a Reader of read whose results Current may reuse
// while epoch has not moved since they started (see Reader).
func NewEpochReader[T any](read func(context.Context) (T, error), epoch func() uint64) *Reader[T] {
	return &Reader[T]{read: read, epoch: epoch}
}

// Read returns the result of a call of read that started after Read was
// called, or ctx's error if ctx ends first.
func (r *Reader[T]) Read(ctx context.Context) (T, error) {
	r.mu.Lock()
	return r.join(ctx)
}

// Current returns the result of a call that started at or after the epoch
// Current was called at: the newest finished one or the running one when
// they qualify, a new one otherwise. Without an epoch it is Read.
func (r *Reader[T]) Current(ctx context.Context) (T, error) {
	if r.epoch == nil {
		return r.Read(ctx)
	}
	e := r.epoch()
	r.mu.Lock()
	if f := r.last; f != nil && f.epoch >= e {
		r.mu.Unlock()
		return f.v, nil
	}
	if f := r.running; f != nil && f.epoch >= e {
		f.callers++
		r.mu.Unlock()
		return wait(ctx, f)
	}
	return r.join(ctx)
}

// join makes the caller one of the next call's; r.mu is held and released.
func (r *Reader[T]) join(ctx context.Context) (T, error) {
	if r.next == nil {
		r.next = &flight[T]{done: make(chan struct{})}
	}
	f := r.next
	f.callers++
	if r.running == nil {
		// Nothing runs: this caller runs the call itself.
		r.start(f)
		r.mu.Unlock()
		r.run(context.WithoutCancel(ctx), f)
		return f.v, f.err
	}
	r.mu.Unlock()
	return wait(ctx, f)
}

func wait[T any](ctx context.Context, f *flight[T]) (T, error) {
	select {
	case <-f.done:
		return f.v, f.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// start makes f the running call; r.mu is held. The epoch is taken before
// the call begins, so that the call sees every change it counts.
func (r *Reader[T]) start(f *flight[T]) {
	r.running, r.next = f, nil
	if r.epoch != nil {
		f.epoch = r.epoch()
	}
}

// run makes the call of f, then starts the call that callers who arrived
// meanwhile are waiting for, if any.
func (r *Reader[T]) run(ctx context.Context, f *flight[T]) {
	f.v, f.err = r.read(ctx)
	close(f.done)
	r.mu.Lock()
	if f.err == nil && (r.last == nil || f.epoch >= r.last.epoch) {
		r.last = f
	}
	r.running = nil
	next := r.next
	if next != nil {
		r.start(next)
	}
	r.mu.Unlock()
	if next != nil {
		// The waiters are blocked on next: run it without making this
		// caller wait for it too. The goroutine ends with the call.
		go r.run(ctx, next)
	}
}
