package presence

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

const (
	alice    = "@alice:x"
	bob      = "@bob:x"
	carol    = "@carol:x" // shares no room with alice
	remote   = "@dave:elsewhere"
	stranger = "@nobody:x"
)

// shares: alice, bob and remote share a room; carol is alone.
type fakeRooms struct{}

var together = []string{alice, bob, remote}

func (fakeRooms) SharedRoomUsers(_ context.Context, u string) ([]string, error) {
	if slices.Contains(together, u) {
		return together, nil
	}
	return nil, nil
}

func (fakeRooms) UsersShareRoom(_ context.Context, a, b string) (bool, error) {
	return slices.Contains(together, a) && slices.Contains(together, b), nil
}

type fakeUsers struct{}

func (fakeUsers) UserExists(_ context.Context, u string) (bool, error) {
	return u != stranger, nil
}

type fakeNotifier struct {
	mu    sync.Mutex
	users []string
}

func (f *fakeNotifier) NotifyUsers(users ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users = append(f.users, users...)
}

func (f *fakeNotifier) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.users
	f.users = nil
	slices.Sort(u)
	return u
}

type fixture struct {
	e   *Engine
	n   *fakeNotifier
	now time.Time
	db  *storage.DB
}

func newFixture(t *testing.T, db *storage.DB, enabled bool) *fixture {
	t.Helper()
	f := &fixture{n: &fakeNotifier{}, now: time.UnixMilli(1_700_000_000_000), db: db}
	f.e = New(Config{Enabled: enabled, ServerName: "x", Now: func() time.Time { return f.now }}, db,
		Deps{Rooms: fakeRooms{}, Users: fakeUsers{}, Notifier: f.n}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return f
}

func (f *fixture) advance(d time.Duration) { f.now = f.now.Add(d) }

func (f *fixture) flush(t *testing.T) {
	t.Helper()
	if err := f.e.flush(context.Background(), false); err != nil {
		t.Fatal(err)
	}
}

// state returns "presence/currently_active/status_msg" as GET shows it.
func (f *fixture) state(t *testing.T, viewer, target string) string {
	t.Helper()
	s, err := f.e.Status(context.Background(), viewer, target)
	if err != nil {
		t.Fatal(err)
	}
	out := s.Presence
	if s.CurrentlyActive != nil {
		if *s.CurrentlyActive {
			out += "/active"
		} else {
			out += "/inactive"
		}
	}
	if s.StatusMsg != nil {
		out += "/" + *s.StatusMsg
	}
	return out
}

// events returns Since's events as "sender=presence" strings.
func (f *fixture) events(t *testing.T, forUser string, since int64) []string {
	t.Helper()
	raw, err := f.e.Since(context.Background(), forUser, since)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range raw {
		var ev struct {
			Type    string
			Sender  string
			Content map[string]any
		}
		if err := json.Unmarshal(r, &ev); err != nil || ev.Type != "m.presence" {
			t.Fatalf("event %s: %v", r, err)
		}
		out = append(out, ev.Sender+"="+ev.Content["presence"].(string))
	}
	slices.Sort(out)
	return out
}

func (f *fixture) row(t *testing.T, user string) storage.PresenceRow {
	t.Helper()
	p, err := f.db.Presence().PresenceGet(context.Background(), f.db.Read(), user)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestActivityAndTimeouts(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, true)
		if got := f.state(t, alice, alice); got != "offline" {
			t.Fatalf("before anything: %s", got)
		}
		f.e.Touch(alice)
		f.flush(t)
		p1 := f.e.Position()
		if p1 != f.now.UnixMilli() {
			t.Fatalf("position %d, want the clock", p1)
		}
		if got := f.state(t, bob, alice); got != "online/active" {
			t.Fatalf("after a request: %s", got)
		}
		// Alice and bob (local, sharing a room) are woken; not the remote user.
		if got := f.n.take(); !slices.Equal(got, []string{alice, bob}) {
			t.Fatalf("woken %v", got)
		}
		if got := f.events(t, bob, 0); !slices.Equal(got, []string{alice + "=online"}) {
			t.Fatalf("bob's initial presence: %v", got)
		}
		if got := f.events(t, carol, 0); got != nil {
			t.Fatalf("carol shares no room with alice: %v", got)
		}
		if got := f.events(t, bob, p1); got != nil {
			t.Fatalf("nothing after p1: %v", got)
		}

		// A minute without activity: not currently active any more.
		f.advance(30 * time.Second)
		f.e.SyncActivity(alice, "")
		f.flush(t)
		if f.e.Position() != p1 {
			t.Fatal("a sync of an online user changed something visible")
		}
		f.advance(31 * time.Second)
		f.flush(t)
		p2 := f.e.Position()
		if p2 <= p1 || f.state(t, alice, alice) != "online/inactive" {
			t.Fatalf("after a minute: %s at %d", f.state(t, alice, alice), p2)
		}
		if got := f.events(t, bob, p1); !slices.Equal(got, []string{alice + "=online"}) {
			t.Fatalf("since p1: %v", got)
		}
		// Syncing keeps her connected but idle: unavailable after 5 minutes.
		for range 4 {
			f.advance(time.Minute)
			f.e.SyncActivity(alice, "")
			f.flush(t)
		}
		if got := f.state(t, alice, alice); got != "unavailable" {
			t.Fatalf("idle while syncing: %s", got)
		}
		// A request makes her online again.
		f.e.Touch(alice)
		f.flush(t)
		if got := f.state(t, alice, alice); got != "online/active" {
			t.Fatalf("active again: %s", got)
		}
		// Nothing for OfflineAfter: offline.
		f.advance(2 * time.Minute)
		f.flush(t)
		if got := f.state(t, alice, alice); got != "offline" {
			t.Fatalf("gone: %s", got)
		}
		if got := f.events(t, bob, p2); !slices.Equal(got, []string{alice + "=offline"}) {
			t.Fatalf("since p2: %v", got)
		}
		s, _ := f.e.Status(context.Background(), bob, alice)
		if s.LastActiveAgo == nil || *s.LastActiveAgo != (2*time.Minute).Milliseconds() || s.CurrentlyActive != nil {
			t.Fatalf("offline status: %+v", s)
		}
		// Offline users without a status message are left out of an
		// initial sync, except oneself.
		if got := f.events(t, bob, 0); got != nil {
			t.Fatalf("initial sync with alice offline: %v", got)
		}
		if got := f.events(t, alice, 0); !slices.Equal(got, []string{alice + "=offline"}) {
			t.Fatalf("alice's own: %v", got)
		}
	})
}

func TestSyncSetPresence(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, true)
		f.e.SyncActivity(alice, "offline")
		f.flush(t)
		if _, err := f.db.Presence().PresenceGet(context.Background(), db.Read(), alice); err == nil {
			t.Fatal("a sync with set_presence=offline recorded something")
		}
		f.e.SyncActivity(alice, "unavailable")
		f.e.SyncActivity(bob, "")
		f.flush(t)
		if a, b := f.state(t, alice, alice), f.state(t, bob, bob); a != "unavailable" || b != "online/active" {
			t.Fatalf("alice %s, bob %s", a, b)
		}
		// An unavailable sync does not pull an online user down.
		f.e.SyncActivity(bob, "unavailable")
		f.flush(t)
		if b := f.state(t, bob, bob); b != "online/active" {
			t.Fatalf("bob %s", b)
		}
	})
}

func TestSetStatus(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newFixture(t, db, true)
		set := func(state string, msg *string) {
			t.Helper()
			if err := f.e.SetStatus(ctx, alice, state, msg); err != nil {
				t.Fatal(err)
			}
		}
		busy := "busy"
		set(Unavailable, &busy)
		p1 := f.e.Position()
		if got := f.state(t, bob, alice); got != "unavailable/busy" || p1 == 0 {
			t.Fatalf("set unavailable: %s at %d", got, p1)
		}
		if got := f.n.take(); !slices.Equal(got, []string{alice, bob}) {
			t.Fatalf("woken %v", got)
		}
		// Requests keep her connected and active, but do not undo her choice.
		f.advance(time.Second)
		f.e.Touch(alice)
		f.flush(t)
		if got := f.state(t, alice, alice); got != "unavailable/busy" {
			t.Fatalf("after a request: %s", got)
		}
		if s, _ := f.e.Status(ctx, alice, alice); s.LastActiveAgo == nil || *s.LastActiveAgo != 0 {
			t.Fatalf("last active: %+v", s)
		}
		// A new message alone is a change.
		lunch := "lunch"
		set(Unavailable, &lunch)
		if f.e.Position() <= p1 || f.state(t, alice, alice) != "unavailable/lunch" {
			t.Fatalf("new message: %s", f.state(t, alice, alice))
		}
		set(Online, nil) // no message clears it
		if got := f.state(t, alice, alice); got != "online/active" {
			t.Fatalf("online: %s", got)
		}
		set(Offline, nil)
		f.e.Touch(alice)
		f.flush(t)
		if got := f.state(t, alice, alice); got != "offline" {
			t.Fatalf("invisible: %s", got)
		}
		// Positions strictly increase with a frozen clock.
		p := f.e.Position()
		set(Online, &busy)
		set(Online, nil)
		if f.e.Position() != p+2 {
			t.Fatalf("positions %d → %d", p, f.e.Position())
		}
		for _, c := range []struct {
			state, msg, code string
		}{
			{"away", "", "M_INVALID_PARAM"},
			{"", "", "M_INVALID_PARAM"},
			{Online, strings.Repeat("é", MaxStatusMsgBytes/2+1), "M_INVALID_PARAM"},
		} {
			if err := f.e.SetStatus(ctx, alice, c.state, &c.msg); !mxerr.IsCode(err, c.code) {
				t.Errorf("SetStatus(%q, %d bytes) = %v, want %s", c.state, len(c.msg), err, c.code)
			}
		}
		longest := strings.Repeat("a", MaxStatusMsgBytes)
		set(Online, &longest)
	})
}

func TestStatusPermissions(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, true)
		for _, c := range []struct {
			viewer, target, code string
		}{
			{alice, alice, ""},
			{carol, carol, ""},
			{alice, bob, ""},
			{alice, remote, ""},
			{alice, carol, "M_FORBIDDEN"},
			{carol, alice, "M_FORBIDDEN"},
			{alice, "@who:elsewhere", "M_FORBIDDEN"},
			{alice, stranger, "M_NOT_FOUND"},
		} {
			_, err := f.e.Status(context.Background(), c.viewer, c.target)
			if c.code == "" && err != nil || c.code != "" && !mxerr.IsCode(err, c.code) {
				t.Errorf("%s looks at %s: %v, want %q", c.viewer, c.target, err, c.code)
			}
		}
	})
}

func TestActivityIsCoalesced(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, true)
		f.e.Touch(alice)
		f.flush(t)
		first := f.row(t, alice).LastActiveTS
		// More activity that changes nothing visible waits in memory …
		for range 5 {
			f.advance(2 * time.Second)
			f.e.Touch(alice)
			f.flush(t)
		}
		if got := f.row(t, alice).LastActiveTS; got != first {
			t.Fatalf("written at once: %d → %d", first, got)
		}
		// … yet is shown …
		if s, _ := f.e.Status(context.Background(), alice, alice); *s.LastActiveAgo != 0 {
			t.Fatalf("last active ago %d", *s.LastActiveAgo)
		}
		// … and written within PersistEvery.
		f.advance(10 * time.Second)
		f.flush(t)
		if got := f.row(t, alice).LastActiveTS; got != f.now.Add(-10*time.Second).UnixMilli() {
			t.Fatalf("not written: %d", got)
		}
		// Activity that cancels a due timeout goes with it: no flapping.
		f.advance(59 * time.Second)
		f.e.Touch(alice)
		p := f.e.Position()
		f.advance(2 * time.Second) // the stored activity is now over a minute old
		f.flush(t)
		if f.e.Position() != p || f.state(t, alice, alice) != "online/active" {
			t.Fatalf("flapped: %s", f.state(t, alice, alice))
		}
	})
}

func TestDisabled(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newFixture(t, db, false)
		if f.e.Enabled() {
			t.Fatal("enabled")
		}
		if err := f.e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		f.e.Touch(alice)
		f.e.SyncActivity(alice, "")
		msg := "hi"
		if err := f.e.SetStatus(ctx, alice, Online, &msg); err != nil {
			t.Fatal(err)
		}
		if err := f.e.SetStatus(ctx, alice, "away", nil); !mxerr.IsCode(err, "M_INVALID_PARAM") {
			t.Fatalf("bad input is still refused: %v", err)
		}
		f.e.Stop()
		if got := f.state(t, bob, alice); got != "offline" {
			t.Fatalf("status %s", got)
		}
		if _, err := f.e.Status(ctx, alice, carol); !mxerr.IsCode(err, "M_FORBIDDEN") {
			t.Fatalf("permissions still apply: %v", err)
		}
		if got := f.events(t, alice, 0); got != nil || f.e.Position() != 0 {
			t.Fatalf("events %v position %d", got, f.e.Position())
		}
		if n, _ := f.db.Presence().PresenceMaxPos(ctx, db.Read()); n != 0 {
			t.Fatal("something was stored")
		}
	})
}

func TestStartStop(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newFixture(t, db, true)
		f.e.cfg.FlushEvery = time.Hour // only Stop flushes
		if err := f.e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		f.e.Touch(alice)
		f.e.Stop()
		f.e.Stop()
		if got := f.row(t, alice).State; got != Online {
			t.Fatalf("Stop did not write pending activity: %s", got)
		}
		// A new engine starts from the stored position.
		g := newFixture(t, db, true)
		if err := g.e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer g.e.Stop()
		if g.e.Position() != f.e.Position() || g.e.Position() == 0 {
			t.Fatalf("restarted at %d, was %d", g.e.Position(), f.e.Position())
		}
	})
}

// TestConcurrentUse exercises activity, reads and the flusher together
// (for the race detector).
func TestConcurrentUse(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		n := &fakeNotifier{}
		e := New(Config{Enabled: true, ServerName: "x", FlushEvery: 5 * time.Millisecond, PersistEvery: 20 * time.Millisecond}, db,
			Deps{Rooms: fakeRooms{}, Users: fakeUsers{}, Notifier: n}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 50 {
					switch j % 4 {
					case 0:
						e.Touch(together[i%2])
					case 1:
						e.SyncActivity(bob, "")
					case 2:
						if _, err := e.Status(ctx, alice, bob); err != nil {
							t.Error(err)
						}
					case 3:
						if _, err := e.Since(ctx, alice, 0); err != nil {
							t.Error(err)
						}
					}
				}
				if err := e.SetStatus(ctx, alice, Online, nil); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		e.Stop()
		if got := presenceOf(t, e, alice); got != Online {
			t.Fatalf("alice %s", got)
		}
	})
}

func presenceOf(t *testing.T, e *Engine, user string) string {
	t.Helper()
	s, err := e.Status(context.Background(), user, user)
	if err != nil {
		t.Fatal(err)
	}
	return s.Presence
}
