package homeserver

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/parley-chat/parley/homeserver/push"
	"github.com/parley-chat/parley/homeserver/rooms"
	syncengine "github.com/parley-chat/parley/homeserver/sync"
	"github.com/parley-chat/parley/storage"
)

// wirePush builds the push engine: it evaluates push rules inside every
// persisting batch, serves the push rules API and GET /notifications,
// and gives /sync its notification counts.
func (s *Server) wirePush() error {
	s.push = push.New(push.Config{}, s.db, s.rooms, s.accounts, s.log.With("engine", "push"))
	// wireEphemeral ran first: read receipts reset counts.
	if s.receipts != nil {
		s.push.SetReceipts(s.receipts)
	}
	s.push.SetPublisher(s.bus)
	s.bus.Subscribe(push.RulesChannel, s.push.ForgetUser)
	s.bus.OnResume(s.push.ForgetAll)
	s.deps.Push = s.push

	h := s.rooms.Hooks()
	prev := h.InTx
	h.InTx = func(ctx context.Context, tx *storage.Tx, b *storage.Batch, span rooms.Span, events []*rooms.Event) error {
		if prev != nil {
			if err := prev(ctx, tx, b, span, events); err != nil {
				return err
			}
		}
		return s.push.OnEvents(ctx, tx, b, span, events)
	}
	s.rooms.SetHooks(h)

	// Any account data write may be an ignore-list change.
	ah := s.accounts.Hooks()
	prevAD := ah.AccountDataChanged
	ah.AccountDataChanged = func(userID string, pos int64) {
		if prevAD != nil {
			prevAD(userID, pos)
		}
		s.push.ForgetUser(userID)
	}
	s.accounts.SetHooks(ah)

	river.AddWorker(s.workers, &pushPruneWorker{push: s.push})
	s.periodicJob(6*time.Hour, func() river.JobArgs { return pushPruneArgs{} })
	return nil
}

// pushPruneArgs is the periodic clean-up of read push actions.
type pushPruneArgs struct{}

func (pushPruneArgs) Kind() string { return "parley.push_prune" }

type pushPruneWorker struct {
	river.WorkerDefaults[pushPruneArgs]
	push *push.Engine
}

func (w *pushPruneWorker) Work(ctx context.Context, _ *river.Job[pushPruneArgs]) error {
	_, err := w.push.Prune(ctx)
	return err
}

// pushCounts adapts the push engine's Counts to the sync engine's Counts
// interface (the two packages declare their own, identical, count types):
// wireSync can set syncengine.Deps.Counts = pushCounts{s.push}.
type pushCounts struct{ e *push.Engine }

var _ syncengine.Counts = pushCounts{}

func (p pushCounts) Counts(ctx context.Context, user string, roomIDs []string, threads bool, upTo int64, quiet syncengine.Quiet) (map[string]syncengine.RoomCounts, error) {
	in, err := p.e.CountsAt(ctx, user, roomIDs, threads, upTo, push.Quiet(quiet))
	if err != nil {
		return nil, err
	}
	out := make(map[string]syncengine.RoomCounts, len(in))
	for room, c := range in {
		rc := syncengine.RoomCounts{Notification: c.Notification, Highlight: c.Highlight}
		if c.Threads != nil {
			rc.Threads = make(map[string]syncengine.ThreadCounts, len(c.Threads))
			for t, tc := range c.Threads {
				rc.Threads[t] = syncengine.ThreadCounts{Notification: tc.Notification, Highlight: tc.Highlight}
			}
		}
		out[room] = rc
	}
	return out, nil
}
