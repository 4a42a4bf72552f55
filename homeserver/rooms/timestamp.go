package rooms

import (
	"context"
	"math"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// Limits of GET /timestamp_to_event: events are read in pages, and the
// search gives up after looking at maxTimestampScan events the user may
// not see.
const (
	timestampPage    = 100
	maxTimestampScan = 1000
)

// TimestampEvent is GET /timestamp_to_event's answer.
type TimestampEvent struct {
	EventID        string `json:"event_id"`
	OriginServerTS int64  `json:"origin_server_ts"`
}

// EventAtTimestamp finds the event closest to ts in a direction (at or
// after it forwards, at or before it backwards) among those the user may
// see; M_NOT_FOUND if there is none.
func (e *Engine) EventAtTimestamp(ctx context.Context, user, roomID string, ts int64, forward bool) (*TimestampEvent, error) {
	if ts < 0 {
		return nil, mxerr.InvalidParam("ts must be a non-negative timestamp in milliseconds")
	}
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, notMemberIfUnknown(err)
	}
	v, err := e.newViewer(ctx, user, m)
	if err != nil {
		return nil, err
	}
	if err := e.mayRead(ctx, m, user, v); err != nil {
		return nil, err
	}
	ignored, err := e.IgnoredUsers(ctx, user)
	if err != nil {
		return nil, err
	}
	q := storage.TimestampQuery{RoomNID: m.NID, TS: ts, Stream: math.MaxInt64, Forward: forward, Limit: timestampPage}
	if forward {
		q.Stream = -1
	}
	for scanned := 0; scanned < maxTimestampScan; {
		rows, err := e.store.EventsByTimestamp(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, row := range rows {
			scanned++
			q.TS, q.Stream = row.OriginTS, deref(row.StreamPos)
			ev, err := fromRow(row, m.Version, m.ID)
			if err != nil {
				return nil, err
			}
			if hiddenByIgnore(ignored, ev) {
				continue
			}
			ok, _, err := v.allowed(ev)
			if err != nil {
				return nil, err
			}
			if ok {
				return &TimestampEvent{EventID: ev.EventID, OriginServerTS: ev.OriginTS}, nil
			}
		}
		if len(rows) < q.Limit {
			break
		}
	}
	dir := "backward"
	if forward {
		dir = "forward"
	}
	return nil, mxerr.NotFound("Unable to find an event from %d in the %s direction", ts, dir)
}
