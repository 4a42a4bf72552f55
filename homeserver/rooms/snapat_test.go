package rooms

import (
	"context"
	"testing"

	"github.com/parley-chat/parley/storage"
)

// TestCommittedSnapshotAt checks that a snapshot is remembered only at or
// below the committed position the caller read: above it a later event
// may still land, and the answer must follow.
func TestCommittedSnapshotAt(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice := "@alice:local.test"
		room, m, pos := newRoomAt(t, e, alice)
		before, err := e.committedSnapshotAt(ctx, m, pos, pos)
		if err != nil || before == 0 {
			t.Fatalf("snapshot at %d: %d, %v", pos, before, err)
		}
		// A position beyond the committed one is asked before and after
		// an event lands there.
		ahead, err := e.committedSnapshotAt(ctx, m, pos+1, pos)
		if err != nil || ahead != before {
			t.Fatalf("snapshot ahead before the event: %d, %v (want %d)", ahead, err, before)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: room, Sender: alice, Type: "m.room.topic", StateKey: ptr(""),
			Content: content(map[string]any{"topic": "new"})}); err != nil {
			t.Fatal(err)
		}
		after, err := e.committedSnapshotAt(ctx, m, pos+1, pos)
		if err != nil || after == before {
			t.Fatalf("snapshot ahead after a state event: %d, %v (still %d)", after, err, before)
		}
		if _, ok := e.snapAt.Get([2]int64{m.NID, pos + 1}); ok {
			t.Fatal("a position beyond the committed one was remembered")
		}
		if s, ok := e.snapAt.Get([2]int64{m.NID, pos}); !ok || s != before {
			t.Fatalf("committed position not remembered: %d, %v", s, ok)
		}
		again, err := e.committedSnapshotAt(ctx, m, pos, pos+1)
		if err != nil || again != before {
			t.Fatalf("snapshot at %d changed: %d, %v", pos, again, err)
		}
	})
}

// TestTimelineWindows checks that a timeline window is remembered only
// when it ends at or below the committed position the caller read.
func TestTimelineWindows(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice := "@alice:local.test"
		room, m, pos := newRoomAt(t, e, alice)
		at, err := e.timelineNIDs(ctx, m, 0, pos, 50, pos)
		if err != nil || len(at) == 0 {
			t.Fatalf("window to %d: %v, %v", pos, at, err)
		}
		// Beyond the committed position: read, not remembered, and an
		// event landing there shows.
		ahead, err := e.timelineNIDs(ctx, m, 0, pos+1, 50, pos)
		if err != nil || len(ahead) != len(at) {
			t.Fatalf("window ahead: %v, %v", ahead, err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: room, Sender: alice, Type: "m.room.message",
			Content: content(map[string]any{"msgtype": "m.text", "body": "hi"})}); err != nil {
			t.Fatal(err)
		}
		ahead, err = e.timelineNIDs(ctx, m, 0, pos+1, 50, pos)
		if err != nil || len(ahead) != len(at)+1 {
			t.Fatalf("window ahead after a message: %d rows, %v (want %d)", len(ahead), err, len(at)+1)
		}
		if _, ok := e.windows.Get(timelineKey{m.NID, 0, pos + 1, 50}); ok {
			t.Fatal("a window beyond the committed position was remembered")
		}
		if rows, ok := e.windows.Get(timelineKey{m.NID, 0, pos, 50}); !ok || len(rows) != len(at) {
			t.Fatalf("committed window not remembered: %v, %v", rows, ok)
		}
	})
}

// newRoomAt creates a public room and returns it with its meta and the
// events stream position just after its creation.
func newRoomAt(t *testing.T, e *Engine, creator string) (string, *roomMeta, int64) {
	t.Helper()
	ctx := context.Background()
	room, err := e.CreateRoom(ctx, creator, CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.meta(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	pos, err := e.StreamPosition(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return room, m, pos
}

// TestBundledAt checks that bundled aggregations bounded by a committed
// position leave out later children, and that which events have children
// is remembered only for such positions.
func TestBundledAt(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice := "@alice:local.test"
		room, m, _ := newRoomAt(t, e, alice)
		rootID, err := e.Send(ctx, SendParams{RoomID: room, Sender: alice, Type: "m.room.message",
			Content: content(map[string]any{"msgtype": "m.text", "body": "root"})})
		if err != nil {
			t.Fatal(err)
		}
		beforeReply, err := e.StreamPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: room, Sender: alice, Type: "m.room.message",
			Content: content(map[string]any{"msgtype": "m.text", "body": "reply",
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": rootID}})}); err != nil {
			t.Fatal(err)
		}
		afterReply, err := e.StreamPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		root, err := e.eventByID(ctx, rootID)
		if err != nil {
			t.Fatal(err)
		}
		threadCount := func(at int64) int {
			t.Helper()
			aggs, err := e.aggregate(ctx, alice, nil, m.NID, at, []*Event{root})
			if err != nil {
				t.Fatal(err)
			}
			th, ok := aggs[0]["m.thread"].(threadAggregation)
			if !ok {
				return 0
			}
			return th.Count
		}
		for _, c := range []struct {
			at, want int
		}{{int(beforeReply), 0}, {int(afterReply), 1}, {0, 1}, {int(beforeReply), 0}} {
			if got := threadCount(int64(c.at)); got != c.want {
				t.Errorf("thread count at %d: %d, want %d", c.at, got, c.want)
			}
		}
		if n := e.bundled.Len(); n != 2 {
			t.Fatalf("%d windows remembered, want the 2 at committed positions", n)
		}
	})
}
