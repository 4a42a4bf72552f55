package homeserver

import (
	"context"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/parley-chat/parley/e2ee"
	"github.com/parley-chat/parley/storage"
)

// wireE2EE builds the e2ee engine and its API routes. Room membership
// comes from the rooms engine; changes wake waiting clients through the
// notifier. The sync engine reads the engine's streams and installs its
// token decoder with SetSyncTokens.
func (s *Server) wireE2EE() error {
	keys := e2ee.New(e2ee.Config{ServerName: s.cfg.ServerName}, s.db, s.log.With("engine", "e2ee"))
	s.deps.Keys = keys
	s.unstable["org.matrix.msc3814"] = true
	if s.rooms != nil {
		keys.SetMembership(s.rooms)
	}
	if s.notifier != nil {
		keys.SetNotifier(e2eeWaker{s})
	}

	// Deleting a device deletes its keys and pending messages in the same
	// transaction, and counts as a change of the user's device list.
	h := s.accounts.Hooks()
	prevDeleted, prevDeactivated := h.DevicesDeleted, h.Deactivated
	h.DevicesDeleted = func(ctx context.Context, tx *storage.Tx, userID string, deviceIDs []string) error {
		if prevDeleted != nil {
			if err := prevDeleted(ctx, tx, userID, deviceIDs); err != nil {
				return err
			}
		}
		return keys.DevicesDeleted(ctx, tx, userID, deviceIDs)
	}
	h.Deactivated = func(ctx context.Context, userID string) {
		if prevDeactivated != nil {
			prevDeactivated(ctx, userID)
		}
		if err := keys.UserDeactivated(ctx, userID); err != nil {
			s.log.Warn("could not delete the keys of a deactivated user", "user", userID, "err", err)
		}
	}
	s.accounts.SetHooks(h)

	river.AddWorker(s.workers, &e2eePruneWorker{keys: keys})
	s.periodicJob(time.Hour, func() river.JobArgs { return e2eePruneArgs{} })
	return nil
}

// e2eeWaker wakes the clients concerned by an e2ee change.
type e2eeWaker struct{ s *Server }

func (w e2eeWaker) ToDevice(userID, _ string, _ int64) { w.s.notifier.NotifyUsers(userID) }

func (w e2eeWaker) KeysChanged(userID, _ string) { w.s.notifier.NotifyUsers(userID) }

// DeviceListChanged wakes the user and the local users who share a room
// with them: their next sync lists the change.
func (w e2eeWaker) DeviceListChanged(userID string, _ int64) {
	users := []string{userID}
	if w.s.rooms != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shared, err := w.s.rooms.SharedRoomUsers(ctx, userID)
		if err != nil {
			w.s.log.Warn("could not list the users who share a room", "user", userID, "err", err)
		}
		for _, u := range shared {
			if u != userID && strings.HasSuffix(u, ":"+w.s.cfg.ServerName) {
				users = append(users, u)
			}
		}
	}
	w.s.notifier.NotifyUsers(users...)
}

// e2eePruneArgs is the periodic clean-up of old sendToDevice transaction
// IDs and undeliverable messages for other servers.
type e2eePruneArgs struct{}

func (e2eePruneArgs) Kind() string { return "parley.e2ee_prune" }

type e2eePruneWorker struct {
	river.WorkerDefaults[e2eePruneArgs]
	keys *e2ee.Engine
}

func (w *e2eePruneWorker) Work(ctx context.Context, _ *river.Job[e2eePruneArgs]) error {
	return w.keys.Prune(ctx)
}
