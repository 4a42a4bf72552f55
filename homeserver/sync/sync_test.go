package sync

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"

	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/notifier"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// TestSyncFromQuietToken checks the answer-token shortcut: a sync from a
// token whose answer was built at the user's current notifier generation
// waits without reading positions, and any wake-up ends that wait.
func TestSyncFromQuietToken(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		re := rooms.New(rooms.Config{ServerName: "local.test", Signer: &rooms.Signer{ServerName: "local.test", KeyID: "ed25519:t", Key: key}}, db, log)
		if err := re.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(re.Stop)
		acc, err := accounts.New(accounts.Config{ServerName: "local.test",
			Argon2: argon2id.Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}}, db, log)
		if err != nil {
			t.Fatal(err)
		}
		n := notifier.New(log, re, nil)
		e := New(Deps{DB: db, Rooms: re, Accounts: acc, Notifier: n}, log)

		alice := "@alice:local.test"
		room, err := re.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		first, err := e.Sync(ctx, Request{UserID: alice, DeviceID: "D"})
		if err != nil {
			t.Fatal(err)
		}
		send := func(body string) {
			t.Helper()
			if _, err := re.Send(ctx, rooms.SendParams{RoomID: room, Sender: alice, Type: "m.room.message",
				Content: json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`)}); err != nil {
				t.Fatal(err)
			}
		}
		// A message persisted without a wake-up: the shortcut does not see
		// it, so the sync waits its whole timeout and only then reads the
		// positions and answers with it.
		send("unannounced")
		since := first.Next
		const timeout = 300 * time.Millisecond
		start := time.Now()
		resp, err := e.Sync(ctx, Request{UserID: alice, DeviceID: "D", Since: &since, Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited < timeout {
			t.Fatalf("a sync from a quiet token read the positions at once (answered after %v)", waited)
		}
		if jr := resp.Rooms.Join[room]; jr == nil || jr.Timeline == nil || len(jr.Timeline.Events) != 1 {
			t.Fatalf("at the timeout: %+v", resp.Rooms)
		}
		// A wake-up while waiting ends the wait, and the build carries
		// both messages.
		go func() {
			time.Sleep(20 * time.Millisecond)
			send("announced")
			n.NotifyUsers(alice)
		}()
		start = time.Now()
		resp, err = e.Sync(ctx, Request{UserID: alice, DeviceID: "D", Since: &resp.Next, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the wake-up did not end the wait")
		}
		jr := resp.Rooms.Join[room]
		if jr == nil || jr.Timeline == nil || len(jr.Timeline.Events) != 1 {
			t.Fatalf("after the wake-up: %+v", resp.Rooms)
		}
		// A token from before a wake-up reads the positions at once.
		since = first.Next
		start = time.Now()
		if _, err := e.Sync(ctx, Request{UserID: alice, DeviceID: "E", Since: &since, Timeout: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("a sync from an old token waited")
		}
	})
}
