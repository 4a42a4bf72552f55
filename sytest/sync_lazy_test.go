package sytest

import (
	"net/url"
	"slices"
	"testing"
)

// TestSyncLazyLoadingAndStateAfter checks that lazy loading sends only the
// members the timeline needs, and MSC4222's state_after.
func TestSyncLazyLoadingAndStateAfter(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "lazy-alice")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Named, so no heroes"})
		var members []*User
		for range 6 {
			u := s.Register(t, "lazy-member")
			u.join(t, room)
			members = append(members, u)
		}
		talker := members[2]
		talker.send(t, room, "only I speak")
		viewer := s.Register(t, "lazy-viewer")
		viewer.join(t, room)

		f := `{"room":{"timeline":{"limit":2},"state":{"lazy_load_members":true}}}`
		r := viewer.sync(t, "", url.Values{"filter": {f}})
		jr := r.Rooms.Join[room]
		var memberKeys []string
		for _, e := range jr.State.Events {
			if e.Type == "m.room.member" && e.StateKey != nil {
				memberKeys = append(memberKeys, *e.StateKey)
			}
		}
		for _, e := range jr.Timeline.Events {
			if e.Type == "m.room.member" && e.StateKey != nil {
				memberKeys = append(memberKeys, *e.StateKey)
			}
		}
		if !slices.Contains(memberKeys, talker.ID) || !slices.Contains(memberKeys, viewer.ID) {
			t.Fatalf("lazy loading lost needed members: %v", memberKeys)
		}
		for _, m := range members {
			if m != talker && slices.Contains(memberKeys, m.ID) {
				t.Fatalf("lazy loading sent a member the timeline does not need: %s in %v", m.ID, memberKeys)
			}
		}
		if jr.Summary["m.joined_member_count"] != float64(8) {
			t.Fatalf("summary: %v", jr.Summary)
		}
		// An unnamed room's heroes come with their member events.
		unnamed := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		members[0].join(t, unnamed)
		viewer.join(t, unnamed)
		r = viewer.sync(t, "", url.Values{"filter": {f}})
		u := r.Rooms.Join[unnamed]
		heroes, _ := u.Summary["m.heroes"].([]any)
		if len(heroes) == 0 {
			t.Fatalf("no heroes for an unnamed room: %v", u.Summary)
		}
		for _, h := range heroes {
			found := false
			for _, e := range append(u.State.Events, u.Timeline.Events...) {
				found = found || (e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == h)
			}
			if !found {
				t.Fatalf("hero %v sent without their member event", h)
			}
		}
		// Without lazy loading every member is sent.
		full := viewer.sync(t, "", url.Values{"filter": {`{"room":{"timeline":{"limit":2}}}`}})
		n := 0
		for _, e := range full.Rooms.Join[room].State.Events {
			if e.Type == "m.room.member" {
				n++
			}
		}
		if n < 7 {
			t.Fatalf("full state has %d members", n)
		}

		// state_after: a state change in the timeline also appears in
		// state_after (MSC4222).
		since := viewer.sync(t, "", url.Values{"use_state_after": {"true"}}).NextBatch
		alice.putState(t, room, "m.room.topic", "", map[string]any{"topic": "after"})
		r = viewer.sync(t, since, url.Values{"use_state_after": {"true"}, "timeout": {"10000"}})
		jr = r.Rooms.Join[room]
		if jr.StateAfter == nil {
			t.Fatal("no state_after with use_state_after=true")
		}
		var found bool
		for _, e := range jr.StateAfter.Events {
			found = found || e.Type == "m.room.topic"
		}
		if !found {
			t.Fatalf("state_after lacks the new topic: %+v", jr.StateAfter.Events)
		}
	})
}
