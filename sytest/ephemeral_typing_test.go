package sytest

import (
	"net/url"
	"testing"
)

func typingPath(room, user string) string {
	return roomPath(room) + "/typing/" + url.PathEscape(user)
}

func TestTypingEndpoint(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice, bob, eve := s.Register(t, "alice"), s.Register(t, "bob"), s.Register(t, "eve")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		invited := alice.createRoom(t, map[string]any{"invite": []string{eve.ID}})

		for _, body := range []map[string]any{
			{"typing": true, "timeout": 10000},
			{"typing": true},                        // the default timeout
			{"typing": true, "timeout": 86_400_000}, // capped
			{"typing": true, "timeout": 0},
			{"typing": false},
			{"typing": false, "timeout": 5},
		} {
			if r := bob.Do(t, "PUT", typingPath(room, bob.ID), body); r.Status != 200 || string(r.Body) != "{}" {
				t.Fatalf("%v: %s", body, r)
			}
		}
		for _, c := range []struct {
			name   string
			user   *User
			path   string
			body   any
			status int
			code   string
		}{
			{"another user", bob, typingPath(room, alice.ID), map[string]any{"typing": true}, 403, "M_FORBIDDEN"},
			{"not in the room", eve, typingPath(room, eve.ID), map[string]any{"typing": true}, 403, "M_FORBIDDEN"},
			{"only invited", eve, typingPath(invited, eve.ID), map[string]any{"typing": true}, 403, "M_FORBIDDEN"},
			{"unknown room", bob, typingPath("!nowhere:"+s.Name, bob.ID), map[string]any{"typing": true}, 403, "M_FORBIDDEN"},
			{"bad room ID", bob, typingPath("nowhere", bob.ID), map[string]any{"typing": true}, 400, "M_INVALID_PARAM"},
			{"no typing", bob, typingPath(room, bob.ID), map[string]any{"timeout": 1000}, 400, "M_MISSING_PARAM"},
			{"typing not a boolean", bob, typingPath(room, bob.ID), map[string]any{"typing": "yes"}, 400, "M_BAD_JSON"},
			{"timeout not a number", bob, typingPath(room, bob.ID), map[string]any{"typing": true, "timeout": "soon"}, 400, "M_BAD_JSON"},
			{"negative timeout", bob, typingPath(room, bob.ID), map[string]any{"typing": true, "timeout": -1}, 400, "M_INVALID_PARAM"},
			{"not JSON", bob, typingPath(room, bob.ID), "typing", 400, "M_NOT_JSON"},
		} {
			t.Run(c.name, func(t *testing.T) {
				MustErr(t, c.user.Do(t, "PUT", c.path, c.body), c.status, c.code)
			})
		}
		MustErr(t, bob.Do(t, "POST", typingPath(room, bob.ID), map[string]any{"typing": true}), 405, "M_UNRECOGNIZED")
	})
}
