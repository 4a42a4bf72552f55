package rooms

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// BenchmarkSend16 sends messages into one room from 16 concurrent
// clients through the engine (no HTTP), on each database. The persister
// batches them; the figure is events per second.
func BenchmarkSend16(b *testing.B) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		b.Run(dialect, func(b *testing.B) {
			var db *storage.DB
			if dialect == "sqlite" {
				db = storagetest.OpenSQLiteSync(b, "FULL")
			} else {
				db = storagetest.OpenPostgres(b)
			}
			e := newTestEngine(b, db)
			ctx := context.Background()
			alice := "@alice:local.test"
			room, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
			if err != nil {
				b.Fatal(err)
			}
			const clients = 16
			var next atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						_, err := e.Send(ctx, SendParams{RoomID: room, Sender: alice, DeviceID: "D", TxnID: fmt.Sprintf("%d-%d", c, i),
							Type: "m.room.message", Content: content(map[string]string{"msgtype": "m.text", "body": "benchmark message"})})
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// TestStoragePerMembershipChange measures the state storage a membership
// change costs in a room of 10,000 members (run with -run and -v; skipped
// in -short mode).
func TestStoragePerMembershipChange(t *testing.T) {
	if testing.Short() || !testing.Verbose() {
		t.Skip("measurement: run with -v")
	}
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		e := newTestEngine(t, db)
		ctx := context.Background()
		alice := "@alice:local.test"
		room, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		join := func(i int) {
			u := fmt.Sprintf("@user%05d:local.test", i)
			if _, err := e.Join(ctx, MembershipParams{RoomID: room, Sender: u}); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		ch := make(chan int)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range ch {
					join(i)
				}
			}()
		}
		for i := range 10_000 {
			ch <- i
		}
		close(ch)
		wg.Wait()
		size := func() (snap, events int64) {
			_ = db.Read().QueryRow(ctx, `SELECT COALESCE(SUM(LENGTH(entries)), 0) + COUNT(*) * 24 FROM state_snapshots`).Scan(&snap)
			_ = db.Read().QueryRow(ctx, `SELECT COALESCE(SUM(LENGTH(json)), 0) FROM events`).Scan(&events)
			return
		}
		s0, e0 := size()
		const changes = 1000
		for i := range changes {
			join(10_000 + i)
		}
		s1, e1 := size()
		t.Logf("%s: 10,000-member room, %d joins: state snapshots %.1f bytes per change (payload + 24 bytes of ids per row); events %.0f bytes each",
			db.Dialect(), changes, float64(s1-s0)/changes, float64(e1-e0)/changes)
	})
}
