package slidingsync

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/parley-chat/parley/homeserver/notifier"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

type fixture struct {
	t     *testing.T
	db    *storage.DB
	rooms *rooms.Engine
	e     *Engine
	ctx   context.Context
}

func newFixture(t *testing.T, db *storage.DB, cfg Config) *fixture {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	re := rooms.New(rooms.Config{ServerName: "test", Signer: &rooms.Signer{ServerName: "test", KeyID: "ed25519:t", Key: priv}}, db, log)
	if err := re.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(re.Stop)
	n := notifier.New(log, re, nil)
	return &fixture{t: t, db: db, rooms: re, e: New(Deps{DB: db, Rooms: re, Notifier: n}, cfg, log), ctx: context.Background()}
}

func (f *fixture) room(creator string) string {
	f.t.Helper()
	id, err := f.rooms.CreateRoom(f.ctx, creator, rooms.CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

func (f *fixture) send(room, sender, body string) {
	f.t.Helper()
	c, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": body})
	if _, err := f.rooms.Send(f.ctx, rooms.SendParams{RoomID: room, Sender: sender, Type: "m.room.message", Content: c}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) sync(user, body string) (*Response, error) {
	f.t.Helper()
	var r Request
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		f.t.Fatal(err)
	}
	r.UserID, r.DeviceID = user, "DEV"
	return f.e.Sync(f.ctx, &r)
}

func (f *fixture) mustSync(user, body string) *Response {
	f.t.Helper()
	r, err := f.sync(user, body)
	if err != nil {
		f.t.Fatalf("%s: %v", body, err)
	}
	return r
}

func ids(r *Response) []string {
	var out []string
	for id := range r.Rooms {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func TestEngineBounds(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, Config{MaxRoomsPerResponse: 2, MaxConnectionsPerDevice: 2})
		const alice = "@alice:test"
		var rs []string
		for i := range 5 {
			rs = append(rs, f.room(alice))
			f.send(rs[i], alice, fmt.Sprint("m", i))
		}

		t.Run("rooms per response", func(t *testing.T) {
			list := `{"conn_id":"cap","lists":{"all":{"range":[0,99],"timeline_limit":1}}%s}`
			r := f.mustSync(alice, fmt.Sprintf(list, ""))
			var got [][]string
			for range 4 {
				got = append(got, ids(r))
				if r.Lists["all"].Count != 5 {
					t.Fatalf("count %d", r.Lists["all"].Count)
				}
				r = f.mustSync(alice, fmt.Sprintf(list, `,"pos":"`+r.Pos+`"`))
			}
			want := [][]string{sortedIDs(rs[4], rs[3]), sortedIDs(rs[2], rs[1]), {rs[0]}, nil}
			if !slices.EqualFunc(got, want, slices.Equal) {
				t.Fatalf("rooms per response %v, want %v", got, want)
			}
		})

		t.Run("timeline_limit is capped", func(t *testing.T) {
			room := f.room(alice)
			for i := range MaxTimelineLimit + 5 {
				f.send(room, alice, fmt.Sprint("t", i))
			}
			r := f.mustSync(alice, `{"room_subscriptions":{"`+room+`":{"timeline_limit":100000}}}`)
			x := r.Rooms[room]
			if len(x.Timeline) != MaxTimelineLimit || !x.Limited {
				t.Fatalf("timeline of %d events, limited %v", len(x.Timeline), x.Limited)
			}
		})

		t.Run("connections per device", func(t *testing.T) {
			first := f.mustSync(alice, `{"conn_id":"a"}`)
			f.mustSync(alice, `{"conn_id":"b"}`)
			f.mustSync(alice, `{"conn_id":"c"}`)
			_, err := f.sync(alice, `{"conn_id":"a","pos":"`+first.Pos+`"}`)
			if !mxerr.IsCode(err, "M_UNKNOWN_POS") {
				t.Fatalf("the least recently used connection survived: %v", err)
			}
		})

		t.Run("concurrent starts of one connection", func(t *testing.T) {
			errs := make(chan error, 6)
			for range cap(errs) {
				go func() {
					_, err := f.sync(alice, `{"conn_id":"race","lists":{"all":{"range":[0,1],"timeline_limit":1}}}`)
					errs <- err
				}()
			}
			for range cap(errs) {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
		})

		t.Run("expiry", func(t *testing.T) {
			r := f.mustSync(alice, `{"conn_id":"old"}`)
			f.e.now = func() time.Time { return time.Now().Add(DefaultConnectionLifetime + time.Hour) }
			defer func() { f.e.now = time.Now }()
			if _, err := f.sync(alice, `{"conn_id":"old","pos":"`+r.Pos+`"}`); !mxerr.IsCode(err, "M_UNKNOWN_POS") {
				t.Fatalf("expired pos: %v", err)
			}
			if err := f.e.Expire(f.ctx); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := db.Read().QueryRow(f.ctx, `SELECT COUNT(*) FROM sliding_sync_connections`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("connections left: %d %v", n, err)
			}
		})
	})
}

func sortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

func TestEngineExtensionScope(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		f := newFixture(t, db, Config{})
		const alice = "@alice:test"
		older, newer := f.room(alice), f.room(alice)
		f.send(newer, alice, "x")
		for _, r := range []string{older, newer} {
			err := db.Write(f.ctx, func(tx *storage.Tx) error {
				_, err := db.Accounts().AccountDataSet(f.ctx, tx, alice, r, "org.example.tag", `{"room":"`+r+`"}`)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		body := `{"lists":{"top":{"range":[0,0],"timeline_limit":1}},"extensions":{"account_data":{"enabled":true}}%s}`
		r := f.mustSync(alice, fmt.Sprintf(body, ""))
		ad := r.Extensions.AccountData
		if ad == nil || len(ad.Rooms) != 1 || ad.Rooms[newer] == nil {
			t.Fatalf("account data of the room in range only: %+v", ad)
		}
		// The older room enters the range: its account data, set long
		// before, comes with it.
		f.send(older, alice, "y")
		r = f.mustSync(alice, fmt.Sprintf(body, `,"pos":"`+r.Pos+`"`))
		ad = r.Extensions.AccountData
		if ad == nil || len(ad.Rooms) != 1 || ad.Rooms[older] == nil {
			t.Fatalf("account data of the room entering the range: %+v", ad)
		}
		// Once in scope, only changes.
		f.send(older, alice, "z")
		r = f.mustSync(alice, fmt.Sprintf(body, `,"pos":"`+r.Pos+`"`))
		if _, ok := r.Rooms[older]; !ok {
			t.Fatalf("room with news missing: %v", ids(r))
		}
		if ad := r.Extensions.AccountData; ad != nil {
			t.Fatalf("unchanged account data sent again: %+v", ad)
		}
	})
}
