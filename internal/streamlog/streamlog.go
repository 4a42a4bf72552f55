// Package streamlog keeps, in memory, what one instance committed last to
// a stream whose positions each transaction reserves as one contiguous
// run, and answers for windows of positions it holds whole: a sync woken
// by a commit can learn what the commit wrote without reading it back.
//
// Every position of such a stream is reserved by a transaction that holds
// the stream's row until it ends, so one transaction's positions are
// contiguous, and a rolled-back reservation is taken again by the next
// one. When a commit's first position is not where the previous commit
// seen here ended, another instance (or a commit whose outcome was not
// seen) took the positions between, and the log starts again from there.
// A window reaching beyond the last commit the log saw, or before what it
// keeps, is not held: the caller reads the database.
package streamlog

import (
	"sort"
	"sync"
)

// Item is one value committed at a stream position.
type Item[T any] struct {
	Pos int64
	V   T
}

// Log is a stream log of values of type T. It is safe for concurrent use.
type Log[T any] struct {
	mu  sync.RWMutex
	ent []Item[T]
	// Every value with base < position < next is in ent; next is 0
	// until the first commit.
	base, next int64
	// keep is how many entries survive a trim; up to twice that are held.
	keep int
}

// New returns an empty log that keeps at least the last keep entries.
func New[T any](keep int) *Log[T] { return &Log[T]{keep: max(keep, 1)} }

// Commit records a committed transaction that reserved the positions
// [first, end) and wrote items, in position order, all inside that run
// (positions without an item are allowed: nothing was written there).
func (l *Log[T]) Commit(first, end int64, items []Item[T]) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if first != l.next {
		clear(l.ent)
		l.ent = l.ent[:0]
		l.base = first - 1
	}
	l.ent = append(l.ent, items...)
	l.next = end
	if len(l.ent) > 2*l.keep {
		drop := len(l.ent) - l.keep
		l.base = l.ent[drop-1].Pos
		l.ent = append(l.ent[:0:0], l.ent[drop:]...)
	}
}

// Window calls fn, in position order, for each entry with from < position
// ≤ to, holding a read lock (fn must not call back into the log). It
// reports false, having called fn for none or some, when the log does not
// hold the whole window, when the window has more than maxScan entries,
// or when fn returns false.
func (l *Log[T]) Window(from, to int64, maxScan int, fn func(pos int64, v T) bool) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.next == 0 || from < l.base || to >= l.next || from > to {
		return false
	}
	i := sort.Search(len(l.ent), func(i int) bool { return l.ent[i].Pos > from })
	j := sort.Search(len(l.ent), func(i int) bool { return l.ent[i].Pos > to })
	if j-i > maxScan {
		return false
	}
	for _, e := range l.ent[i:j] {
		if !fn(e.Pos, e.V) {
			return false
		}
	}
	return true
}

// Latest finds the newest entry at or before position to that match
// accepts, looking at most at maxScan entries. ok is false when the log
// does not hold to, or when no entry it holds up to there matches (one
// before what it keeps may).
func (l *Log[T]) Latest(to int64, maxScan int, match func(v T) bool) (pos int64, v T, ok bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.next == 0 || to < l.base || to >= l.next {
		return 0, v, false
	}
	j := sort.Search(len(l.ent), func(i int) bool { return l.ent[i].Pos > to })
	for i := j - 1; i >= 0 && j-i <= maxScan; i-- {
		if match(l.ent[i].V) {
			return l.ent[i].Pos, l.ent[i].V, true
		}
	}
	return 0, v, false
}
