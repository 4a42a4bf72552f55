package sytest

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

const rxV1 = "/_matrix/client/v1"

func rxRoomV1(room string) string { return rxV1 + "/rooms/" + url.PathEscape(room) }

// rxSendEvent sends an event with a fresh transaction ID. (The shared
// sendEvent helper also bumps a package counter without synchronisation,
// which the race detector reports when tests run in parallel.)
func (u *User) rxSendEvent(t testing.TB, room, typ string, content any) string {
	t.Helper()
	r := Must(t, u.Do(t, "PUT", roomPath(room)+"/send/"+typ+"/rx"+randHex(8), content), 200)
	return r.Str("event_id")
}

// rxSend sends a text message.
func (u *User) rxSend(t testing.TB, room, body string) string {
	t.Helper()
	return u.rxSendEvent(t, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
}

// rxRel is message content relating to parent.
func rxRel(relType, parent, body string, extra map[string]any) map[string]any {
	c := map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": relType, "event_id": parent}}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// rxChunkIDs returns the event IDs of a response's chunk.
func rxChunkIDs(r *Response) []string {
	var out []string
	chunk, _ := r.JSON["chunk"].([]any)
	for _, c := range chunk {
		ev, _ := c.(map[string]any)
		id, _ := ev["event_id"].(string)
		out = append(out, id)
	}
	return out
}

// rxDig walks nested objects.
func rxDig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// rxRelations returns an event's bundled aggregations as seen through /event.
func rxRelations(t *testing.T, u *User, room, eventID string) map[string]any {
	t.Helper()
	r := Must(t, u.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(eventID), nil), 200)
	rel, _ := rxDig(r.JSON, "unsigned", "m.relations").(map[string]any)
	return rel
}

func TestRelations(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "alice")
		bob := s.Register(t, "bob")
		carol := s.Register(t, "carol")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		root := alice.rxSend(t, room, "root")
		edit1 := alice.rxSendEvent(t, room, "m.room.message", rxRel("m.replace", root, "* one", map[string]any{
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "one"}}))
		edit2 := alice.rxSendEvent(t, room, "m.room.message", rxRel("m.replace", root, "* two", map[string]any{
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "two"}}))
		// Invalid edits: someone else's, and one without m.new_content.
		bobEdit := bob.rxSendEvent(t, room, "m.room.message", rxRel("m.replace", root, "* hijack", map[string]any{
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "hijack"}}))
		bare := alice.rxSendEvent(t, room, "m.room.message", rxRel("m.replace", root, "* bare", nil))
		th1 := bob.rxSendEvent(t, room, "m.room.message", rxRel("m.thread", root, "in thread 1", nil))
		th2 := alice.rxSendEvent(t, room, "m.room.message", rxRel("m.thread", root, "in thread 2", nil))
		reaction := bob.rxSendEvent(t, room, "m.reaction", map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}})
		ref := bob.rxSendEvent(t, room, "m.room.message", rxRel("m.reference", root, "see", nil))
		// A reaction to a thread reply relates to the root only indirectly.
		nested := alice.rxSendEvent(t, room, "m.reaction", map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": th1, "key": "🎉"}})
		all := []string{ref, reaction, th2, th1, bare, bobEdit, edit2, edit1}
		base := rxRoomV1(room) + "/relations/" + url.PathEscape(root)

		t.Run("all children, newest first, paginated", func(t *testing.T) {
			r := Must(t, bob.Do(t, "GET", base+"?limit=100", nil), 200)
			if got := rxChunkIDs(r); !slices.Equal(got, all) {
				t.Fatalf("chunk %v, want %v", got, all)
			}
			if _, ok := r.JSON["next_batch"]; ok {
				t.Fatalf("next_batch on the last page: %s", r)
			}
			if _, ok := r.JSON["recursion_depth"]; ok {
				t.Fatalf("recursion_depth without recurse: %s", r)
			}
			var pages []string
			from := ""
			for range 10 {
				p := Must(t, bob.Do(t, "GET", base+"?limit=3"+from, nil), 200)
				pages = append(pages, rxChunkIDs(p)...)
				next := p.Str("next_batch")
				if next == "" {
					break
				}
				from = "&from=" + url.QueryEscape(next)
			}
			if !slices.Equal(pages, all) {
				t.Fatalf("pages %v, want %v", pages, all)
			}
			f := Must(t, bob.Do(t, "GET", base+"?dir=f&limit=2", nil), 200)
			if got := rxChunkIDs(f); !slices.Equal(got, []string{edit1, edit2}) || f.Str("next_batch") == "" {
				t.Fatalf("forwards: %v %s", got, f)
			}
		})
		t.Run("by relation type and event type", func(t *testing.T) {
			r := Must(t, bob.Do(t, "GET", base+"/m.thread", nil), 200)
			if got := rxChunkIDs(r); !slices.Equal(got, []string{th2, th1}) {
				t.Fatalf("m.thread: %v", got)
			}
			r = Must(t, bob.Do(t, "GET", base+"/m.annotation/m.reaction", nil), 200)
			if got := rxChunkIDs(r); !slices.Equal(got, []string{reaction}) {
				t.Fatalf("reactions: %v", got)
			}
			r = Must(t, bob.Do(t, "GET", base+"/m.annotation/m.room.message", nil), 200)
			if got := rxChunkIDs(r); len(got) != 0 {
				t.Fatalf("no message annotations expected: %v", got)
			}
		})
		t.Run("recurse", func(t *testing.T) {
			r := Must(t, bob.Do(t, "GET", base+"?recurse=true&limit=100", nil), 200)
			if got := rxChunkIDs(r); !slices.Equal(got, append([]string{nested}, all...)) {
				t.Fatalf("recursive chunk: %v", got)
			}
			if d, _ := r.JSON["recursion_depth"].(float64); d < 3 {
				t.Fatalf("recursion_depth: %s", r)
			}
			r = Must(t, bob.Do(t, "GET", base+"?recurse=false&limit=100", nil), 200)
			if got := rxChunkIDs(r); !slices.Equal(got, all) || r.JSON["recursion_depth"] != float64(1) {
				t.Fatalf("recurse=false: %v %v", got, r.JSON["recursion_depth"])
			}
			// The filter applies along the chain: the reaction hangs off a
			// thread event, so m.thread finds only the thread.
			r = Must(t, bob.Do(t, "GET", base+"/m.thread?recurse=true", nil), 200)
			if got := rxChunkIDs(r); !slices.Equal(got, []string{th2, th1}) {
				t.Fatalf("recursive m.thread: %v", got)
			}
			r = Must(t, bob.Do(t, "GET", base+"/m.annotation?recurse=true", nil), 200)
			if got := rxChunkIDs(r); !slices.Equal(got, []string{reaction}) {
				t.Fatalf("recursive m.annotation: %v", got)
			}
		})
		t.Run("bundled aggregations", func(t *testing.T) {
			carol.join(t, room)
			rel := rxRelations(t, carol, room, root)
			if rxDig(rel, "m.replace", "event_id") != edit2 {
				t.Fatalf("m.replace should be the newest valid edit %s: %v", edit2, rel)
			}
			if rxDig(rel, "m.thread", "count") != float64(2) || rxDig(rel, "m.thread", "latest_event", "event_id") != th2 {
				t.Fatalf("m.thread: %v", rel)
			}
			if rxDig(rel, "m.thread", "current_user_participated") != false {
				t.Fatalf("carol did not take part: %v", rel)
			}
			if rxDig(rxRelations(t, bob, room, root), "m.thread", "current_user_participated") != true {
				t.Fatal("bob replied in the thread")
			}
			if rxDig(rxRelations(t, alice, room, root), "m.thread", "current_user_participated") != true {
				t.Fatal("alice sent the root")
			}
			refs, _ := rxDig(rel, "m.reference", "chunk").([]any)
			if len(refs) != 1 || rxDig(refs[0], "event_id") != ref {
				t.Fatalf("m.reference: %v", rel)
			}
			if _, ok := rel["m.annotation"]; ok {
				t.Fatalf("annotations are not aggregated: %v", rel)
			}
			// Edits and reactions get none of their own; the thread reply's
			// aggregation shows the reaction's absence.
			if r := rxRelations(t, bob, room, edit2); r != nil {
				t.Fatalf("an edit has no aggregations: %v", r)
			}
			m := Must(t, bob.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=20", nil), 200)
			found := false
			chunk, _ := m.JSON["chunk"].([]any)
			for _, c := range chunk {
				if rxDig(c, "event_id") == root {
					found = rxDig(c, "unsigned", "m.relations", "m.replace", "event_id") == edit2
				}
			}
			if !found {
				t.Fatalf("/messages lacks the root's aggregations: %s", m)
			}
		})
		t.Run("redacted edits and parents", func(t *testing.T) {
			Must(t, alice.Do(t, "PUT", roomPath(room)+"/redact/"+url.PathEscape(edit2)+"/r"+randHex(4), map[string]any{}), 200)
			if got := rxDig(rxRelations(t, bob, room, root), "m.replace", "event_id"); got != edit1 {
				t.Fatalf("after redacting the newest edit m.replace is %v, want %s", got, edit1)
			}
			r := Must(t, bob.Do(t, "GET", base+"/m.replace", nil), 200)
			if got := rxChunkIDs(r); slices.Contains(got, edit2) {
				t.Fatalf("a redacted child no longer relates: %v", got)
			}
			Must(t, alice.Do(t, "PUT", roomPath(room)+"/redact/"+url.PathEscape(root)+"/r"+randHex(4), map[string]any{}), 200)
			rel := rxRelations(t, bob, room, root)
			if _, ok := rel["m.replace"]; ok {
				t.Fatalf("a redacted event has no m.replace: %v", rel)
			}
			if rxDig(rel, "m.thread", "count") != float64(2) {
				t.Fatalf("a redacted root keeps its thread: %v", rel)
			}
		})
		t.Run("bad input", func(t *testing.T) {
			MustErr(t, bob.Do(t, "GET", rxRoomV1("not-a-room")+"/relations/"+url.PathEscape(root), nil), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "GET", rxRoomV1(room)+"/relations/not-an-event", nil), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "GET", rxRoomV1(room)+"/relations/$unknown", nil), 404, "M_NOT_FOUND")
			MustErr(t, bob.Do(t, "GET", rxRoomV1("!unknown:localhost")+"/relations/"+url.PathEscape(root), nil), 404, "M_NOT_FOUND")
			for _, q := range []string{"dir=x", "limit=0", "limit=-1", "limit=ten", "recurse=maybe", "from=garbage", "to=t1"} {
				MustErr(t, bob.Do(t, "GET", base+"?"+q, nil), 400, "M_INVALID_PARAM")
			}
			MustErr(t, bob.Do(t, "GET", base+"/"+strings.Repeat("x", 256), nil), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "GET", base+"/m.thread/"+strings.Repeat("x", 256), nil), 400, "M_INVALID_PARAM")
			MustErr(t, s.Do(t, "GET", base, "", nil), 401, "M_MISSING_TOKEN")
			// The parent must be visible: a private room's events are not.
			private := alice.createRoom(t, map[string]any{"preset": "private_chat"})
			secret := alice.rxSend(t, private, "secret")
			MustErr(t, carol.Do(t, "GET", rxRoomV1(private)+"/relations/"+url.PathEscape(secret), nil), 404, "M_NOT_FOUND")
			// An event of another room is not found in this one.
			MustErr(t, alice.Do(t, "GET", rxRoomV1(room)+"/relations/"+url.PathEscape(secret), nil), 404, "M_NOT_FOUND")
		})
	})
}

func TestThreads(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "alice")
		bob := s.Register(t, "bob")
		carol := s.Register(t, "carol")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		r1 := alice.rxSend(t, room, "first root")
		r2 := bob.rxSend(t, room, "second root")
		r3 := alice.rxSend(t, room, "third root")
		alice.rxSendEvent(t, room, "m.room.message", rxRel("m.thread", r1, "a", nil))
		bob.rxSendEvent(t, room, "m.room.message", rxRel("m.thread", r2, "b", nil))
		alice.rxSendEvent(t, room, "m.room.message", rxRel("m.thread", r3, "c", nil))
		// r1 becomes the most recently active thread.
		last := bob.rxSendEvent(t, room, "m.room.message", rxRel("m.thread", r1, "d", nil))
		alice.rxSend(t, room, "not a thread")
		threads := rxRoomV1(room) + "/threads"

		t.Run("by latest activity with aggregations", func(t *testing.T) {
			r := Must(t, alice.Do(t, "GET", threads, nil), 200)
			if got := rxChunkIDs(r); !slices.Equal(got, []string{r1, r3, r2}) {
				t.Fatalf("threads %v, want %v", got, []string{r1, r3, r2})
			}
			chunk, _ := r.JSON["chunk"].([]any)
			if rxDig(chunk[0], "unsigned", "m.relations", "m.thread", "count") != float64(2) ||
				rxDig(chunk[0], "unsigned", "m.relations", "m.thread", "latest_event", "event_id") != last {
				t.Fatalf("r1's thread aggregation: %v", chunk[0])
			}
		})
		t.Run("pagination", func(t *testing.T) {
			var got []string
			from := ""
			for range 5 {
				p := Must(t, alice.Do(t, "GET", threads+"?limit=1"+from, nil), 200)
				got = append(got, rxChunkIDs(p)...)
				if p.Str("next_batch") == "" {
					break
				}
				from = "&from=" + url.QueryEscape(p.Str("next_batch"))
			}
			if !slices.Equal(got, []string{r1, r3, r2}) {
				t.Fatalf("paged threads: %v", got)
			}
		})
		t.Run("participated", func(t *testing.T) {
			r := Must(t, bob.Do(t, "GET", threads+"?include=participated", nil), 200)
			if got := rxChunkIDs(r); !slices.Equal(got, []string{r1, r2}) {
				t.Fatalf("bob's threads: %v", got)
			}
			carol.join(t, room)
			r = Must(t, carol.Do(t, "GET", threads+"?include=participated", nil), 200)
			if got := rxChunkIDs(r); len(got) != 0 {
				t.Fatalf("carol took part in none: %v", got)
			}
		})
		t.Run("bad input", func(t *testing.T) {
			outsider := s.Register(t, "outsider")
			private := alice.createRoom(t, map[string]any{"preset": "private_chat"})
			MustErr(t, outsider.Do(t, "GET", rxRoomV1(private)+"/threads", nil), 403, "M_FORBIDDEN")
			MustErr(t, outsider.Do(t, "GET", rxRoomV1("!nope:localhost")+"/threads", nil), 403, "M_FORBIDDEN")
			MustErr(t, alice.Do(t, "GET", rxRoomV1("nope")+"/threads", nil), 400, "M_INVALID_PARAM")
			for _, q := range []string{"include=some", "limit=0", "limit=x", "from=nonsense", "from=s12"} {
				MustErr(t, alice.Do(t, "GET", threads+"?"+q, nil), 400, "M_INVALID_PARAM")
			}
		})
	})
}
