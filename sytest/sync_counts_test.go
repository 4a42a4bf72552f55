package sytest

import (
	"net/url"
	"testing"
	"time"
)

// TestSyncUnreadCounts checks the counts sync reports: a message notifies,
// a mention highlights, and a read receipt resets both.
func TestSyncUnreadCounts(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "counts-alice")
		bob := s.Register(t, "counts-bob")
		carol := s.Register(t, "counts-carol")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Counts"})
		bob.join(t, room)
		carol.join(t, room)
		since := bob.sync(t, "", nil).NextBatch

		// counts syncs until the room's counts equal want.
		counts := func(wantN, wantH int) {
			t.Helper()
			deadline := time.Now().Add(15 * time.Second)
			for {
				r := bob.sync(t, since, url.Values{"timeout": {"5000"}})
				since = r.NextBatch
				if jr, ok := r.Rooms.Join[room]; ok && jr.Unread != nil {
					if jr.Unread.Notification == wantN && jr.Unread.Highlight == wantH {
						return
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("counts never became %d/%d", wantN, wantH)
				}
			}
		}
		alice.send(t, room, "hello everyone")
		counts(1, 0)
		mention := alice.sendEvent(t, room, "m.room.message", map[string]any{
			"msgtype": "m.text", "body": "bob, look", "m.mentions": map[string]any{"user_ids": []string{bob.ID}},
		})
		counts(2, 1)
		// A receipt for an earlier event leaves the mention unread.
		first := Must(t, bob.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=2", nil), 200)
		chunk, _ := first.JSON["chunk"].([]any)
		older := chunk[1].(map[string]any)["event_id"].(string)
		Must(t, bob.Do(t, "POST", roomPath(room)+"/receipt/m.read/"+url.PathEscape(older), map[string]any{}), 200)
		counts(1, 1)
		Must(t, bob.Do(t, "POST", roomPath(room)+"/receipt/m.read/"+url.PathEscape(mention), map[string]any{}), 200)
		counts(0, 0)
		// Bob's own messages never count for him.
		bob.send(t, room, "thanks")
		alice.send(t, room, "you're welcome")
		counts(1, 0)
	})
}
