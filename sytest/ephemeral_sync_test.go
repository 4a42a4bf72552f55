package sytest

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"time"
)

// hasSync reports whether the server serves /sync (it may not, yet).
func hasSync(t *testing.T, u *User) bool {
	t.Helper()
	return u.Do(t, "GET", v3+"/sync?timeout=0", nil).Status != 404
}

// requireSync skips t when the server has no /sync.
func requireSync(t *testing.T, u *User) {
	t.Helper()
	if !hasSync(t, u) {
		t.Skip("GET /sync is not served yet")
	}
}

// ephemeralSince syncs from since until cond holds for some response,
// long-polling so that wake-ups are exercised too; it returns the
// matching response and gives up after a few seconds.
func ephemeralSince(t *testing.T, u *User, since, what string, cond func(syncResp) bool) syncResp {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r := u.sync(t, since, url.Values{"timeout": {"2000"}})
		if cond(r) {
			return r
		}
		since = r.NextBatch
	}
	t.Fatalf("%s: never seen in sync", what)
	return syncResp{}
}

// receiptsIn returns the m.receipt contents of a room in a response.
func receiptsIn(r syncResp, room string) []map[string]map[string]map[string]any {
	var out []map[string]map[string]map[string]any
	for _, ev := range r.Rooms.Join[room].Ephemeral.Events {
		if ev.Type != "m.receipt" {
			continue
		}
		var c map[string]map[string]map[string]any
		if json.Unmarshal(ev.Content, &c) == nil {
			out = append(out, c)
		}
	}
	return out
}

// hasReceipt reports whether a response holds user's receipt of typ on event.
func hasReceipt(r syncResp, room, event, typ, user string) bool {
	for _, c := range receiptsIn(r, room) {
		if _, ok := c[event][typ][user]; ok {
			return true
		}
	}
	return false
}

// typingIn returns the typing users of a room in a response (nil: no m.typing).
func typingIn(r syncResp, room string) []string {
	for _, ev := range r.Rooms.Join[room].Ephemeral.Events {
		if ev.Type == "m.typing" {
			var c struct {
				UserIDs []string `json:"user_ids"`
			}
			_ = json.Unmarshal(ev.Content, &c)
			if c.UserIDs == nil {
				c.UserIDs = []string{}
			}
			return c.UserIDs
		}
	}
	return nil
}

func TestReceiptsInSync(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice, bob, carol := s.Register(t, "alice"), s.Register(t, "bob"), s.Register(t, "carol")
		requireSync(t, alice)
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		carol.join(t, room)
		m1 := alice.send(t, room, "one")
		since := alice.sync(t, "", url.Values{"timeout": {"0"}}).NextBatch
		carolSince := carol.sync(t, "", url.Values{"timeout": {"0"}}).NextBatch

		Must(t, bob.Do(t, "POST", receiptPath(room, "m.read.private", m1), nil), 200)
		Must(t, bob.Do(t, "POST", receiptPath(room, "m.read", m1), nil), 200)
		Must(t, carol.Do(t, "POST", receiptPath(room, "org.matrix.msc4089.delivery", m1), nil), 200)
		Must(t, bob.Do(t, "POST", receiptPath(room, "m.delivery", m1), nil), 200)

		seen := syncResp{}
		ephemeralSince(t, alice, since, "alice sees bob's m.read and both delivery receipts", func(r syncResp) bool {
			for _, c := range receiptsIn(r, room) {
				if _, ok := c[m1]["m.read.private"]; ok {
					t.Fatalf("alice sees bob's private receipt: %v", c)
				}
			}
			j := seen.Rooms.Join
			if j == nil {
				j = map[string]syncRoom{}
				seen.Rooms.Join = j
			}
			sr := j[room]
			sr.Ephemeral.Events = append(sr.Ephemeral.Events, r.Rooms.Join[room].Ephemeral.Events...)
			j[room] = sr
			return hasReceipt(seen, room, m1, "m.read", bob.ID) &&
				hasReceipt(seen, room, m1, "m.delivery", carol.ID) && hasReceipt(seen, room, m1, "m.delivery", bob.ID) &&
				hasReceipt(seen, room, m1, "org.matrix.msc4089.delivery", carol.ID)
		})
		// Carol sees bob's public receipt, no delivery receipts (the event
		// is alice's) and no private receipt.
		ephemeralSince(t, carol, carolSince, "carol sees bob's m.read", func(r syncResp) bool {
			for _, c := range receiptsIn(r, room) {
				if _, ok := c[m1]["m.delivery"]; ok {
					t.Fatalf("carol sees delivery receipts of alice's event: %v", c)
				}
				if _, ok := c[m1]["m.read.private"]; ok {
					t.Fatalf("carol sees bob's private receipt: %v", c)
				}
			}
			return hasReceipt(r, room, m1, "m.read", bob.ID)
		})
		// Initial syncs: everyone sees bob's m.read; bob his private one;
		// only alice the delivery receipts.
		for _, u := range []*User{alice, bob, carol} {
			r := u.sync(t, "", url.Values{"timeout": {"0"}})
			if !hasReceipt(r, room, m1, "m.read", bob.ID) {
				t.Fatalf("%s's initial sync lacks bob's m.read: %v", u.ID, receiptsIn(r, room))
			}
			if got := hasReceipt(r, room, m1, "m.read.private", bob.ID); got != (u == bob) {
				t.Fatalf("%s's initial sync: bob's private receipt %v", u.ID, got)
			}
			if got := hasReceipt(r, room, m1, "m.delivery", carol.ID); got != (u == alice) {
				t.Fatalf("%s's initial sync: carol's delivery receipt %v", u.ID, got)
			}
		}
	})
}

func TestTypingInSync(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice, bob := s.Register(t, "alice"), s.Register(t, "bob")
		requireSync(t, alice)
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		since := alice.sync(t, "", url.Values{"timeout": {"0"}}).NextBatch

		Must(t, bob.Do(t, "PUT", typingPath(room, bob.ID), map[string]any{"typing": true, "timeout": 30000}), 200)
		r := ephemeralSince(t, alice, since, "bob typing", func(r syncResp) bool {
			return slices.Equal(typingIn(r, room), []string{bob.ID})
		})
		if got := typingIn(alice.sync(t, "", url.Values{"timeout": {"0"}}), room); !slices.Equal(got, []string{bob.ID}) {
			t.Fatalf("initial sync: %v", got)
		}
		Must(t, bob.Do(t, "PUT", typingPath(room, bob.ID), map[string]any{"typing": false}), 200)
		r = ephemeralSince(t, alice, r.NextBatch, "bob stopped", func(r syncResp) bool {
			got := typingIn(r, room)
			return got != nil && len(got) == 0
		})
		// A short timeout expires by itself, and the expiry wakes the syncer.
		Must(t, bob.Do(t, "PUT", typingPath(room, bob.ID), map[string]any{"typing": true, "timeout": 300}), 200)
		r = ephemeralSince(t, alice, r.NextBatch, "bob typing briefly", func(r syncResp) bool {
			return slices.Equal(typingIn(r, room), []string{bob.ID})
		})
		r = ephemeralSince(t, alice, r.NextBatch, "bob's typing expired", func(r syncResp) bool {
			got := typingIn(r, room)
			return got != nil && len(got) == 0
		})
		// Leaving stops typing at once, long before the timeout.
		Must(t, bob.Do(t, "PUT", typingPath(room, bob.ID), map[string]any{"typing": true, "timeout": 60000}), 200)
		r = ephemeralSince(t, alice, r.NextBatch, "bob typing again", func(r syncResp) bool {
			return slices.Equal(typingIn(r, room), []string{bob.ID})
		})
		Must(t, bob.Do(t, "POST", roomPath(room)+"/leave", map[string]any{}), 200)
		ephemeralSince(t, alice, r.NextBatch, "bob left and stopped typing", func(r syncResp) bool {
			got := typingIn(r, room)
			return got != nil && len(got) == 0
		})
	})
}

func TestPresenceInSync(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice, bob, eve := s.Register(t, "alice"), s.Register(t, "bob"), s.Register(t, "eve")
		requireSync(t, alice)
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		since := alice.sync(t, "", url.Values{"timeout": {"0"}}).NextBatch
		eveSince := eve.sync(t, "", url.Values{"timeout": {"0"}}).NextBatch

		Must(t, bob.Do(t, "PUT", presencePath(bob.ID), map[string]any{"presence": "unavailable", "status_msg": "reading"}), 200)
		bobIs := func(state string) func(r syncResp) bool {
			return func(r syncResp) bool {
				for _, ev := range r.Presence.Events {
					var c struct {
						Presence  string `json:"presence"`
						StatusMsg string `json:"status_msg"`
					}
					_ = json.Unmarshal(ev.Content, &c)
					if ev.Type == "m.presence" && ev.Sender == bob.ID && c.Presence == state && c.StatusMsg == "reading" {
						return true
					}
				}
				return false
			}
		}
		ephemeralSince(t, alice, since, "bob's presence", bobIs("unavailable"))
		if !bobIs("unavailable")(alice.sync(t, "", url.Values{"timeout": {"0"}})) {
			t.Fatal("bob's presence is not in alice's initial sync")
		}
		// Eve shares no room with bob: she never hears of him.
		r := eve.sync(t, eveSince, url.Values{"timeout": {"1000"}})
		for _, ev := range r.Presence.Events {
			if ev.Sender == bob.ID {
				t.Fatalf("eve sees bob's presence: %s", ev.Content)
			}
		}
	})
}

// TestEphemeralAcrossInstances: typing, receipts and presence set through
// one instance reach a client syncing on another sharing the database.
func TestEphemeralAcrossInstances(t *testing.T) {
	t.Parallel()
	a := StartServer(t, Options{Dialect: "postgres"})
	alice := a.Register(t, "alice")
	requireSync(t, alice)
	b := StartServer(t, Options{Dialect: "postgres", Database: a.Database, DataDir: a.DataDir})
	bob := a.Register(t, "bob").On(b)
	room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
	bob.join(t, room)
	m1 := alice.send(t, room, "hello")
	since := alice.sync(t, "", url.Values{"timeout": {"0"}}).NextBatch

	// The bus starts listening asynchronously: type until A hears.
	deadline := time.Now().Add(10 * time.Second)
	var r syncResp
	for {
		Must(t, bob.Do(t, "PUT", typingPath(room, bob.ID), map[string]any{"typing": true, "timeout": 30000}), 200)
		r = alice.sync(t, since, url.Values{"timeout": {"500"}})
		since = r.NextBatch
		if slices.Equal(typingIn(r, room), []string{bob.ID}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("typing on B never reached a sync on A")
		}
	}
	Must(t, bob.Do(t, "PUT", typingPath(room, bob.ID), map[string]any{"typing": false}), 200)
	r = ephemeralSince(t, alice, since, "bob stopped typing on B", func(r syncResp) bool {
		got := typingIn(r, room)
		return got != nil && len(got) == 0
	})
	Must(t, bob.Do(t, "POST", receiptPath(room, "m.read", m1), nil), 200)
	r = ephemeralSince(t, alice, r.NextBatch, "bob's receipt on B", func(r syncResp) bool {
		return hasReceipt(r, room, m1, "m.read", bob.ID)
	})
	Must(t, bob.Do(t, "PUT", presencePath(bob.ID), map[string]any{"presence": "unavailable", "status_msg": "on B"}), 200)
	ephemeralSince(t, alice, r.NextBatch, "bob's presence on B", func(r syncResp) bool {
		for _, ev := range r.Presence.Events {
			if ev.Sender == bob.ID && string(jsonField(ev.Content, "status_msg")) == `"on B"` {
				return true
			}
		}
		return false
	})
	if got := Must(t, alice.Do(t, "GET", presencePath(bob.ID), nil), 200); got.Str("status_msg") != "on B" {
		t.Fatalf("presence set on B, read on A: %s", got)
	}
}

// jsonField returns one top-level field of a JSON object (nil if absent).
func jsonField(obj json.RawMessage, key string) json.RawMessage {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(obj, &m)
	return m[key]
}
