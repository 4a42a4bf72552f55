package rooms

import (
	"testing"

	"github.com/parley-chat/parley/storage"
)

func newsEvent(pos, room int64, sender, member string) *Event {
	ev := &Event{Event: storage.Event{NID: pos * 10, RoomNID: room, Sender: sender, Type: "m.room.message", StreamPos: &pos}}
	if member != "" {
		join := "join"
		ev.Type, ev.StateKey, ev.Membership = "m.room.member", &member, &join
	}
	return ev
}

// TestNewsLogHolds checks that the log answers only for windows it holds
// whole (streamlog tests the cases).
func TestNewsLogHolds(t *testing.T) {
	l := newNewsLog(8)
	l.commit(1, 5, []*Event{newsEvent(1, 1, "@a:x", ""), newsEvent(3, 1, "@a:x", "")})
	if _, _, ok := l.window("@a:x", 0, 4, []int64{1}); !ok {
		t.Fatal("the first commit's window is not held")
	}
	// Positions 5 and 6 went to someone else.
	l.commit(7, 9, []*Event{newsEvent(7, 1, "@a:x", "")})
	for _, w := range []struct {
		from, to int64
		want     bool
	}{{0, 4, false}, {5, 8, false}, {6, 8, true}, {6, 9, false}} {
		if _, _, ok := l.window("@a:x", w.from, w.to, []int64{1}); ok != w.want {
			t.Fatalf("window (%d, %d]: held %v, want %v", w.from, w.to, ok, w.want)
		}
	}
}

// TestNewsLogWindow checks what a held window tells.
func TestNewsLogWindow(t *testing.T) {
	l := newNewsLog(100)
	l.commit(1, 7, []*Event{
		newsEvent(1, 1, "@a:x", ""),
		newsEvent(2, 2, "@b:x", "@b:x"),
		newsEvent(3, 1, "@b:x", ""),
		newsEvent(4, 3, "@a:x", "@c:x"),
		{Event: storage.Event{NID: 99, RoomNID: 1, Sender: "@a:x"}}, // no position: an outlier
		newsEvent(5, 2, "@a:x", ""),
	})
	changes, news, ok := l.window("@b:x", 1, 6, []int64{1, 2})
	if !ok {
		t.Fatal("window not held")
	}
	if len(changes) != 1 || changes[0].RoomNID != 2 || changes[0].StreamPos != 2 || changes[0].Membership != "join" {
		t.Fatalf("changes %+v", changes)
	}
	want := map[int64]storage.RoomStreams{1: {Last: 3, LastOwn: 3}, 2: {Last: 5, LastMember: 2, LastOwn: 2}}
	if len(news) != len(want) || news[1] != want[1] || news[2] != want[2] {
		t.Fatalf("news %+v, want %+v", news, want)
	}
	if _, news, _ := l.window("@a:x", 0, 1, []int64{1, 2, 3}); len(news) != 1 || news[1] != (storage.RoomStreams{Last: 1, LastOwn: 1}) {
		t.Fatalf("first position only: %+v", news)
	}
}
