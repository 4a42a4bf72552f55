package e2ee

import (
	"context"
	"slices"

	"github.com/parley-chat/parley/storage"
)

// DeviceListChanges returns what /sync's device_lists (and /keys/changes)
// tell userID about the window from < position ≤ to of the device_lists
// stream:
//
//   - changed: users whose devices or cross-signing keys changed in the
//     window and who share a room with userID, userID themself if their
//     own changed, users whose master key userID signed, and the users of
//     delta.Joined (they now share a room with userID);
//   - left: the users of delta.Left who share no room with userID any
//     more.
//
// A window that begins before the pruned horizon (DeviceListLifetime)
// reports everyone the user shares a room with as changed.
//
// delta comes from the room stream, which the sync engine reads. Without
// a RoomMembership the engine knows no one else shares a room, so only
// userID's own changes (and their signatures of others) are reported.
func (e *Engine) DeviceListChanges(ctx context.Context, userID string, from, to int64, delta MembershipDelta) (changed, left []string, err error) {
	membership, _, _ := e.deps()
	rows, err := e.store.DeviceListChangesBetween(ctx, userID, from, to)
	if err != nil {
		return nil, nil, err
	}
	set := map[string]bool{}
	horizon, err := e.store.DeviceListsHorizon(ctx)
	if err != nil {
		return nil, nil, err
	}
	if from < horizon {
		// Changes before the horizon were pruned: assume everyone the
		// user shares a room with changed, and the user too.
		set[userID] = true
		if membership != nil {
			shared, err := membership.SharedRoomUsers(ctx, userID)
			if err != nil {
				return nil, nil, err
			}
			for _, u := range shared {
				set[u] = true
			}
		}
	}
	var others []string
	for _, r := range rows {
		switch {
		case r.UserID == userID, r.OnlyFor == userID:
			set[r.UserID] = true
		default:
			others = append(others, r.UserID)
		}
	}
	if len(others) > 0 && membership != nil {
		shared, err := membership.SharedRoomUsers(ctx, userID)
		if err != nil {
			return nil, nil, err
		}
		sharing := make(map[string]bool, len(shared))
		for _, u := range shared {
			sharing[u] = true
		}
		for _, u := range others {
			if sharing[u] {
				set[u] = true
			}
		}
	}
	for _, u := range delta.Joined {
		set[u] = true
	}
	gone := map[string]bool{}
	for _, u := range delta.Left {
		if u == userID || gone[u] {
			continue
		}
		if membership != nil {
			still, err := membership.UsersShareRoom(ctx, userID, u)
			if err != nil {
				return nil, nil, err
			}
			if still {
				continue
			}
		}
		gone[u] = true
		delete(set, u)
	}
	changed, left = make([]string, 0, len(set)), make([]string, 0, len(gone))
	for u := range set {
		changed = append(changed, u)
	}
	for u := range gone {
		left = append(left, u)
	}
	slices.Sort(changed)
	slices.Sort(left)
	return changed, left, nil
}

// KeyChanges answers /keys/changes: DeviceListChanges between two sync
// tokens (to "" meaning now), decoded by the SyncTokens the sync engine
// installs, or read as device_lists positions until it does.
func (e *Engine) KeyChanges(ctx context.Context, userID, fromToken, toToken string) (changed, left []string, err error) {
	_, _, tokens := e.deps()
	var from, to int64
	var delta MembershipDelta
	if tokens != nil {
		if from, err = tokens.DeviceListsPos(fromToken); err != nil {
			return nil, nil, err
		}
		if toToken == "" {
			to, err = e.db.StreamPos(ctx, storage.DeviceListsStream)
		} else {
			to, err = tokens.DeviceListsPos(toToken)
		}
		if err != nil {
			return nil, nil, err
		}
		if delta, err = tokens.MembershipDelta(ctx, userID, fromToken, toToken); err != nil {
			return nil, nil, err
		}
	} else {
		if from, err = parsePos(fromToken); err != nil {
			return nil, nil, err
		}
		if toToken == "" {
			to, err = e.db.StreamPos(ctx, storage.DeviceListsStream)
		} else {
			to, err = parsePos(toToken)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return e.DeviceListChanges(ctx, userID, from, to, delta)
}

// DevicesDeleted forgets the keys, pending messages and signatures of
// deleted devices, in the transaction that deletes them (the accounts
// engine's DevicesDeleted hook), and records the change of the user's
// device list.
func (e *Engine) DevicesDeleted(ctx context.Context, tx *storage.Tx, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	if err := e.store.DevicesForget(ctx, tx, userID, deviceIDs); err != nil {
		return err
	}
	// Before the caller commits: a count read in between may be
	// remembered for keyCountsTTL, for devices whose tokens are going.
	e.keyCountsChanged()
	return e.deviceListChanged(ctx, tx, userID, "")
}

// UserDeactivated forgets a deactivated user's cross-signing keys,
// signatures, key backups and dehydrated device record (their devices
// went through DevicesDeleted).
func (e *Engine) UserDeactivated(ctx context.Context, userID string) error {
	return e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.store.UserKeysForget(ctx, tx, userID); err != nil {
			return err
		}
		return e.deviceListChanged(ctx, tx, userID, "")
	})
}
