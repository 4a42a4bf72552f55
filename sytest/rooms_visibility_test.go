package sytest

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestHistoryVisibility checks every read path against the four history
// visibility settings.
func TestHistoryVisibility(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "hv-alice")
		for _, tc := range []struct {
			hv string
			// Can Bob, who joins after "before" was sent, see it?
			seesBefore bool
			// Can a stranger read the room at all?
			strangerReads bool
		}{
			{"world_readable", true, true},
			{"shared", true, false},
			{"invited", false, false},
			{"joined", false, false},
		} {
			t.Run(tc.hv, func(t *testing.T) {
				bob := s.Register(t, "hv-bob")
				stranger := s.Register(t, "hv-stranger")
				room := alice.createRoom(t, map[string]any{"preset": "public_chat", "initial_state": []map[string]any{
					{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": tc.hv}},
				}})
				before := alice.send(t, room, "before")
				Must(t, alice.Do(t, "POST", roomPath(room)+"/invite", map[string]any{"user_id": bob.ID}), 200)
				invited := alice.send(t, room, "while invited")
				bob.join(t, room)
				during := alice.send(t, room, "while joined")

				check := func(u *User, ev string, want bool) {
					t.Helper()
					r := u.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(ev), nil)
					if (r.Status == 200) != want {
						t.Fatalf("%s: %s sees %s = %v, want %v", tc.hv, u.ID, ev, r.Status == 200, want)
					}
					if !want {
						MustErr(t, r, 404, "M_NOT_FOUND")
					}
				}
				check(bob, before, tc.seesBefore)
				check(bob, invited, tc.hv != "joined")
				check(bob, during, true)
				msgs := chunkBodies(Must(t, bob.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=50", nil), 200))
				if slices.Contains(msgs, "before") != tc.seesBefore || !slices.Contains(msgs, "while joined") {
					t.Fatalf("%s: /messages shows %v", tc.hv, msgs)
				}
				// After leaving, Bob keeps what he saw but nothing new.
				Must(t, bob.Do(t, "POST", roomPath(room)+"/leave", map[string]any{}), 200)
				after := alice.send(t, room, "after bob left")
				check(bob, during, true)
				check(bob, after, tc.hv == "world_readable")
				msgs = chunkBodies(Must(t, bob.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=50", nil), 200))
				if slices.Contains(msgs, "after bob left") != (tc.hv == "world_readable") {
					t.Fatalf("%s: departed user's /messages: %v", tc.hv, msgs)
				}
				// State after leaving is the state at departure.
				Must(t, alice.Do(t, "PUT", roomPath(room)+"/state/m.room.topic/", map[string]any{"topic": "secret new topic"}), 200)
				st := bob.Do(t, "GET", roomPath(room)+"/state", nil)
				if tc.hv == "world_readable" {
					Must(t, st, 200)
				} else if strings.Contains(string(Must(t, st, 200).Body), "secret new topic") {
					t.Fatalf("%s: departed user sees state set after they left", tc.hv)
				}
				// Strangers.
				if tc.strangerReads {
					Must(t, stranger.Do(t, "GET", roomPath(room)+"/messages?dir=b", nil), 200)
					Must(t, stranger.Do(t, "GET", roomPath(room)+"/state", nil), 200)
					check(stranger, during, true)
				} else {
					MustErr(t, stranger.Do(t, "GET", roomPath(room)+"/messages?dir=b", nil), 403, "M_FORBIDDEN")
					MustErr(t, stranger.Do(t, "GET", roomPath(room)+"/state", nil), 403, "M_FORBIDDEN")
					MustErr(t, stranger.Do(t, "GET", roomPath(room)+"/members", nil), 403, "M_FORBIDDEN")
					MustErr(t, stranger.Do(t, "GET", roomPath(room)+"/joined_members", nil), 403, "M_FORBIDDEN")
					MustErr(t, stranger.Do(t, "GET", roomPath(room)+"/context/"+url.PathEscape(during), nil), 404, "M_NOT_FOUND")
					check(stranger, during, false)
				}
			})
		}
	})
}

func TestRoomBadInput(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "bad-alice")
		bob := s.Register(t, "bad-bob")
		room := alice.createRoom(t, nil)
		// Size: the whole event must fit in 65,536 bytes.
		big := map[string]any{"msgtype": "m.text", "body": strings.Repeat("x", 70000)}
		MustErr(t, alice.Do(t, "PUT", roomPath(room)+"/send/m.room.message/big1", big), 413, "M_TOO_LARGE")
		nearly := map[string]any{"msgtype": "m.text", "body": strings.Repeat("x", 65000)}
		MustErr(t, alice.Do(t, "PUT", roomPath(room)+"/send/m.room.message/big2", nearly), 413, "M_TOO_LARGE")
		Must(t, alice.Do(t, "PUT", roomPath(room)+"/send/m.room.message/ok1", map[string]any{"msgtype": "m.text", "body": strings.Repeat("x", 60000)}), 200)
		// Malformed identifiers.
		MustErr(t, alice.Do(t, "PUT", v3+"/rooms/not-a-room/send/m.room.message/t1", map[string]any{}), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "GET", roomPath(room)+"/event/not-an-event", nil), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "GET", v3+"/rooms/not-a-room/messages?dir=b", nil), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "POST", roomPath(room)+"/invite", map[string]any{"user_id": "@"}), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=x", nil), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "GET", roomPath(room)+"/messages", nil), 400, "M_MISSING_PARAM")
		MustErr(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=b&from=garbage", nil), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=-1", nil), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=b&filter={bad", nil), 400, "M_BAD_JSON")
		MustErr(t, alice.Do(t, "GET", roomPath(room)+"/members?membership=sideways", nil), 400, "M_INVALID_PARAM")
		// Content must be an object.
		MustErr(t, alice.Do(t, "PUT", roomPath(room)+"/send/m.room.message/arr", "[1]"), 400, "M_BAD_JSON")
		MustErr(t, alice.Do(t, "PUT", roomPath(room)+"/send/m.room.message/nj", "{nope"), 400, "M_NOT_JSON")
		MustErr(t, alice.Do(t, "PUT", roomPath(room)+"/state/m.room.member/"+url.PathEscape(alice.ID), map[string]any{"membership": "dancing"}), 400, "M_BAD_JSON")
		// Not joined: 403.
		MustErr(t, bob.Do(t, "PUT", roomPath(room)+"/send/m.room.message/nj1", map[string]any{"body": "hi"}), 403, "M_FORBIDDEN")
		MustErr(t, bob.Do(t, "PUT", roomPath(room)+"/state/m.room.topic/", map[string]any{"topic": "hi"}), 403, "M_FORBIDDEN")
		// Unknown rooms and events.
		MustErr(t, alice.Do(t, "PUT", v3+"/rooms/"+url.PathEscape("!unknown:localhost")+"/send/m.room.message/u1", map[string]any{}), 404, "M_NOT_FOUND")
		MustErr(t, alice.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape("$unknown"), nil), 404, "M_NOT_FOUND")
		MustErr(t, alice.Do(t, "PUT", roomPath(room)+"/redact/"+url.PathEscape("$unknown")+"/r1", map[string]any{}), 404, "M_NOT_FOUND")
		MustErr(t, alice.Do(t, "GET", roomPath(room)+"/state/m.room.topic/", nil), 404, "M_NOT_FOUND")
		// Someone else's message cannot be redacted without power.
		Must(t, alice.Do(t, "PUT", roomPath(room)+"/state/m.room.join_rules/", map[string]any{"join_rule": "public"}), 200)
		bob.join(t, room)
		mine := alice.send(t, room, "alice's")
		MustErr(t, bob.Do(t, "PUT", roomPath(room)+"/redact/"+url.PathEscape(mine)+"/r2", map[string]any{}), 403, "M_FORBIDDEN")
		// The state key shape of m.room.member is checked.
		MustErr(t, alice.Do(t, "PUT", roomPath(room)+"/state/m.room.member/nobody", map[string]any{"membership": "join"}), 400, "M_INVALID_PARAM")
	})
}

// TestSendIsIdempotent checks that a retried transaction ID returns the
// first event and writes nothing new.
func TestSendIsIdempotent(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "txn")
		room := alice.createRoom(t, nil)
		first := Must(t, alice.Do(t, "PUT", roomPath(room)+"/send/m.room.message/same", map[string]any{"body": "one"}), 200).Str("event_id")
		again := Must(t, alice.Do(t, "PUT", roomPath(room)+"/send/m.room.message/same", map[string]any{"body": "two"}), 200).Str("event_id")
		if first != again {
			t.Fatalf("retry made a new event: %s vs %s", first, again)
		}
		// Another path or device is another transaction.
		other := Must(t, alice.Do(t, "PUT", roomPath(room)+"/send/m.room.note/same", map[string]any{"body": "three"}), 200).Str("event_id")
		second := alice.login(t)
		fromOther := Must(t, s.Do(t, "PUT", roomPath(room)+"/send/m.room.message/same", second, map[string]any{"body": "four"}), 200).Str("event_id")
		if other == first || fromOther == first {
			t.Fatal("different path or device reused the event")
		}
		msgs := chunkBodies(Must(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=20", nil), 200))
		if slices.Contains(msgs, "two") || !slices.Contains(msgs, "one") || !slices.Contains(msgs, "four") {
			t.Fatalf("messages: %v", msgs)
		}
		// transaction_id is echoed only to the sending device.
		ev := Must(t, alice.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(first), nil), 200)
		if u, _ := ev.JSON["unsigned"].(map[string]any); u["transaction_id"] != "same" {
			t.Fatalf("transaction_id missing for the sender's device: %s", ev)
		}
		ev = Must(t, s.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(first), second, nil), 200)
		if u, _ := ev.JSON["unsigned"].(map[string]any); u["transaction_id"] != nil {
			t.Fatalf("transaction_id leaked to another device: %s", ev)
		}
	})
}
