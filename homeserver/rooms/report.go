package rooms

import (
	"context"
	"unicode/utf8"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// MaxReportReason bounds a report's reason, in characters.
const MaxReportReason = 1000

// Report kinds as stored.
const (
	reportEvent = "event"
	reportRoom  = "room"
	reportUser  = "user"
)

func checkReason(reason string) error {
	if n := utf8.RuneCountInString(reason); n > MaxReportReason {
		return mxerr.InvalidParam("reason is longer than %d characters", MaxReportReason)
	}
	return nil
}

// ReportEvent records a report of an event. The reporter must be joined to
// the room and able to see the event (M_NOT_FOUND otherwise, which does
// not tell the two apart). score, which the spec no longer has, is kept
// when given and must lie in -100…0.
func (e *Engine) ReportEvent(ctx context.Context, reporter, roomID, eventID, reason string, score *int64) error {
	if err := checkReason(reason); err != nil {
		return err
	}
	if score != nil && (*score < -100 || *score > 0) {
		return mxerr.InvalidParam("score must be between -100 and 0")
	}
	m, _, _, err := e.visibleEvent(ctx, reporter, roomID, eventID)
	if err != nil {
		return err
	}
	if _, mem, err := e.membershipNow(ctx, m, reporter); err != nil {
		return err
	} else if mem != "join" {
		return mxerr.NotFound("The event was not found or you are not joined to the room")
	}
	r := storage.Report{Kind: reportEvent, Reporter: reporter, RoomID: &m.ID, EventID: &eventID, Score: score,
		CreatedTS: e.now().UnixMilli()}
	if reason != "" {
		r.Reason = &reason
	}
	return e.store.ReportCreate(ctx, r)
}

// ReportRoom records a report of a room; the reporter need not be in it
// (the spec forbids requiring that). M_NOT_FOUND for an unknown room.
func (e *Engine) ReportRoom(ctx context.Context, reporter, roomID, reason string) error {
	if err := checkReason(reason); err != nil {
		return err
	}
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return err
	}
	return e.store.ReportCreate(ctx, storage.Report{Kind: reportRoom, Reporter: reporter, RoomID: &m.ID, Reason: &reason,
		CreatedTS: e.now().UnixMilli()})
}

// ReportUser records a report of a user, local or remote. Whether the
// user exists is not disclosed (the spec allows answering 200 either way),
// and sharing a room is not required.
func (e *Engine) ReportUser(ctx context.Context, reporter, userID, reason string) error {
	if !ValidUserID(userID) {
		return mxerr.InvalidParam("%q is not a valid user ID", userID)
	}
	if err := checkReason(reason); err != nil {
		return err
	}
	return e.store.ReportCreate(ctx, storage.Report{Kind: reportUser, Reporter: reporter, UserID: &userID, Reason: &reason,
		CreatedTS: e.now().UnixMilli()})
}
