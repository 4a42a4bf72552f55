package sync

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"

	"github.com/parley-chat/parley/e2ee"
	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/filter"
	"github.com/parley-chat/parley/homeserver/notifier"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// newTestEngines builds what a sync engine reads on db: a rooms engine,
// started after hook (if any) wired it, accounts and a notifier.
func newTestEngines(t *testing.T, db *storage.DB, hook func(*rooms.Engine)) (*slog.Logger, *rooms.Engine, *accounts.Engine, *notifier.Notifier) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	re := rooms.New(rooms.Config{ServerName: "local.test", Signer: &rooms.Signer{ServerName: "local.test", KeyID: "ed25519:t", Key: key}}, db, log)
	if hook != nil {
		hook(re)
	}
	if err := re.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(re.Stop)
	acc, err := accounts.New(accounts.Config{ServerName: "local.test",
		Argon2: argon2id.Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}}, db, log)
	if err != nil {
		t.Fatal(err)
	}
	return log, re, acc, notifier.New(log, re, nil)
}

// TestSyncFromQuietToken checks the answer-token shortcut: a sync from a
// token whose answer was built at the user's current notifier generation
// waits without reading positions, and any wake-up ends that wait.
func TestSyncFromQuietToken(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		log, re, acc, n := newTestEngines(t, db, nil)
		e := New(Deps{DB: db, Rooms: re, Accounts: acc, Notifier: n}, log)

		alice := "@alice:local.test"
		room, err := re.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		first, err := e.Sync(ctx, Request{UserID: alice, DeviceID: "D"})
		if err != nil {
			t.Fatal(err)
		}
		send := func(body string) {
			t.Helper()
			if _, err := re.Send(ctx, rooms.SendParams{RoomID: room, Sender: alice, Type: "m.room.message",
				Content: json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`)}); err != nil {
				t.Fatal(err)
			}
		}
		// A message persisted without a wake-up: the shortcut does not see
		// it, so the sync waits its whole timeout and only then reads the
		// positions and answers with it.
		send("unannounced")
		since := first.Next
		const timeout = 300 * time.Millisecond
		start := time.Now()
		resp, err := e.Sync(ctx, Request{UserID: alice, DeviceID: "D", Since: &since, Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < timeout {
			t.Fatalf("a sync from a quiet token read the positions at once (answered after %v)", waited)
		}
		if jr := resp.Rooms.Join[room]; jr == nil || jr.Timeline == nil || len(jr.Timeline.Events) != 1 {
			t.Fatalf("at the timeout: %+v", resp.Rooms)
		}
		// A wake-up while waiting ends the wait, and the build carries
		// both messages.
		go func() {
			time.Sleep(20 * time.Millisecond)
			send("announced")
			n.NotifyUsers(alice)
		}()
		start = time.Now()
		resp, err = e.Sync(ctx, Request{UserID: alice, DeviceID: "D", Since: &resp.Next, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the wake-up did not end the wait")
		}
		jr := resp.Rooms.Join[room]
		if jr == nil || jr.Timeline == nil || len(jr.Timeline.Events) != 1 {
			t.Fatalf("after the wake-up: %+v", resp.Rooms)
		}
		// A token from before a wake-up reads the positions at once.
		since = first.Next
		start = time.Now()
		if _, err := e.Sync(ctx, Request{UserID: alice, DeviceID: "E", Since: &since, Timeout: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("a sync from an old token waited")
		}
	})
}

// fakePresence is a presence stream whose position the test moves; each
// move brings one presence event.
type fakePresence struct{ pos atomic.Int64 }

func (p *fakePresence) Position() int64 { return p.pos.Load() }
func (p *fakePresence) Since(_ context.Context, _ string, since int64) ([]json.RawMessage, error) {
	if since >= p.pos.Load() {
		return nil, nil
	}
	return []json.RawMessage{json.RawMessage(`{"type":"m.presence","sender":"@bob:local.test","content":{"presence":"online"}}`)}, nil
}
func (p *fakePresence) SyncActivity(string, string) {}
func (p *fakePresence) Enabled() bool               { return true }

// buildCounter counts builds: every build of a device's sync reads its
// key counts.
type buildCounter struct {
	Keys
	n atomic.Int32
}

func (b *buildCounter) CurrentPositions(context.Context) (map[string]int64, error) { return nil, nil }
func (b *buildCounter) ToDeviceSince(context.Context, string, string, int64, int64) ([]e2ee.ToDeviceMessage, int64, error) {
	return nil, 0, nil
}
func (b *buildCounter) AckToDevice(context.Context, string, string, int64) error { return nil }
func (b *buildCounter) KeyCounts(context.Context, string, string) (map[string]int, []string, error) {
	b.n.Add(1)
	return nil, nil, nil
}
func (b *buildCounter) DeviceListChanges(context.Context, string, int64, int64, e2ee.MembershipDelta) ([]string, []string, error) {
	return nil, nil, nil
}

// TestPresenceOnlyWake: a presence change wakes a waiting sync; one whose
// filter takes no presence goes back to waiting without a build, another
// answers with the change.
func TestPresenceOnlyWake(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		log, re, acc, n := newTestEngines(t, db, nil)
		pres, builds := &fakePresence{}, &buildCounter{}
		e := New(Deps{DB: db, Rooms: re, Accounts: acc, Notifier: n, Presence: pres, Keys: builds}, log)
		alice := "@alice:local.test"
		if _, err := re.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "private_chat"}); err != nil {
			t.Fatal(err)
		}
		noPresence, err := filter.Parse([]byte(`{"presence":{"types":[]}}`))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name    string
			f       *filter.Filter
			answers bool
		}{
			{"presence filtered out", noPresence, false},
			{"presence wanted", &filter.Filter{}, true},
		} {
			first, err := e.Sync(ctx, Request{UserID: alice, DeviceID: "D", Filter: c.f})
			if err != nil {
				t.Fatal(err)
			}
			before := builds.n.Load()
			type result struct {
				resp *Response
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := e.Sync(ctx, Request{UserID: alice, DeviceID: "D", Filter: c.f, Since: &first.Next, Timeout: 1500 * time.Millisecond})
				done <- result{resp, err}
			}()
			time.Sleep(50 * time.Millisecond)
			pres.pos.Add(1)
			n.NotifyUsers(alice)
			var r result
			if c.answers {
				r = <-done
			} else {
				// Well before the timeout, the wake-up has been handled:
				// without a build.
				time.Sleep(500 * time.Millisecond)
				if b := builds.n.Load() - before; b != 0 {
					t.Errorf("%s: %d builds on a presence wake-up", c.name, b)
				}
				r = <-done
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			resp := r.resp
			got := resp.Presence != nil && len(resp.Presence.Events) > 0
			if built := builds.n.Load() - before; got != c.answers || built != 1 {
				t.Errorf("%s: presence in the answer %v, %d builds", c.name, got, built)
			}
			if !c.answers && resp.Next.Presence != pres.pos.Load() {
				t.Errorf("%s: next_batch presence %d, want %d", c.name, resp.Next.Presence, pres.pos.Load())
			}
		}
	})
}
