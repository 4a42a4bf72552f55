package mediaapi

import (
	"context"
	"sync"
)

// notifier wakes goroutines waiting for a key (bytes of a created mxc URI
// arriving) without polling.
type notifier struct {
	mu      sync.Mutex
	waiting map[string]*waitEntry
}

type waitEntry struct {
	ch   chan struct{}
	refs int
}

func newNotifier() *notifier { return &notifier{waiting: map[string]*waitEntry{}} }

// subscribe returns a channel closed at the next wake of key, and a
// function to call when no longer waiting.
func (n *notifier) subscribe(key string) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.waiting[key]
	if e == nil {
		e = &waitEntry{ch: make(chan struct{})}
		n.waiting[key] = e
	}
	e.refs++
	once := sync.Once{}
	return e.ch, func() {
		once.Do(func() {
			n.mu.Lock()
			defer n.mu.Unlock()
			e.refs--
			if e.refs == 0 && n.waiting[key] == e {
				delete(n.waiting, key)
			}
		})
	}
}

// wake releases everyone waiting for key.
func (n *notifier) wake(key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e := n.waiting[key]; e != nil {
		close(e.ch)
		delete(n.waiting, key)
	}
}

// wakeAll releases every waiter, to make them look again.
func (n *notifier) wakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, e := range n.waiting {
		close(e.ch)
		delete(n.waiting, k)
	}
}

// flightGroup runs one call per key at a time; callers that arrive while
// it runs wait for its result instead of repeating the work.
type flightGroup struct {
	mu      sync.Mutex
	flights map[string]*flight
}

type flight struct {
	done chan struct{}
	err  error
}

// do runs fn unless a call for key is already running, in which case it
// waits for that call (or for ctx). fn should not depend on the caller's
// context: followers rely on it finishing.
func (g *flightGroup) do(ctx context.Context, key string, fn func() error) error {
	g.mu.Lock()
	if g.flights == nil {
		g.flights = map[string]*flight{}
	}
	if f, ok := g.flights[key]; ok {
		g.mu.Unlock()
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	g.flights[key] = f
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.flights, key)
		g.mu.Unlock()
		close(f.done)
	}()
	f.err = fn()
	return f.err
}
