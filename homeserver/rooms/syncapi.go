package rooms

import (
	"context"
	"strings"
)

// LocalMembers lists this server's users who are joined to, invited to or
// knocking on a room: those to wake when it changes.
func (e *Engine) LocalMembers(ctx context.Context, roomID string) ([]string, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, err
	}
	entries, err := e.store.CurrentState(ctx, e.db.Read(), m.NID, "m.room.member")
	if err != nil {
		return nil, err
	}
	suffix := ":" + e.cfg.ServerName
	var out []string
	for _, en := range entries {
		if en.Membership == nil || !strings.HasSuffix(en.StateKey, suffix) {
			continue
		}
		switch *en.Membership {
		case "join", "invite", "knock":
			out = append(out, en.StateKey)
		}
	}
	return out, nil
}

// JoinedMemberIDs lists every joined member of a room, local or remote.
func (e *Engine) JoinedMemberIDs(ctx context.Context, roomID string) ([]string, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, err
	}
	entries, err := e.store.CurrentState(ctx, e.db.Read(), m.NID, "m.room.member")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, en := range entries {
		if en.Membership != nil && *en.Membership == "join" {
			out = append(out, en.StateKey)
		}
	}
	return out, nil
}

// MembershipOf returns a user's current membership in a room ("leave" if
// none).
func (e *Engine) MembershipOf(ctx context.Context, userID, roomID string) (string, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return "", err
	}
	_, mem, err := e.membershipNow(ctx, m, userID)
	return mem, err
}

// SharedRoomUsers lists the users joined to any room userID has joined.
func (e *Engine) SharedRoomUsers(ctx context.Context, userID string) ([]string, error) {
	return e.store.SharedRoomUsers(ctx, userID)
}

// UsersShareRoom reports whether two users are both joined to some room.
func (e *Engine) UsersShareRoom(ctx context.Context, a, b string) (bool, error) {
	users, err := e.store.SharedRoomUsers(ctx, a)
	if err != nil {
		return false, err
	}
	for _, u := range users {
		if u == b {
			return true, nil
		}
	}
	return false, nil
}

// Forgotten reports whether the user forgot a room.
func (e *Engine) Forgotten(ctx context.Context, userID, roomID string) (bool, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return false, err
	}
	return e.store.Forgotten(ctx, userID, m.NID)
}
