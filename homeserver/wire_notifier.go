package homeserver

import (
	"strings"

	"github.com/parley-chat/parley/homeserver/notifier"
	"github.com/parley-chat/parley/homeserver/rooms"
)

// wireNotifier builds the notifier that wakes waiting clients, and makes
// every persisted event wake the local members of its room.
func (s *Server) wireNotifier() error {
	s.notifier = notifier.New(s.log.With("component", "notifier"), s.rooms, s.bus)
	h := s.rooms.Hooks()
	prev := h.Persisted
	h.Persisted = func(events []*rooms.Event) {
		if prev != nil {
			prev(events)
		}
		// One wake-up per room; membership changes also wake their target,
		// who may have just left and is no longer a member.
		extra := map[string][]string{}
		var order []string
		for _, ev := range events {
			if _, ok := extra[ev.RoomID]; !ok {
				order = append(order, ev.RoomID)
				extra[ev.RoomID] = nil
			}
			// The room's current state, its members with it, changes
			// with a state event, or with one that merges the DAG's
			// branches (state resolution).
			if ev.IsState() || (ev.PDU != nil && len(ev.PDU.PrevEvents) != 1) {
				s.notifier.MembersChanged(ev.RoomID)
			}
			if ev.Type == "m.room.member" && ev.StateKey != nil && strings.HasSuffix(*ev.StateKey, ":"+s.cfg.ServerName) {
				extra[ev.RoomID] = append(extra[ev.RoomID], *ev.StateKey)
			}
		}
		for _, r := range order {
			s.notifier.NotifyRoomSoon(r, extra[r]...)
		}
	}
	s.rooms.SetHooks(h)
	// Started after the rooms engine, so stopped before it: what the
	// persister still commits then is notified at once.
	s.services = append(s.services, s.notifier)
	ah := s.accounts.Hooks()
	prevAD := ah.AccountDataChanged
	ah.AccountDataChanged = func(userID string, pos int64) {
		if prevAD != nil {
			prevAD(userID, pos)
		}
		s.notifier.NotifyUsers(userID)
	}
	s.accounts.SetHooks(ah)
	return nil
}
