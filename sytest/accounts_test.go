package sytest

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

const (
	v3 = "/_matrix/client/v3"
)

func TestDiscovery(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		r := Must(t, s.Do(t, "GET", "/_matrix/client/versions", "", nil), 200)
		vs, _ := r.JSON["versions"].([]any)
		if len(vs) == 0 {
			t.Fatalf("no versions advertised: %s", r)
		}
		if _, ok := r.JSON["unstable_features"].(map[string]any); !ok {
			t.Fatalf("unstable_features missing: %s", r)
		}
		r = Must(t, s.Do(t, "GET", "/.well-known/matrix/client", "", nil), 200)
		hs, _ := r.JSON["m.homeserver"].(map[string]any)
		if hs == nil || !strings.HasPrefix(hs["base_url"].(string), "http") {
			t.Fatalf("bad well-known: %s", r)
		}
		// No delegation configured on test servers.
		MustErr(t, s.Do(t, "GET", "/.well-known/matrix/server", "", nil), 404, "M_NOT_FOUND")
		// CORS: OPTIONS answers without running the endpoint.
		r = Must(t, s.Do(t, "OPTIONS", v3+"/account/whoami", "", nil), 200)
		if r.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("CORS headers missing: %v", r.Header)
		}
		r = s.Do(t, "GET", "/_matrix/client/versions", "", nil)
		if r.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatal("CORS header missing on GET")
		}
		Must(t, s.Do(t, "GET", "/health", "", nil), 200)
		Must(t, s.Do(t, "GET", "/ready", "", nil), 200)
		m := Must(t, s.Do(t, "GET", "/metrics", "", nil), 200)
		for _, name := range []string{"parley_http_requests_total", "parley_http_request_duration_seconds", "parley_db_connections_open", "parley_job_queue_depth"} {
			if !strings.Contains(string(m.Body), name) {
				t.Errorf("metric %s missing", name)
			}
		}
	})
}

func TestRegistration(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		t.Run("user-interactive flow", func(t *testing.T) {
			name := UniqueName("uia")
			body := map[string]any{"username": name, "password": "correct horse battery"}
			r := Must(t, s.Do(t, "POST", v3+"/register", "", body), 401)
			flows, _ := r.JSON["flows"].([]any)
			session := r.Str("session")
			if len(flows) == 0 || session == "" || r.Errcode() != "" {
				t.Fatalf("bad challenge: %s", r)
			}
			body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
			body["initial_device_display_name"] = "Test Phone"
			r = Must(t, s.Do(t, "POST", v3+"/register", "", body), 200)
			if r.Str("user_id") != "@"+name+":localhost" || r.Str("access_token") == "" || r.Str("device_id") == "" {
				t.Fatalf("bad registration answer: %s", r)
			}
			if _, ok := r.JSON["refresh_token"]; ok {
				t.Fatal("refresh token issued although not asked for")
			}
			who := Must(t, s.Do(t, "GET", v3+"/account/whoami", r.Str("access_token"), nil), 200)
			if who.Str("user_id") != r.Str("user_id") || who.Str("device_id") != r.Str("device_id") || who.JSON["is_guest"] != false {
				t.Fatalf("whoami: %s", who)
			}
			dev := Must(t, s.Do(t, "GET", v3+"/devices/"+r.Str("device_id"), r.Str("access_token"), nil), 200)
			if dev.Str("display_name") != "Test Phone" {
				t.Fatalf("device name not kept: %s", dev)
			}
			// The display name starts as the localpart.
			p := Must(t, s.Do(t, "GET", v3+"/profile/"+r.Str("user_id")+"/displayname", "", nil), 200)
			if p.Str("displayname") != name {
				t.Fatalf("initial displayname: %s", p)
			}
		})
		t.Run("inhibit_login and refresh_token", func(t *testing.T) {
			name := UniqueName("inhibit")
			r := Must(t, s.Do(t, "POST", v3+"/register", "", map[string]any{
				"username": name, "password": "correct horse battery", "inhibit_login": true,
				"auth": map[string]any{"type": "m.login.dummy"},
			}), 200)
			if r.Str("user_id") == "" || r.Str("access_token") != "" || r.Str("device_id") != "" {
				t.Fatalf("inhibit_login returned a session: %s", r)
			}
			r = Must(t, s.Do(t, "POST", v3+"/register", "", map[string]any{
				"username": UniqueName("refresh"), "password": "correct horse battery", "refresh_token": true,
				"auth": map[string]any{"type": "m.login.dummy"},
			}), 200)
			if r.Str("refresh_token") == "" || r.JSON["expires_in_ms"] == nil {
				t.Fatalf("no refresh token: %s", r)
			}
		})
		t.Run("availability and bad names", func(t *testing.T) {
			u := s.Register(t, "taken")
			local := strings.TrimPrefix(strings.Split(u.ID, ":")[0], "@")
			MustErr(t, s.Do(t, "GET", v3+"/register/available?username="+local, "", nil), 400, "M_USER_IN_USE")
			r := Must(t, s.Do(t, "GET", v3+"/register/available?username="+UniqueName("free"), "", nil), 200)
			if r.JSON["available"] != true {
				t.Fatalf("available: %s", r)
			}
			for _, bad := range []string{"UPPER", "sp%20ace", "12345", "emoji%F0%9F%98%80", strings.Repeat("a", 300)} {
				MustErr(t, s.Do(t, "GET", v3+"/register/available?username="+bad, "", nil), 400, "M_INVALID_USERNAME")
			}
			MustErr(t, s.Do(t, "GET", v3+"/register/available", "", nil), 400, "M_MISSING_PARAM")
			MustErr(t, s.Do(t, "POST", v3+"/register", "", map[string]any{
				"username": local, "password": "correct horse battery", "auth": map[string]any{"type": "m.login.dummy"},
			}), 400, "M_USER_IN_USE")
			MustErr(t, s.Do(t, "POST", v3+"/register", "", map[string]any{
				"username": "Bad Name", "password": "correct horse battery", "auth": map[string]any{"type": "m.login.dummy"},
			}), 400, "M_INVALID_USERNAME")
			MustErr(t, s.Do(t, "POST", v3+"/register", "", map[string]any{
				"username": UniqueName("weak"), "password": "short", "auth": map[string]any{"type": "m.login.dummy"},
			}), 400, "M_WEAK_PASSWORD")
			MustErr(t, s.Do(t, "POST", v3+"/register", "", map[string]any{
				"username": UniqueName("nopw"), "auth": map[string]any{"type": "m.login.dummy"},
			}), 400, "M_MISSING_PARAM")
		})
		t.Run("guests refused", func(t *testing.T) {
			MustErr(t, s.Do(t, "POST", v3+"/register?kind=guest", "", map[string]any{}), 403, "M_GUEST_ACCESS_FORBIDDEN")
		})
		t.Run("unknown session", func(t *testing.T) {
			MustErr(t, s.Do(t, "POST", v3+"/register", "", map[string]any{
				"username": UniqueName("sess"), "password": "correct horse battery",
				"auth": map[string]any{"type": "m.login.dummy", "session": "nonsense"},
			}), 400, "M_UNKNOWN")
		})
	})
}

func TestLoginLogout(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "login")
		local := strings.TrimPrefix(strings.Split(u.ID, ":")[0], "@")
		r := Must(t, s.Do(t, "GET", v3+"/login", "", nil), 200)
		if !strings.Contains(string(r.Body), "m.login.password") || !strings.Contains(string(r.Body), "m.login.token") {
			t.Fatalf("login flows: %s", r)
		}
		t.Run("identifier forms", func(t *testing.T) {
			for _, body := range []map[string]any{
				{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": local}, "password": u.Password},
				{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.ID}, "password": u.Password},
				{"type": "m.login.password", "user": local, "password": u.Password},
			} {
				r := Must(t, s.Do(t, "POST", v3+"/login", "", body), 200)
				if r.Str("user_id") != u.ID || r.Str("access_token") == "" || r.Str("device_id") == "" {
					t.Fatalf("login: %s", r)
				}
				wk, _ := r.JSON["well_known"].(map[string]any)
				if wk == nil {
					t.Fatalf("no well_known in login answer: %s", r)
				}
			}
		})
		t.Run("mautrix client", func(t *testing.T) {
			c, err := mautrix.NewClient(s.URL, "", "")
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Login(context.Background(), &mautrix.ReqLogin{
				Type:       mautrix.AuthTypePassword,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: local},
				Password:   u.Password, StoreCredentials: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			who, err := c.Whoami(context.Background())
			if err != nil || who.UserID != id.UserID(u.ID) || who.DeviceID != resp.DeviceID {
				t.Fatalf("whoami: %+v %v", who, err)
			}
		})
		t.Run("wrong password and unknown user", func(t *testing.T) {
			MustErr(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": local}, "password": "wrong password",
			}), 403, "M_FORBIDDEN")
			MustErr(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": UniqueName("nobody")}, "password": "whatever1",
			}), 403, "M_FORBIDDEN")
			MustErr(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "@x:elsewhere.example"}, "password": "whatever1",
			}), 403, "M_FORBIDDEN")
			MustErr(t, s.Do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "password": "x"}), 400, "M_MISSING_PARAM")
			MustErr(t, s.Do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.bogus"}), 400, "M_UNKNOWN")
			MustErr(t, s.Do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.token", "token": "made-up"}), 403, "M_FORBIDDEN")
		})
		t.Run("device_id reuse replaces the old token", func(t *testing.T) {
			login := func() *Response {
				return Must(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
					"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": local},
					"password": u.Password, "device_id": "FIXEDDEVICE",
				}), 200)
			}
			first := login()
			second := login()
			if first.Str("device_id") != "FIXEDDEVICE" || second.Str("device_id") != "FIXEDDEVICE" {
				t.Fatalf("device id not kept: %s", second)
			}
			MustErr(t, s.Do(t, "GET", v3+"/account/whoami", first.Str("access_token"), nil), 401, "M_UNKNOWN_TOKEN")
			Must(t, s.Do(t, "GET", v3+"/account/whoami", second.Str("access_token"), nil), 200)
		})
		t.Run("login token", func(t *testing.T) {
			me := s.Register(t, "tokenlogin")
			r := Must(t, me.Do(t, "POST", "/_matrix/client/v1/login/get_token", map[string]any{}), 401)
			session := r.Str("session")
			r = Must(t, me.Do(t, "POST", "/_matrix/client/v1/login/get_token", map[string]any{"auth": map[string]any{
				"type": "m.login.password", "session": session, "password": me.Password,
				"identifier": map[string]any{"type": "m.id.user", "user": me.ID},
			}}), 200)
			tok := r.Str("login_token")
			if tok == "" || r.JSON["expires_in_ms"] == nil {
				t.Fatalf("get_token: %s", r)
			}
			l := Must(t, s.Do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.token", "token": tok}), 200)
			if l.Str("user_id") != me.ID {
				t.Fatalf("token login: %s", l)
			}
			// Single use.
			MustErr(t, s.Do(t, "POST", v3+"/login", "", map[string]any{"type": "m.login.token", "token": tok}), 403, "M_FORBIDDEN")
		})
		t.Run("logout and logout/all", func(t *testing.T) {
			me := s.Register(t, "logout")
			other := Must(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": me.ID}, "password": me.Password,
			}), 200).Str("access_token")
			Must(t, me.Do(t, "POST", v3+"/logout", nil), 200)
			MustErr(t, me.Do(t, "GET", v3+"/account/whoami", nil), 401, "M_UNKNOWN_TOKEN")
			Must(t, s.Do(t, "GET", v3+"/account/whoami", other, nil), 200)
			// The logged-out device is gone.
			devs := Must(t, s.Do(t, "GET", v3+"/devices", other, nil), 200)
			if strings.Contains(string(devs.Body), me.DeviceID) {
				t.Fatalf("logged-out device still listed: %s", devs)
			}
			third := Must(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": me.ID}, "password": me.Password,
			}), 200).Str("access_token")
			Must(t, s.Do(t, "POST", v3+"/logout/all", other, nil), 200)
			MustErr(t, s.Do(t, "GET", v3+"/account/whoami", other, nil), 401, "M_UNKNOWN_TOKEN")
			MustErr(t, s.Do(t, "GET", v3+"/account/whoami", third, nil), 401, "M_UNKNOWN_TOKEN")
		})
	})
}

func TestRefreshTokens(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "refresh")
		l := Must(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.ID},
			"password": u.Password, "refresh_token": true,
		}), 200)
		rt1, at1 := l.Str("refresh_token"), l.Str("access_token")
		if rt1 == "" || l.JSON["expires_in_ms"] == nil {
			t.Fatalf("no refresh token: %s", l)
		}
		r2 := Must(t, s.Do(t, "POST", v3+"/refresh", "", map[string]any{"refresh_token": rt1}), 200)
		// A client that lost the answer can retry with the old token.
		r2b := Must(t, s.Do(t, "POST", v3+"/refresh", "", map[string]any{"refresh_token": rt1}), 200)
		at2, rt2 := r2b.Str("access_token"), r2b.Str("refresh_token")
		if at2 == "" || rt2 == "" || at2 == at1 || rt2 == rt1 {
			t.Fatalf("refresh answer: %s", r2b)
		}
		// The superseded answer of the first attempt is void.
		MustErr(t, s.Do(t, "GET", v3+"/account/whoami", r2.Str("access_token"), nil), 401, "M_UNKNOWN_TOKEN")
		who := Must(t, s.Do(t, "GET", v3+"/account/whoami", at2, nil), 200)
		if who.Str("device_id") != l.Str("device_id") {
			t.Fatalf("refreshed token bound to another device: %s", who)
		}
		// Using the new token retired the old refresh token and access token.
		MustErr(t, s.Do(t, "POST", v3+"/refresh", "", map[string]any{"refresh_token": rt1}), 401, "M_UNKNOWN_TOKEN")
		MustErr(t, s.Do(t, "GET", v3+"/account/whoami", at1, nil), 401, "M_UNKNOWN_TOKEN")
		Must(t, s.Do(t, "POST", v3+"/refresh", "", map[string]any{"refresh_token": rt2}), 200)
		MustErr(t, s.Do(t, "POST", v3+"/refresh", "", map[string]any{"refresh_token": "nonsense"}), 401, "M_UNKNOWN_TOKEN")
		MustErr(t, s.Do(t, "POST", v3+"/refresh", "", map[string]any{}), 400, "M_MISSING_PARAM")
	})
}

func TestExpiredTokenSoftLogout(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := StartServer(t, Options{Dialect: dialect, Env: map[string]string{"PARLEY_ACCESS_TOKEN_LIFETIME": "2s"}})
		u := s.Register(t, "expire")
		l := Must(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.ID},
			"password": u.Password, "refresh_token": true,
		}), 200)
		tok := l.Str("access_token")
		Must(t, s.Do(t, "GET", v3+"/account/whoami", tok, nil), 200)
		// Tokens without a refresh token do not expire.
		time.Sleep(2500 * time.Millisecond)
		r := MustErr(t, s.Do(t, "GET", v3+"/account/whoami", tok, nil), 401, "M_UNKNOWN_TOKEN")
		if r.JSON["soft_logout"] != true {
			t.Fatalf("expired token without soft_logout: %s", r)
		}
		Must(t, u.Do(t, "GET", v3+"/account/whoami", nil), 200)
		nt := Must(t, s.Do(t, "POST", v3+"/refresh", "", map[string]any{"refresh_token": l.Str("refresh_token")}), 200).Str("access_token")
		Must(t, s.Do(t, "GET", v3+"/account/whoami", nt, nil), 200)
	})
}

func TestPasswordChangeAndDeactivation(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "pw")
		other := Must(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.ID}, "password": u.Password,
		}), 200).Str("access_token")
		// No auth: the flows.
		r := Must(t, u.Do(t, "POST", v3+"/account/password", map[string]any{"new_password": "a brand new password"}), 401)
		session := r.Str("session")
		if session == "" || !strings.Contains(string(r.Body), "m.login.password") {
			t.Fatalf("challenge: %s", r)
		}
		// Wrong password: 401 with an errcode, same session usable again.
		r = Must(t, u.Do(t, "POST", v3+"/account/password", map[string]any{"new_password": "a brand new password", "auth": map[string]any{
			"type": "m.login.password", "session": session, "password": "not it",
			"identifier": map[string]any{"type": "m.id.user", "user": u.ID},
		}}), 401)
		if r.Errcode() != "M_FORBIDDEN" || r.Str("session") != session {
			t.Fatalf("wrong password answer: %s", r)
		}
		// A different operation cannot ride on this session.
		MustErr(t, u.Do(t, "POST", v3+"/delete_devices", map[string]any{"devices": []string{}, "auth": map[string]any{
			"type": "m.login.password", "session": session, "password": u.Password,
			"identifier": map[string]any{"type": "m.id.user", "user": u.ID},
		}}), 403, "M_FORBIDDEN")
		MustErr(t, u.Do(t, "POST", v3+"/account/password", map[string]any{"new_password": "short", "auth": map[string]any{"type": "m.login.password", "session": session}}), 400, "M_WEAK_PASSWORD")
		Must(t, u.Do(t, "POST", v3+"/account/password", map[string]any{"new_password": "a brand new password", "auth": map[string]any{
			"type": "m.login.password", "session": session, "password": u.Password,
			"identifier": map[string]any{"type": "m.id.user", "user": u.ID},
		}}), 200)
		// Other devices are logged out by default, this one stays.
		MustErr(t, s.Do(t, "GET", v3+"/account/whoami", other, nil), 401, "M_UNKNOWN_TOKEN")
		Must(t, u.Do(t, "GET", v3+"/account/whoami", nil), 200)
		MustErr(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.ID}, "password": u.Password,
		}), 403, "M_FORBIDDEN")
		u.Password = "a brand new password"
		Must(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.ID}, "password": u.Password,
		}), 200)

		// Deactivation.
		Must(t, u.Do(t, "POST", v3+"/account/deactivate", map[string]any{}), 401)
		r = Must(t, u.Do(t, "POST", v3+"/account/deactivate", map[string]any{"auth": map[string]any{
			"type": "m.login.password", "password": u.Password, "identifier": map[string]any{"type": "m.id.user", "user": u.ID},
		}}), 200)
		if r.Str("id_server_unbind_result") != "no-support" {
			t.Fatalf("deactivate answer: %s", r)
		}
		MustErr(t, u.Do(t, "GET", v3+"/account/whoami", nil), 401, "M_UNKNOWN_TOKEN")
		MustErr(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.ID}, "password": u.Password,
		}), 403, "M_FORBIDDEN")
		local := strings.TrimPrefix(strings.Split(u.ID, ":")[0], "@")
		MustErr(t, s.Do(t, "GET", v3+"/register/available?username="+local, "", nil), 400, "M_USER_IN_USE")
	})
}
