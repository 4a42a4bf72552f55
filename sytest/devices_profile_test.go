package sytest

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

func passwordAuth(u *User, session string) map[string]any {
	a := map[string]any{"type": "m.login.password", "password": u.Password,
		"identifier": map[string]any{"type": "m.id.user", "user": u.ID}}
	if session != "" {
		a["session"] = session
	}
	return a
}

func (u *User) login(t testing.TB) string {
	t.Helper()
	return Must(t, u.Server.Do(t, "POST", v3+"/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": u.ID}, "password": u.Password,
	}), 200).Str("access_token")
}

func TestDevices(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "devices")
		second := u.login(t)
		third := u.login(t)
		devs := Must(t, u.Do(t, "GET", v3+"/devices", nil), 200)
		list, _ := devs.JSON["devices"].([]any)
		if len(list) != 3 {
			t.Fatalf("want 3 devices: %s", devs)
		}
		for _, d := range list {
			m := d.(map[string]any)
			if m["last_seen_ts"] == nil || m["last_seen_ip"] == nil {
				t.Fatalf("device without last seen: %v", m)
			}
		}
		Must(t, u.Do(t, "PUT", v3+"/devices/"+u.DeviceID, map[string]any{"display_name": "Laptop"}), 200)
		d := Must(t, u.Do(t, "GET", v3+"/devices/"+u.DeviceID, nil), 200)
		if d.Str("display_name") != "Laptop" || d.Str("device_id") != u.DeviceID {
			t.Fatalf("device: %s", d)
		}
		MustErr(t, u.Do(t, "GET", v3+"/devices/NOSUCHDEVICE", nil), 404, "M_NOT_FOUND")
		MustErr(t, u.Do(t, "PUT", v3+"/devices/NOSUCHDEVICE", map[string]any{"display_name": "x"}), 404, "M_NOT_FOUND")
		MustErr(t, u.Do(t, "PUT", v3+"/devices/"+u.DeviceID, map[string]any{"display_name": strings.Repeat("x", 200)}), 400, "M_INVALID_PARAM")
		MustErr(t, u.Do(t, "PUT", v3+"/devices/"+u.DeviceID, map[string]any{"display_name": 7}), 400, "M_BAD_JSON")

		secondID := Must(t, s.Do(t, "GET", v3+"/account/whoami", second, nil), 200).Str("device_id")
		thirdID := Must(t, s.Do(t, "GET", v3+"/account/whoami", third, nil), 200).Str("device_id")
		// Deleting needs the password.
		r := Must(t, u.Do(t, "DELETE", v3+"/devices/"+secondID, map[string]any{}), 401)
		MustErr(t, u.Do(t, "DELETE", v3+"/devices/NOSUCHDEVICE", map[string]any{}), 404, "M_NOT_FOUND")
		Must(t, u.Do(t, "DELETE", v3+"/devices/"+secondID, map[string]any{"auth": passwordAuth(u, r.Str("session"))}), 200)
		MustErr(t, s.Do(t, "GET", v3+"/account/whoami", second, nil), 401, "M_UNKNOWN_TOKEN")
		MustErr(t, u.Do(t, "GET", v3+"/devices/"+secondID, nil), 404, "M_NOT_FOUND")

		MustErr(t, u.Do(t, "POST", v3+"/delete_devices", map[string]any{}), 400, "M_MISSING_PARAM")
		r = Must(t, u.Do(t, "POST", v3+"/delete_devices", map[string]any{"devices": []string{thirdID}}), 401)
		Must(t, u.Do(t, "POST", v3+"/delete_devices", map[string]any{"devices": []string{thirdID}, "auth": passwordAuth(u, r.Str("session"))}), 200)
		MustErr(t, s.Do(t, "GET", v3+"/account/whoami", third, nil), 401, "M_UNKNOWN_TOKEN")
		left := Must(t, u.Do(t, "GET", v3+"/devices", nil), 200)
		if l, _ := left.JSON["devices"].([]any); len(l) != 1 {
			t.Fatalf("want 1 device left: %s", left)
		}
		// Someone else's device is simply not found.
		other := s.Register(t, "devices-other")
		MustErr(t, other.Do(t, "GET", v3+"/devices/"+u.DeviceID, nil), 404, "M_NOT_FOUND")
	})
}

func TestProfile(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "profile")
		other := s.Register(t, "profile-other")
		Must(t, u.Do(t, "PUT", v3+"/profile/"+u.ID+"/displayname", map[string]any{"displayname": "Alice Liddell"}), 200)
		Must(t, u.Do(t, "PUT", v3+"/profile/"+u.ID+"/avatar_url", map[string]any{"avatar_url": "mxc://localhost/abc"}), 200)
		Must(t, u.Do(t, "PUT", v3+"/profile/"+u.ID+"/m.tz", map[string]any{"m.tz": "Europe/London"}), 200)
		Must(t, u.Do(t, "PUT", v3+"/profile/"+u.ID+"/org.example.pronouns", map[string]any{"org.example.pronouns": []string{"she", "her"}}), 200)
		p := Must(t, s.Do(t, "GET", v3+"/profile/"+u.ID, "", nil), 200)
		if p.Str("displayname") != "Alice Liddell" || p.Str("avatar_url") != "mxc://localhost/abc" || p.Str("m.tz") != "Europe/London" {
			t.Fatalf("profile: %s", p)
		}
		if _, ok := p.JSON["org.example.pronouns"].([]any); !ok {
			t.Fatalf("custom field lost: %s", p)
		}
		f := Must(t, other.Do(t, "GET", v3+"/profile/"+u.ID+"/displayname", nil), 200)
		if f.Str("displayname") != "Alice Liddell" || len(f.JSON) != 1 {
			t.Fatalf("field: %s", f)
		}
		Must(t, u.Do(t, "DELETE", v3+"/profile/"+u.ID+"/m.tz", nil), 200)
		MustErr(t, s.Do(t, "GET", v3+"/profile/"+u.ID+"/m.tz", "", nil), 404, "M_NOT_FOUND")

		MustErr(t, other.Do(t, "PUT", v3+"/profile/"+u.ID+"/displayname", map[string]any{"displayname": "Mallory"}), 403, "M_FORBIDDEN")
		MustErr(t, other.Do(t, "DELETE", v3+"/profile/"+u.ID+"/displayname", nil), 403, "M_FORBIDDEN")
		MustErr(t, s.Do(t, "PUT", v3+"/profile/"+u.ID+"/displayname", "", map[string]any{"displayname": "x"}), 401, "M_MISSING_TOKEN")
		MustErr(t, s.Do(t, "GET", v3+"/profile/@nobody-"+randHex(4)+":localhost", "", nil), 404, "M_NOT_FOUND")
		MustErr(t, s.Do(t, "GET", v3+"/profile/not-a-user", "", nil), 400, "M_INVALID_PARAM")
		MustErr(t, u.Do(t, "PUT", v3+"/profile/"+u.ID+"/displayname", map[string]any{"displayname": 12}), 400, "M_BAD_JSON")
		MustErr(t, u.Do(t, "PUT", v3+"/profile/"+u.ID+"/displayname", map[string]any{"wrong": "x"}), 400, "M_MISSING_PARAM")
		MustErr(t, u.Do(t, "PUT", v3+"/profile/"+u.ID+"/avatar_url", map[string]any{"avatar_url": "https://example.org/a.png"}), 400, "M_INVALID_PARAM")
		MustErr(t, u.Do(t, "PUT", v3+"/profile/"+u.ID+"/"+strings.Repeat("k", 300), map[string]any{strings.Repeat("k", 300): "v"}), 400, "M_KEY_TOO_LARGE")
		// The whole profile stays under 64 KiB.
		big := strings.Repeat("x", 40000)
		Must(t, u.Do(t, "PUT", v3+"/profile/"+u.ID+"/org.example.big1", map[string]any{"org.example.big1": big}), 200)
		MustErr(t, u.Do(t, "PUT", v3+"/profile/"+u.ID+"/org.example.big2", map[string]any{"org.example.big2": big}), 400, "M_PROFILE_TOO_LARGE")

		caps := Must(t, u.Do(t, "GET", v3+"/capabilities", nil), 200)
		c, _ := caps.JSON["capabilities"].(map[string]any)
		pf, _ := c["m.profile_fields"].(map[string]any)
		if pf == nil || pf["enabled"] != true {
			t.Fatalf("m.profile_fields capability: %s", caps)
		}
		for _, k := range []string{"m.change_password", "m.get_login_token", "m.set_displayname", "m.set_avatar_url"} {
			if c[k] == nil {
				t.Errorf("capability %s missing", k)
			}
		}
		MustErr(t, s.Do(t, "GET", v3+"/capabilities", "", nil), 401, "M_MISSING_TOKEN")
	})
}

func TestAccountDataAndFilters(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "acct")
		other := s.Register(t, "acct-other")
		base := v3 + "/user/" + u.ID
		MustErr(t, u.Do(t, "GET", base+"/account_data/org.example.settings", nil), 404, "M_NOT_FOUND")
		Must(t, u.Do(t, "PUT", base+"/account_data/org.example.settings", map[string]any{"theme": "dark"}), 200)
		r := Must(t, u.Do(t, "GET", base+"/account_data/org.example.settings", nil), 200)
		if r.Str("theme") != "dark" {
			t.Fatalf("account data: %s", r)
		}
		Must(t, u.Do(t, "PUT", base+"/account_data/org.example.settings", map[string]any{"theme": "light"}), 200)
		if r := Must(t, u.Do(t, "GET", base+"/account_data/org.example.settings", nil), 200); r.Str("theme") != "light" {
			t.Fatalf("overwrite lost: %s", r)
		}
		room := "!room" + randHex(4) + ":localhost"
		Must(t, u.Do(t, "PUT", base+"/rooms/"+room+"/account_data/m.tag", map[string]any{"tags": map[string]any{"u.work": map[string]any{}}}), 200)
		Must(t, u.Do(t, "GET", base+"/rooms/"+room+"/account_data/m.tag", nil), 200)
		MustErr(t, u.Do(t, "GET", base+"/account_data/m.tag", nil), 404, "M_NOT_FOUND")
		MustErr(t, u.Do(t, "PUT", base+"/rooms/notaroom/account_data/m.tag", map[string]any{}), 400, "M_INVALID_PARAM")

		MustErr(t, u.Do(t, "PUT", base+"/account_data/m.fully_read", map[string]any{"event_id": "$x"}), 405, "M_BAD_JSON")
		MustErr(t, u.Do(t, "PUT", base+"/rooms/"+room+"/account_data/m.fully_read", map[string]any{"event_id": "$x"}), 405, "M_BAD_JSON")
		MustErr(t, u.Do(t, "PUT", base+"/account_data/m.push_rules", map[string]any{}), 405, "M_BAD_JSON")
		MustErr(t, u.Do(t, "PUT", base+"/account_data/org.example.x", "[1,2]"), 400, "M_BAD_JSON")
		MustErr(t, u.Do(t, "PUT", base+"/account_data/org.example.x", "{nope"), 400, "M_NOT_JSON")
		MustErr(t, other.Do(t, "GET", base+"/account_data/org.example.settings", nil), 403, "M_FORBIDDEN")
		MustErr(t, other.Do(t, "PUT", base+"/account_data/org.example.settings", map[string]any{}), 403, "M_FORBIDDEN")
		MustErr(t, u.Do(t, "PUT", base+"/account_data/org.example.big", map[string]any{"x": strings.Repeat("y", 70000)}), 413, "M_TOO_LARGE")

		// Filters.
		filter := map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 10}, "state": map[string]any{"lazy_load_members": true}}}
		fr := Must(t, u.Do(t, "POST", base+"/filter", filter), 200)
		fid := fr.Str("filter_id")
		if fid == "" {
			t.Fatalf("filter: %s", fr)
		}
		if again := Must(t, u.Do(t, "POST", base+"/filter", filter), 200).Str("filter_id"); again != fid {
			t.Errorf("same filter stored twice: %s and %s", fid, again)
		}
		g := Must(t, u.Do(t, "GET", base+"/filter/"+fid, nil), 200)
		room2, _ := g.JSON["room"].(map[string]any)
		if room2 == nil || room2["timeline"] == nil {
			t.Fatalf("filter round trip: %s", g)
		}
		MustErr(t, u.Do(t, "GET", base+"/filter/999999", nil), 404, "M_NOT_FOUND")
		MustErr(t, u.Do(t, "GET", base+"/filter/abc", nil), 404, "M_NOT_FOUND")
		MustErr(t, other.Do(t, "GET", base+"/filter/"+fid, nil), 403, "M_FORBIDDEN")
		MustErr(t, other.Do(t, "GET", v3+"/user/"+other.ID+"/filter/"+fid, nil), 404, "M_NOT_FOUND")
		MustErr(t, u.Do(t, "POST", base+"/filter", map[string]any{"event_format": "xml"}), 400, "M_BAD_JSON")
		MustErr(t, u.Do(t, "POST", base+"/filter", map[string]any{"room": map[string]any{"rooms": "!notalist:x"}}), 400, "M_BAD_JSON")
		_ = http.MethodGet
	})
}

func TestRoomTags(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "tags")
		room := u.createRoom(t, nil)
		base := v3 + "/user/" + u.ID + "/rooms/" + room + "/tags"
		if r := Must(t, u.Do(t, "GET", base, nil), 200); len(r.JSON["tags"].(map[string]any)) != 0 {
			t.Fatalf("fresh room has tags: %s", r)
		}
		Must(t, u.Do(t, "PUT", base+"/u.work", map[string]any{"order": 0.5}), 200)
		Must(t, u.Do(t, "PUT", base+"/m.favourite", map[string]any{}), 200)
		r := Must(t, u.Do(t, "GET", base, nil), 200)
		tags := r.JSON["tags"].(map[string]any)
		if len(tags) != 2 || tags["u.work"].(map[string]any)["order"] != 0.5 {
			t.Fatalf("tags: %s", r)
		}
		// Tags are the m.tag room account data clients sync.
		ad := Must(t, u.Do(t, "GET", v3+"/user/"+u.ID+"/rooms/"+room+"/account_data/m.tag", nil), 200)
		if !strings.Contains(string(ad.Body), "m.favourite") {
			t.Fatalf("m.tag account data: %s", ad)
		}
		Must(t, u.Do(t, "DELETE", base+"/u.work", nil), 200)
		if r := Must(t, u.Do(t, "GET", base, nil), 200); len(r.JSON["tags"].(map[string]any)) != 1 {
			t.Fatalf("tag not deleted: %s", r)
		}
		MustErr(t, u.Do(t, "PUT", base+"/u.bad", map[string]any{"order": 7}), 400, "M_INVALID_PARAM")
		MustErr(t, u.Do(t, "PUT", base+"/u.bad", map[string]any{"order": "first"}), 400, "M_BAD_JSON")
		MustErr(t, u.Do(t, "PUT", base+"/"+strings.Repeat("t", 300), map[string]any{}), 400, "M_INVALID_PARAM")
		other := s.Register(t, "tags-other")
		MustErr(t, other.Do(t, "GET", base, nil), 403, "M_FORBIDDEN")
		MustErr(t, u.Do(t, "GET", v3+"/user/"+u.ID+"/rooms/notaroom/tags", nil), 400, "M_INVALID_PARAM")
	})
}

func TestUserDirectory(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		tag := randHex(3)
		alice := s.Register(t, "dir-"+tag+"-alice")
		bob := s.Register(t, "dir-"+tag+"-bob")
		hidden := s.Register(t, "dir-"+tag+"-hidden")
		Must(t, bob.Do(t, "PUT", v3+"/profile/"+bob.ID+"/displayname", map[string]any{"displayname": "Bobby Tables_%"}), 200)
		room := alice.createRoom(t, nil)
		Must(t, alice.Do(t, "POST", roomPath(room)+"/invite", map[string]any{"user_id": bob.ID}), 200)
		bob.join(t, room)
		r := Must(t, alice.Do(t, "POST", v3+"/user_directory/search", map[string]any{"search_term": "dir-" + tag}), 200)
		var ids []string
		for _, x := range r.JSON["results"].([]any) {
			ids = append(ids, x.(map[string]any)["user_id"].(string))
		}
		if !slices.Contains(ids, bob.ID) || !slices.Contains(ids, alice.ID) || slices.Contains(ids, hidden.ID) {
			t.Fatalf("directory: %v (hidden user must not appear: shares no room)", ids)
		}
		// Display names match, and LIKE wildcards are literal.
		r = Must(t, alice.Do(t, "POST", v3+"/user_directory/search", map[string]any{"search_term": "tables_%"}), 200)
		if res := r.JSON["results"].([]any); len(res) != 1 || res[0].(map[string]any)["display_name"] != "Bobby Tables_%" {
			t.Fatalf("display name search: %s", r)
		}
		if r := Must(t, alice.Do(t, "POST", v3+"/user_directory/search", map[string]any{"search_term": "t_b"}), 200); len(r.JSON["results"].([]any)) != 0 {
			t.Fatalf("_ matched as a wildcard: %s", r)
		}
		r = Must(t, alice.Do(t, "POST", v3+"/user_directory/search", map[string]any{"search_term": "dir-" + tag, "limit": 1}), 200)
		if r.JSON["limited"] != true || len(r.JSON["results"].([]any)) != 1 {
			t.Fatalf("limit: %s", r)
		}
		MustErr(t, alice.Do(t, "POST", v3+"/user_directory/search", map[string]any{}), 400, "M_MISSING_PARAM")
		MustErr(t, alice.Do(t, "POST", v3+"/user_directory/search", map[string]any{"search_term": 5}), 400, "M_BAD_JSON")
		MustErr(t, s.Do(t, "POST", v3+"/user_directory/search", "", map[string]any{"search_term": "x"}), 401, "M_MISSING_TOKEN")
	})
}
