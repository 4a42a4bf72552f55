package storage_test

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// rxEvent is a compact description of an event row for these tests.
type rxEvent struct {
	id, typ, sender    string
	depth, stream, ts  int64
	relatesTo, relType string
	state              *string
	redacted           bool
}

// rxRoom creates a room and writes its events (nids follow the streams).
func rxRoom(t *testing.T, db *storage.DB, roomID string, evs []rxEvent) int64 {
	t.Helper()
	ctx := context.Background()
	s := db.Rooms()
	var nid int64
	err := db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		if nid, err = s.RoomCreate(ctx, tx, roomID, "12", 1); err != nil {
			return err
		}
		b := &storage.Batch{}
		for _, e := range evs {
			row := &storage.Event{NID: e.stream, EventID: e.id, RoomNID: nid, Type: e.typ, StateKey: e.state, Sender: e.sender,
				Depth: e.depth, OriginTS: e.ts, JSON: []byte("{}")}
			pos := e.stream
			row.StreamPos = &pos
			if e.relatesTo != "" {
				row.RelatesTo, row.RelType = &e.relatesTo, &e.relType
			}
			if e.redacted {
				red := "$redaction"
				row.RedactedBy = &red
			}
			s.AddEvent(b, row)
		}
		return tx.ExecBatch(ctx, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	return nid
}

func rxIDs(evs []*storage.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.EventID)
	}
	return out
}

func TestRoomStorageRelationsAndDirectory(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.Rooms()
		msg := "m.room.message"
		empty := ""
		room := rxRoom(t, db, "!rx:test", []rxEvent{
			{id: "$root", typ: msg, sender: "@a:x", depth: 1, stream: 101, ts: 1000},
			{id: "$edit", typ: msg, sender: "@a:x", depth: 2, stream: 102, ts: 1100, relatesTo: "$root", relType: "m.replace"},
			{id: "$t1", typ: msg, sender: "@b:x", depth: 3, stream: 103, ts: 1200, relatesTo: "$root", relType: "m.thread"},
			{id: "$react", typ: "m.reaction", sender: "@c:x", depth: 4, stream: 104, ts: 1300, relatesTo: "$t1", relType: "m.annotation"},
			{id: "$deep", typ: "m.reaction", sender: "@c:x", depth: 5, stream: 105, ts: 1300, relatesTo: "$react", relType: "m.annotation"},
			{id: "$t2", typ: msg, sender: "@a:x", depth: 6, stream: 106, ts: 1400, relatesTo: "$root", relType: "m.thread"},
			{id: "$gone", typ: msg, sender: "@b:x", depth: 7, stream: 107, ts: 1500, relatesTo: "$root", relType: "m.thread", redacted: true},
			{id: "$ref", typ: msg, sender: "@b:x", depth: 8, stream: 108, ts: 1600, relatesTo: "$root", relType: "m.reference"},
			{id: "$root2", typ: msg, sender: "@c:x", depth: 9, stream: 109, ts: 1700},
			{id: "$t3", typ: msg, sender: "@c:x", depth: 10, stream: 110, ts: 1800, relatesTo: "$root2", relType: "m.thread"},
			{id: "$topic", typ: "m.room.topic", sender: "@a:x", depth: 11, stream: 111, ts: 1900, state: &empty},
		})
		// An event of another room relating to $root does not count.
		rxRoom(t, db, "!other:test", []rxEvent{
			{id: "$stray", typ: msg, sender: "@z:x", depth: 1, stream: 201, ts: 1000, relatesTo: "$root", relType: "m.thread"},
		})

		t.Run("relations", func(t *testing.T) {
			q := storage.RelationsQuery{RoomNID: room, ParentID: "$root", Depth: 1, Backwards: true, Limit: 100}
			cases := []struct {
				name string
				mod  func(q *storage.RelationsQuery)
				want []string
			}{
				{"direct, newest first", func(*storage.RelationsQuery) {}, []string{"$ref", "$t2", "$t1", "$edit"}},
				{"forwards", func(q *storage.RelationsQuery) { q.Backwards = false }, []string{"$edit", "$t1", "$t2", "$ref"}},
				{"rel type", func(q *storage.RelationsQuery) { q.RelType = "m.thread" }, []string{"$t2", "$t1"}},
				{"event type", func(q *storage.RelationsQuery) { q.RelType, q.EventType = "m.thread", "m.reaction" }, nil},
				{"recursive", func(q *storage.RelationsQuery) { q.Depth = 3 }, []string{"$ref", "$t2", "$deep", "$react", "$t1", "$edit"}},
				{"recursion bounded", func(q *storage.RelationsQuery) { q.Depth = 2 }, []string{"$ref", "$t2", "$react", "$t1", "$edit"}},
				{"filter on the whole chain", func(q *storage.RelationsQuery) { q.Depth, q.RelType = 3, "m.annotation" }, nil},
				{"from", func(q *storage.RelationsQuery) { q.HasFrom, q.FromDepth, q.FromStream = true, 6, 106 }, []string{"$t1", "$edit"}},
				{"from and to", func(q *storage.RelationsQuery) {
					q.HasFrom, q.FromDepth, q.FromStream, q.HasTo, q.ToDepth, q.ToStream = true, 8, 108, true, 2, 102
				}, []string{"$t2", "$t1"}},
				{"limit", func(q *storage.RelationsQuery) { q.Limit = 1 }, []string{"$ref"}},
			}
			for _, c := range cases {
				q := q
				c.mod(&q)
				got, err := s.RelationsPage(ctx, q)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if ids := rxIDs(got); !slices.Equal(ids, c.want) {
					t.Errorf("%s: %v, want %v", c.name, ids, c.want)
				}
			}
		})
		t.Run("thread roots", func(t *testing.T) {
			got, err := s.ThreadRoots(ctx, storage.ThreadsQuery{RoomNID: room, Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || got[0] != (storage.ThreadRoot{RootID: "$root2", Depth: 10, Stream: 110}) ||
				got[1] != (storage.ThreadRoot{RootID: "$root", Depth: 6, Stream: 106}) {
				t.Fatalf("roots: %+v", got)
			}
			got, _ = s.ThreadRoots(ctx, storage.ThreadsQuery{RoomNID: room, Limit: 10, HasFrom: true, FromDepth: 10, FromStream: 110})
			if len(got) != 1 || got[0].RootID != "$root" {
				t.Fatalf("after $root2: %+v", got)
			}
			for user, want := range map[string][]string{"@a:x": {"$root"}, "@b:x": {"$root"}, "@c:x": {"$root2"}, "@d:x": nil} {
				got, err := s.ThreadRoots(ctx, storage.ThreadsQuery{RoomNID: room, Limit: 10, Participant: user})
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, r := range got {
					ids = append(ids, r.RootID)
				}
				if !slices.Equal(ids, want) {
					t.Errorf("%s took part in %v, want %v", user, ids, want)
				}
			}
		})
		t.Run("aggregation queries", func(t *testing.T) {
			sums, err := s.ThreadSummaries(ctx, room, []string{"$root", "$root2", "$t1"})
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(sums, func(a, b storage.ThreadSummary) int {
				return cmp.Or(strings.Compare(a.RootID, b.RootID), strings.Compare(a.Sender, b.Sender))
			})
			want := []storage.ThreadSummary{
				{RootID: "$root", Sender: "@a:x", Count: 1, LatestNID: 106, LatestDepth: 6, LatestStream: 106},
				{RootID: "$root", Sender: "@b:x", Count: 1, LatestNID: 103, LatestDepth: 3, LatestStream: 103},
				{RootID: "$root2", Sender: "@c:x", Count: 1, LatestNID: 110, LatestDepth: 10, LatestStream: 110},
			}
			if !slices.Equal(sums, want) {
				t.Fatalf("summaries: %+v", sums)
			}
			edits, err := s.EditCandidates(ctx, room, []string{"$root"}, 5)
			if err != nil || len(edits) != 1 || edits[0].EventID != "$edit" || edits[0].Sender != "@a:x" || edits[0].OriginTS != 1100 {
				t.Fatalf("edits: %+v %v", edits, err)
			}
			refs, err := s.References(ctx, room, []string{"$root", "$root2"}, 10)
			if err != nil || len(refs) != 1 || refs[0].EventID != "$ref" || refs[0].ParentID != "$root" {
				t.Fatalf("references: %+v %v", refs, err)
			}
			if refs, _ := s.References(ctx, room, []string{"$root"}, 0); len(refs) != 0 {
				t.Fatalf("perParent 0: %+v", refs)
			}
		})
		t.Run("events by timestamp", func(t *testing.T) {
			cases := []struct {
				q    storage.TimestampQuery
				want []string
			}{
				{storage.TimestampQuery{TS: 1300, Stream: -1, Forward: true, Limit: 3}, []string{"$react", "$deep", "$t2"}},
				{storage.TimestampQuery{TS: 1300, Stream: 104, Forward: true, Limit: 1}, []string{"$deep"}},
				{storage.TimestampQuery{TS: 1300, Stream: 1 << 62, Limit: 3}, []string{"$deep", "$react", "$t1"}},
				{storage.TimestampQuery{TS: 999, Stream: 1 << 62, Limit: 3}, nil},
			}
			for _, c := range cases {
				c.q.RoomNID = room
				got, err := s.EventsByTimestamp(ctx, c.q)
				if err != nil {
					t.Fatal(err)
				}
				if ids := rxIDs(got); !slices.Equal(ids, c.want) {
					t.Errorf("%+v: %v, want %v", c.q, ids, c.want)
				}
			}
		})
		t.Run("directory and aliases", func(t *testing.T) {
			if rooms, err := s.DirectoryRooms(ctx, []string{"m.room.topic"}); err != nil || len(rooms) != 0 {
				t.Fatalf("nothing published yet: %+v %v", rooms, err)
			}
			if err := s.RoomSetPublished(ctx, room, true); err != nil {
				t.Fatal(err)
			}
			joined := "join"
			err := db.Write(ctx, func(tx *storage.Tx) error {
				b := &storage.Batch{}
				s.AddCurrentState(b, room, "m.room.topic", "", 111, nil)
				s.AddCurrentState(b, room, "m.room.member", "@a:x", 101, &joined)
				s.AddCurrentState(b, room, "m.room.member", "@b:x", 103, &joined)
				return tx.ExecBatch(ctx, b)
			})
			if err != nil {
				t.Fatal(err)
			}
			rooms, err := s.DirectoryRooms(ctx, []string{"m.room.topic", "m.room.name"})
			if err != nil || len(rooms) != 1 || rooms[0].RoomID != "!rx:test" || rooms[0].Joined != 2 ||
				rooms[0].State["m.room.topic"] != 111 || len(rooms[0].State) != 1 {
				t.Fatalf("directory: %+v %v", rooms, err)
			}
			other, err := s.RoomByID(ctx, db.Read(), "!other:test")
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range []string{"#b:test", "#a:test"} {
				if err := s.AliasCreate(ctx, a, room, "@a:x", 1); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.AliasCreate(ctx, "#a:test", other.NID, "@a:x", 1); !errors.Is(err, storage.ErrConflict) {
				t.Fatalf("duplicate alias: %v", err)
			}
			moved, err := s.AliasesMove(ctx, room, other.NID)
			if err != nil || !slices.Equal(moved, []string{"#a:test", "#b:test"}) {
				t.Fatalf("moved %v %v", moved, err)
			}
			if a, err := s.AliasGet(ctx, "#a:test"); err != nil || a.RoomNID != other.NID {
				t.Fatalf("alias after move: %+v %v", a, err)
			}
			if err := s.AliasDeleteFrom(ctx, "#a:test", room); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("delete from the wrong room: %v", err)
			}
			if err := s.AliasDeleteFrom(ctx, "#a:test", other.NID); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AliasGet(ctx, "#a:test"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("deleted alias: %v", err)
			}
		})
	})
}
