package homeserver

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/parley-chat/parley/homeserver/slidingsync"
	"github.com/parley-chat/parley/storage"
)

// wireSlidingSync builds the simplified sliding sync engine (MSC4186)
// from the engines it reads. Receipts, typing and presence are used once
// their engines offer what sliding sync reads. Deleting a device deletes
// its connections; idle connections expire hourly.
func (s *Server) wireSlidingSync() error {
	d := slidingsync.Deps{DB: s.db, Rooms: s.rooms, Notifier: s.notifier}
	if s.deps.Keys != nil {
		d.Keys = s.deps.Keys
	}
	if s.receipts != nil {
		if r, ok := any(s.receipts).(slidingsync.Receipts); ok {
			d.Receipts = r
		}
	}
	if s.typing != nil {
		if t, ok := any(s.typing).(slidingsync.Typing); ok {
			d.Typing = t
		}
	}
	if s.presence != nil {
		if p, ok := any(s.presence).(slidingsync.Presence); ok {
			d.Presence = p
		}
	}
	engine := slidingsync.New(d, slidingsync.Config{}, s.log.With("engine", "slidingsync"))
	s.deps.SlidingSync = engine
	s.unstable["org.matrix.simplified_msc3575"] = true

	h := s.accounts.Hooks()
	prev := h.DevicesDeleted
	h.DevicesDeleted = func(ctx context.Context, tx *storage.Tx, userID string, deviceIDs []string) error {
		if prev != nil {
			if err := prev(ctx, tx, userID, deviceIDs); err != nil {
				return err
			}
		}
		return engine.DevicesDeleted(ctx, tx, userID, deviceIDs)
	}
	s.accounts.SetHooks(h)

	river.AddWorker(s.workers, &slidingExpireWorker{engine: engine})
	s.periodicJob(time.Hour, func() river.JobArgs { return slidingExpireArgs{} })
	return nil
}

// slidingExpireArgs is the periodic deletion of idle sliding sync
// connections.
type slidingExpireArgs struct{}

func (slidingExpireArgs) Kind() string { return "parley.sliding_sync_expire" }

type slidingExpireWorker struct {
	river.WorkerDefaults[slidingExpireArgs]
	engine *slidingsync.Engine
}

func (w *slidingExpireWorker) Work(ctx context.Context, _ *river.Job[slidingExpireArgs]) error {
	return w.engine.Expire(ctx)
}
