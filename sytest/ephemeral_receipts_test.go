package sytest

import (
	"net/url"
	"testing"
)

// receiptPath is the receipt endpoint of a room.
func receiptPath(room, typ, event string) string {
	return roomPath(room) + "/receipt/" + url.PathEscape(typ) + "/" + url.PathEscape(event)
}

// fullyRead returns the user's m.fully_read marker in a room ("" if none).
func (u *User) fullyRead(t *testing.T, room string) string {
	t.Helper()
	r := u.Do(t, "GET", v3+"/user/"+url.PathEscape(u.ID)+"/rooms/"+url.PathEscape(room)+"/account_data/m.fully_read", nil)
	if r.Status == 404 {
		return ""
	}
	return Must(t, r, 200).Str("event_id")
}

func TestReceiptEndpoints(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice, bob, eve := s.Register(t, "alice"), s.Register(t, "bob"), s.Register(t, "eve")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		m1, m2 := alice.send(t, room, "one"), alice.send(t, room, "two")

		for _, typ := range []string{"m.read", "m.read.private", "m.fully_read", "m.delivery", "org.matrix.msc4089.delivery"} {
			if r := bob.Do(t, "POST", receiptPath(room, typ, m2), map[string]any{}); r.Status != 200 || string(r.Body) != "{}" {
				t.Fatalf("%s: %s", typ, r)
			}
		}
		// A receipt for an older event, a duplicate delivery receipt and
		// an empty body are fine.
		Must(t, bob.Do(t, "POST", receiptPath(room, "m.read", m1), map[string]any{}), 200)
		Must(t, bob.Do(t, "POST", receiptPath(room, "m.delivery", m2), nil), 200)
		Must(t, bob.Do(t, "POST", receiptPath(room, "m.read", m2), map[string]any{"thread_id": "main"}), 200)
		Must(t, bob.Do(t, "POST", receiptPath(room, "m.read", m2), map[string]any{"thread_id": nil}), 200)
		if got := bob.fullyRead(t, room); got != m2 {
			t.Fatalf("m.fully_read through /receipt: %q, want %s", got, m2)
		}
		Must(t, bob.Do(t, "POST", receiptPath(room, "m.fully_read", m1), nil), 200)
		if got := bob.fullyRead(t, room); got != m2 {
			t.Fatalf("m.fully_read moved back to %q", got)
		}

		for _, c := range []struct {
			name   string
			user   *User
			path   string
			body   any
			status int
			code   string
		}{
			{"unknown receipt type", bob, receiptPath(room, "m.seen", m1), nil, 400, "M_INVALID_PARAM"},
			{"bad event ID", bob, receiptPath(room, "m.read", "not-an-event"), nil, 400, "M_INVALID_PARAM"},
			{"bad room ID", bob, receiptPath("room", "m.read", m1), nil, 400, "M_INVALID_PARAM"},
			{"unknown event", bob, receiptPath(room, "m.read", "$nope"), nil, 404, "M_NOT_FOUND"},
			{"not in the room", eve, receiptPath(room, "m.read", m1), nil, 403, "M_FORBIDDEN"},
			{"unknown room", eve, receiptPath("!nowhere:"+s.Name, "m.read", m1), nil, 403, "M_FORBIDDEN"},
			{"empty thread_id", bob, receiptPath(room, "m.read", m1), map[string]any{"thread_id": ""}, 400, "M_INVALID_PARAM"},
			{"thread_id not a string", bob, receiptPath(room, "m.read", m1), map[string]any{"thread_id": 5}, 400, "M_INVALID_PARAM"},
			{"thread_id not an event ID", bob, receiptPath(room, "m.read", m1), map[string]any{"thread_id": "thread"}, 400, "M_INVALID_PARAM"},
			{"thread_id on m.fully_read", bob, receiptPath(room, "m.fully_read", m1), map[string]any{"thread_id": "main"}, 400, "M_INVALID_PARAM"},
			{"thread_id on m.delivery", bob, receiptPath(room, "m.delivery", m1), map[string]any{"thread_id": "main"}, 400, "M_INVALID_PARAM"},
			{"main-timeline event in a thread", bob, receiptPath(room, "m.read", m1), map[string]any{"thread_id": m2}, 400, "M_INVALID_PARAM"},
			{"not JSON", bob, receiptPath(room, "m.read", m1), "{", 400, "M_NOT_JSON"},
			{"not an object", bob, receiptPath(room, "m.read", m1), "[]", 400, "M_BAD_JSON"},
			{"no token", nil, receiptPath(room, "m.read", m1), nil, 401, "M_MISSING_TOKEN"},
		} {
			t.Run(c.name, func(t *testing.T) {
				token := ""
				if c.user != nil {
					token = c.user.Token
				}
				MustErr(t, s.Do(t, "POST", c.path, token, c.body), c.status, c.code)
			})
		}
		MustErr(t, bob.Do(t, "PUT", receiptPath(room, "m.read", m1), nil), 405, "M_UNRECOGNIZED")

		v := Must(t, s.Do(t, "GET", "/_matrix/client/versions", "", nil), 200)
		if f, _ := v.JSON["unstable_features"].(map[string]any); f["org.matrix.msc4089"] != true {
			t.Fatalf("org.matrix.msc4089 not advertised: %s", v)
		}
	})
}

func TestReceiptThreadsAndVisibility(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice, bob := s.Register(t, "alice"), s.Register(t, "bob")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		alice.putState(t, room, "m.room.history_visibility", "", map[string]any{"history_visibility": "joined"})
		root := alice.send(t, room, "root")
		reply := alice.sendEvent(t, room, "m.room.message", map[string]any{
			"msgtype": "m.text", "body": "in the thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root},
		})
		reaction := alice.sendEvent(t, room, "m.reaction", map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": reply, "key": "👍"},
		})
		bob.join(t, room)
		after := alice.send(t, room, "after bob joined")

		// Sent before bob joined, with history visible to joined members
		// only: bob cannot see it, so cannot acknowledge it.
		MustErr(t, bob.Do(t, "POST", receiptPath(room, "m.read", root), nil), 404, "M_NOT_FOUND")
		Must(t, bob.Do(t, "POST", receiptPath(room, "m.read", after), map[string]any{"thread_id": "main"}), 200)

		Must(t, alice.Do(t, "POST", receiptPath(room, "m.read", reply), map[string]any{"thread_id": root}), 200)
		Must(t, alice.Do(t, "POST", receiptPath(room, "m.read", reaction), map[string]any{"thread_id": root}), 200)
		Must(t, alice.Do(t, "POST", receiptPath(room, "m.read.private", root), map[string]any{"thread_id": root}), 200)
		Must(t, alice.Do(t, "POST", receiptPath(room, "m.read", root), map[string]any{"thread_id": "main"}), 200)
		Must(t, alice.Do(t, "POST", receiptPath(room, "m.read", reply), nil), 200)
		MustErr(t, alice.Do(t, "POST", receiptPath(room, "m.read", reply), map[string]any{"thread_id": "main"}), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "POST", receiptPath(room, "m.read", reaction), map[string]any{"thread_id": after}), 400, "M_INVALID_PARAM")
	})
}

func TestReadMarkers(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice, bob, eve := s.Register(t, "alice"), s.Register(t, "bob"), s.Register(t, "eve")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		m1, m2 := alice.send(t, room, "one"), alice.send(t, room, "two")
		path := roomPath(room) + "/read_markers"

		Must(t, bob.Do(t, "POST", path, map[string]any{"m.fully_read": m1, "m.read": m1, "m.read.private": m2}), 200)
		if got := bob.fullyRead(t, room); got != m1 {
			t.Fatalf("m.fully_read %q, want %s", got, m1)
		}
		Must(t, bob.Do(t, "POST", path, map[string]any{"m.fully_read": m2}), 200)
		Must(t, bob.Do(t, "POST", path, map[string]any{"m.read": m2}), 200)
		Must(t, bob.Do(t, "POST", path, map[string]any{}), 200)
		if got := bob.fullyRead(t, room); got != m2 {
			t.Fatalf("m.fully_read %q, want %s", got, m2)
		}
		// Clients may not write the marker as account data.
		r := bob.Do(t, "PUT", v3+"/user/"+url.PathEscape(bob.ID)+"/rooms/"+url.PathEscape(room)+"/account_data/m.fully_read", map[string]any{"event_id": m1})
		if r.Status/100 != 4 {
			t.Fatalf("m.fully_read written directly: %s", r)
		}

		for _, c := range []struct {
			name   string
			user   *User
			room   string
			body   any
			status int
			code   string
		}{
			{"unknown event", bob, room, map[string]any{"m.fully_read": "$nope"}, 404, "M_NOT_FOUND"},
			{"bad event ID", bob, room, map[string]any{"m.read": "nope"}, 400, "M_INVALID_PARAM"},
			{"empty event ID", bob, room, map[string]any{"m.read.private": ""}, 400, "M_INVALID_PARAM"},
			{"not a string", bob, room, map[string]any{"m.fully_read": 1}, 400, "M_BAD_JSON"},
			{"not JSON", bob, room, "nope", 400, "M_NOT_JSON"},
			{"not in the room", eve, room, map[string]any{"m.fully_read": m1}, 403, "M_FORBIDDEN"},
			{"bad room ID", bob, "room", map[string]any{"m.fully_read": m1}, 400, "M_INVALID_PARAM"},
		} {
			t.Run(c.name, func(t *testing.T) {
				MustErr(t, c.user.Do(t, "POST", roomPath(c.room)+"/read_markers", c.body), c.status, c.code)
			})
		}
		// A refused request changes nothing, even its valid parts.
		m3 := alice.send(t, room, "three")
		MustErr(t, bob.Do(t, "POST", path, map[string]any{"m.fully_read": m3, "m.read": "$nope"}), 404, "M_NOT_FOUND")
		if got := bob.fullyRead(t, room); got != m2 {
			t.Fatalf("m.fully_read %q after a refused request", got)
		}
	})
}
