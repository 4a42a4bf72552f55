package homeserver

import (
	syncengine "github.com/parley-chat/parley/homeserver/sync"
)

// wireSync builds the sync engine from the engines it reads.
func (s *Server) wireSync() error {
	d := syncengine.Deps{DB: s.db, Rooms: s.rooms, Accounts: s.accounts, Notifier: s.notifier}
	// Nil engines must stay nil interfaces.
	if s.receipts != nil {
		d.Receipts = s.receipts
	}
	if s.typing != nil {
		d.Typing = s.typing
	}
	if s.presence != nil {
		d.Presence = s.presence
	}
	if s.push != nil {
		d.Counts = pushCounts{s.push}
		d.PushRules = s.push
	}
	if s.deps.Keys != nil {
		d.Keys = s.deps.Keys
	}
	s.syncer = syncengine.New(d, s.log.With("engine", "sync"))
	s.deps.Sync = s.syncer
	if s.deps.Keys != nil {
		// /keys/changes takes sync tokens.
		s.deps.Keys.SetSyncTokens(s.syncer)
	}
	s.unstable["org.matrix.msc4222"] = true
	return nil
}
