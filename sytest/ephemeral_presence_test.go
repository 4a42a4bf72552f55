package sytest

import (
	"net/url"
	"strings"
	"testing"
)

func presencePath(user string) string { return v3 + "/presence/" + url.PathEscape(user) + "/status" }

func TestPresenceEndpoints(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice, bob, eve := s.Register(t, "alice"), s.Register(t, "bob"), s.Register(t, "eve")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)

		Must(t, alice.Do(t, "PUT", presencePath(alice.ID), map[string]any{"presence": "online", "status_msg": "Drinking tea"}), 200)
		r := Must(t, bob.Do(t, "GET", presencePath(alice.ID), nil), 200)
		if r.Str("presence") != "online" || r.Str("status_msg") != "Drinking tea" || r.JSON["currently_active"] != true {
			t.Fatalf("alice online: %s", r)
		}
		if ago, ok := r.JSON["last_active_ago"].(float64); !ok || ago < 0 || ago > 60_000 {
			t.Fatalf("last_active_ago: %s", r)
		}
		// A state the user chose stays, whatever else they do.
		Must(t, alice.Do(t, "PUT", presencePath(alice.ID), map[string]any{"presence": "unavailable"}), 200)
		alice.send(t, room, "still here")
		r = Must(t, alice.Do(t, "GET", presencePath(alice.ID), nil), 200)
		if r.Str("presence") != "unavailable" || r.JSON["status_msg"] != nil || r.JSON["currently_active"] != nil {
			t.Fatalf("alice unavailable without a message: %s", r)
		}
		Must(t, alice.Do(t, "PUT", presencePath(alice.ID), map[string]any{"presence": "offline", "status_msg": nil}), 200)
		if r := Must(t, bob.Do(t, "GET", presencePath(alice.ID), nil), 200); r.Str("presence") != "offline" {
			t.Fatalf("alice offline: %s", r)
		}
		// Requests make a user online.
		Must(t, bob.Do(t, "GET", v3+"/account/whoami", nil), 200)
		if r := Must(t, alice.Do(t, "GET", presencePath(bob.ID), nil), 200); r.Str("presence") != "online" {
			t.Fatalf("bob after a request: %s", r)
		}
		Must(t, alice.Do(t, "PUT", presencePath(alice.ID), map[string]any{"presence": "online", "status_msg": strings.Repeat("a", 1024)}), 200)

		for _, c := range []struct {
			name   string
			user   *User
			method string
			target string
			body   any
			status int
			code   string
		}{
			{"set another user's", bob, "PUT", alice.ID, map[string]any{"presence": "online"}, 403, "M_FORBIDDEN"},
			{"unknown state", alice, "PUT", alice.ID, map[string]any{"presence": "away"}, 400, "M_INVALID_PARAM"},
			{"no state", alice, "PUT", alice.ID, map[string]any{"status_msg": "hi"}, 400, "M_MISSING_PARAM"},
			{"state not a string", alice, "PUT", alice.ID, map[string]any{"presence": true}, 400, "M_BAD_JSON"},
			{"status_msg not a string", alice, "PUT", alice.ID, map[string]any{"presence": "online", "status_msg": 3}, 400, "M_BAD_JSON"},
			{"status_msg too long", alice, "PUT", alice.ID, map[string]any{"presence": "online", "status_msg": strings.Repeat("a", 1025)}, 400, "M_INVALID_PARAM"},
			{"not JSON", alice, "PUT", alice.ID, "online", 400, "M_NOT_JSON"},
			{"no shared room", eve, "GET", alice.ID, nil, 403, "M_FORBIDDEN"},
			{"remote user, no shared room", eve, "GET", "@someone:elsewhere.example", nil, 403, "M_FORBIDDEN"},
			{"unknown user", alice, "GET", "@nobody-" + randHex(4) + ":" + s.Name, nil, 404, "M_NOT_FOUND"},
			{"bad user ID", alice, "GET", "alice", nil, 400, "M_INVALID_PARAM"},
		} {
			t.Run(c.name, func(t *testing.T) {
				MustErr(t, c.user.Do(t, c.method, presencePath(c.target), c.body), c.status, c.code)
			})
		}
		if r := Must(t, eve.Do(t, "GET", presencePath(eve.ID), nil), 200); r.Str("presence") != "online" {
			t.Fatalf("eve's own: %s", r)
		}
		MustErr(t, s.Do(t, "GET", presencePath(alice.ID), "", nil), 401, "M_MISSING_TOKEN")
	})
}

func TestPresenceDisabled(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := StartServer(t, Options{Dialect: dialect, Env: map[string]string{"PARLEY_PRESENCE": "off"}})
		alice, bob := s.Register(t, "alice"), s.Register(t, "bob")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		Must(t, alice.Do(t, "PUT", presencePath(alice.ID), map[string]any{"presence": "online", "status_msg": "hi"}), 200)
		for _, u := range []*User{alice, bob} {
			r := Must(t, u.Do(t, "GET", presencePath(alice.ID), nil), 200)
			if r.Str("presence") != "offline" || len(r.JSON) != 1 {
				t.Fatalf("presence off: %s", r)
			}
		}
		// Input is still checked.
		MustErr(t, alice.Do(t, "PUT", presencePath(alice.ID), map[string]any{"presence": "away"}), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "PUT", presencePath(bob.ID), map[string]any{"presence": "online"}), 403, "M_FORBIDDEN")
		if hasSync(t, bob) {
			if r := bob.sync(t, "", url.Values{"timeout": {"0"}}); len(r.Presence.Events) != 0 {
				t.Fatalf("presence in sync while off: %+v", r.Presence)
			}
		}
	})
}
