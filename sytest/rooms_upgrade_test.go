package sytest

import (
	"net/url"
	"testing"
)

// rxState returns a state event's content (nil if unset or unreadable).
func rxState(t *testing.T, u *User, room, typ, key string) map[string]any {
	t.Helper()
	r := u.Do(t, "GET", roomPath(room)+"/state/"+typ+"/"+url.PathEscape(key), nil)
	if r.Status != 200 {
		return nil
	}
	return r.JSON
}

func rxUpgrade(t *testing.T, u *User, room string, body map[string]any) string {
	t.Helper()
	r := Must(t, u.Do(t, "POST", roomPath(room)+"/upgrade", body), 200)
	id := r.Str("replacement_room")
	if id == "" || id == room {
		t.Fatalf("upgrade: %s", r)
	}
	return id
}

func TestRoomUpgrade(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "alice")
		bob := s.Register(t, "bob")
		carol := s.Register(t, "carol")
		alias := "#rx" + randHex(5) + ":" + s.Name
		remote := "#elsewhere:remote.example"

		t.Run("to v12: state, aliases, directory, bans, tombstone", func(t *testing.T) {
			old := alice.createRoom(t, map[string]any{"preset": "public_chat", "room_version": "10", "visibility": "public",
				"name": "Upgrade me", "topic": "Old topic", "creation_content": map[string]any{"m.federate": false},
				"power_level_content_override": map[string]any{"users": map[string]any{alice.ID: 100, bob.ID: 50}}})
			bob.join(t, old)
			Must(t, alice.Do(t, "PUT", rxAliasPath(alias), map[string]any{"room_id": old}), 200)
			alice.putState(t, old, "m.room.canonical_alias", "", map[string]any{"alias": alias, "alt_aliases": []string{remote}})
			alice.putState(t, old, "m.room.server_acl", "", map[string]any{"allow": []string{"*"}, "deny": []string{"evil.example"}})
			Must(t, alice.Do(t, "POST", roomPath(old)+"/ban", map[string]any{"user_id": carol.ID, "reason": "spam"}), 200)
			last := alice.rxSend(t, old, "last words")

			// Bob (50) lacks the power to send m.room.tombstone (100).
			MustErr(t, bob.Do(t, "POST", roomPath(old)+"/upgrade", map[string]any{"new_version": "12"}), 403, "M_FORBIDDEN")
			nu := rxUpgrade(t, alice, old, map[string]any{"new_version": "12", "additional_creators": []string{bob.ID}})

			create := Must(t, alice.Do(t, "GET", roomPath(nu)+"/state/m.room.create/?format=event", nil), 200)
			c, _ := create.JSON["content"].(map[string]any)
			if c["room_version"] != "12" || rxDig(c, "predecessor", "room_id") != old || rxDig(c, "predecessor", "event_id") != last ||
				c["m.federate"] != false || create.Str("sender") != alice.ID {
				t.Fatalf("create event: %s", create)
			}
			if extra, _ := c["additional_creators"].([]any); len(extra) != 1 || extra[0] != bob.ID {
				t.Fatalf("additional_creators: %v", c)
			}
			if n := rxState(t, alice, nu, "m.room.name", ""); n["name"] != "Upgrade me" {
				t.Fatalf("name: %v", n)
			}
			if tp := rxState(t, alice, nu, "m.room.topic", ""); tp["topic"] != "Old topic" {
				t.Fatalf("topic: %v", tp)
			}
			if acl := rxState(t, alice, nu, "m.room.server_acl", ""); rxJSONHas(acl, "deny", "evil.example") == false {
				t.Fatalf("server ACL: %v", acl)
			}
			if jr := rxState(t, alice, nu, "m.room.join_rules", ""); jr["join_rule"] != "public" {
				t.Fatalf("join rules: %v", jr)
			}
			pl := rxState(t, alice, nu, "m.room.power_levels", "")
			users, _ := pl["users"].(map[string]any)
			if _, listed := users[alice.ID]; listed {
				t.Fatalf("a v12 creator must not be listed in users: %v", pl)
			}
			if _, listed := users[bob.ID]; listed {
				t.Fatalf("an additional creator must not be listed in users: %v", pl)
			}
			if ban := rxState(t, alice, nu, "m.room.member", carol.ID); ban["membership"] != "ban" || ban["reason"] != "spam" {
				t.Fatalf("carol's ban: %v", ban)
			}
			// The alias moved with the canonical alias; the remote alias stays.
			r := Must(t, s.Do(t, "GET", rxAliasPath(alias), "", nil), 200)
			if r.Str("room_id") != nu {
				t.Fatalf("alias: %s", r)
			}
			if ca := rxState(t, alice, nu, "m.room.canonical_alias", ""); ca["alias"] != alias || ca["alt_aliases"] != nil {
				t.Fatalf("new canonical alias: %v", ca)
			}
			if ca := rxState(t, alice, old, "m.room.canonical_alias", ""); ca["alias"] != nil || !rxJSONHas(ca, "alt_aliases", remote) {
				t.Fatalf("old canonical alias: %v", ca)
			}
			// The old room is closed.
			if ts := rxState(t, bob, old, "m.room.tombstone", ""); ts["replacement_room"] != nu || ts["body"] == nil {
				t.Fatalf("tombstone: %v", ts)
			}
			oldPL := rxState(t, alice, old, "m.room.power_levels", "")
			if oldPL["events_default"] != float64(50) || oldPL["invite"] != float64(50) {
				t.Fatalf("old room's power levels: %v", oldPL)
			}
			// Ordinary members can no longer speak in the old room.
			dave := s.Register(t, "dave")
			dave.join(t, old)
			MustErr(t, dave.Do(t, "PUT", roomPath(old)+"/send/m.room.message/x"+randHex(3), map[string]any{"body": "x"}), 403, "M_FORBIDDEN")
			if v := Must(t, s.Do(t, "GET", rxVisibilityPath(old), "", nil), 200); v.Str("visibility") != "private" {
				t.Fatalf("old room still listed: %s", v)
			}
			if v := Must(t, s.Do(t, "GET", rxVisibilityPath(nu), "", nil), 200); v.Str("visibility") != "public" {
				t.Fatalf("new room not listed: %s", v)
			}
			bob.join(t, nu)
		})
		t.Run("to an older version: power raised for the copy and restored", func(t *testing.T) {
			old := alice.createRoom(t, map[string]any{"preset": "private_chat", "room_version": "11",
				"invite": []string{bob.ID},
				"power_level_content_override": map[string]any{
					"users":  map[string]any{alice.ID: 100, bob.ID: 60},
					"events": map[string]any{"m.room.tombstone": 60, "m.room.server_acl": 100, "m.room.power_levels": 100},
				}})
			bob.join(t, old)
			alice.putState(t, old, "m.room.server_acl", "", map[string]any{"allow": []string{"*"}})
			alice.putState(t, old, "m.room.join_rules", "", map[string]any{"join_rule": "restricted",
				"allow": []any{map[string]any{"type": "m.room_membership", "room_id": old}}})
			nu := rxUpgrade(t, bob, old, map[string]any{"new_version": "9"})
			create := rxState(t, bob, nu, "m.room.create", "")
			if create["creator"] != bob.ID || create["room_version"] != "9" {
				t.Fatalf("create: %v", create)
			}
			pl := rxState(t, bob, nu, "m.room.power_levels", "")
			if rxDig(pl, "users", bob.ID) != float64(60) || rxDig(pl, "users", alice.ID) != float64(100) {
				t.Fatalf("final power levels should be the old ones: %v", pl)
			}
			if acl := rxState(t, bob, nu, "m.room.server_acl", ""); acl == nil {
				t.Fatal("the server ACL needed the raise to be copied")
			}
			jr := rxState(t, bob, nu, "m.room.join_rules", "")
			if allow, _ := jr["allow"].([]any); jr["join_rule"] != "restricted" || len(allow) != 1 || rxDig(allow[0], "room_id") != nu {
				t.Fatalf("restricted join rule should now name the new room: %v", jr)
			}
			// Bob could not restrict the old room's power levels (100 needed)
			// but the upgrade stands.
			if ts := rxState(t, alice, old, "m.room.tombstone", ""); ts["replacement_room"] != nu {
				t.Fatalf("tombstone: %v", ts)
			}
		})
		t.Run("bad input", func(t *testing.T) {
			room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
			path := roomPath(room) + "/upgrade"
			MustErr(t, alice.Do(t, "POST", path, map[string]any{"new_version": "99"}), 400, "M_UNSUPPORTED_ROOM_VERSION")
			MustErr(t, alice.Do(t, "POST", path, map[string]any{}), 400, "M_MISSING_PARAM")
			MustErr(t, alice.Do(t, "POST", path, map[string]any{"new_version": 12}), 400, "M_BAD_JSON")
			MustErr(t, alice.Do(t, "POST", path, "{"), 400, "M_NOT_JSON")
			MustErr(t, alice.Do(t, "POST", path, map[string]any{"new_version": "12", "additional_creators": []string{"bob"}}), 400, "M_INVALID_PARAM")
			MustErr(t, alice.Do(t, "POST", roomPath("nope")+"/upgrade", map[string]any{"new_version": "12"}), 400, "M_INVALID_PARAM")
			MustErr(t, carol.Do(t, "POST", path, map[string]any{"new_version": "12"}), 403, "M_FORBIDDEN")
			MustErr(t, carol.Do(t, "POST", roomPath("!unknown:"+s.Name)+"/upgrade", map[string]any{"new_version": "12"}), 403, "M_FORBIDDEN")
			MustErr(t, s.Do(t, "POST", path, "", map[string]any{"new_version": "12"}), 401, "M_MISSING_TOKEN")
		})
	})
}

// rxJSONHas reports whether obj[key] is a list holding want.
func rxJSONHas(obj map[string]any, key, want string) bool {
	list, _ := obj[key].([]any)
	for _, v := range list {
		if v == want {
			return true
		}
	}
	return false
}
