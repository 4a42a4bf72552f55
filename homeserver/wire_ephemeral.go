package homeserver

import (
	"context"
	"errors"
	"time"

	"github.com/riverqueue/river"

	"github.com/parley-chat/parley/homeserver/presence"
	"github.com/parley-chat/parley/homeserver/receipts"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/homeserver/typing"
)

// wireEphemeral builds the receipts, typing and presence engines. Typing
// and presence run background services; delivery receipts are pruned by
// a periodic job. With presence off (config `presence: off`) the presence
// endpoints still answer: PUT is checked and ignored, GET says offline,
// and sync delivers no presence.
func (s *Server) wireEphemeral() error {
	rm := ephemeralRooms{s.rooms}
	s.receipts = receipts.New(receipts.Config{ServerName: s.cfg.ServerName}, s.db,
		receipts.Deps{Rooms: rm, AccountData: s.accounts, Notifier: s.notifier},
		s.log.With("engine", "receipts"))
	s.typing = typing.New(typing.Config{},
		typing.Deps{Rooms: rm, Notifier: s.notifier, Bus: s.bus},
		s.log.With("engine", "typing"))
	s.presence = presence.New(presence.Config{Enabled: bool(s.cfg.Presence), ServerName: s.cfg.ServerName}, s.db,
		presence.Deps{Rooms: s.rooms, Users: s.accounts, Notifier: s.notifier, Bus: s.bus},
		s.log.With("engine", "presence"))
	s.deps.Receipts, s.deps.Typing, s.deps.Presence = s.receipts, s.typing, s.presence
	// Whoever stops being joined stops typing there.
	h := s.rooms.Hooks()
	prev := h.Persisted
	h.Persisted = func(events []*rooms.Event) {
		if prev != nil {
			prev(events)
		}
		for _, ev := range events {
			if ev.Type == "m.room.member" && ev.StateKey != nil && ev.Membership != nil && *ev.Membership != "join" {
				s.typing.Left(context.Background(), *ev.StateKey, ev.RoomID)
			}
		}
	}
	s.rooms.SetHooks(h)
	s.services = append(s.services, s.typing, s.presence)
	s.unstable["org.matrix.msc4089"] = true

	river.AddWorker(s.workers, &receiptsPruneWorker{receipts: s.receipts})
	s.periodicJob(time.Hour, func() river.JobArgs { return receiptsPruneArgs{} })
	return nil
}

// ephemeralRooms adapts the rooms engine to what receipts and typing ask.
type ephemeralRooms struct{ *rooms.Engine }

// IsJoined reports whether the user is joined; an unknown room has no
// members.
func (r ephemeralRooms) IsJoined(ctx context.Context, userID, roomID string) (bool, error) {
	m, err := r.MembershipOf(ctx, userID, roomID)
	if errors.Is(err, rooms.ErrUnknownRoom) {
		return false, nil
	}
	return m == "join", err
}

// receiptsPruneArgs is the periodic deletion of old delivery receipts.
type receiptsPruneArgs struct{}

func (receiptsPruneArgs) Kind() string { return "parley.receipts_prune" }

type receiptsPruneWorker struct {
	river.WorkerDefaults[receiptsPruneArgs]
	receipts *receipts.Engine
}

func (w *receiptsPruneWorker) Work(ctx context.Context, _ *river.Job[receiptsPruneArgs]) error {
	return w.receipts.Prune(ctx)
}
