package homeserver

import (
	"context"
	"encoding/json"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/rooms"
)

// wireRooms builds the room engine.
func (s *Server) wireRooms() error {
	s.rooms = rooms.New(rooms.Config{
		ServerName: s.cfg.ServerName,
		Signer:     &rooms.Signer{ServerName: s.cfg.ServerName, KeyID: id.KeyID(s.key.ID), Key: s.key.Priv},
	}, s.db, s.log.With("engine", "rooms"))
	s.rooms.SetProfiles(profileSource{s.accounts})
	s.rooms.SetAccountData(s.accounts)
	s.deps.Rooms = s.rooms
	s.services = append(s.services, roomsService{s.rooms})
	h := s.accounts.Hooks()
	prevProfile, prevDeactivated, prevAccountData := h.ProfileChanged, h.Deactivated, h.AccountDataChanged
	h.ProfileChanged = func(ctx context.Context, userID string) {
		if prevProfile != nil {
			prevProfile(ctx, userID)
		}
		if err := s.rooms.UpdateProfile(ctx, userID); err != nil {
			s.log.Warn("could not update membership events after a profile change", "user", userID, "err", err)
		}
	}
	h.Deactivated = func(ctx context.Context, userID string) {
		if prevDeactivated != nil {
			prevDeactivated(ctx, userID)
		}
		if err := s.rooms.LeaveAll(ctx, userID); err != nil {
			s.log.Warn("could not leave the rooms of a deactivated user", "user", userID, "err", err)
		}
	}
	h.AccountDataChanged = func(userID string, pos int64) {
		if prevAccountData != nil {
			prevAccountData(userID, pos)
		}
		s.rooms.AccountDataChanged(userID)
	}
	s.accounts.SetHooks(h)
	return nil
}

// roomsService adapts the engine's persister to the server's lifecycle.
type roomsService struct{ e *rooms.Engine }

func (r roomsService) Start(ctx context.Context) error { return r.e.Start(ctx) }
func (r roomsService) Stop()                           { r.e.Stop() }

// profileSource gives the room engine the profile fields membership
// events carry.
type profileSource struct{ a *accounts.Engine }

func (p profileSource) MemberProfile(ctx context.Context, userID string) (string, string) {
	prof, err := p.a.Profile(ctx, userID)
	if err != nil {
		return "", ""
	}
	var dn, av string
	_ = json.Unmarshal(prof["displayname"], &dn)
	_ = json.Unmarshal(prof["avatar_url"], &av)
	return strings.TrimSpace(dn), av
}
