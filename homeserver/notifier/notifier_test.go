package notifier

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

type fakeMembers map[string][]string

func (f fakeMembers) LocalMembers(_ context.Context, room string) ([]string, error) {
	return f[room], nil
}

func TestWaitWakesOnNotify(t *testing.T) {
	n := New(slog.New(slog.NewTextHandler(io.Discard, nil)), fakeMembers{"!r": {"@a", "@b"}}, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		wake   func()
		user   string
		expect bool
	}{
		{"room wakes member", func() { n.NotifyRoom("!r") }, "@a", true},
		{"room does not wake stranger", func() { n.NotifyRoom("!r") }, "@c", false},
		{"extra user woken", func() { n.NotifyRoom("!r", "@c") }, "@c", true},
		{"user wake", func() { n.NotifyUsers("@d") }, "@d", true},
		{"wake all", n.WakeAll, "@zzz", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gen := n.Generation(tc.user)
			go func() {
				time.Sleep(20 * time.Millisecond)
				tc.wake()
			}()
			if got := n.Wait(ctx, tc.user, gen, 300*time.Millisecond); got != tc.expect {
				t.Fatalf("woken = %v, want %v", got, tc.expect)
			}
		})
	}
}

func TestNoLostWakeUp(t *testing.T) {
	n := New(slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil)
	gen := n.Generation("@a")
	n.NotifyUsers("@a") // happens between computing and waiting
	start := time.Now()
	if !n.Wait(context.Background(), "@a", gen, time.Second) || time.Since(start) > 100*time.Millisecond {
		t.Fatal("a change before Wait was lost")
	}
}

// gateMembers reports each lookup on calls, then answers once hold lets
// it (a closed hold answers at once).
type gateMembers struct {
	fakeMembers
	calls chan string
	hold  chan struct{}
}

func (g gateMembers) LocalMembers(ctx context.Context, room string) ([]string, error) {
	g.calls <- room
	<-g.hold
	return g.fakeMembers.LocalMembers(ctx, room)
}

// TestNotifyRoomSoon checks the worker: it wakes members and extra users,
// coalesces a room's queued wake-ups, and without a running worker
// NotifyRoomSoon notifies at once.
func TestNotifyRoomSoon(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := make(chan struct{})
	close(open)
	// Never started, or stopped: at once.
	direct := New(quiet, gateMembers{fakeMembers{"!r": {"@a"}}, make(chan string, 10), open}, nil)
	for _, step := range []string{"before Start", "after Stop"} {
		gen := direct.Generation("@a")
		direct.NotifyRoomSoon("!r")
		if direct.Generation("@a") == gen {
			t.Fatalf("%s, NotifyRoomSoon did not notify at once", step)
		}
		if err := direct.Start(ctx); err != nil {
			t.Fatal(err)
		}
		direct.Stop()
	}

	m := gateMembers{fakeMembers{"!r": {"@a"}}, make(chan string, 10), make(chan struct{})}
	n := New(quiet, m, nil)
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	genA, genC := n.Generation("@a"), n.Generation("@c")
	n.NotifyRoomSoon("!r")
	<-m.calls // the worker is inside the first lookup, held
	// A membership change while the lookup is held: the list it reads is
	// not kept, and the next wake-up looks the members up again.
	n.MembersChanged("!r")
	n.NotifyRoomSoon("!r")
	n.NotifyRoomSoon("!r", "@c")
	close(m.hold)
	if !n.Wait(ctx, "@c", genC, time.Second) || !n.Wait(ctx, "@a", genA, time.Second) {
		t.Fatal("queued wake-ups were not carried out")
	}
	select {
	case <-m.calls: // the second and third, coalesced
	case <-time.After(time.Second):
		t.Fatal("the queued wake-ups were never looked up")
	}
	select {
	case r := <-m.calls:
		t.Fatalf("another lookup for %s: queued wake-ups were not coalesced", r)
	case <-time.After(50 * time.Millisecond):
	}
}

// countingMembers counts lookups.
type countingMembers struct {
	fakeMembers
	n int
}

func (c *countingMembers) LocalMembers(ctx context.Context, room string) ([]string, error) {
	c.n++
	return c.fakeMembers.LocalMembers(ctx, room)
}

// TestMemberCache checks when a room's member list is looked up again.
func TestMemberCache(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name    string
		between func(n *Notifier, clock *time.Time)
		lookups int
	}{
		{"kept between wake-ups", func(*Notifier, *time.Time) {}, 1},
		{"a state change drops it", func(n *Notifier, _ *time.Time) { n.MembersChanged("!r") }, 2},
		{"another room's change does not", func(n *Notifier, _ *time.Time) { n.MembersChanged("!other") }, 1},
		{"a wake-up from another instance reads afresh", func(n *Notifier, _ *time.Time) { n.fromBus("r:!r") }, 2},
		{"expires", func(_ *Notifier, clock *time.Time) { *clock = clock.Add(memberTTL) }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &countingMembers{fakeMembers: fakeMembers{"!r": {"@a"}}}
			n := New(quiet, m, nil)
			clock := time.Unix(1000, 0)
			n.now = func() time.Time { return clock }
			n.NotifyRoom("!r")
			tc.between(n, &clock)
			gen := n.Generation("@a")
			n.NotifyRoom("!r")
			if n.Generation("@a") == gen {
				t.Fatal("the member was not woken")
			}
			if m.n != tc.lookups {
				t.Fatalf("%d lookups, want %d", m.n, tc.lookups)
			}
		})
	}
}
