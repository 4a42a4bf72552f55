package rooms

import (
	"context"

	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/storage"
)

// viewer decides what one user may see of one room, following the
// history visibility rules of the client-server spec:
//
//  1. world_readable at the event: allow;
//  2. the user's membership at the event was join: allow;
//  3. shared at the event, and the user joined after it: allow;
//  4. invited at the event, and the user was invited: allow;
//  5. otherwise deny.
//
// A history visibility event is visible if the rules allow it under the
// visibility before or after it; a user's own membership event is visible
// if their membership before or after it allows.
type viewer struct {
	e        *Engine
	ctx      context.Context
	user     string
	room     *roomMeta
	hvKey    int64
	memKey   int64
	lastJoin int64
	joinRead bool
	hv       map[int64]string
	mem      map[int64]string
}

func (e *Engine) newViewer(ctx context.Context, user string, m *roomMeta) (*viewer, error) {
	v := &viewer{e: e, ctx: ctx, user: user, room: m, hv: map[int64]string{}, mem: map[int64]string{}}
	var err error
	if v.hvKey, err = e.keyNID(ctx, e.db.Read(), nil, storage.StateKey{Type: "m.room.history_visibility"}); err != nil {
		return nil, err
	}
	if v.memKey, err = e.keyNID(ctx, e.db.Read(), nil, storage.StateKey{Type: "m.room.member", StateKey: user}); err != nil {
		return nil, err
	}
	return v, nil
}

// joinedAfter reports whether the user's newest join to the room came
// after a stream position, reading that join once and only when a
// "shared" event the user was not joined at asks (rule 3).
func (v *viewer) joinedAfter(pos int64) (bool, error) {
	if v.memKey == 0 {
		return false, nil
	}
	if !v.joinRead {
		var err error
		if v.lastJoin, err = v.e.store.LatestJoinPos(v.ctx, v.room.NID, v.user); err != nil {
			return false, err
		}
		v.joinRead = true
	}
	return v.lastJoin > pos, nil
}

// visibilityAt returns history_visibility at a snapshot ("shared" if
// unset or not understood).
func (v *viewer) visibilityAt(snap int64) (string, error) {
	if s, ok := v.hv[snap]; ok {
		return s, nil
	}
	out := "shared"
	if v.hvKey != 0 {
		nid, err := v.e.snaps.lookup(v.ctx, v.e.db.Read(), nil, snap, v.hvKey)
		if err != nil {
			return "", err
		}
		if nid != 0 {
			ev, err := v.e.eventByNID(v.ctx, v.e.db.Read(), nil, nid)
			if err != nil {
				return "", err
			}
			switch s := gjson.GetBytes(ev.Content(), "history_visibility").String(); s {
			case "world_readable", "shared", "invited", "joined":
				out = s
			}
		}
	}
	v.hv[snap] = out
	return out, nil
}

// membershipAt returns the user's membership at a snapshot ("leave" if none).
func (v *viewer) membershipAt(snap int64) (string, error) {
	if s, ok := v.mem[snap]; ok {
		return s, nil
	}
	out := "leave"
	if v.memKey != 0 {
		nid, err := v.e.snaps.lookup(v.ctx, v.e.db.Read(), nil, snap, v.memKey)
		if err != nil {
			return "", err
		}
		if nid != 0 {
			ev, err := v.e.eventByNID(v.ctx, v.e.db.Read(), nil, nid)
			if err != nil {
				return "", err
			}
			out = membershipOf(ev.PDU.Content)
		}
	}
	v.mem[snap] = out
	return out, nil
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// allowed reports whether the user may see ev, and their membership at it.
func (v *viewer) allowed(ev *Event) (bool, string, error) {
	if ev.StreamPos == nil || ev.Status != storage.EventAccepted {
		return false, "", nil
	}
	after := deref(ev.StateAfter)
	hvs := []int64{after}
	mems := []int64{after}
	if ev.Type == "m.room.history_visibility" && ev.IsState() {
		hvs = append(hvs, deref(ev.StateBefore))
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == v.user {
		mems = append(mems, deref(ev.StateBefore))
	}
	membership, err := v.membershipAt(after)
	if err != nil {
		return false, "", err
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == v.user {
		// Users always see their own membership events (an invite before
		// joining, a kick after leaving), as Synapse does.
		return true, membership, nil
	}
	for _, hs := range hvs {
		hv, err := v.visibilityAt(hs)
		if err != nil {
			return false, "", err
		}
		for _, ms := range mems {
			mem, err := v.membershipAt(ms)
			if err != nil {
				return false, "", err
			}
			switch {
			case hv == "world_readable",
				mem == "join",
				hv == "invited" && mem == "invite":
				return true, membership, nil
			case hv == "shared":
				after, err := v.joinedAfter(*ev.StreamPos)
				if err != nil {
					return false, "", err
				}
				if after {
					return true, membership, nil
				}
			}
		}
	}
	return false, membership, nil
}
