package sytest

import (
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestTwoInstancesShareOneDatabase runs two Parley processes on one
// PostgreSQL database: a message sent through one reaches a long-poll
// waiting on the other, and a logout on one is honoured by the other.
func TestTwoInstancesShareOneDatabase(t *testing.T) {
	t.Parallel()
	a, b := StartPair(t)
	alice := a.Register(t, "multi-alice")
	bob := a.Register(t, "multi-bob").On(b)
	room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
	bob.join(t, room)
	since := bob.sync(t, "", nil).NextBatch
	done := make(chan syncResp, 1)
	go func() { done <- bob.sync(t, since, url.Values{"timeout": {"30000"}}) }()
	alice.send(t, room, "across instances")
	deadline := time.After(20 * time.Second)
	for {
		select {
		case r := <-done:
			if slices.Contains(bodies(r.Rooms.Join[room].Timeline.Events), "across instances") {
				// Logging out through A revokes the token on B too, as soon
				// as B hears of it (LISTEN/NOTIFY, milliseconds).
				Must(t, a.Do(t, "POST", v3+"/logout", bob.Token, map[string]any{}), 200)
				for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
					r := b.Do(t, "GET", v3+"/account/whoami", bob.Token, nil)
					if r.Status == 401 {
						MustErr(t, r, 401, "M_UNKNOWN_TOKEN")
						return
					}
					if time.Since(start) > 5*time.Second {
						t.Fatalf("instance B still accepts a token logged out on A: %s", r)
					}
				}
			}
			since = r.NextBatch
			go func() { done <- bob.sync(t, since, url.Values{"timeout": {"30000"}}) }()
		case <-deadline:
			t.Fatal("the message sent through instance A never reached the long-poll on instance B")
		}
	}
}

// TestTwoInstancesReadYourWrites: a client that sends through one instance
// and at once syncs, without waiting, through the other finds its message,
// though the second instance may not have heard of it yet (equal
// instances: sticky sessions are never required).
func TestTwoInstancesReadYourWrites(t *testing.T) {
	t.Parallel()
	a, b := StartPair(t)
	alice := a.Register(t, "ryw-alice")
	aliceOnB := alice.On(b)
	room := alice.createRoom(t, map[string]any{"preset": "private_chat"})
	since := alice.sync(t, "", nil).NextBatch
	for i := range 20 {
		body := "written through B " + strconv.Itoa(i)
		aliceOnB.send(t, room, body)
		r := alice.sync(t, since, url.Values{"timeout": {"0"}})
		if !slices.Contains(bodies(r.Rooms.Join[room].Timeline.Events), body) {
			t.Fatalf("send %d: a sync on A right after the send on B lacks it: %v", i, bodies(r.Rooms.Join[room].Timeline.Events))
		}
		since = r.NextBatch
	}
}
