package receipts_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/homeserver/receipts"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

const (
	server = "x"
	alice  = "@alice:x"
	bob    = "@bob:x"
	carol  = "@carol:x"
	remote = "@dave:elsewhere"
	room   = "!room"
	room2  = "!other"
)

// ev is an event the fake rooms know.
type ev struct {
	room, sender, root string
	pos                int64
	hiddenFrom         []string
}

type fakeRooms struct {
	joined map[string][]string // room → users
	events map[string]ev
}

func (f *fakeRooms) IsJoined(_ context.Context, user, room string) (bool, error) {
	return slices.Contains(f.joined[room], user), nil
}

func (f *fakeRooms) EventVisible(_ context.Context, user, room, id string) (bool, error) {
	e, ok := f.events[id]
	return ok && e.room == room && !slices.Contains(e.hiddenFrom, user), nil
}

func (f *fakeRooms) EventPosition(_ context.Context, room, id string) (int64, string, string, error) {
	e, ok := f.events[id]
	if !ok || e.room != room {
		return 0, "", "", mxerr.NotFound("Event not found")
	}
	return e.pos, e.sender, e.root, nil
}

type fakeAccountData struct {
	mu   sync.Mutex
	data map[string]json.RawMessage
	puts int
}

func (f *fakeAccountData) AccountData(_ context.Context, user, room, typ string) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.data[user+room+typ]
	if !ok {
		return nil, mxerr.NotFound("Account data not found")
	}
	return c, nil
}

func (f *fakeAccountData) PutAccountData(_ context.Context, user, room, typ string, c json.RawMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data[user+room+typ] = c
	f.puts++
	return nil
}

type fakeNotifier struct {
	mu    sync.Mutex
	rooms []string
	users []string
}

func (f *fakeNotifier) NotifyRoom(room string, extra ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rooms = append(f.rooms, room)
}

func (f *fakeNotifier) NotifyUsers(users ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users = append(f.users, users...)
}

func (f *fakeNotifier) take() (rooms, users []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rooms, users = f.rooms, f.users
	f.rooms, f.users = nil, nil
	return rooms, users
}

type fixture struct {
	e     *receipts.Engine
	rooms *fakeRooms
	ad    *fakeAccountData
	n     *fakeNotifier
	now   *time.Time
}

func newFixture(t *testing.T, db *storage.DB) *fixture {
	t.Helper()
	now := time.UnixMilli(1_700_000_000_000)
	f := &fixture{
		rooms: &fakeRooms{
			joined: map[string][]string{room: {alice, bob, carol}, room2: {alice, bob}},
			events: map[string]ev{
				"$a1":     {room: room, sender: alice, pos: 10},
				"$a2":     {room: room, sender: alice, pos: 20},
				"$b1":     {room: room, sender: bob, pos: 30},
				"$root":   {room: room, sender: bob, pos: 40},
				"$t1":     {room: room, sender: carol, pos: 50, root: "$root"},
				"$t2":     {room: room, sender: alice, pos: 60, root: "$root"},
				"$hidden": {room: room, sender: alice, pos: 70, hiddenFrom: []string{carol}},
				"$r":      {room: room, sender: remote, pos: 80},
				"$o1":     {room: room2, sender: alice, pos: 90},
			},
		},
		ad:  &fakeAccountData{data: map[string]json.RawMessage{}},
		n:   &fakeNotifier{},
		now: &now,
	}
	f.e = receipts.New(receipts.Config{ServerName: server, Now: func() time.Time { return *f.now }, MaxDeliveryPerRoom: 2}, db,
		receipts.Deps{Rooms: f.rooms, AccountData: f.ad, Notifier: f.n}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return f
}

func (f *fixture) send(t *testing.T, user, typ, event string, thread *string) {
	t.Helper()
	if err := f.e.Send(context.Background(), user, room, typ, event, thread); err != nil {
		t.Fatalf("%s %s %s: %v", user, typ, event, err)
	}
}

func (f *fixture) pos(t *testing.T) int64 {
	t.Helper()
	p, err := f.e.Position(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func str(s string) *string { return &s }

// decode turns per-room m.receipt contents into plain maps.
func decode(t *testing.T, in map[string]json.RawMessage) map[string]any {
	t.Helper()
	out := map[string]any{}
	for k, v := range in {
		var x any
		if err := json.Unmarshal(v, &x); err != nil {
			t.Fatal(err)
		}
		out[k] = x
	}
	return out
}

func same(t *testing.T, what string, got map[string]json.RawMessage, want string) {
	t.Helper()
	var w map[string]any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	g := decode(t, got)
	if len(w) == 0 && len(g) == 0 {
		return
	}
	if !reflect.DeepEqual(g, w) {
		gb, _ := json.Marshal(g)
		t.Fatalf("%s:\n got %s\nwant %s", what, gb, want)
	}
}

func TestSendRefusals(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db)
		for _, c := range []struct {
			name, user, room, typ, event string
			thread                       *string
			status                       int
			code                         string
		}{
			{"unknown type", alice, room, "m.seen", "$a1", nil, 400, "M_INVALID_PARAM"},
			{"bad event ID", alice, room, receipts.Read, "a1", nil, 400, "M_INVALID_PARAM"},
			{"empty thread", alice, room, receipts.Read, "$a1", str(""), 400, "M_INVALID_PARAM"},
			{"bad thread", alice, room, receipts.Read, "$a1", str("thread"), 400, "M_INVALID_PARAM"},
			{"thread on fully read", alice, room, receipts.FullyRead, "$a1", str("main"), 400, "M_INVALID_PARAM"},
			{"thread on delivery", alice, room, receipts.Delivery, "$a1", str("main"), 400, "M_INVALID_PARAM"},
			{"not joined", alice, "!nowhere", receipts.Read, "$a1", nil, 403, "M_FORBIDDEN"},
			{"not joined to this room", carol, room2, receipts.Read, "$o1", nil, 403, "M_FORBIDDEN"},
			{"unknown event", alice, room, receipts.Read, "$nope", nil, 404, "M_NOT_FOUND"},
			{"event of another room", alice, room, receipts.Read, "$o1", nil, 404, "M_NOT_FOUND"},
			{"invisible event", carol, room, receipts.Delivery, "$hidden", nil, 404, "M_NOT_FOUND"},
			{"thread event as main", alice, room, receipts.Read, "$t1", str("main"), 400, "M_INVALID_PARAM"},
			{"main event in a thread", alice, room, receipts.Read, "$a1", str("$root"), 400, "M_INVALID_PARAM"},
			{"event of another thread", alice, room, receipts.ReadPrivate, "$t1", str("$a1"), 400, "M_INVALID_PARAM"},
		} {
			t.Run(c.name, func(t *testing.T) {
				err := f.e.Send(context.Background(), c.user, c.room, c.typ, c.event, c.thread)
				me, ok := mxerr.As(err)
				if !ok || me.Status != c.status || me.Code != c.code {
					t.Fatalf("got %v, want %d %s", err, c.status, c.code)
				}
			})
		}
		if p := f.pos(t); p != 0 {
			t.Fatalf("refused receipts moved the stream to %d", p)
		}
		if r, u := f.n.take(); len(r)+len(u) != 0 || f.ad.puts != 0 {
			t.Fatalf("refused receipts woke %v %v or wrote account data", r, u)
		}
	})
}

func TestReadReceipts(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newFixture(t, db)
		ts := f.now.UnixMilli()

		f.send(t, bob, receipts.Read, "$a2", nil)
		p1 := f.pos(t)
		if rooms, _ := f.n.take(); !slices.Equal(rooms, []string{room}) {
			t.Fatalf("m.read woke rooms %v", rooms)
		}
		// An older event does not move the marker, wakes nobody, and is
		// still a success.
		f.send(t, bob, receipts.Read, "$a1", nil)
		f.send(t, bob, receipts.Read, "$a2", nil)
		if p := f.pos(t); p != p1 {
			t.Fatalf("a receipt for an older event moved the stream: %d → %d", p1, p)
		}
		if rooms, users := f.n.take(); len(rooms)+len(users) != 0 {
			t.Fatalf("an unmoved marker woke %v %v", rooms, users)
		}
		f.send(t, bob, receipts.Read, "$t1", str("$root"))
		f.send(t, bob, receipts.Read, "$root", str("$root")) // the root itself is in its thread
		f.send(t, carol, receipts.Read, "$b1", str("main"))
		p2 := f.pos(t)
		f.send(t, bob, receipts.ReadPrivate, "$b1", nil)
		if _, users := f.n.take(); !slices.Contains(users, bob) {
			t.Fatalf("m.read.private did not wake its sender: %v", users)
		}
		p3 := f.pos(t)

		t.Run("since", func(t *testing.T) {
			got, err := f.e.Since(ctx, alice, []string{room, room2}, p1, p2)
			if err != nil {
				t.Fatal(err)
			}
			same(t, "alice since p1", got, `{"!room": {
				"$t1": {"m.read": {"@bob:x": {"ts": `+itoa(ts)+`, "thread_id": "$root"}}},
				"$b1": {"m.read": {"@carol:x": {"ts": `+itoa(ts)+`, "thread_id": "main"}}}}}`)
			// Bob's private receipt is his alone.
			got, _ = f.e.Since(ctx, alice, []string{room}, p2, p3)
			same(t, "alice after private", got, `{}`)
			got, _ = f.e.Since(ctx, bob, []string{room}, p2, p3)
			same(t, "bob after private", got, `{"!room": {"$b1": {"m.read.private": {"@bob:x": {"ts": `+itoa(ts)+`}}}}}`)
			// Rooms not asked for are left out; empty ranges are empty.
			got, _ = f.e.Since(ctx, alice, []string{room2}, 0, p3)
			same(t, "other room", got, `{}`)
			if got, _ := f.e.Since(ctx, alice, []string{room}, p3, p3); got != nil {
				t.Fatalf("empty range: %s", got)
			}
		})

		t.Run("current", func(t *testing.T) {
			got, err := f.e.Current(ctx, carol, []string{room})
			if err != nil {
				t.Fatal(err)
			}
			same(t, "carol current", got, `{"!room": {
				"$a2": {"m.read": {"@bob:x": {"ts": `+itoa(ts)+`}}},
				"$t1": {"m.read": {"@bob:x": {"ts": `+itoa(ts)+`, "thread_id": "$root"}}},
				"$b1": {"m.read": {"@carol:x": {"ts": `+itoa(ts)+`, "thread_id": "main"}}}}}`)
		})

		t.Run("read up to", func(t *testing.T) {
			for _, c := range []struct {
				user, thread string
				want         int64
			}{
				{bob, "", 30}, // the private receipt at $b1 is ahead of m.read at $a2
				{bob, "$root", 50},
				{bob, "main", 0},
				{carol, "main", 30},
				{carol, "", 0},
				{alice, "", 0},
			} {
				got, err := f.e.ReadUpTo(ctx, c.user, room, c.thread)
				if err != nil || got != c.want {
					t.Errorf("ReadUpTo(%s, %q) = %d, %v; want %d", c.user, c.thread, got, err, c.want)
				}
			}
		})
	})
}

func TestDeliveryReceipts(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newFixture(t, db)
		ts := f.now.UnixMilli()
		f.send(t, bob, receipts.Delivery, "$a1", nil)
		if _, users := f.n.take(); !slices.Equal(users, []string{alice}) {
			t.Fatalf("delivery woke %v, want the sender", users)
		}
		p1 := f.pos(t)
		// A duplicate, under either name, is a success stored once.
		f.send(t, bob, receipts.Delivery, "$a1", nil)
		f.send(t, bob, receipts.DeliveryUnstable, "$a1", nil)
		if p := f.pos(t); p != p1 {
			t.Fatalf("a duplicate moved the stream: %d → %d", p1, p)
		}
		f.send(t, carol, receipts.DeliveryUnstable, "$a1", nil)
		f.send(t, carol, receipts.Delivery, "$a2", nil)
		// One's own event, and a remote sender's, wake nobody.
		f.send(t, alice, receipts.Delivery, "$a2", nil)
		f.send(t, bob, receipts.Delivery, "$r", nil)
		if _, users := f.n.take(); !slices.Equal(users, []string{alice, alice}) {
			t.Fatalf("woke %v", users)
		}
		p2 := f.pos(t)

		both := func(users string) string {
			return `{"m.delivery": ` + users + `, "org.matrix.msc4089.delivery": ` + users + `}`
		}
		t.Run("only the sender sees them", func(t *testing.T) {
			got, err := f.e.Since(ctx, alice, []string{room}, 0, p2)
			if err != nil {
				t.Fatal(err)
			}
			u := func(who ...string) string {
				m := map[string]any{}
				for _, w := range who {
					m[w] = map[string]any{"ts": ts}
				}
				b, _ := json.Marshal(m)
				return string(b)
			}
			same(t, "alice", got, `{"!room": {"$a1": `+both(u(bob, carol))+`, "$a2": `+both(u(carol))+`}}`)
			for _, other := range []string{bob, carol} {
				got, _ := f.e.Since(ctx, other, []string{room}, 0, p2)
				same(t, other, got, `{}`)
			}
			got, _ = f.e.Since(ctx, alice, []string{room}, p1, p2)
			same(t, "alice since p1", got, `{"!room": {"$a1": `+both(u(carol))+`, "$a2": `+both(u(carol))+`}}`)
		})

		t.Run("current is capped per room and by age", func(t *testing.T) {
			got, err := f.e.Current(ctx, alice, []string{room})
			if err != nil {
				t.Fatal(err)
			}
			// MaxDeliveryPerRoom is 2: the newest two (carol's).
			c := decode(t, got)["!room"].(map[string]any)
			if len(c) != 2 || c["$a1"].(map[string]any)["m.delivery"].(map[string]any)[bob] != nil {
				t.Fatalf("current: %v", c)
			}
			*f.now = f.now.Add(8 * 24 * time.Hour)
			got, _ = f.e.Current(ctx, alice, []string{room})
			same(t, "a week later", got, `{}`)
			if err := f.e.Prune(ctx); err != nil {
				t.Fatal(err)
			}
			got, _ = f.e.Since(ctx, alice, []string{room}, 0, p2)
			same(t, "pruned", got, `{}`)
		})
	})
}

func TestFullyReadAndReadMarkers(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newFixture(t, db)
		marker := func() string {
			c, err := f.ad.AccountData(ctx, carol, room, receipts.FullyRead)
			if err != nil {
				return ""
			}
			var v struct {
				EventID string `json:"event_id"`
			}
			_ = json.Unmarshal(c, &v)
			return v.EventID
		}
		f.send(t, carol, receipts.FullyRead, "$a2", nil)
		if m := marker(); m != "$a2" {
			t.Fatalf("marker %q", m)
		}
		f.send(t, carol, receipts.FullyRead, "$a1", nil) // backwards: kept
		if m := marker(); m != "$a2" || f.ad.puts != 1 {
			t.Fatalf("marker moved back to %q (%d writes)", m, f.ad.puts)
		}
		if p := f.pos(t); p != 0 {
			t.Fatalf("m.fully_read is not a receipt, but the stream moved to %d", p)
		}

		// One bad event refuses the whole request.
		err := f.e.SetReadMarkers(ctx, carol, room, receipts.Markers{FullyRead: "$b1", Read: "$nope"})
		if !mxerr.IsCode(err, "M_NOT_FOUND") || marker() != "$a2" {
			t.Fatalf("got %v, marker %q", err, marker())
		}
		err = f.e.SetReadMarkers(ctx, carol, room, receipts.Markers{ReadPrivate: "b1"})
		if !mxerr.IsCode(err, "M_INVALID_PARAM") {
			t.Fatalf("bad event ID: %v", err)
		}
		if err := f.e.SetReadMarkers(ctx, alice, "!nowhere", receipts.Markers{Read: "$a1"}); !mxerr.IsCode(err, "M_FORBIDDEN") {
			t.Fatalf("not joined: %v", err)
		}
		if err := f.e.SetReadMarkers(ctx, carol, room, receipts.Markers{}); err != nil {
			t.Fatalf("nothing to set: %v", err)
		}

		if err := f.e.SetReadMarkers(ctx, carol, room, receipts.Markers{FullyRead: "$b1", Read: "$a2", ReadPrivate: "$b1"}); err != nil {
			t.Fatal(err)
		}
		if m := marker(); m != "$b1" {
			t.Fatalf("marker %q", m)
		}
		got, err := f.e.Current(ctx, carol, []string{room})
		if err != nil {
			t.Fatal(err)
		}
		ts := itoa(f.now.UnixMilli())
		same(t, "carol", got, `{"!room": {"$a2": {"m.read": {"@carol:x": {"ts": `+ts+`}}}, "$b1": {"m.read.private": {"@carol:x": {"ts": `+ts+`}}}}}`)
		if up, _ := f.e.ReadUpTo(ctx, carol, room, ""); up != 30 {
			t.Fatalf("read up to %d", up)
		}
	})
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestSinceNeverSkips: while receipts are written concurrently, a reader
// that walks Position and Since window by window sees every one exactly
// once (positions become visible in order).
func TestSinceNeverSkips(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newFixture(t, db)
		const writers, each = 8, 15
		var users []string
		for w := range writers {
			for i := range each {
				users = append(users, "@u"+itoa(int64(w))+"_"+itoa(int64(i))+":x")
			}
		}
		f.rooms.joined[room] = append(f.rooms.joined[room], users...)
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, u := range users[w*each : (w+1)*each] {
					if err := f.e.Send(ctx, u, room, receipts.Read, "$a1", nil); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		seen := map[string]int{}
		var from int64
		walk := func() {
			to := f.pos(t)
			got, err := f.e.Since(ctx, alice, []string{room}, from, to)
			if err != nil {
				t.Error(err)
				return
			}
			if c, ok := decode(t, got)[room].(map[string]any); ok {
				for u := range c["$a1"].(map[string]any)["m.read"].(map[string]any) {
					seen[u]++
				}
			}
			from = to
		}
		for running := true; running; {
			select {
			case <-done:
				running = false
			default:
				walk()
			}
		}
		walk()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, u := range users {
			if seen[u] != 1 {
				t.Fatalf("%s seen %d times", u, seen[u])
			}
		}
	})
}
