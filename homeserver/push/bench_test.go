package push

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// benchRoom builds a public room with members local users (alice and
// the others) on each database.
func benchRoom(b *testing.B, dialect string, members int, push bool) (*env, string) {
	var db *storage.DB
	if dialect == "sqlite" {
		db = storagetest.OpenSQLite(b)
	} else {
		db = storagetest.OpenPostgres(b)
	}
	en := newEnvHooked(b, db, push)
	ctx := context.Background()
	alice := "@alice:" + server
	room, err := en.rooms.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	// Concurrent joins share persisting batches.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := 1; i < members; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := en.rooms.Join(ctx, rooms.MembershipParams{RoomID: room, Sender: fmt.Sprintf("@u%d:%s", i, server)}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	return en, room
}

// BenchmarkOnEvents evaluates every member's rules for one message (the
// server-default rules notify everyone through .m.rule.message), as the
// persister's hook does, without writing the queued rows. The figure is
// rule evaluations (member × event) per second.
func BenchmarkOnEvents(b *testing.B) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		for _, members := range []int{10, 1000} {
			b.Run(fmt.Sprintf("%s/members=%d", dialect, members), func(b *testing.B) {
				en, room := benchRoom(b, dialect, members, true)
				id := en.send(b, room, "@alice:"+server, "m.room.message", msg("benchmark message", nil))
				en.mu.Lock()
				ev := en.events[id]
				en.mu.Unlock()
				ctx := context.Background()
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					batch := &storage.Batch{}
					if err := en.push.OnEvents(ctx, nil, batch, rooms.Span{}, []*rooms.Event{ev}); err != nil {
						b.Fatal(err)
					}
					if batch.Len() == 0 {
						b.Fatal("no rows queued")
					}
				}
				b.ReportMetric(float64(b.N*(members-1))/time.Since(start).Seconds(), "evals/s")
			})
		}
	}
}

// BenchmarkSendWithPush sends messages one after another through the
// room engine, with push evaluation hooked in (rows written) and without
// (the baseline): the end-to-end cost of push per message in rooms of
// each size.
func BenchmarkSendWithPush(b *testing.B) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		for _, members := range []int{10, 1000} {
			for _, push := range []bool{false, true} {
				name := fmt.Sprintf("%s/members=%d/push=%v", dialect, members, push)
				b.Run(name, func(b *testing.B) {
					en, room := benchRoom(b, dialect, members, push)
					b.ResetTimer()
					start := time.Now()
					for range b.N {
						en.send(b, room, "@alice:"+server, "m.room.message", msg("benchmark message", nil))
					}
					b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
				})
			}
		}
	}
}
