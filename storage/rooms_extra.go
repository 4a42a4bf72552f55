package storage

import (
	"context"
	"fmt"
	"math"
	"strconv"
)

// liveRelation is what every event of a relation meets: in the timeline,
// accepted and not redacted (redacting a child breaks its relation).
// Relation queries write "+room_nid" so that planners (SQLite's without
// statistics, notably) search by relates_to, which is selective, instead
// of walking a whole room through (room_nid, stream_pos).
func liveRelation(prefix string) string {
	return prefix + "stream_pos IS NOT NULL AND " + prefix + "status = 0 AND " + prefix + "redacted_by IS NULL"
}

// placeholders numbers query arguments as they are added.
type placeholders struct{ args []any }

func (p *placeholders) add(v any) string {
	p.args = append(p.args, v)
	return "$" + strconv.Itoa(len(p.args))
}

// topoAfter is the condition "strictly after (depth, stream)" in the
// direction of travel.
func topoAfter(p *placeholders, backwards bool, depth, stream int64) string {
	d, s := p.add(depth), p.add(stream)
	if backwards {
		return ` AND (depth < ` + d + ` OR (depth = ` + d + ` AND stream_pos < ` + s + `))`
	}
	return ` AND (depth > ` + d + ` OR (depth = ` + d + ` AND stream_pos > ` + s + `))`
}

// RelationsQuery selects the events relating to a parent event.
type RelationsQuery struct {
	RoomNID  int64
	ParentID string
	// RelType and EventType, when set, must match every event on the chain
	// from the parent: an event reached only through a non-matching
	// intermediate is not included.
	RelType, EventType string
	// Depth is how many relation hops to follow (1: direct children).
	Depth int
	// Topological bounds (depth, stream), both exclusive.
	HasFrom               bool
	FromDepth, FromStream int64
	HasTo                 bool
	ToDepth, ToStream     int64
	Backwards             bool
	Limit                 int
}

// RelationsPage lists the events relating, directly or through up to
// Depth hops, to a parent event, in topological order.
func (s *Rooms) RelationsPage(ctx context.Context, q RelationsQuery) ([]*Event, error) {
	var p placeholders
	parent, room, depth := p.add(q.ParentID), p.add(q.RoomNID), p.add(max(q.Depth, 1))
	cond := func(prefix string) string {
		c := prefix + "room_nid = " + room + " AND " + liveRelation(prefix)
		if q.RelType != "" {
			c += " AND " + prefix + "rel_type = " + p.add(q.RelType)
		}
		if q.EventType != "" {
			c += " AND " + prefix + "type = " + p.add(q.EventType)
		}
		return c
	}
	// The hop bound also ends chains that loop (possible only with the
	// custom event IDs of room versions 1 and 2).
	sql := `WITH RECURSIVE related (event_id, hops) AS (
			SELECT event_id, 1 FROM events WHERE relates_to = ` + parent + ` AND ` + cond("") + `
			UNION ALL
			SELECT e.event_id, r.hops + 1 FROM events e JOIN related r ON e.relates_to = r.event_id
			WHERE r.hops < ` + depth + ` AND ` + cond("e.") + `
		)
		SELECT ` + eventCols + ` FROM events WHERE event_id IN (SELECT event_id FROM related)`
	if q.HasFrom {
		sql += topoAfter(&p, q.Backwards, q.FromDepth, q.FromStream)
	}
	if q.HasTo {
		sql += topoAfter(&p, !q.Backwards, q.ToDepth, q.ToStream)
	}
	if q.Backwards {
		sql += ` ORDER BY depth DESC, stream_pos DESC`
	} else {
		sql += ` ORDER BY depth ASC, stream_pos ASC`
	}
	sql += ` LIMIT ` + p.add(q.Limit)
	rows, err := s.db.Read().Query(ctx, sql, p.args...)
	if err != nil {
		return nil, fmt.Errorf("relations: %w", err)
	}
	return scanEvents(rows)
}

// ThreadsQuery selects thread roots of a room by latest activity.
type ThreadsQuery struct {
	RoomNID int64
	// Participant, when set, keeps the threads this user started or
	// replied to.
	Participant string
	// HasFrom continues after the thread whose newest reply is at
	// (FromDepth, FromStream).
	HasFrom               bool
	FromDepth, FromStream int64
	Limit                 int
}

// ThreadRoot is a thread root and the position of its newest reply.
type ThreadRoot struct {
	RootID        string
	Depth, Stream int64
}

// ThreadRoots lists the roots of a room's threads, the most recently
// active first.
func (s *Rooms) ThreadRoots(ctx context.Context, q ThreadsQuery) ([]ThreadRoot, error) {
	var p placeholders
	room := p.add(q.RoomNID)
	sql := `SELECT relates_to, depth, stream_pos FROM (
			SELECT relates_to, depth, stream_pos,
				ROW_NUMBER() OVER (PARTITION BY relates_to ORDER BY depth DESC, stream_pos DESC) AS rn
			FROM events WHERE room_nid = ` + room + ` AND rel_type = 'm.thread' AND ` + liveRelation("") + `
		) latest WHERE rn = 1`
	if q.HasFrom {
		sql += topoAfter(&p, true, q.FromDepth, q.FromStream)
	}
	if q.Participant != "" {
		u := p.add(q.Participant)
		sql += ` AND (EXISTS (SELECT 1 FROM events t WHERE t.relates_to = latest.relates_to AND t.room_nid = ` + room + `
				AND t.rel_type = 'm.thread' AND t.sender = ` + u + ` AND ` + liveRelation("t.") + `)
			OR EXISTS (SELECT 1 FROM events r WHERE r.event_id = latest.relates_to AND r.sender = ` + u + `))`
	}
	sql += ` ORDER BY depth DESC, stream_pos DESC LIMIT ` + p.add(q.Limit)
	rows, err := s.db.Read().Query(ctx, sql, p.args...)
	if err != nil {
		return nil, fmt.Errorf("thread roots: %w", err)
	}
	defer rows.Close()
	var out []ThreadRoot
	for rows.Next() {
		var t ThreadRoot
		if err := rows.Scan(&t.RootID, &t.Depth, &t.Stream); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// ThreadSummary sums up one sender's replies to a thread root.
type ThreadSummary struct {
	RootID, Sender string
	Count          int
	// The sender's newest reply.
	LatestNID, LatestDepth, LatestStream int64
}

// ThreadSummaries returns, for each root and each sender, how many thread
// replies the sender made and the newest of them.
func (s *Rooms) ThreadSummaries(ctx context.Context, roomNID int64, roots []string) ([]ThreadSummary, error) {
	var out []ThreadSummary
	err := queryIn(ctx, s.db.Read(), `SELECT relates_to, sender, cnt, event_nid, depth, stream_pos FROM (
			SELECT relates_to, sender, event_nid, depth, stream_pos,
				COUNT(*) OVER (PARTITION BY relates_to, sender) AS cnt,
				ROW_NUMBER() OVER (PARTITION BY relates_to, sender ORDER BY depth DESC, stream_pos DESC) AS rn
			FROM events WHERE +room_nid = $1 AND rel_type = 'm.thread' AND `+liveRelation("")+` AND relates_to IN (IN)
		) per_sender WHERE rn = 1`, []any{roomNID}, roots, func(r Rows) error {
		var t ThreadSummary
		if err := r.Scan(&t.RootID, &t.Sender, &t.Count, &t.LatestNID, &t.LatestDepth, &t.LatestStream); err != nil {
			return err
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("thread summaries: %w", err)
	}
	return out, nil
}

// Edit is a candidate replacement (m.replace) of an event.
type Edit struct {
	ParentID, EventID, Sender, Type string
	NID, OriginTS                   int64
}

// EditCandidates returns the newest (by origin_server_ts) perKey
// non-state m.replace events for each parent, sender and event type.
func (s *Rooms) EditCandidates(ctx context.Context, roomNID int64, parents []string, perKey int) ([]Edit, error) {
	var out []Edit
	err := queryIn(ctx, s.db.Read(), `SELECT relates_to, event_id, sender, type, event_nid, origin_ts FROM (
			SELECT relates_to, event_id, sender, type, event_nid, origin_ts,
				ROW_NUMBER() OVER (PARTITION BY relates_to, sender, type ORDER BY origin_ts DESC, stream_pos DESC) AS rn
			FROM events WHERE +room_nid = $1 AND rel_type = 'm.replace' AND state_key IS NULL AND `+liveRelation("")+`
				AND relates_to IN (IN)
		) edits WHERE rn <= $2`, []any{roomNID, perKey}, parents, func(r Rows) error {
		var e Edit
		if err := r.Scan(&e.ParentID, &e.EventID, &e.Sender, &e.Type, &e.NID, &e.OriginTS); err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("edit candidates: %w", err)
	}
	return out, nil
}

// Reference is an m.reference relation.
type Reference struct {
	ParentID, EventID, Sender string
	Depth, Stream             int64
}

// References returns the first perParent m.reference events of each
// parent, in topological order.
func (s *Rooms) References(ctx context.Context, roomNID int64, parents []string, perParent int) ([]Reference, error) {
	var out []Reference
	err := queryIn(ctx, s.db.Read(), `SELECT relates_to, event_id, sender, depth, stream_pos FROM (
			SELECT relates_to, event_id, sender, depth, stream_pos,
				ROW_NUMBER() OVER (PARTITION BY relates_to ORDER BY depth, stream_pos) AS rn
			FROM events WHERE +room_nid = $1 AND rel_type = 'm.reference' AND `+liveRelation("")+` AND relates_to IN (IN)
		) refs WHERE rn <= $2`, []any{roomNID, perParent}, parents, func(r Rows) error {
		var x Reference
		if err := r.Scan(&x.ParentID, &x.EventID, &x.Sender, &x.Depth, &x.Stream); err != nil {
			return err
		}
		out = append(out, x)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("references: %w", err)
	}
	return out, nil
}

// TimestampQuery walks a room's accepted timeline events by
// origin_server_ts from a point, in one direction.
type TimestampQuery struct {
	RoomNID int64
	// TS and Stream are the exclusive starting point: (TS, -1) forwards or
	// (TS, MaxInt64) backwards includes the events at TS.
	TS, Stream int64
	Forward    bool
	Limit      int
}

// EventsByTimestamp returns the next events from a point in time.
func (s *Rooms) EventsByTimestamp(ctx context.Context, q TimestampQuery) ([]*Event, error) {
	sql := `SELECT ` + eventCols + ` FROM events WHERE room_nid = $1 AND stream_pos IS NOT NULL AND status = 0
		AND (origin_ts < $2 OR (origin_ts = $2 AND stream_pos < $3)) ORDER BY origin_ts DESC, stream_pos DESC LIMIT $4`
	if q.Forward {
		sql = `SELECT ` + eventCols + ` FROM events WHERE room_nid = $1 AND stream_pos IS NOT NULL AND status = 0
		AND (origin_ts > $2 OR (origin_ts = $2 AND stream_pos > $3)) ORDER BY origin_ts ASC, stream_pos ASC LIMIT $4`
	}
	rows, err := s.db.Read().Query(ctx, sql, q.RoomNID, q.TS, q.Stream, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("events by timestamp: %w", err)
	}
	return scanEvents(rows)
}

// DirectoryRoom is a published room with what the directory shows of it.
type DirectoryRoom struct {
	NID    int64
	RoomID string
	Joined int
	// State maps event types of the room's current state (with the empty
	// state key) to event nids.
	State map[string]int64
}

// DirectoryRooms lists the published rooms with their joined member
// counts and the current state events of the given types.
func (s *Rooms) DirectoryRooms(ctx context.Context, types []string) ([]DirectoryRoom, error) {
	q := s.db.Read()
	rows, err := q.Query(ctx, `SELECT room_nid, room_id FROM rooms WHERE published ORDER BY room_nid`)
	if err != nil {
		return nil, fmt.Errorf("published rooms: %w", err)
	}
	var out []DirectoryRoom
	index := map[int64]int{}
	for rows.Next() {
		r := DirectoryRoom{State: map[string]int64{}}
		if err := rows.Scan(&r.NID, &r.RoomID); err != nil {
			rows.Close()
			return nil, err
		}
		index[r.NID] = len(out)
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, nil
	}
	err = queryIn(ctx, q, `SELECT c.room_nid, c.type, c.event_nid FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid
		WHERE r.published AND c.state_key = '' AND c.type IN (IN)`, nil, types, func(r Rows) error {
		var nid, ev int64
		var typ string
		if err := r.Scan(&nid, &typ, &ev); err != nil {
			return err
		}
		if i, ok := index[nid]; ok {
			out[i].State[typ] = ev
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("published rooms' state: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT c.room_nid, COUNT(*) FROM current_state c JOIN rooms r ON r.room_nid = c.room_nid
		WHERE r.published AND c.type = 'm.room.member' AND c.membership = 'join' GROUP BY c.room_nid`)
	if err != nil {
		return nil, fmt.Errorf("published rooms' members: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var nid int64
		var n int
		if err := rows.Scan(&nid, &n); err != nil {
			return nil, err
		}
		if i, ok := index[nid]; ok {
			out[i].Joined = n
		}
	}
	return out, rows.Err()
}

// AliasesMove points every alias of one room at another and returns them.
func (s *Rooms) AliasesMove(ctx context.Context, fromNID, toNID int64) ([]string, error) {
	var moved []string
	err := s.db.Write(ctx, func(tx *Tx) error {
		rows, err := tx.Query(ctx, `SELECT alias FROM room_aliases WHERE room_nid = $1 ORDER BY alias`, fromNID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				rows.Close()
				return err
			}
			moved = append(moved, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE room_aliases SET room_nid = $2 WHERE room_nid = $1`, fromNID, toNID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("move aliases: %w", err)
	}
	return moved, nil
}

// AliasDeleteFrom removes an alias if it still points at the room;
// ErrNotFound otherwise.
func (s *Rooms) AliasDeleteFrom(ctx context.Context, alias string, roomNID int64) error {
	n, err := s.db.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1 AND room_nid = $2`, alias, roomNID)
	if err == nil && n == 0 {
		return ErrNotFound
	}
	return err
}

// WithBundledRelations returns which of the given events have a child of
// a relation bundled into its parent (thread, edit or reference). It reads
// only the relations index, so that a timeline of plain messages costs one
// cheap query instead of one per aggregation; a child in another room may
// name a parent here, which only costs the caller the full queries. With
// upTo > 0 only children at or before that events-stream position count.
func (s *Rooms) WithBundledRelations(ctx context.Context, parents []string, upTo int64) (map[string]bool, error) {
	out := map[string]bool{}
	if upTo <= 0 {
		upTo = math.MaxInt64
	}
	err := queryIn(ctx, s.db.Read(), `SELECT DISTINCT relates_to FROM events
		WHERE relates_to IN (IN) AND rel_type IN ('m.thread', 'm.replace', 'm.reference') AND stream_pos <= $1`,
		[]any{upTo}, parents, func(r Rows) error {
			var id string
			if err := r.Scan(&id); err != nil {
				return err
			}
			out[id] = true
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("bundled relations: %w", err)
	}
	return out, nil
}
