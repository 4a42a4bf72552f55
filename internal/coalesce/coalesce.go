// Package coalesce shares one read among the callers that ask for it at
// the same time, without ever handing a caller a value read before it
// asked.
package coalesce

import (
	"context"
	"sync"
)

// Reader runs a read for many callers at once. A caller gets the result of
// a call that started after it asked, so what it learns is no older than
// its question: one that arrives while a call runs waits for the next
// one, which then serves everyone who arrived meanwhile. At most one call
// runs at a time.
type Reader[T any] struct {
	read func(context.Context) (T, error)

	mu      sync.Mutex
	running bool
	next    *flight[T] // the call the callers arriving now will share
}

type flight[T any] struct {
	done    chan struct{}
	v       T
	err     error
	callers int // how many share it (read by tests)
}

// NewReader returns a Reader of read. read gets a context without the
// caller's cancellation (others share its result) and must not depend on
// values in the context that differ between callers.
func NewReader[T any](read func(context.Context) (T, error)) *Reader[T] {
	return &Reader[T]{read: read}
}

// Read returns the result of a call of read that started after Read was
// called, or ctx's error if ctx ends first.
func (r *Reader[T]) Read(ctx context.Context) (T, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &flight[T]{done: make(chan struct{})}
	}
	f := r.next
	f.callers++
	if !r.running {
		// Nothing runs: this caller runs the call itself.
		r.running, r.next = true, nil
		r.mu.Unlock()
		r.run(context.WithoutCancel(ctx), f)
		return f.v, f.err
	}
	r.mu.Unlock()
	select {
	case <-f.done:
		return f.v, f.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// run makes the call of f, then starts the call that callers who arrived
// meanwhile are waiting for, if any.
func (r *Reader[T]) run(ctx context.Context, f *flight[T]) {
	f.v, f.err = r.read(ctx)
	close(f.done)
	r.mu.Lock()
	next := r.next
	r.next = nil
	r.running = next != nil
	r.mu.Unlock()
	if next != nil {
		// The waiters are blocked on next: run it without making this
		// caller wait for it too. The goroutine ends with the call.
		go r.run(ctx, next)
	}
}
