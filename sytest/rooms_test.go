package sytest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestRoomBasics(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "alice")
		bob := s.Register(t, "bob")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Tea", "topic": "All about tea"})
		if !strings.HasPrefix(room, "!") || strings.Contains(room, ":") {
			t.Fatalf("v12 room IDs are derived from the create event and have no server part: %s", room)
		}
		bob.join(t, room)
		var sent []string
		for i := range 5 {
			sent = append(sent, alice.send(t, room, fmt.Sprintf("message %d", i)))
		}
		bob.send(t, room, "hello from bob")
		r := Must(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=3", nil), 200)
		if got := chunkBodies(r); !slices.Equal(got, []string{"hello from bob", "message 4", "message 3"}) {
			t.Fatalf("messages: %v\n%s", got, r)
		}
		end := r.Str("end")
		if end == "" {
			t.Fatalf("no end token: %s", r)
		}
		r = Must(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=3&from="+end, nil), 200)
		if got := chunkBodies(r); !slices.Equal(got, []string{"message 2", "message 1", "message 0"}) {
			t.Fatalf("second page: %v", got)
		}
		r = Must(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=f&limit=100", nil), 200)
		if got := chunkBodies(r); len(got) != 6 || got[0] != "message 0" || got[5] != "hello from bob" {
			t.Fatalf("forward: %v", got)
		}
		if _, ok := r.JSON["end"]; ok {
			t.Fatalf("end token at the end of the room: %s", r.Str("end"))
		}
		ev := Must(t, bob.Do(t, "GET", roomPath(room)+"/event/"+sent[0], nil), 200)
		if ev.Str("event_id") != sent[0] || ev.Str("sender") != alice.ID || ev.Str("room_id") != room {
			t.Fatalf("event: %s", ev)
		}
		st := Must(t, bob.Do(t, "GET", roomPath(room)+"/state", nil), 200)
		if !strings.Contains(string(st.Body), "All about tea") || !strings.Contains(string(st.Body), `"m.room.create"`) {
			t.Fatalf("state: %s", st)
		}
		name := Must(t, bob.Do(t, "GET", roomPath(room)+"/state/m.room.name/", nil), 200)
		if name.Str("name") != "Tea" {
			t.Fatalf("name: %s", name)
		}
		jm := Must(t, alice.Do(t, "GET", roomPath(room)+"/joined_members", nil), 200)
		joined, _ := jm.JSON["joined"].(map[string]any)
		if len(joined) != 2 || joined[bob.ID] == nil {
			t.Fatalf("joined_members: %s", jm)
		}
		jr := Must(t, bob.Do(t, "GET", v3+"/joined_rooms", nil), 200)
		if !strings.Contains(string(jr.Body), room) {
			t.Fatalf("joined_rooms: %s", jr)
		}
		mem := Must(t, alice.Do(t, "GET", roomPath(room)+"/members?membership=join", nil), 200)
		if c, _ := mem.JSON["chunk"].([]any); len(c) != 2 {
			t.Fatalf("members: %s", mem)
		}
	})
}
