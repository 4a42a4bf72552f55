package sync

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"github.com/parley-chat/parley/homeserver/filter"
	"github.com/parley-chat/parley/homeserver/push"
	"github.com/parley-chat/parley/homeserver/receipts"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// receiptRooms gives the receipts engine the rooms engine.
type receiptRooms struct{ *rooms.Engine }

func (r receiptRooms) IsJoined(ctx context.Context, userID, roomID string) (bool, error) {
	m, err := r.MembershipOf(ctx, userID, roomID)
	return m == "join", err
}

// quietCounts records the Quiet of each count.
type quietCounts struct{ last *Quiet }

func (q *quietCounts) Counts(_ context.Context, _ string, _ []string, _ bool, _ int64, quiet Quiet) (map[string]RoomCounts, error) {
	q.last = &quiet
	return nil, nil
}

// TestQuietRooms checks which rooms a build reports as quiet to the
// counts: those where the user's membership, own events and receipts
// surely did not change in the window, and no others.
func TestQuietRooms(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		// Push counting keeps the index of own events that rooms' news read.
		log, re, acc, n := newTestEngines(t, db, func(re *rooms.Engine) {
			re.SetHooks(rooms.Hooks{InTx: push.New(push.Config{}, db, re, nil, slog.New(slog.NewTextHandler(io.Discard, nil))).OnEvents})
		})
		rc := receipts.New(receipts.Config{ServerName: "local.test"}, db, receipts.Deps{Rooms: receiptRooms{re}, Notifier: n}, log)
		counts := &quietCounts{}
		deps := Deps{DB: db, Rooms: re, Accounts: acc, Notifier: n, Receipts: rc, Counts: counts}
		e := New(deps, log)

		alice, bob := "@alice:local.test", "@bob:local.test"
		room, err := re.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		other, err := re.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := re.Join(ctx, rooms.MembershipParams{RoomID: room, Sender: bob, Target: bob}); err != nil {
			t.Fatal(err)
		}
		send := func(who string) string {
			t.Helper()
			id, err := re.Send(ctx, rooms.SendParams{RoomID: room, Sender: who, Type: "m.room.message",
				Content: json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)})
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		resp, err := e.Sync(ctx, Request{UserID: bob, DeviceID: "D"})
		if err != nil {
			t.Fatal(err)
		}
		if q := counts.last; q == nil || q.Since != 0 {
			t.Fatalf("initial sync: %+v", q)
		}
		next := func(e *Engine, f *filter.Filter) *Quiet {
			t.Helper()
			since := resp.Next
			counts.last = nil
			if resp, err = e.Sync(ctx, Request{UserID: bob, DeviceID: "D", Since: &since, Filter: f}); err != nil {
				t.Fatal(err)
			}
			if counts.last == nil {
				t.Fatal("no count")
			}
			if counts.last.Since != 0 && counts.last.Since != since.Events {
				t.Fatalf("quiet since %d, want %d", counts.last.Since, since.Events)
			}
			return counts.last
		}
		limit := 3
		limited := &filter.Filter{Room: &filter.RoomFilter{Timeline: &filter.RoomEventFilter{EventFilter: filter.EventFilter{Limit: &limit}}}}
		filtered := &filter.Filter{Room: &filter.RoomFilter{Timeline: &filter.RoomEventFilter{EventFilter: filter.EventFilter{NotSenders: []string{"@carol:local.test"}}}}}
		many := func() {
			for range limit + 1 {
				send(alice)
			}
		}
		// fresh: a new engine, which has not cached the user's joined
		// rooms, so the rooms' news do not tell of own events and the
		// timeline has to.
		for _, c := range []struct {
			name  string
			act   func()
			f     *filter.Filter
			fresh bool
			quiet bool
		}{
			{"another's message", func() { send(alice) }, nil, false, true},
			{"own message", func() { send(bob) }, nil, false, false},
			{"a receipt in the room", func() {
				if err := rc.Send(ctx, alice, room, "m.read", send(alice), nil); err != nil {
					t.Fatal(err)
				}
			}, nil, false, false},
			{"a limited timeline", many, limited, false, true},
			{"a filtered timeline", func() { send(alice) }, filtered, false, true},
			{"a membership change elsewhere", func() {
				send(alice)
				if _, err := re.Join(ctx, rooms.MembershipParams{RoomID: other, Sender: bob, Target: bob}); err != nil {
					t.Fatal(err)
				}
			}, nil, false, false},
			{"quiet again", func() { send(alice) }, nil, false, true},
			{"timeline: another's message", func() { send(alice) }, nil, true, true},
			{"timeline: own message", func() { send(bob) }, nil, true, false},
			{"timeline: limited", many, limited, true, false},
			{"timeline: filtered", func() { send(alice) }, filtered, true, false},
			{"timeline: filtered by room", func() { send(alice) },
				&filter.Filter{Room: &filter.RoomFilter{Timeline: &filter.RoomEventFilter{NotRooms: []string{"!elsewhere:local.test"}}}}, true, false},
		} {
			c.act()
			eng := e
			if c.fresh {
				eng = New(deps, log)
			}
			q := next(eng, c.f)
			if got := q.Rooms[room]; got != c.quiet {
				t.Errorf("%s: quiet %v, want %v (%+v)", c.name, got, c.quiet, q)
			}
		}
	})
}
