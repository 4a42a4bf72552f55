package sytest

import (
	"net/url"
	"slices"
	"testing"
)

// notification is one entry of GET /notifications, decoded.
type notification struct {
	eventID, body, roomID string
	read, highlight       bool
	hasRoomIDInEvent      bool
	ts                    float64
}

func notifications(t testing.TB, u *User, query string) ([]notification, string) {
	t.Helper()
	r := Must(t, u.Do(t, "GET", v3+"/notifications"+query, nil), 200)
	list, ok := r.JSON["notifications"].([]any)
	if !ok {
		t.Fatalf("no notifications array: %s", r)
	}
	var out []notification
	for _, x := range list {
		m := x.(map[string]any)
		ev, _ := m["event"].(map[string]any)
		content, _ := ev["content"].(map[string]any)
		n := notification{roomID: m["room_id"].(string), read: m["read"] == true}
		n.eventID, _ = ev["event_id"].(string)
		n.body, _ = content["body"].(string)
		_, n.hasRoomIDInEvent = ev["room_id"]
		n.ts, _ = m["ts"].(float64)
		acts, _ := m["actions"].([]any)
		for _, a := range acts {
			if tw, ok := a.(map[string]any); ok && tw["set_tweak"] == "highlight" && tw["value"] != false {
				n.highlight = true
			}
		}
		out = append(out, n)
	}
	return out, r.Str("next_token")
}

func notifBodies(ns []notification) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.body)
	}
	return out
}

func TestNotifications(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "notifa")
		bob := s.Register(t, "notifb")
		dm := alice.createRoom(t, map[string]any{"preset": "trusted_private_chat", "invite": []string{bob.ID}, "is_direct": true})

		// The invite notifies bob (its event is visible to him once he has
		// joined, and joining reads it).
		bob.join(t, dm)

		alice.send(t, dm, "hello bob")
		alice.sendEvent(t, dm, "m.room.message", map[string]any{"msgtype": "m.notice", "body": "a notice"})
		mention := alice.sendEvent(t, dm, "m.room.message", map[string]any{"msgtype": "m.text", "body": "look",
			"m.mentions": map[string]any{"user_ids": []string{bob.ID}}})
		alice.sendEvent(t, dm, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* look!",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "look!"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": mention}})
		ns, next := notifications(t, bob, "")
		if got := notifBodies(ns); !slices.Equal(got, []string{"look", "hello bob", ""}) || next != "" {
			t.Fatalf("notifications (newest first, no notice, no edit): %q next %q", got, next)
		}
		if ns[0].eventID != mention || !ns[0].highlight || ns[1].highlight || ns[0].read || ns[0].ts <= 0 || ns[0].hasRoomIDInEvent {
			t.Fatalf("mention entry: %+v", ns[0])
		}
		if ns[2].roomID != dm || !ns[2].read {
			t.Fatalf("joining read the invite: %+v", ns[2])
		}
		if nothing, _ := notifications(t, alice, ""); len(nothing) != 0 {
			t.Fatalf("one's own events never notify: %+v", nothing)
		}

		// Highlights only, and paging.
		hl, _ := notifications(t, bob, "?only=highlight")
		if len(hl) != 1 || hl[0].eventID != mention {
			t.Fatalf("highlights: %+v", hl)
		}
		page, next := notifications(t, bob, "?limit=2")
		if len(page) != 2 || next == "" {
			t.Fatalf("first page %+v %q", page, next)
		}
		page, next = notifications(t, bob, "?limit=2&from="+url.QueryEscape(next))
		if len(page) != 1 || page[0].roomID != dm || next != "" {
			t.Fatalf("second page %+v %q", page, next)
		}
		MustErr(t, bob.Do(t, "GET", v3+"/notifications?from=bogus", nil), 400, "M_INVALID_PARAM")
		MustErr(t, bob.Do(t, "GET", v3+"/notifications?limit=-1", nil), 400, "M_INVALID_PARAM")
		MustErr(t, s.Do(t, "GET", v3+"/notifications", "", nil), 401, "M_MISSING_TOKEN")

		// Sending marks what came before as read.
		bob.send(t, dm, "thanks")
		ns, _ = notifications(t, bob, "")
		for _, n := range ns {
			if !n.read {
				t.Fatalf("after bob's own message: %+v", ns)
			}
		}

		// A read receipt does too.
		later := alice.send(t, dm, "one more")
		ns, _ = notifications(t, bob, "?limit=1")
		if len(ns) != 1 || ns[0].eventID != later || ns[0].read {
			t.Fatalf("new message: %+v", ns)
		}
		Must(t, bob.Do(t, "POST", roomPath(dm)+"/receipt/m.read/"+url.PathEscape(later), map[string]any{}), 200)
		if ns, _ = notifications(t, bob, "?limit=1"); !ns[0].read {
			t.Fatalf("after a read receipt: %+v", ns)
		}

		// Push rules decide: a room rule with no actions mutes the room.
		Must(t, bob.Do(t, "PUT", pushRules+"/room/"+url.PathEscape(dm), map[string]any{"actions": []any{}}), 200)
		alice.send(t, dm, "muted")
		if ns, _ = notifications(t, bob, "?limit=1"); ns[0].eventID != later {
			t.Fatalf("muted room notified: %+v", ns)
		}
		Must(t, bob.Do(t, "DELETE", pushRules+"/room/"+url.PathEscape(dm), nil), 200)
		// A content rule highlights a keyword.
		Must(t, bob.Do(t, "PUT", pushRules+"/content/tea", map[string]any{"pattern": "tea",
			"actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}}), 200)
		alice.send(t, dm, "Tea time?")
		if ns, _ = notifications(t, bob, "?limit=1"); ns[0].body != "Tea time?" || !ns[0].highlight {
			t.Fatalf("content rule: %+v", ns)
		}
		Must(t, bob.Do(t, "PUT", pushRules+"/override/.m.rule.master/enabled", map[string]any{"enabled": true}), 200)
		alice.send(t, dm, "tea again")
		if ns, _ = notifications(t, bob, "?limit=1"); ns[0].body != "Tea time?" {
			t.Fatalf("the master rule silences everything: %+v", ns)
		}
	})
}

func TestNotificationsGroupRoom(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "grpa")
		bob := s.Register(t, "grpb")
		carol := s.Register(t, "grpc")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		carol.join(t, room)
		alice.send(t, room, "hello everyone")
		alice.sendEvent(t, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "everyone!",
			"m.mentions": map[string]any{"room": true}})
		carol.sendEvent(t, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "me too!",
			"m.mentions": map[string]any{"room": true}})
		alice.sendEvent(t, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{
			"rel_type": "m.annotation", "event_id": "$whatever", "key": "👍"}})
		ns, _ := notifications(t, bob, "")
		if got := notifBodies(ns); !slices.Equal(got, []string{"me too!", "everyone!", "hello everyone"}) {
			t.Fatalf("bob: %q", got)
		}
		// @room highlights only from someone with the power to use it.
		if ns[0].highlight || !ns[1].highlight || ns[2].highlight {
			t.Fatalf("highlights: %+v", ns)
		}
		// Ignoring carol: her new messages do not notify, and her earlier
		// ones are no longer shown.
		Must(t, bob.Do(t, "PUT", v3+"/user/"+url.PathEscape(bob.ID)+"/account_data/m.ignored_user_list",
			map[string]any{"ignored_users": map[string]any{carol.ID: map[string]any{}}}), 200)
		carol.send(t, room, "ignored")
		Must(t, bob.Do(t, "PUT", v3+"/user/"+url.PathEscape(bob.ID)+"/account_data/m.ignored_user_list",
			map[string]any{"ignored_users": map[string]any{}}), 200)
		ns, _ = notifications(t, bob, "")
		if got := notifBodies(ns); !slices.Equal(got, []string{"me too!", "everyone!", "hello everyone"}) {
			t.Fatalf("after ignoring carol for a while: %q", got)
		}
	})
}
