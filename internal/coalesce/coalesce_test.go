package coalesce

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFresh: every caller gets a value read after it asked. The source
// moves before each call; a caller handed a value from a call that began
// before its own move would see less than it wrote.
func TestFresh(t *testing.T) {
	var source atomic.Int64
	r := NewReader(func(context.Context) (int64, error) {
		v := source.Load()
		time.Sleep(100 * time.Microsecond)
		return v, nil
	})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 200 {
				want := source.Add(1)
				got, err := r.Read(context.Background())
				if err != nil || got < want {
					t.Errorf("read %d (%v) after the source reached %d", got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// waitCallers blocks until n callers wait for the next call.
func waitCallers[T any](t *testing.T, r *Reader[T], n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		r.mu.Lock()
		c := 0
		if r.next != nil {
			c = r.next.callers
		}
		r.mu.Unlock()
		if c == n {
			return
		}
	}
	t.Fatalf("never saw %d callers waiting", n)
}

// TestShared: callers that arrive while a call runs share the next one;
// its error reaches all of them.
func TestShared(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	boom := errors.New("boom")
	r := NewReader(func(context.Context) (int, error) {
		n := calls.Add(1)
		if n == 1 {
			<-release
			return 1, nil
		}
		return 0, boom
	})
	first := make(chan int)
	go func() {
		v, _ := r.Read(context.Background())
		first <- v
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	const waiters = 20
	errs := make(chan error, waiters)
	for range waiters {
		go func() {
			_, err := r.Read(context.Background())
			errs <- err
		}()
	}
	waitCallers(t, r, waiters)
	close(release)
	if v := <-first; v != 1 {
		t.Fatalf("first caller got %d", v)
	}
	for range waiters {
		if err := <-errs; !errors.Is(err, boom) {
			t.Fatalf("waiter got %v", err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d calls for 1 + %d callers, want 2", n, waiters)
	}
}

// TestCancel: a waiter that gives up returns at once; the caller that runs
// the call finishes it for the others even when its own context ends.
func TestCancel(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	r := NewReader(func(ctx context.Context) (int32, error) {
		n := calls.Add(1)
		<-release
		return n, ctx.Err()
	})
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leader := make(chan error)
	go func() {
		_, err := r.Read(leaderCtx)
		leader <- err
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error)
	go func() {
		_, err := r.Read(ctx)
		gaveUp <- err
	}()
	stays := make(chan int32)
	go func() {
		v, _ := r.Read(context.Background())
		stays <- v
	}()
	waitCallers(t, r, 2)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter got %v", err)
	}
	cancelLeader()
	close(release)
	if err := <-leader; err != nil {
		t.Fatalf("the call saw its caller's cancellation: %v", err)
	}
	if v := <-stays; v != 2 {
		t.Fatalf("waiter got the value of call %d, want 2", v)
	}
}

// TestCurrentFresh: Current never hands out a value older than the
// changes its epoch counted when it was called. Each writer changes the
// source, then moves the epoch, then asks.
func TestCurrentFresh(t *testing.T) {
	var source, epoch atomic.Int64
	r := NewEpochReader(func(context.Context) (int64, error) {
		v := source.Load()
		time.Sleep(50 * time.Microsecond)
		return v, nil
	}, func() uint64 { return uint64(epoch.Load()) })
	// counted is the newest source value whose change the epoch has
	// counted: a reader that merely loaded a newer value saw a change
	// whose writer had not moved the epoch yet, which Current need not
	// show.
	var counted atomic.Int64
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 200 {
				var want int64
				if (i+j)%3 == 0 {
					want = source.Add(1)
					epoch.Add(1)
					for c := counted.Load(); c < want && !counted.CompareAndSwap(c, want); c = counted.Load() {
					}
				} else {
					want = counted.Load()
				}
				got, err := r.Current(context.Background())
				if err != nil || got < want {
					t.Errorf("read %d (%v) after the source reached %d", got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestCurrentReuse: while the epoch stays, Current reuses the newest
// result, and Read still reads anew; a moved epoch or a failed call makes
// Current read again.
func TestCurrentReuse(t *testing.T) {
	var calls, epoch atomic.Int64
	fail := atomic.Bool{}
	r := NewEpochReader(func(context.Context) (int64, error) {
		n := calls.Add(1)
		if fail.Load() {
			return 0, errors.New("boom")
		}
		return n, nil
	}, func() uint64 { return uint64(epoch.Load()) })
	ctx := context.Background()
	steps := []struct {
		name      string
		before    func()
		read      func(context.Context) (int64, error)
		want      int64
		wantCalls int64
		wantErr   bool
	}{
		{"first call", nil, r.Current, 1, 1, false},
		{"reused", nil, r.Current, 1, 1, false},
		{"Read reads anew", nil, r.Read, 2, 2, false},
		{"the newest reused", nil, r.Current, 2, 2, false},
		{"epoch moved", func() { epoch.Add(1) }, r.Current, 3, 3, false},
		{"failed", func() { epoch.Add(1); fail.Store(true) }, r.Current, 0, 4, true},
		{"a failure is not reused", func() { fail.Store(false) }, r.Current, 5, 5, false},
		{"reused again", nil, r.Current, 5, 5, false},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		got, err := s.read(ctx)
		if (err != nil) != s.wantErr || got != s.want || calls.Load() != s.wantCalls {
			t.Fatalf("%s: got %d, %v after %d calls; want %d, error %v after %d", s.name, got, err, calls.Load(), s.want, s.wantErr, s.wantCalls)
		}
	}
}

// TestCurrentJoinsRunning: a caller whose epoch the running call started
// at shares that call instead of queueing for the next.
func TestCurrentJoinsRunning(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	r := NewEpochReader(func(context.Context) (int32, error) {
		n := calls.Add(1)
		<-release
		return n, nil
	}, func() uint64 { return 7 })
	results := make(chan int32, 2)
	go func() { v, _ := r.Current(context.Background()); results <- v }()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	go func() { v, _ := r.Current(context.Background()); results <- v }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		r.mu.Lock()
		c := r.running.callers
		r.mu.Unlock()
		if c == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second caller never joined the running call")
		}
	}
	close(release)
	if a, b := <-results, <-results; a != 1 || b != 1 || calls.Load() != 1 {
		t.Fatalf("results %d, %d after %d calls; want both from the one call", a, b, calls.Load())
	}
}
