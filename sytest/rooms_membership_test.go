package sytest

import (
	"net/url"
	"strings"
	"testing"
)

func TestRoomMembership(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "alice")
		bob := s.Register(t, "bob")
		carol := s.Register(t, "carol")
		room := alice.createRoom(t, map[string]any{"preset": "private_chat", "invite": []string{bob.ID}, "is_direct": true})

		t.Run("invite-only room refuses strangers", func(t *testing.T) {
			r := MustErr(t, carol.Do(t, "POST", v3+"/join/"+url.PathEscape(room), map[string]any{}), 403, "M_FORBIDDEN")
			if !strings.Contains(r.Str("error"), "auth rule") {
				t.Fatalf("error does not name the rule: %s", r)
			}
		})
		t.Run("invitee sees the invite and joins", func(t *testing.T) {
			m := Must(t, bob.Do(t, "GET", roomPath(room)+"/state/m.room.member/"+url.PathEscape(bob.ID), nil), 403)
			_ = m
			bob.join(t, room)
			st := Must(t, bob.Do(t, "GET", roomPath(room)+"/state/m.room.member/"+url.PathEscape(bob.ID)+"?format=event", nil), 200)
			content, _ := st.JSON["content"].(map[string]any)
			if content["membership"] != "join" {
				t.Fatalf("member event: %s", st)
			}
			unsigned, _ := st.JSON["unsigned"].(map[string]any)
			prev, _ := unsigned["prev_content"].(map[string]any)
			if prev["membership"] != "invite" || prev["is_direct"] != true {
				t.Fatalf("prev_content should be the direct invite: %s", st)
			}
		})
		t.Run("invite, kick, ban, unban", func(t *testing.T) {
			Must(t, alice.Do(t, "POST", roomPath(room)+"/invite", map[string]any{"user_id": carol.ID, "reason": "welcome"}), 200)
			Must(t, alice.Do(t, "POST", roomPath(room)+"/kick", map[string]any{"user_id": carol.ID, "reason": "changed my mind"}), 200)
			MustErr(t, carol.Do(t, "POST", roomPath(room)+"/join", map[string]any{}), 403, "M_FORBIDDEN")
			Must(t, alice.Do(t, "POST", roomPath(room)+"/ban", map[string]any{"user_id": carol.ID, "reason": "spam"}), 200)
			// A banned user cannot be invited or join.
			MustErr(t, alice.Do(t, "POST", roomPath(room)+"/invite", map[string]any{"user_id": carol.ID}), 403, "M_FORBIDDEN")
			Must(t, alice.Do(t, "POST", roomPath(room)+"/unban", map[string]any{"user_id": carol.ID}), 200)
			MustErr(t, alice.Do(t, "POST", roomPath(room)+"/unban", map[string]any{"user_id": carol.ID}), 403, "M_FORBIDDEN")
			// Bob has no power to kick Alice (power 100 vs 0).
			r := MustErr(t, bob.Do(t, "POST", roomPath(room)+"/kick", map[string]any{"user_id": alice.ID}), 403, "M_FORBIDDEN")
			if !strings.Contains(r.Str("error"), "auth rule") {
				t.Fatalf("error does not name the rule: %s", r)
			}
			MustErr(t, bob.Do(t, "POST", roomPath(room)+"/ban", map[string]any{"user_id": carol.ID}), 403, "M_FORBIDDEN")
			MustErr(t, alice.Do(t, "POST", roomPath(room)+"/kick", map[string]any{}), 400, "M_MISSING_PARAM")
			MustErr(t, alice.Do(t, "POST", roomPath(room)+"/kick", map[string]any{"user_id": "not-a-user"}), 400, "M_INVALID_PARAM")
		})
		t.Run("power escalation refused", func(t *testing.T) {
			r := MustErr(t, bob.Do(t, "PUT", roomPath(room)+"/state/m.room.power_levels/", map[string]any{
				"users": map[string]any{bob.ID: 100},
			}), 403, "M_FORBIDDEN")
			if !strings.Contains(r.Str("error"), "auth rule") {
				t.Fatalf("error does not name the rule: %s", r)
			}
			MustErr(t, bob.Do(t, "PUT", roomPath(room)+"/state/m.room.name/", map[string]any{"name": "mine now"}), 403, "M_FORBIDDEN")
		})
		t.Run("leave and forget", func(t *testing.T) {
			MustErr(t, bob.Do(t, "POST", roomPath(room)+"/forget", map[string]any{}), 400, "M_UNKNOWN")
			Must(t, bob.Do(t, "POST", roomPath(room)+"/leave", map[string]any{"reason": "bye"}), 200)
			MustErr(t, bob.Do(t, "POST", roomPath(room)+"/leave", map[string]any{}), 403, "M_FORBIDDEN")
			MustErr(t, bob.Do(t, "PUT", roomPath(room)+"/send/m.room.message/after-leave", map[string]any{"body": "x"}), 403, "M_FORBIDDEN")
			Must(t, bob.Do(t, "POST", roomPath(room)+"/forget", map[string]any{}), 200)
			jr := Must(t, bob.Do(t, "GET", v3+"/joined_rooms", nil), 200)
			if strings.Contains(string(jr.Body), room) {
				t.Fatalf("left room still joined: %s", jr)
			}
		})
		t.Run("knock", func(t *testing.T) {
			kroom := alice.createRoom(t, map[string]any{"initial_state": []map[string]any{
				{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "knock"}},
			}})
			r := Must(t, carol.Do(t, "POST", v3+"/knock/"+url.PathEscape(kroom), map[string]any{"reason": "let me in"}), 200)
			if r.Str("room_id") != kroom {
				t.Fatalf("knock: %s", r)
			}
			MustErr(t, carol.Do(t, "POST", v3+"/knock/"+url.PathEscape(room), map[string]any{}), 403, "M_FORBIDDEN")
			members := Must(t, alice.Do(t, "GET", roomPath(kroom)+"/members?membership=knock", nil), 200)
			if !strings.Contains(string(members.Body), carol.ID) {
				t.Fatalf("knock not visible to the room: %s", members)
			}
			Must(t, alice.Do(t, "POST", roomPath(kroom)+"/invite", map[string]any{"user_id": carol.ID}), 200)
			carol.join(t, kroom)
		})
		t.Run("join by alias", func(t *testing.T) {
			alias := "pub" + randHex(4)
			pub := alice.createRoom(t, map[string]any{"preset": "public_chat", "room_alias_name": alias})
			r := Must(t, carol.Do(t, "POST", v3+"/join/"+url.PathEscape("#"+alias+":localhost"), map[string]any{}), 200)
			if r.Str("room_id") != pub {
				t.Fatalf("join by alias: %s", r)
			}
			MustErr(t, carol.Do(t, "POST", v3+"/join/"+url.PathEscape("#nope"+randHex(4)+":localhost"), map[string]any{}), 404, "M_NOT_FOUND")
			MustErr(t, alice.Do(t, "POST", v3+"/createRoom", map[string]any{"room_alias_name": alias}), 400, "M_ROOM_IN_USE")
			MustErr(t, carol.Do(t, "POST", v3+"/join/not-a-room", map[string]any{}), 400, "M_INVALID_PARAM")
			MustErr(t, carol.Do(t, "POST", v3+"/join/"+url.PathEscape("!unknown:localhost"), map[string]any{}), 404, "M_NOT_FOUND")
		})
	})
}

func TestRoomVersionsAndCreation(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "versions")
		bob := s.Register(t, "versions-bob")
		caps := Must(t, alice.Do(t, "GET", v3+"/capabilities", nil), 200)
		c, _ := caps.JSON["capabilities"].(map[string]any)
		rv, _ := c["m.room_versions"].(map[string]any)
		avail, _ := rv["available"].(map[string]any)
		if rv["default"] != "12" || len(avail) != 12 {
			t.Fatalf("m.room_versions: %s", caps)
		}
		for v := range avail {
			t.Run("v"+v, func(t *testing.T) {
				room := alice.createRoom(t, map[string]any{"room_version": v, "preset": "public_chat", "name": "v" + v})
				alice.send(t, room, "hello in v"+v)
				bob.join(t, room)
				red := alice.send(t, room, "to be redacted")
				Must(t, alice.Do(t, "PUT", roomPath(room)+"/redact/"+url.PathEscape(red)+"/r1", map[string]any{"reason": "oops"}), 200)
				ev := Must(t, bob.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(red), nil), 200)
				if content, _ := ev.JSON["content"].(map[string]any); len(content) != 0 {
					t.Fatalf("redacted event served with content: %s", ev)
				}
				create := Must(t, bob.Do(t, "GET", roomPath(room)+"/state/m.room.create/", nil), 200)
				if create.Str("room_version") != v {
					t.Fatalf("create content: %s", create)
				}
			})
		}
		MustErr(t, alice.Do(t, "POST", v3+"/createRoom", map[string]any{"room_version": "99"}), 400, "M_UNSUPPORTED_ROOM_VERSION")
		MustErr(t, alice.Do(t, "POST", v3+"/createRoom", map[string]any{"preset": "secret_chat"}), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "POST", v3+"/createRoom", map[string]any{"invite": []string{"bogus"}}), 400, "M_INVALID_PARAM")
		MustErr(t, alice.Do(t, "POST", v3+"/createRoom", map[string]any{"initial_state": []map[string]any{{"type": "m.room.create", "content": map[string]any{}}}}), 400, "M_INVALID_ROOM_STATE")
		// power_level_content_override and creation_content are applied.
		room := alice.createRoom(t, map[string]any{
			"power_level_content_override": map[string]any{"events_default": 20},
			"creation_content":             map[string]any{"m.federate": false},
			"initial_state":                []map[string]any{{"type": "m.room.encryption", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}},
		})
		pl := Must(t, alice.Do(t, "GET", roomPath(room)+"/state/m.room.power_levels/", nil), 200)
		if pl.JSON["events_default"] != float64(20) {
			t.Fatalf("override lost: %s", pl)
		}
		cr := Must(t, alice.Do(t, "GET", roomPath(room)+"/state/m.room.create/", nil), 200)
		if cr.JSON["m.federate"] != false {
			t.Fatalf("creation_content lost: %s", cr)
		}
		Must(t, alice.Do(t, "GET", roomPath(room)+"/state/m.room.encryption/", nil), 200)
		// trusted_private_chat in v12: invitees become additional creators.
		tr := alice.createRoom(t, map[string]any{"preset": "trusted_private_chat", "invite": []string{bob.ID}})
		cr = Must(t, alice.Do(t, "GET", roomPath(tr)+"/state/m.room.create/", nil), 200)
		if ac, _ := cr.JSON["additional_creators"].([]any); len(ac) != 1 || ac[0] != bob.ID {
			t.Fatalf("additional_creators: %s", cr)
		}
	})
}
