package typing_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/homeserver/typing"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

const alice, bob, outsider = "@alice:x", "@bob:x", "@eve:x"

type fakeRooms struct{}

func (fakeRooms) IsJoined(_ context.Context, user, _ string) (bool, error) {
	return user != outsider, nil
}

type fakeNotifier struct {
	mu    sync.Mutex
	rooms []string
}

func (f *fakeNotifier) NotifyRoom(room string, _ ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rooms = append(f.rooms, room)
}

func (f *fakeNotifier) woken() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rooms)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newEngine(t *testing.T, cfg typing.Config, bus *storage.Bus) (*typing.Engine, *fakeNotifier) {
	t.Helper()
	n := &fakeNotifier{}
	e := typing.New(cfg, typing.Deps{Rooms: fakeRooms{}, Notifier: n, Bus: bus}, quiet)
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e, n
}

func ms(n int64) *int64 { return &n }

func newRoom() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "!" + hex.EncodeToString(b)
}

// eventually polls cond until it holds or a few seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSetRefusals(t *testing.T) {
	e, n := newEngine(t, typing.Config{}, nil)
	room := newRoom()
	for _, c := range []struct {
		name    string
		user    string
		timeout *int64
		code    string
	}{
		{"not joined", outsider, ms(1000), "M_FORBIDDEN"},
		{"negative timeout", alice, ms(-1), "M_INVALID_PARAM"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := e.Set(context.Background(), c.user, room, true, c.timeout); !mxerr.IsCode(err, c.code) {
				t.Fatalf("got %v, want %s", err, c.code)
			}
		})
	}
	if e.Position() != 0 || len(n.woken()) != 0 || e.Current([]string{room}) != nil {
		t.Fatal("a refused request changed something")
	}
}

func TestTypingSetAndStop(t *testing.T) {
	// A frozen clock: positions must still strictly increase.
	now := time.UnixMilli(1_700_000_000_000)
	e, n := newEngine(t, typing.Config{Now: func() time.Time { return now }}, nil)
	ctx := context.Background()
	room, other := newRoom(), newRoom()
	rooms := []string{room, other}

	if err := e.Set(ctx, bob, room, true, nil); err != nil {
		t.Fatal(err)
	}
	p1 := e.Position()
	if p1 != now.UnixMilli() {
		t.Fatalf("position %d, want the clock %d", p1, now.UnixMilli())
	}
	if err := e.Set(ctx, alice, room, true, ms(5000)); err != nil {
		t.Fatal(err)
	}
	p2 := e.Position()
	if p2 <= p1 {
		t.Fatalf("positions do not increase: %d then %d", p1, p2)
	}
	want := map[string][]string{room: {alice, bob}}
	if got := e.Current(rooms); !reflect.DeepEqual(got, want) {
		t.Fatalf("current %v", got)
	}
	if got := e.Since(rooms, 0); !reflect.DeepEqual(got, want) {
		t.Fatalf("since 0: %v", got)
	}
	if got := e.Since(rooms, p1); !reflect.DeepEqual(got, want) {
		t.Fatalf("since p1: %v", got)
	}
	if got := e.Since(rooms, p2); got != nil {
		t.Fatalf("since p2: %v", got)
	}
	if got := e.Since([]string{other}, 0); got != nil {
		t.Fatalf("a room nobody typed in: %v", got)
	}
	// Typing again only moves the expiry: no change, no wake-up.
	if err := e.Set(ctx, alice, room, true, ms(5000)); err != nil {
		t.Fatal(err)
	}
	if e.Position() != p2 || len(n.woken()) != 2 {
		t.Fatalf("a repeated typing changed the position or woke: %d, %v", e.Position(), n.woken())
	}
	// Stopping twice changes once.
	for range 2 {
		if err := e.Set(ctx, alice, room, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	p3 := e.Position()
	if got := e.Since(rooms, p2); !reflect.DeepEqual(got, map[string][]string{room: {bob}}) {
		t.Fatalf("after alice stopped: %v", got)
	}
	if len(n.woken()) != 3 {
		t.Fatalf("woken %v", n.woken())
	}
	if err := e.Set(ctx, bob, room, false, nil); err != nil {
		t.Fatal(err)
	}
	got := e.Since(rooms, p3)
	if l, ok := got[room]; !ok || l == nil || len(l) != 0 {
		t.Fatalf("a room whose last typist stopped must be reported with an empty list: %#v", got)
	}
	if e.Current(rooms) != nil {
		t.Fatalf("current %v", e.Current(rooms))
	}
	// Stopping while not typing in an unknown room is fine and silent.
	if err := e.Set(ctx, alice, other, false, nil); err != nil || e.Since([]string{other}, 0) != nil {
		t.Fatalf("stop in an unknown room: %v", err)
	}
}

func TestTypingExpires(t *testing.T) {
	e, n := newEngine(t, typing.Config{MaxTimeout: 80 * time.Millisecond}, nil)
	ctx := context.Background()
	room := newRoom()
	if err := e.Set(ctx, alice, room, true, ms(40)); err != nil {
		t.Fatal(err)
	}
	// Asked for an hour, capped to MaxTimeout.
	if err := e.Set(ctx, bob, room, true, ms(3_600_000)); err != nil {
		t.Fatal(err)
	}
	p := e.Position()
	eventually(t, "alice's typing expires", func() bool {
		return reflect.DeepEqual(e.Current([]string{room}), map[string][]string{room: {bob}})
	})
	eventually(t, "bob's capped typing expires", func() bool { return e.Current([]string{room}) == nil })
	eventually(t, "the expiries woke the room", func() bool { return len(n.woken()) == 4 })
	got := e.Since([]string{room}, p)
	if l, ok := got[room]; !ok || len(l) != 0 {
		t.Fatalf("since before expiry: %#v", got)
	}
	if e.Position() <= p {
		t.Fatal("expiry did not move the position")
	}
}

func TestTypingExtension(t *testing.T) {
	e, n := newEngine(t, typing.Config{}, nil)
	ctx := context.Background()
	room := newRoom()
	if err := e.Set(ctx, alice, room, true, ms(30)); err != nil {
		t.Fatal(err)
	}
	if err := e.Set(ctx, alice, room, true, ms(60_000)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := e.Current([]string{room}); !reflect.DeepEqual(got, map[string][]string{room: {alice}}) {
		t.Fatalf("extended typing expired early: %v", got)
	}
	if len(n.woken()) != 1 {
		t.Fatalf("woken %v", n.woken())
	}
}

func TestTypingForgetsIdleRooms(t *testing.T) {
	e, _ := newEngine(t, typing.Config{Retention: 40 * time.Millisecond}, nil)
	ctx := context.Background()
	room, never := newRoom(), newRoom()
	if err := e.Set(ctx, alice, room, true, ms(10)); err != nil {
		t.Fatal(err)
	}
	old := e.Position() - 1
	// Once the room is forgotten, a Since from before still reports it
	// (and any room it knows nothing of) with nobody typing.
	eventually(t, "the idle room is forgotten", func() bool {
		got := e.Since([]string{room, never}, old)
		return got != nil && len(got[never]) == 0 && got[never] != nil
	})
	got := e.Since([]string{room, never}, old)
	if len(got) != 2 || len(got[room]) != 0 {
		t.Fatalf("since before: %#v", got)
	}
	if got := e.Since([]string{room}, e.Position()); got != nil {
		t.Fatalf("since now: %v", got)
	}
}

func TestTypingStopIsIdempotent(t *testing.T) {
	e := typing.New(typing.Config{}, typing.Deps{Rooms: fakeRooms{}}, quiet)
	e.Stop() // never started
	e.Stop()
	e2, _ := newEngine(t, typing.Config{}, nil)
	e2.Stop()
	e2.Stop()
}

func TestTypingAcrossInstances(t *testing.T) {
	url := storagetest.NewSchemaURL(t)
	ctx := context.Background()
	bus := func() *storage.Bus {
		db, err := storage.Open(ctx, url, storage.Options{MaxConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		b := db.NewBus(quiet)
		return b
	}
	busA, busB := bus(), bus()
	a, _ := newEngine(t, typing.Config{}, busA)
	b, _ := newEngine(t, typing.Config{MaxTimeout: 150 * time.Millisecond}, busB)
	for _, x := range []*storage.Bus{busA, busB} {
		if err := x.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(x.Stop)
	}
	room := newRoom()
	// LISTEN starts asynchronously: repeat until the other side hears.
	eventually(t, "b hears a", func() bool {
		if err := a.Set(ctx, alice, room, true, ms(60_000)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		return b.Current([]string{room}) != nil
	})
	if b.Position() < a.Position() {
		t.Fatalf("b's position %d is behind a's %d", b.Position(), a.Position())
	}
	if err := b.Set(ctx, bob, room, true, ms(100)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a hears b", func() bool {
		return reflect.DeepEqual(a.Current([]string{room}), map[string][]string{room: {alice, bob}})
	})
	// Bob's typing expires on a too, by the expiry b sent.
	eventually(t, "bob's typing expires on a", func() bool {
		return reflect.DeepEqual(a.Current([]string{room}), map[string][]string{room: {alice}})
	})
	if err := a.Set(ctx, alice, room, false, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b hears alice stop", func() bool { return b.Current([]string{room}) == nil })
}

// TestTypingLeft checks that leaving stops typing at once, tells syncs,
// and is a no-op for someone who was not typing.
func TestTypingLeft(t *testing.T) {
	e, n := newEngine(t, typing.Config{}, nil)
	ctx := context.Background()
	room := newRoom()
	if err := e.Set(ctx, bob, room, true, ms(30_000)); err != nil {
		t.Fatal(err)
	}
	before, woken := e.Position(), len(n.woken())
	e.Left(ctx, alice, room) // not typing: nothing changes
	if e.Position() != before || len(n.woken()) != woken {
		t.Fatal("a non-typist leaving changed something")
	}
	e.Left(ctx, bob, room)
	if got := e.Current([]string{room}); len(got[room]) != 0 {
		t.Fatalf("still typing after leaving: %v", got)
	}
	if got := e.Since([]string{room}, before); !reflect.DeepEqual(got, map[string][]string{room: nil}) && !reflect.DeepEqual(got, map[string][]string{room: {}}) {
		t.Fatalf("since: %v", got)
	}
	if len(n.woken()) != woken+1 {
		t.Fatal("syncs were not woken")
	}
}
