package sytest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

func TestBadInput(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "bad")
		MustErr(t, s.Do(t, "POST", v3+"/login", "", "{not json"), 400, "M_NOT_JSON")
		MustErr(t, s.Do(t, "POST", v3+"/login", "", `["an", "array"]`), 400, "M_BAD_JSON")
		MustErr(t, s.Do(t, "POST", v3+"/login", "", map[string]any{"type": 12}), 400, "M_BAD_JSON")
		MustErr(t, s.Do(t, "POST", v3+"/register", "", map[string]any{"username": []int{1}}), 400, "M_BAD_JSON")
		// Bodies over the limit (1 MiB by default).
		big := `{"type":"m.login.password","password":"` + strings.Repeat("a", 2<<20) + `"}`
		MustErr(t, s.Do(t, "POST", v3+"/login", "", big), 413, "M_TOO_LARGE")
		// Tokens.
		MustErr(t, s.Do(t, "GET", v3+"/account/whoami", "", nil), 401, "M_MISSING_TOKEN")
		r := MustErr(t, s.Do(t, "GET", v3+"/account/whoami", "pat_not_a_real_token", nil), 401, "M_UNKNOWN_TOKEN")
		if r.JSON["soft_logout"] == true {
			t.Fatal("an unknown token is not a soft logout")
		}
		req, _ := http.NewRequest("GET", s.URL+v3+"/account/whoami", nil)
		req.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("Basic auth: %d", resp.StatusCode)
		}
		// The deprecated query parameter still works.
		Must(t, s.Do(t, "GET", v3+"/account/whoami?access_token="+u.Token, "", nil), 200)
		// Unknown endpoints and methods.
		MustErr(t, s.Do(t, "GET", v3+"/no/such/endpoint", "", nil), 404, "M_UNRECOGNIZED")
		MustErr(t, s.Do(t, "GET", "/_matrix/client/v3/refresh", "", nil), 405, "M_UNRECOGNIZED")
		MustErr(t, s.Do(t, "DELETE", v3+"/account/whoami", u.Token, nil), 405, "M_UNRECOGNIZED")
		// The r0 prefix serves the same endpoints.
		Must(t, s.Do(t, "GET", "/_matrix/client/r0/account/whoami", u.Token, nil), 200)
		// 5xx-free: every answer above was a Matrix error; request IDs are sent.
		if r.Header.Get("X-Request-Id") == "" {
			t.Fatal("no X-Request-Id header")
		}
	})
}

func TestRateLimits(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := StartServer(t, Options{Dialect: dialect, Env: map[string]string{"PARLEY_RATE_LIMITS": "on"}})
		// Messages per user: a burst of 50, then 10 a second; the WebSocket
		// path shares the budget (websocket_test.go).
		u := s.Register(t, "rl")
		room := u.createRoom(t, map[string]any{})
		var sendLimited *Response
		for i := 0; i < 80 && sendLimited == nil; i++ {
			r := u.Do(t, "PUT", v3+"/rooms/"+room+"/send/m.room.message/rl"+strconv.Itoa(i), map[string]any{"msgtype": "m.text", "body": "x"})
			if r.Status == http.StatusTooManyRequests {
				sendLimited = r
				break
			}
			Must(t, r, 200)
		}
		if sendLimited == nil {
			t.Fatal("80 messages in a row were never limited")
		}
		MustErr(t, sendLimited, 429, "M_LIMIT_EXCEEDED")
		var limited *Response
		for i := 0; i < 10; i++ {
			r := s.Do(t, "POST", v3+"/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "nobody"}, "password": "wrong password",
			})
			if r.Status == http.StatusTooManyRequests {
				limited = r
				break
			}
			MustErr(t, r, 403, "M_FORBIDDEN")
		}
		if limited == nil {
			t.Fatal("ten failed logins in a row were never limited")
		}
		MustErr(t, limited, 429, "M_LIMIT_EXCEEDED")
		if ms, ok := limited.JSON["retry_after_ms"].(float64); !ok || ms <= 0 {
			t.Fatalf("retry_after_ms: %s", limited)
		}
		if limited.Header.Get("Retry-After") == "" {
			t.Fatal("no Retry-After header")
		}
		// Registration per IP is limited too.
		var regLimited bool
		for i := 0; i < 10 && !regLimited; i++ {
			r := s.Do(t, "GET", v3+"/register/available?username="+UniqueName("rl"), "", nil)
			regLimited = r.Status == http.StatusTooManyRequests
		}
		if !regLimited {
			t.Fatal("registration availability checks were never limited")
		}
	})
}

// TestNonCanonicalContent sends content canonical JSON cannot carry: each
// is refused with M_BAD_JSON, on every path that builds an event, and the
// room goes on working.
func TestNonCanonicalContent(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "canon")
		room := u.createRoom(t, map[string]any{})
		bodies := []string{
			`{"n":12345678901234567890}`,
			`{"n":9007199254740992}`,
			`{"n":1.5}`,
			`{"n":1e3}`,
			`{"s":"\ud800"}`,
			`{"a":1,"a":2}`,
		}
		for i, b := range bodies {
			MustErr(t, u.Do(t, "PUT", v3+"/rooms/"+room+"/send/m.test/canon"+strconv.Itoa(i), json.RawMessage(b)), 400, "M_BAD_JSON")
			MustErr(t, u.Do(t, "PUT", v3+"/rooms/"+room+"/state/m.test/k"+strconv.Itoa(i), json.RawMessage(b)), 400, "M_BAD_JSON")
		}
		MustErr(t, u.Do(t, "POST", v3+"/createRoom", map[string]any{
			"initial_state": []any{map[string]any{"type": "m.test", "state_key": "", "content": json.RawMessage(`{"f":0.25}`)}},
		}), 400, "M_BAD_JSON")
		MustErr(t, u.Do(t, "POST", v3+"/createRoom", map[string]any{"creation_content": json.RawMessage(`{"f":0.25}`)}), 400, "M_BAD_JSON")
		Must(t, u.Do(t, "PUT", v3+"/rooms/"+room+"/send/m.test/canon-ok", json.RawMessage(`{"n":9007199254740991}`)), 200)
	})
}

// TestEncodedPathVariables sends path variables holding characters that
// must be escaped — '/', '%', '#', spaces, non-ASCII — and reads them back
// intact, so that routing never splits or double-decodes them.
func TestEncodedPathVariables(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "paths")
		room := u.createRoom(t, map[string]any{})
		for i, key := range []string{"a/b", "100%", "#tag", "with space", "café/ü", "%2F"} {
			want := "v" + strconv.Itoa(i)
			u.putState(t, room, "m.test", key, map[string]any{"v": want})
			r := Must(t, u.Do(t, "GET", roomPath(room)+"/state/m.test/"+url.PathEscape(key), nil), 200)
			if r.Str("v") != want {
				t.Fatalf("state key %q read back %s", key, r)
			}
		}
	})
}
