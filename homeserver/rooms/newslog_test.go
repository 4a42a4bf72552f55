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

// TestNewsLogHolds checks which windows the log answers for as commits
// arrive contiguous, with gaps and past what it keeps.
func TestNewsLogHolds(t *testing.T) {
	type commit struct {
		first, end int64
		evs        []*Event
	}
	many := func(first, n int64) commit {
		c := commit{first: first, end: first + n}
		for p := first; p < first+n; p++ {
			c.evs = append(c.evs, newsEvent(p, 1, "@a:x", ""))
		}
		return c
	}
	for _, tc := range []struct {
		name     string
		commits  []commit
		from, to int64
		want     bool
	}{
		{name: "nothing committed", from: 0, to: 0, want: false},
		{name: "one commit", commits: []commit{many(1, 4)}, from: 0, to: 4, want: true},
		{name: "reserved but unused positions", commits: []commit{{first: 1, end: 9, evs: many(1, 2).evs}}, from: 0, to: 8, want: true},
		{name: "past the last commit", commits: []commit{many(1, 4)}, from: 0, to: 5, want: false},
		{name: "contiguous commits", commits: []commit{many(1, 4), many(5, 4)}, from: 2, to: 8, want: true},
		{name: "a gap starts again", commits: []commit{many(1, 4), many(7, 4)}, from: 2, to: 10, want: false},
		{name: "after a gap", commits: []commit{many(1, 4), many(7, 4)}, from: 6, to: 10, want: true},
		{name: "trimmed away", commits: []commit{many(1, 10), many(11, 10)}, from: 5, to: 20, want: false},
		{name: "what a trim keeps", commits: []commit{many(1, 10), many(11, 10)}, from: 16, to: 20, want: true},
		{name: "too long a walk", commits: []commit{many(1, maxNewsScan+2)}, from: 0, to: maxNewsScan + 1, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep := 8
			if tc.name == "too long a walk" {
				keep = maxNewsScan * 2
			}
			l := newNewsLog(keep)
			for _, c := range tc.commits {
				l.commit(c.first, c.end, c.evs)
			}
			if _, _, ok := l.window("@a:x", tc.from, tc.to, []int64{1}); ok != tc.want {
				t.Fatalf("window (%d, %d]: held %v, want %v", tc.from, tc.to, ok, tc.want)
			}
		})
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
