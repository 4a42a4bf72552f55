package sytest

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSharedSecretRegistration(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		admin := s.RegisterAdmin(t, "admin")
		Must(t, admin.Do(t, "GET", v3+"/account/whoami", nil), 200)

		nonce := Must(t, s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil), 200).Str("nonce")
		name := UniqueName("ssr")
		body := map[string]any{"nonce": nonce, "username": name, "password": "a fine password", "admin": false,
			"displayname": "Shared Secret", "mac": SharedSecretMAC("wrong secret", nonce, name, "a fine password", false)}
		MustErr(t, s.Do(t, "POST", "/_synapse/admin/v1/register", "", body), 403, "M_FORBIDDEN")
		// The nonce was consumed by the failed attempt.
		body["mac"] = SharedSecretMAC(SharedSecret, nonce, name, "a fine password", false)
		MustErr(t, s.Do(t, "POST", "/_synapse/admin/v1/register", "", body), 400, "M_UNKNOWN")
		nonce = Must(t, s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil), 200).Str("nonce")
		body["nonce"] = nonce
		// A MAC computed for admin=true does not register a normal user.
		body["mac"] = SharedSecretMAC(SharedSecret, nonce, name, "a fine password", true)
		MustErr(t, s.Do(t, "POST", "/_synapse/admin/v1/register", "", body), 403, "M_FORBIDDEN")
		nonce = Must(t, s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil), 200).Str("nonce")
		body["nonce"] = nonce
		body["mac"] = SharedSecretMAC(SharedSecret, nonce, name, "a fine password", false)
		r := Must(t, s.Do(t, "POST", "/_synapse/admin/v1/register", "", body), 200)
		if r.Str("user_id") != "@"+name+":localhost" || r.Str("access_token") == "" || r.Str("home_server") != "localhost" {
			t.Fatalf("shared-secret registration: %s", r)
		}
		p := Must(t, s.Do(t, "GET", v3+"/profile/"+r.Str("user_id")+"/displayname", "", nil), 200)
		if p.Str("displayname") != "Shared Secret" {
			t.Fatalf("displayname: %s", p)
		}
		MustErr(t, s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": "x"}), 400, "M_MISSING_PARAM")
	})
}

func TestRegistrationTokens(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := StartServer(t, Options{Dialect: dialect, Env: map[string]string{"PARLEY_REGISTRATION": "token"}})
		admin := s.RegisterAdmin(t, "tokadmin")
		plain := s.RegisterAdmin(t, "plain")
		_ = plain
		base := "/_synapse/admin/v1/registration_tokens"

		// Non-admins are refused.
		nonAdminNonce := Must(t, s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil), 200).Str("nonce")
		name := UniqueName("nonadmin")
		na := Must(t, s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": nonAdminNonce, "username": name,
			"password": "a fine password", "mac": SharedSecretMAC(SharedSecret, nonAdminNonce, name, "a fine password", false)}), 200)
		MustErr(t, s.Do(t, "GET", base, na.Str("access_token"), nil), 403, "M_FORBIDDEN")
		MustErr(t, s.Do(t, "GET", base, "", nil), 401, "M_MISSING_TOKEN")

		tok := Must(t, admin.Do(t, "POST", base+"/new", map[string]any{"token": "abcd", "uses_allowed": 1}), 200)
		if tok.Str("token") != "abcd" || tok.JSON["uses_allowed"].(float64) != 1 || tok.JSON["pending"].(float64) != 0 {
			t.Fatalf("new token: %s", tok)
		}
		gen := Must(t, admin.Do(t, "POST", base+"/new", map[string]any{"length": 24}), 200)
		if len(gen.Str("token")) != 24 {
			t.Fatalf("generated token: %s", gen)
		}
		MustErr(t, admin.Do(t, "POST", base+"/new", map[string]any{"token": "abcd"}), 400, "M_INVALID_PARAM")
		MustErr(t, admin.Do(t, "POST", base+"/new", map[string]any{"token": "bad token!"}), 400, "M_INVALID_PARAM")
		MustErr(t, admin.Do(t, "POST", base+"/new", map[string]any{"uses_allowed": -1}), 400, "M_INVALID_PARAM")
		MustErr(t, admin.Do(t, "POST", base+"/new", map[string]any{"expiry_time": time.Now().Add(-time.Hour).UnixMilli()}), 400, "M_INVALID_PARAM")
		MustErr(t, admin.Do(t, "POST", base+"/new", map[string]any{"uses_allowed": "lots"}), 400, "M_INVALID_PARAM")

		list := Must(t, admin.Do(t, "GET", base, nil), 200)
		if l, _ := list.JSON["registration_tokens"].([]any); len(l) != 2 {
			t.Fatalf("list: %s", list)
		}
		Must(t, admin.Do(t, "GET", base+"/abcd", nil), 200)
		MustErr(t, admin.Do(t, "GET", base+"/nope", nil), 404, "M_NOT_FOUND")

		// Validity endpoint and registration with the token.
		v := Must(t, s.Do(t, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abcd", "", nil), 200)
		if v.JSON["valid"] != true {
			t.Fatalf("validity: %s", v)
		}
		body := map[string]any{"username": UniqueName("withtoken"), "password": "a fine password"}
		ch := Must(t, s.Do(t, "POST", v3+"/register", "", body), 401)
		if !strings.Contains(string(ch.Body), "m.login.registration_token") {
			t.Fatalf("token flow not offered: %s", ch)
		}
		// Dummy auth is not a way through on a token server.
		body["auth"] = map[string]any{"type": "m.login.dummy", "session": ch.Str("session")}
		Must(t, s.Do(t, "POST", v3+"/register", "", body), 401)
		body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "wrong", "session": ch.Str("session")}
		bad := Must(t, s.Do(t, "POST", v3+"/register", "", body), 401)
		if bad.Errcode() != "M_FORBIDDEN" {
			t.Fatalf("wrong token: %s", bad)
		}
		body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "abcd", "session": ch.Str("session")}
		Must(t, s.Do(t, "POST", v3+"/register", "", body), 200)
		used := Must(t, admin.Do(t, "GET", base+"/abcd", nil), 200)
		if used.JSON["completed"].(float64) != 1 || used.JSON["pending"].(float64) != 0 {
			t.Fatalf("use not counted: %s", used)
		}
		// uses_allowed 1: exhausted now.
		v = Must(t, s.Do(t, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abcd", "", nil), 200)
		if v.JSON["valid"] != false {
			t.Fatalf("exhausted token still valid: %s", v)
		}
		ch2 := Must(t, s.Do(t, "POST", v3+"/register", "", map[string]any{"username": UniqueName("late"), "password": "a fine password",
			"auth": map[string]any{"type": "m.login.registration_token", "token": "abcd"}}), 401)
		if ch2.Errcode() != "M_FORBIDDEN" {
			t.Fatalf("exhausted token accepted: %s", ch2)
		}
		if l := Must(t, admin.Do(t, "GET", base+"?valid=false", nil), 200); !strings.Contains(string(l.Body), "abcd") {
			t.Fatalf("valid=false filter: %s", l)
		}
		up := Must(t, admin.Do(t, "PUT", base+"/abcd", map[string]any{"uses_allowed": nil}), 200)
		if up.JSON["uses_allowed"] != nil {
			t.Fatalf("update: %s", up)
		}
		MustErr(t, admin.Do(t, "PUT", base+"/nope", map[string]any{"uses_allowed": 3}), 404, "M_NOT_FOUND")
		Must(t, admin.Do(t, "DELETE", base+"/abcd", nil), 200)
		MustErr(t, admin.Do(t, "DELETE", base+"/abcd", nil), 404, "M_NOT_FOUND")
		_ = http.MethodGet
	})
}

func TestClosedRegistration(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := StartServer(t, Options{Dialect: dialect, Env: map[string]string{"PARLEY_REGISTRATION": "closed"}})
		MustErr(t, s.Do(t, "POST", v3+"/register", "", map[string]any{"username": "x", "password": "a fine password",
			"auth": map[string]any{"type": "m.login.dummy"}}), 403, "M_FORBIDDEN")
		// Admins can still create accounts.
		s.RegisterAdmin(t, "closedadmin")
	})
}

func TestGuests(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := StartServer(t, Options{Dialect: dialect, Env: map[string]string{"PARLEY_ALLOW_GUESTS": "on"}})
		g := Must(t, s.Do(t, "POST", v3+"/register?kind=guest", "", map[string]any{}), 200)
		tok := g.Str("access_token")
		who := Must(t, s.Do(t, "GET", v3+"/account/whoami", tok, nil), 200)
		if who.JSON["is_guest"] != true {
			t.Fatalf("guest whoami: %s", who)
		}
		MustErr(t, s.Do(t, "POST", v3+"/account/deactivate", tok, map[string]any{}), 403, "M_GUEST_ACCESS_FORBIDDEN")
		MustErr(t, s.Do(t, "POST", "/_matrix/client/v1/login/get_token", tok, map[string]any{}), 403, "M_GUEST_ACCESS_FORBIDDEN")
	})
}
