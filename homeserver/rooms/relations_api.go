package rooms

import (
	"context"
	"encoding/json"

	"maunium.net/go/mautrix/federation/pdu"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// Limits of GET /relations and GET /threads.
const (
	DefaultRelationsLimit = 5
	MaxRelationsLimit     = 1000
	// RelationsRecursionDepth is how many relation hops recurse=true
	// follows (the spec asks for at least 3).
	RelationsRecursionDepth = 3
	DefaultThreadsLimit     = 5
	MaxThreadsLimit         = 100
	// maxIdentifierBytes bounds event types and relation types in paths.
	maxIdentifierBytes = 255
)

// RelationsQuery is GET /relations's parameters.
type RelationsQuery struct {
	// RelType and EventType narrow the children (EventType needs RelType).
	RelType, EventType string
	From, To           string
	Backward           bool
	// Limit is the page size (0: the default).
	Limit int
	// Recurse, when given, asks (true) or declines (false) to include
	// indirect relations; the answer then states the depth followed.
	Recurse *bool
}

// RelationsPage is GET /relations's answer.
type RelationsPage struct {
	Chunk          []*ClientEvent `json:"chunk"`
	NextBatch      string         `json:"next_batch,omitempty"`
	PrevBatch      string         `json:"prev_batch,omitempty"`
	RecursionDepth *int           `json:"recursion_depth,omitempty"`
}

// pageLimit applies a default and a maximum to a page size.
func pageLimit(n, def, most int) (int, error) {
	switch {
	case n < 0:
		return 0, mxerr.InvalidParam("limit must be a positive integer")
	case n == 0:
		return def, nil
	}
	return min(n, most), nil
}

// visibleEvent loads an event of a room that the user may see: a
// malformed ID is a 400, anything else they cannot see a 404.
func (e *Engine) visibleEvent(ctx context.Context, user, roomID, eventID string) (*roomMeta, *viewer, *Event, error) {
	if !ValidEventID(eventID) {
		return nil, nil, nil, mxerr.InvalidParam("%q is not a valid event ID", eventID)
	}
	notFound := mxerr.NotFound("Event not found or not visible to you")
	m, err := e.meta(ctx, roomID)
	if err != nil {
		if mxerr.IsCode(err, "M_NOT_FOUND") {
			return nil, nil, nil, notFound
		}
		return nil, nil, nil, err
	}
	ev, err := e.eventByID(ctx, eventID)
	if err != nil {
		return nil, nil, nil, err
	}
	if ev.RoomNID != m.NID {
		return nil, nil, nil, notFound
	}
	v, err := e.newViewer(ctx, user, m)
	if err != nil {
		return nil, nil, nil, err
	}
	ok, _, err := v.allowed(ev)
	if err != nil {
		return nil, nil, nil, err
	}
	ignored, err := e.IgnoredUsers(ctx, user)
	if err != nil {
		return nil, nil, nil, err
	}
	if !ok || hiddenByIgnore(ignored, ev) {
		return nil, nil, nil, notFound
	}
	return m, v, ev, nil
}

// Relations pages through the children of an event (and, with Recurse,
// their children up to RelationsRecursionDepth hops), skipping those the
// user may not see or whose sender they ignore.
func (e *Engine) Relations(ctx context.Context, who Requester, roomID, eventID string, q RelationsQuery) (*RelationsPage, error) {
	if len(q.RelType) > maxIdentifierBytes || len(q.EventType) > maxIdentifierBytes {
		return nil, mxerr.InvalidParam("Relation and event types are at most %d bytes", maxIdentifierBytes)
	}
	limit, err := pageLimit(q.Limit, DefaultRelationsLimit, MaxRelationsLimit)
	if err != nil {
		return nil, err
	}
	m, v, _, err := e.visibleEvent(ctx, who.UserID, roomID, eventID)
	if err != nil {
		return nil, err
	}
	ignored, err := e.IgnoredUsers(ctx, who.UserID)
	if err != nil {
		return nil, err
	}
	from, err := e.startPosition(ctx, m, q.From, q.Backward)
	if err != nil {
		return nil, err
	}
	to, err := e.endPosition(ctx, m, q.To, q.Backward)
	if err != nil {
		return nil, err
	}
	rq := storage.RelationsQuery{RoomNID: m.NID, ParentID: eventID, RelType: q.RelType, EventType: q.EventType,
		Depth: 1, Backwards: q.Backward, HasFrom: true}
	if q.Recurse != nil && *q.Recurse {
		rq.Depth = RelationsRecursionDepth
	}
	if to != nil {
		rq.HasTo, rq.ToDepth, rq.ToStream = true, to.Depth, to.Stream
	}
	var kept []*Event
	var mems []string
	cur, more := from, false
	for scanned := 0; len(kept) < limit && scanned < limit*maxScanFactor; {
		rq.FromDepth, rq.FromStream, rq.Limit = cur.Depth, cur.Stream, limit-len(kept)+1
		rows, err := e.store.RelationsPage(ctx, rq)
		if err != nil {
			return nil, err
		}
		more = len(rows) == rq.Limit
		for i, row := range rows {
			scanned++
			cur = Position{Depth: row.Depth, Stream: deref(row.StreamPos)}
			ev, err := fromRow(row, m.Version, m.ID)
			if err != nil {
				return nil, err
			}
			if hiddenByIgnore(ignored, ev) {
				continue
			}
			ok, mem, err := v.allowed(ev)
			if err != nil {
				return nil, err
			}
			if ok {
				kept, mems = append(kept, ev), append(mems, mem)
				if len(kept) == limit {
					more = more || i < len(rows)-1
					break
				}
			}
		}
		if !more {
			break
		}
	}
	res := &RelationsPage{PrevBatch: q.From}
	if more {
		res.NextBatch = cur.String()
	}
	if q.Recurse != nil {
		res.RecursionDepth = &rq.Depth
	}
	if res.Chunk, err = e.renderAll(ctx, kept, mems, FormatOptions{User: who.UserID, DeviceID: who.DeviceID}); err != nil {
		return nil, err
	}
	return res, nil
}

// endPosition parses a "to" token as Messages does (nil when empty).
func (e *Engine) endPosition(ctx context.Context, m *roomMeta, to string, backward bool) (*Position, error) {
	if to == "" {
		return nil, nil
	}
	p, err := ParsePosition(to)
	if err != nil {
		return nil, err
	}
	if p.StreamOnly {
		if p, err = e.topoOfStream(ctx, m, p.Stream, backward); err != nil {
			return nil, err
		}
	}
	return &p, nil
}

// ThreadsQuery is GET /threads's parameters.
type ThreadsQuery struct {
	// Include is "all" (or empty) or "participated".
	Include string
	From    string
	// Limit is the page size (0: the default).
	Limit int
}

// ThreadsPage is GET /threads's answer.
type ThreadsPage struct {
	Chunk     []*ClientEvent `json:"chunk"`
	NextBatch string         `json:"next_batch,omitempty"`
}

// Threads lists a room's thread roots, the most recently active first,
// each with its m.thread aggregation. A root sent by an ignored user is
// returned redacted, as a client aggregating the thread itself would show
// it.
func (e *Engine) Threads(ctx context.Context, who Requester, roomID string, q ThreadsQuery) (*ThreadsPage, error) {
	user := who.UserID
	tq := storage.ThreadsQuery{}
	switch q.Include {
	case "", "all":
	case "participated":
		tq.Participant = user
	default:
		return nil, mxerr.InvalidParam("include must be all or participated")
	}
	limit, err := pageLimit(q.Limit, DefaultThreadsLimit, MaxThreadsLimit)
	if err != nil {
		return nil, err
	}
	if q.From != "" {
		p, err := ParsePosition(q.From)
		if err != nil || p.StreamOnly {
			return nil, mxerr.InvalidParam("Unknown pagination token %q", q.From)
		}
		tq.HasFrom, tq.FromDepth, tq.FromStream = true, p.Depth, p.Stream
	}
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, notMemberIfUnknown(err)
	}
	tq.RoomNID = m.NID
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
	var roots []*Event
	var mems []string
	more := false
	for scanned := 0; len(roots) < limit && scanned < limit*maxScanFactor; {
		tq.Limit = limit - len(roots) + 1
		page, err := e.store.ThreadRoots(ctx, tq)
		if err != nil {
			return nil, err
		}
		more = len(page) == tq.Limit
		ids := make([]string, len(page))
		for i, t := range page {
			ids[i] = t.RootID
		}
		evs, err := e.eventsByID(ctx, e.db.Read(), ids)
		if err != nil {
			return nil, err
		}
		for i, t := range page {
			scanned++
			tq.HasFrom, tq.FromDepth, tq.FromStream = true, t.Depth, t.Stream
			root, ok := evs[t.RootID]
			// Only an event that is not itself a relation can be a root.
			if !ok || root.RoomNID != m.NID || root.RelType != nil || root.IsState() {
				continue
			}
			visible, mem, err := v.allowed(root)
			if err != nil {
				return nil, err
			}
			if visible {
				roots, mems = append(roots, root), append(mems, mem)
				if len(roots) == limit {
					more = more || i < len(page)-1
					break
				}
			}
		}
		if !more {
			break
		}
	}
	rendered, err := e.renderAll(ctx, roots, mems, FormatOptions{User: user, DeviceID: who.DeviceID})
	if err != nil {
		return nil, err
	}
	res := &ThreadsPage{Chunk: make([]*ClientEvent, 0, len(rendered))}
	for i, ce := range rendered {
		// A thread whose every reply comes from ignored users is not one
		// for this user.
		if ce.Unsigned == nil || !hasThread(ce.Unsigned.Relations) {
			continue
		}
		if ignored[roots[i].Sender] {
			ce.Content = redactedContent(roots[i])
		}
		res.Chunk = append(res.Chunk, ce)
	}
	if more {
		res.NextBatch = Position{Depth: tq.FromDepth, Stream: tq.FromStream}.String()
	}
	return res, nil
}

func hasThread(relations json.RawMessage) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(relations, &m) != nil {
		return false
	}
	_, ok := m["m.thread"]
	return ok
}

// redactedContent is an event's content as redaction would leave it.
func redactedContent(ev *Event) json.RawMessage {
	return json.RawMessage(pdu.RedactContent(ev.Type, ev.PDU.Content, ev.Version))
}
