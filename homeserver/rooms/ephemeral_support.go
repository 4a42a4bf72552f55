package rooms

import (
	"context"
	"errors"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// maxThreadHops bounds how many relations are followed to find the thread
// an event belongs to (the spec recommends at least 3).
const maxThreadHops = 3

// EventPosition returns where an event of a room sits in the events
// stream, who sent it and the root of the thread it belongs to ("" for the
// main timeline), for receipts. M_NOT_FOUND if the event is unknown, in
// another room, rejected or not in the timeline.
func (e *Engine) EventPosition(ctx context.Context, roomID, eventID string) (streamPos int64, sender, threadRoot string, err error) {
	ev, err := e.timelineEvent(ctx, roomID, eventID)
	if err != nil {
		return 0, "", "", err
	}
	root, err := e.threadRoot(ctx, ev)
	if err != nil {
		return 0, "", "", err
	}
	return *ev.StreamPos, ev.Sender, root, nil
}

// EventVisible reports whether a user may see an event of a room, by the
// history visibility rules Event applies (without rendering the event).
// An unknown event is not visible.
func (e *Engine) EventVisible(ctx context.Context, userID, roomID, eventID string) (bool, error) {
	ev, err := e.timelineEvent(ctx, roomID, eventID)
	if mxerr.IsCode(err, "M_NOT_FOUND") {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return false, err
	}
	v, err := e.newViewer(ctx, userID, m)
	if err != nil {
		return false, err
	}
	ok, _, err := v.allowed(ev)
	return ok, err
}

// timelineEvent returns an accepted timeline event of the room.
func (e *Engine) timelineEvent(ctx context.Context, roomID, eventID string) (*Event, error) {
	if !ValidEventID(eventID) {
		return nil, mxerr.NotFound("Event not found")
	}
	m, err := e.meta(ctx, roomID)
	if errors.Is(err, ErrUnknownRoom) {
		return nil, mxerr.NotFound("Event not found")
	}
	if err != nil {
		return nil, err
	}
	ev, err := e.eventByID(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev.RoomNID != m.NID || ev.StreamPos == nil || ev.Status != storage.EventAccepted {
		return nil, mxerr.NotFound("Event not found")
	}
	return ev, nil
}

// threadRoot follows an event's relations (at most maxThreadHops) to the
// root of the thread it is in: an m.thread relation names the root; any
// other relation defers to its parent. Thread roots themselves, and
// events related to them other than by m.thread, are in the main
// timeline ("").
func (e *Engine) threadRoot(ctx context.Context, ev *Event) (string, error) {
	for range maxThreadHops {
		if ev.RelatesTo == nil {
			return "", nil
		}
		if ev.RelType != nil && *ev.RelType == "m.thread" {
			return *ev.RelatesTo, nil
		}
		parent, err := e.eventByID(ctx, *ev.RelatesTo)
		if mxerr.IsCode(err, "M_NOT_FOUND") {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		if parent.RoomNID != ev.RoomNID {
			return "", nil
		}
		ev = parent
	}
	return "", nil
}
