package push

import (
	"context"
	"errors"
	"math"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/storage"
)

// prunePage is how many (user, room) pairs one pruning step looks at.
const prunePage = 500

// Prune deletes push actions older than the configured age that the
// user has read, and all old ones of rooms the user is no longer in.
// Unread notifications of members are kept whatever their age: they are
// still counted. It returns how many rows went.
func (e *Engine) Prune(ctx context.Context) (int64, error) {
	cutoff := e.now().Add(-e.cfg.PruneAfter).UnixMilli()
	var total int64
	var after storage.PushUserRoom
	for {
		pairs, err := e.store.PushActionPairs(ctx, after, cutoff, prunePage)
		if err != nil {
			return total, err
		}
		for _, ur := range pairs {
			n, err := e.prunePair(ctx, ur, cutoff)
			if err != nil {
				return total, err
			}
			total += n
		}
		if len(pairs) < prunePage {
			break
		}
		after = pairs[len(pairs)-1]
	}
	n, err := e.pruneShared(ctx, cutoff)
	return total + n, err
}

// pruneShared deletes old shared rows that every local member has read
// past (by their unthreaded receipt), and all old ones of rooms without
// local members.
func (e *Engine) pruneShared(ctx context.Context, cutoff int64) (int64, error) {
	var total, afterNID int64
	for {
		rs, err := e.store.SharedPushRooms(ctx, afterNID, cutoff, prunePage)
		if err != nil {
			return total, err
		}
		for _, r := range rs {
			upTo := int64(math.MaxInt64)
			pr, err := e.rooms.PushContext(ctx, r.RoomID)
			if err != nil && !errors.Is(err, rooms.ErrUnknownRoom) {
				return total, err
			}
			if pr != nil {
				for _, u := range pr.LocalJoined() {
					read, err := newReads(e, u).unthreaded(ctx, r.RoomID)
					if err != nil {
						return total, err
					}
					upTo = min(upTo, read)
				}
			}
			n, err := e.store.SharedPushPrune(ctx, r.RoomNID, upTo, cutoff)
			if err != nil {
				return total, err
			}
			total += n
		}
		if len(rs) < prunePage {
			return total, nil
		}
		afterNID = rs[len(rs)-1].RoomNID
	}
}

func (e *Engine) prunePair(ctx context.Context, ur storage.PushUserRoom, cutoff int64) (int64, error) {
	mem, err := e.rooms.MembershipOf(ctx, ur.UserID, ur.RoomID)
	if errors.Is(err, rooms.ErrUnknownRoom) {
		mem = "leave"
	} else if err != nil {
		return 0, err
	}
	if mem != "join" && mem != "invite" {
		return e.store.PushActionsPrune(ctx, ur, "", math.MaxInt64, cutoff)
	}
	rd := newReads(e, ur.UserID)
	if err := rd.loadOwn(ctx, []string{ur.RoomID}); err != nil {
		return 0, err
	}
	u, err := rd.unthreaded(ctx, ur.RoomID)
	if err != nil {
		return 0, err
	}
	var total int64
	if u > 0 {
		n, err := e.store.PushActionsPrune(ctx, ur, "", u, cutoff)
		if err != nil {
			return 0, err
		}
		total += n
	}
	threads, err := e.store.PushActionThreads(ctx, ur, cutoff)
	if err != nil {
		return total, err
	}
	for _, t := range threads {
		upTo, err := rd.upTo(ctx, ur.RoomID, t)
		if err != nil {
			return total, err
		}
		if upTo > u {
			n, err := e.store.PushActionsPrune(ctx, ur, t, upTo, cutoff)
			if err != nil {
				return total, err
			}
			total += n
		}
	}
	return total, nil
}
