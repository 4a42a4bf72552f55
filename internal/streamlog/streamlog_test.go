package streamlog

import (
	"reflect"
	"testing"
)

type commit struct {
	first, end int64
	items      []Item[int64]
}

// run commits one item at each position of [first, first+n).
func run(first, n int64) commit {
	c := commit{first: first, end: first + n}
	for p := first; p < first+n; p++ {
		c.items = append(c.items, Item[int64]{Pos: p, V: p * 10})
	}
	return c
}

// TestWindowHeld checks which windows the log answers for as commits
// arrive contiguous, with gaps and past what it keeps.
func TestWindowHeld(t *testing.T) {
	for _, tc := range []struct {
		name     string
		keep     int
		commits  []commit
		from, to int64
		maxScan  int
		want     bool
	}{
		{name: "nothing committed", from: 0, to: 0, want: false},
		{name: "one commit", commits: []commit{run(1, 4)}, from: 0, to: 4, want: true},
		{name: "reserved but unused positions", commits: []commit{{first: 1, end: 9, items: run(1, 2).items}}, from: 0, to: 8, want: true},
		{name: "a commit without items", commits: []commit{run(1, 4), {first: 5, end: 7}}, from: 2, to: 6, want: true},
		{name: "past the last commit", commits: []commit{run(1, 4)}, from: 0, to: 5, want: false},
		{name: "backwards", commits: []commit{run(1, 4)}, from: 3, to: 2, want: false},
		{name: "contiguous commits", commits: []commit{run(1, 4), run(5, 4)}, from: 2, to: 8, want: true},
		{name: "a gap starts again", commits: []commit{run(1, 4), run(7, 4)}, from: 2, to: 10, want: false},
		{name: "after a gap", commits: []commit{run(1, 4), run(7, 4)}, from: 6, to: 10, want: true},
		{name: "trimmed away", commits: []commit{run(1, 10), run(11, 10)}, from: 5, to: 20, want: false},
		{name: "what a trim keeps", commits: []commit{run(1, 10), run(11, 10)}, from: 16, to: 20, want: true},
		{name: "too long a walk", keep: 100, commits: []commit{run(1, 20)}, from: 0, to: 20, maxScan: 19, want: false},
		{name: "a walk just short enough", keep: 100, commits: []commit{run(1, 20)}, from: 1, to: 20, maxScan: 19, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep := tc.keep
			if keep == 0 {
				keep = 8
			}
			if tc.maxScan == 0 {
				tc.maxScan = 1000
			}
			l := New[int64](keep)
			for _, c := range tc.commits {
				l.Commit(c.first, c.end, c.items)
			}
			if ok := l.Window(tc.from, tc.to, tc.maxScan, func(int64, int64) bool { return true }); ok != tc.want {
				t.Fatalf("window (%d, %d]: held %v, want %v", tc.from, tc.to, ok, tc.want)
			}
		})
	}
}

// TestWindowWalk checks which entries a held window visits, and that fn
// can give up.
func TestWindowWalk(t *testing.T) {
	l := New[int64](100)
	l.Commit(1, 4, run(1, 3).items)
	l.Commit(4, 10, []Item[int64]{{Pos: 5, V: 50}, {Pos: 8, V: 80}})
	var got []int64
	if !l.Window(2, 8, 100, func(pos, v int64) bool {
		if v != pos*10 {
			t.Fatalf("position %d holds %d", pos, v)
		}
		got = append(got, pos)
		return true
	}) {
		t.Fatal("window not held")
	}
	if want := []int64{3, 5, 8}; !reflect.DeepEqual(got, want) {
		t.Fatalf("visited %v, want %v", got, want)
	}
	if l.Window(0, 9, 100, func(pos, _ int64) bool { return pos < 3 }) {
		t.Fatal("a walk fn gave up on reported held")
	}
}

// TestLatest checks the newest matching entry at or before a position,
// and when the log cannot tell.
func TestLatest(t *testing.T) {
	l := New[int64](100)
	l.Commit(5, 9, []Item[int64]{{Pos: 5, V: 1}, {Pos: 6, V: 2}, {Pos: 8, V: 1}})
	l.Commit(9, 12, []Item[int64]{{Pos: 10, V: 2}})
	is := func(want int64) func(int64) bool { return func(v int64) bool { return v == want } }
	for _, tc := range []struct {
		name    string
		to      int64
		match   func(int64) bool
		maxScan int
		pos     int64
		ok      bool
	}{
		{name: "newest", to: 11, match: is(2), maxScan: 10, pos: 10, ok: true},
		{name: "at or before to", to: 9, match: is(2), maxScan: 10, pos: 6, ok: true},
		{name: "at to", to: 8, match: is(1), maxScan: 10, pos: 8, ok: true},
		{name: "none held", to: 11, match: is(3), maxScan: 10},
		{name: "beyond the scan", to: 11, match: is(1), maxScan: 1},
		{name: "past the last commit", to: 12, match: is(2), maxScan: 10},
		{name: "before what is held", to: 3, match: is(1), maxScan: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pos, _, ok := l.Latest(tc.to, tc.maxScan, tc.match)
			if ok != tc.ok || pos != tc.pos {
				t.Fatalf("Latest(%d) = %d, %v; want %d, %v", tc.to, pos, ok, tc.pos, tc.ok)
			}
		})
	}
}
