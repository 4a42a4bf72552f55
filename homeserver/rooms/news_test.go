package rooms

import (
	"context"
	"reflect"
	"testing"

	"github.com/parley-chat/parley/storage"
)

// TestRoomsWithEvents checks that rooms with news report how far their
// membership events reach, which lets sync skip reading member changes.
func TestRoomsWithEvents(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice, bob := "@alice:local.test", "@bob:local.test"
		room, _, created := newRoomAt(t, e, alice)
		news, err := e.RoomsWithEvents(ctx, []string{room}, created)
		if err != nil || len(news) != 0 {
			t.Fatalf("no news yet: %v, %v", news, err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: room, Sender: alice, Type: "m.room.message",
			Content: content(map[string]any{"msgtype": "m.text", "body": "hi"})}); err != nil {
			t.Fatal(err)
		}
		news, err = e.RoomsWithEvents(ctx, []string{room}, created)
		if err != nil || news[room].Last <= created || news[room].LastMember == 0 || news[room].LastMember > created {
			t.Fatalf("a message: %+v, %v", news, err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: room, Sender: bob, Type: "m.room.member", StateKey: ptr(bob),
			Content: content(map[string]any{"membership": "join"})}); err != nil {
			t.Fatal(err)
		}
		news, err = e.RoomsWithEvents(ctx, []string{room}, created)
		if err != nil || news[room].LastMember <= created || news[room].LastMember != news[room].Last {
			t.Fatalf("a join: %+v, %v", news, err)
		}
	})
}

// TestWindowNews checks the one-read form against its two parts.
func TestWindowNews(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice, bob := "@alice:local.test", "@bob:local.test"
		a, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		from, err := e.StreamPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: a, Sender: alice, Type: "m.room.message",
			Content: content(map[string]any{"msgtype": "m.text", "body": "hi"})}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Send(ctx, SendParams{RoomID: b, Sender: bob, Type: "m.room.member", StateKey: ptr(bob),
			Content: content(map[string]any{"membership": "join"})}); err != nil {
			t.Fatal(err)
		}
		to, err := e.StreamPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, user := range []string{alice, bob} {
			changes, news, err := e.WindowNews(ctx, user, from, to, []string{a, b})
			if err != nil {
				t.Fatal(err)
			}
			wantChanges, err := e.MembershipChanges(ctx, user, from, to)
			if err != nil {
				t.Fatal(err)
			}
			wantNews, err := e.RoomsWithEvents(ctx, []string{a, b}, from)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(changes, wantChanges) || !reflect.DeepEqual(news, wantNews) {
				t.Fatalf("%s: %+v %+v, want %+v %+v", user, changes, news, wantChanges, wantNews)
			}
			if len(news) != 2 || (user == bob) != (len(changes) == 1) {
				t.Fatalf("%s: %d rooms with news, changes %+v", user, len(news), changes)
			}
		}
		if _, news, err := e.WindowNews(ctx, alice, from, to, nil); err != nil || len(news) != 0 {
			t.Fatalf("no rooms: %v, %v", news, err)
		}
	})
}
