package sync

import (
	"context"
	"strconv"

	"github.com/parley-chat/parley/e2ee"
)

// DeviceListsPos extracts the device_lists position of a sync token, for
// /keys/changes.
func (e *Engine) DeviceListsPos(token string) (int64, error) {
	t, err := parseKeysToken(token)
	return t.DeviceLists, err
}

// parseKeysToken accepts a sync token, or a bare device_lists position
// (what /keys/changes took before sync tokens existed).
func parseKeysToken(s string) (Token, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return Token{DeviceLists: n}, nil
	}
	return ParseToken(s)
}

// MembershipDelta reports who started or stopped sharing a room with the
// user between two sync tokens, for /keys/changes.
func (e *Engine) MembershipDelta(ctx context.Context, userID, from, to string) (e2ee.MembershipDelta, error) {
	f, err := parseKeysToken(from)
	if err != nil {
		return e2ee.MembershipDelta{}, err
	}
	var t Token
	if to == "" {
		// No upper bound: up to now.
		t, err = e.positions(ctx, true)
	} else {
		t, err = parseKeysToken(to)
	}
	if err != nil {
		return e2ee.MembershipDelta{}, err
	}
	b := &builder{e: e, ctx: ctx, req: Request{UserID: userID, Since: &f, Filter: nil}, since: f, now: t}
	b.f = nil
	if _, err := b.roomTargetsFor(); err != nil {
		return e2ee.MembershipDelta{}, err
	}
	return b.delta, nil
}
