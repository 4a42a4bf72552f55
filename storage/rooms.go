package storage

import (
	"context"
	"errors"
	"fmt"
)

// EventsStream names the stream of timeline events.
const EventsStream = "events"

// Rooms stores rooms, events, their edges and state.
type Rooms struct{ db *DB }

// Rooms returns the rooms store.
func (db *DB) Rooms() *Rooms { return &Rooms{db: db} }

// Room is a room's row.
type Room struct {
	NID       int64
	RoomID    string
	Version   string
	StateNID  int64
	MaxDepth  int64
	LastEvent int64
	Published bool
	CreatedTS int64
}

const roomCols = `room_nid, room_id, version, state_nid, max_depth, last_event, published, created_ts`

func scanRoom(r Row) (Room, error) {
	var x Room
	err := r.Scan(&x.NID, &x.RoomID, &x.Version, &x.StateNID, &x.MaxDepth, &x.LastEvent, &x.Published, &x.CreatedTS)
	return x, err
}

// RoomCreate inserts a room; ErrConflict if the ID exists.
// The room has no state until its create event is persisted.
func (s *Rooms) RoomCreate(ctx context.Context, tx *Tx, roomID, version string, ts int64) (int64, error) {
	var nid int64
	err := tx.QueryRow(ctx, `INSERT INTO rooms (room_id, version, created_ts) VALUES ($1, $2, $3) RETURNING room_nid`, roomID, version, ts).Scan(&nid)
	if err != nil {
		return 0, fmt.Errorf("create room: %w", err)
	}
	return nid, nil
}

// RoomByID returns a room; ErrNotFound if unknown.
func (s *Rooms) RoomByID(ctx context.Context, q Querier, roomID string) (Room, error) {
	return scanRoom(q.QueryRow(ctx, `SELECT `+roomCols+` FROM rooms WHERE room_id = $1`, roomID))
}

// RoomByNID returns a room by numeric ID.
func (s *Rooms) RoomByNID(ctx context.Context, q Querier, nid int64) (Room, error) {
	return scanRoom(q.QueryRow(ctx, `SELECT `+roomCols+` FROM rooms WHERE room_nid = $1`, nid))
}

// AddRoomHead queues the update of a room's current state, depth and
// newest event (and its stream position, when it is in the timeline).
func (s *Rooms) AddRoomHead(b *Batch, nid, stateNID, maxDepth, lastEvent, lastStream int64) {
	b.Add(`UPDATE rooms SET state_nid = $2, max_depth = $3, last_event = $4, last_stream = CASE WHEN $5 > last_stream THEN $5 ELSE last_stream END WHERE room_nid = $1`,
		nid, stateNID, maxDepth, lastEvent, lastStream)
}

// RoomForUpdate reads a room's row inside the persisting transaction.
func (s *Rooms) RoomForUpdate(ctx context.Context, tx *Tx, nid int64) (Room, error) {
	return scanRoom(tx.QueryRow(ctx, `SELECT `+roomCols+` FROM rooms WHERE room_nid = $1`, nid))
}

// RoomSetPublished sets a room's visibility in the directory.
func (s *Rooms) RoomSetPublished(ctx context.Context, nid int64, published bool) error {
	_, err := s.db.Exec(ctx, `UPDATE rooms SET published = $2 WHERE room_nid = $1`, nid, published)
	return err
}

// PublishedRooms lists published rooms' numeric IDs.
func (s *Rooms) PublishedRooms(ctx context.Context) ([]int64, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT room_nid FROM rooms WHERE published ORDER BY room_nid`)
	if err != nil {
		return nil, err
	}
	return scanInt64s(rows)
}

func scanInt64s(rows Rows) ([]int64, error) {
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Extremity is a forward extremity of a room.
type Extremity struct {
	NID     int64
	EventID string
	Depth   int64
}

// Extremities returns a room's forward extremities.
func (s *Rooms) Extremities(ctx context.Context, q Querier, roomNID int64) ([]Extremity, error) {
	rows, err := q.Query(ctx, `SELECT e.event_nid, e.event_id, e.depth FROM forward_extremities f
		JOIN events e ON e.event_nid = f.event_nid WHERE f.room_nid = $1 ORDER BY e.depth DESC, e.event_nid DESC`, roomNID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Extremity
	for rows.Next() {
		var x Extremity
		if err := rows.Scan(&x.NID, &x.EventID, &x.Depth); err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// AddExtremities queues replacing extremities: remove, then add.
func (s *Rooms) AddExtremities(b *Batch, roomNID int64, remove []int64, add []int64) {
	for _, r := range remove {
		b.Add(`DELETE FROM forward_extremities WHERE room_nid = $1 AND event_nid = $2`, roomNID, r)
	}
	for _, a := range add {
		b.Add(`INSERT INTO forward_extremities (room_nid, event_nid) VALUES ($1, $2) ON CONFLICT DO NOTHING`, roomNID, a)
	}
}

// StateKey is an event's (type, state_key).
type StateKey struct{ Type, StateKey string }

// StateKeyNIDs interns keys, creating the missing ones when tx is given.
func (s *Rooms) StateKeyNIDs(ctx context.Context, q Querier, tx *Tx, keys []StateKey) (map[StateKey]int64, error) {
	out := make(map[StateKey]int64, len(keys))
	for _, k := range keys {
		if _, ok := out[k]; ok {
			continue
		}
		var nid int64
		err := q.QueryRow(ctx, `SELECT key_nid FROM state_keys WHERE type = $1 AND state_key = $2`, k.Type, k.StateKey).Scan(&nid)
		if errors.Is(err, ErrNotFound) && tx != nil {
			err = tx.QueryRow(ctx, `INSERT INTO state_keys (type, state_key) VALUES ($1, $2)
				ON CONFLICT (type, state_key) DO UPDATE SET type = excluded.type RETURNING key_nid`, k.Type, k.StateKey).Scan(&nid)
		}
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("state key nid: %w", err)
		}
		out[k] = nid
	}
	return out, nil
}

// StateKeysByNID resolves interned keys.
func (s *Rooms) StateKeysByNID(ctx context.Context, q Querier, nids []int64) (map[int64]StateKey, error) {
	out := make(map[int64]StateKey, len(nids))
	err := queryIn(ctx, q, `SELECT key_nid, type, state_key FROM state_keys WHERE key_nid IN (IN)`, nil, nids, func(r Rows) error {
		var nid int64
		var k StateKey
		if err := r.Scan(&nid, &k.Type, &k.StateKey); err != nil {
			return err
		}
		out[nid] = k
		return nil
	})
	return out, err
}

// AddSnapshot queues storing a state snapshot under a reserved nid.
func (s *Rooms) AddSnapshot(b *Batch, nid, seq, skip int64, entries []byte) {
	b.Add(`INSERT INTO state_snapshots (snapshot_nid, seq, skip_nid, entries) VALUES ($1, $2, $3, $4)`, nid, seq, skip, entries)
}

// Snapshot is one stored snapshot delta.
type Snapshot struct {
	NID, Seq, Skip int64
	Entries        []byte
}

// SnapshotGet loads a snapshot; q may be a transaction.
func (s *Rooms) SnapshotGet(ctx context.Context, q Querier, nid int64) (Snapshot, error) {
	x := Snapshot{NID: nid}
	err := q.QueryRow(ctx, `SELECT seq, skip_nid, entries FROM state_snapshots WHERE snapshot_nid = $1`, nid).Scan(&x.Seq, &x.Skip, &x.Entries)
	return x, err
}

// Event statuses.
const (
	EventAccepted   = 0
	EventRejected   = 1
	EventSoftFailed = 2
	EventOutlier    = 3
)

// Event is a stored event's row.
type Event struct {
	NID          int64
	EventID      string
	RoomNID      int64
	Type         string
	StateKey     *string
	Membership   *string
	Sender       string
	Depth        int64
	OriginTS     int64
	StreamPos    *int64
	StateBefore  *int64
	StateAfter   *int64
	Status       int
	RejectReason *string
	RedactedBy   *string
	RelatesTo    *string
	RelType      *string
	TxnDevice    *string
	TxnID        *string
	JSON         []byte
}

const eventCols = `event_nid, event_id, room_nid, type, state_key, membership, sender, depth, origin_ts, stream_pos,
	state_before, state_after, status, reject_reason, redacted_by, relates_to, rel_type, txn_device, txn_id, json`

func scanEvent(r Row) (Event, error) {
	var e Event
	err := r.Scan(&e.NID, &e.EventID, &e.RoomNID, &e.Type, &e.StateKey, &e.Membership, &e.Sender, &e.Depth, &e.OriginTS,
		&e.StreamPos, &e.StateBefore, &e.StateAfter, &e.Status, &e.RejectReason, &e.RedactedBy, &e.RelatesTo, &e.RelType,
		&e.TxnDevice, &e.TxnID, &e.JSON)
	return e, err
}

// ReserveNIDs reserves n numeric IDs of a kind ("event", "snapshot") so
// that rows can be written in a batch without RETURNING.
func (s *Rooms) ReserveNIDs(ctx context.Context, tx *Tx, kind string, n int64) (int64, error) {
	return tx.NextStreamPos(ctx, nidStream(kind), n)
}

// nidStream names the counter of a kind of nid.
func nidStream(kind string) string { return kind + "_nids" }

// AddEvent queues storing an event under its reserved nid.
func (s *Rooms) AddEvent(b *Batch, e *Event) {
	b.AddRow(insertEvents, e.NID, e.EventID, e.RoomNID, e.Type, e.StateKey, e.Membership, e.Sender, e.Depth, e.OriginTS, e.StreamPos,
		e.StateBefore, e.StateAfter, e.Status, e.RejectReason, e.RedactedBy, e.RelatesTo, e.RelType, e.TxnDevice, e.TxnID, e.JSON)
}

// Row inserts of the persisting batch: a batch's events and edges each go
// in by one statement or a few.
var (
	insertEvents = NewRowInsert("events", `event_nid, event_id, room_nid, type, state_key, membership, sender, depth, origin_ts, stream_pos,
		state_before, state_after, status, reject_reason, redacted_by, relates_to, rel_type, txn_device, txn_id, json`, 20, "")
	insertPrevEdges = NewRowInsert("event_prev_edges", "event_nid, prev_event_id", 2, "ON CONFLICT DO NOTHING")
	insertAuthEdges = NewRowInsert("event_auth_edges", "event_nid, auth_nid", 2, "ON CONFLICT DO NOTHING")
	insertTxns      = NewRowInsert("txn_ids", "user_id, device_id, scope, txn_id, event_id, created_ts", 6, "")
)

// AddEdges queues an event's prev and auth edges.
func (s *Rooms) AddEdges(b *Batch, nid int64, prevIDs []string, authNIDs []int64) {
	for _, p := range prevIDs {
		b.AddRow(insertPrevEdges, nid, p)
	}
	for _, a := range authNIDs {
		b.AddRow(insertAuthEdges, nid, a)
	}
}

// AuthEdges returns the auth event nids of events.
func (s *Rooms) AuthEdges(ctx context.Context, q Querier, nids []int64) (map[int64][]int64, error) {
	out := map[int64][]int64{}
	err := queryIn(ctx, q, `SELECT event_nid, auth_nid FROM event_auth_edges WHERE event_nid IN (IN)`, nil, nids, func(r Rows) error {
		var e, a int64
		if err := r.Scan(&e, &a); err != nil {
			return err
		}
		out[e] = append(out[e], a)
		return nil
	})
	return out, err
}

// EventsByNID loads events by numeric ID (missing ones are absent).
func (s *Rooms) EventsByNID(ctx context.Context, q Querier, nids []int64) (map[int64]*Event, error) {
	out := make(map[int64]*Event, len(nids))
	err := queryIn(ctx, q, `SELECT `+eventCols+` FROM events WHERE event_nid IN (IN)`, nil, nids, func(r Rows) error {
		e, err := scanEvent(r)
		if err != nil {
			return err
		}
		out[e.NID] = &e
		return nil
	})
	return out, err
}

// EventsByID loads events by event ID (missing ones are absent).
func (s *Rooms) EventsByID(ctx context.Context, q Querier, ids []string) (map[string]*Event, error) {
	out := make(map[string]*Event, len(ids))
	err := queryIn(ctx, q, `SELECT `+eventCols+` FROM events WHERE event_id IN (IN)`, nil, ids, func(r Rows) error {
		e, err := scanEvent(r)
		if err != nil {
			return err
		}
		out[e.EventID] = &e
		return nil
	})
	return out, err
}

// EventNIDsByID maps event IDs to numeric IDs.
func (s *Rooms) EventNIDsByID(ctx context.Context, q Querier, ids []string) (map[string]int64, error) {
	out := make(map[string]int64, len(ids))
	err := queryIn(ctx, q, `SELECT event_id, event_nid FROM events WHERE event_id IN (IN)`, nil, ids, func(r Rows) error {
		var id string
		var nid int64
		if err := r.Scan(&id, &nid); err != nil {
			return err
		}
		out[id] = nid
		return nil
	})
	return out, err
}

// AddRedactedBy queues marking an event redacted by another.
func (s *Rooms) AddRedactedBy(b *Batch, eventID, redactionID string) {
	b.Add(`UPDATE events SET redacted_by = $2 WHERE event_id = $1 AND redacted_by IS NULL`, eventID, redactionID)
}

// TimelineQuery selects timeline events of a room.
type TimelineQuery struct {
	RoomNID int64
	// Topological bounds (depth, stream) — exclusive From, exclusive To.
	FromDepth, FromStream int64
	ToDepth, ToStream     int64
	HasTo                 bool
	Backwards             bool
	Limit                 int
}

// Timeline pages through a room's timeline in topological order
// (depth, then stream position).
func (s *Rooms) Timeline(ctx context.Context, q TimelineQuery) ([]*Event, error) {
	var (
		sql  string
		args = []any{q.RoomNID, q.FromDepth, q.FromStream}
	)
	if q.Backwards {
		sql = `SELECT ` + eventCols + ` FROM events WHERE room_nid = $1 AND stream_pos IS NOT NULL
			AND (depth < $2 OR (depth = $2 AND stream_pos < $3))`
		if q.HasTo {
			sql += ` AND (depth > $4 OR (depth = $4 AND stream_pos > $5))`
		}
		sql += ` ORDER BY depth DESC, stream_pos DESC LIMIT `
	} else {
		sql = `SELECT ` + eventCols + ` FROM events WHERE room_nid = $1 AND stream_pos IS NOT NULL
			AND (depth > $2 OR (depth = $2 AND stream_pos > $3))`
		if q.HasTo {
			sql += ` AND (depth < $4 OR (depth = $4 AND stream_pos < $5))`
		}
		sql += ` ORDER BY depth ASC, stream_pos ASC LIMIT `
	}
	if q.HasTo {
		args = append(args, q.ToDepth, q.ToStream)
		sql += "$6"
	} else {
		sql += "$4"
	}
	args = append(args, q.Limit)
	rows, err := s.db.Read().Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("timeline: %w", err)
	}
	return scanEvents(rows)
}

// TimelineByStream returns a room's events with from < stream ≤ to, newest
// first, at most limit.
func (s *Rooms) TimelineByStream(ctx context.Context, roomNID, from, to int64, limit int) ([]*Event, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT `+eventCols+` FROM events WHERE room_nid = $1 AND stream_pos > $2 AND stream_pos <= $3
		ORDER BY stream_pos DESC LIMIT $4`, roomNID, from, to, limit)
	if err != nil {
		return nil, fmt.Errorf("timeline by stream: %w", err)
	}
	return scanEvents(rows)
}

// TimelineNIDsByStream is TimelineByStream returning only numeric IDs and
// positions: an index-only read, for callers that hold events in a cache.
func (s *Rooms) TimelineNIDsByStream(ctx context.Context, roomNID, from, to int64, limit int) ([]NIDPos, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT event_nid, stream_pos FROM events WHERE room_nid = $1 AND stream_pos > $2 AND stream_pos <= $3
		ORDER BY stream_pos DESC LIMIT $4`, roomNID, from, to, limit)
	if err != nil {
		return nil, fmt.Errorf("timeline nids by stream: %w", err)
	}
	defer rows.Close()
	var out []NIDPos
	for rows.Next() {
		var n NIDPos
		if err := rows.Scan(&n.NID, &n.Stream); err != nil {
			return nil, fmt.Errorf("timeline nids by stream: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// NIDPos is an event's numeric ID and stream position.
type NIDPos struct{ NID, Stream int64 }

// StateAfterAtStream returns the state snapshot after a room's newest
// event at or before a stream position (0 when there is none).
func (s *Rooms) StateAfterAtStream(ctx context.Context, roomNID, stream int64) (int64, error) {
	var snap *int64
	err := s.db.Read().QueryRow(ctx, `SELECT state_after FROM events WHERE room_nid = $1 AND stream_pos <= $2
		ORDER BY stream_pos DESC LIMIT 1`, roomNID, stream).Scan(&snap)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("state after at stream: %w", err)
	}
	if snap == nil {
		return 0, nil
	}
	return *snap, nil
}

// MemberChange is a membership event's target and membership.
type MemberChange struct{ UserID, Membership string }

// MemberChangesBetween lists a room's membership events with from <
// stream position ≤ to, newest first.
func (s *Rooms) MemberChangesBetween(ctx context.Context, roomNID, from, to int64) ([]MemberChange, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT state_key, COALESCE(membership, '') FROM events
		WHERE type = 'm.room.member' AND room_nid = $1 AND stream_pos > $2 AND stream_pos <= $3
		ORDER BY stream_pos DESC`, roomNID, from, to)
	if err != nil {
		return nil, fmt.Errorf("member changes: %w", err)
	}
	defer rows.Close()
	var out []MemberChange
	for rows.Next() {
		var c MemberChange
		if err := rows.Scan(&c.UserID, &c.Membership); err != nil {
			return nil, fmt.Errorf("member changes: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func scanEvents(rows Rows) ([]*Event, error) {
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, &e)
	}
	return out, rows.Err()
}

// CurrentStateEntry is one entry of a room's current state.
type CurrentStateEntry struct {
	Type, StateKey string
	EventNID       int64
	Membership     *string
}

// AddCurrentState queues setting (or, with eventNID 0, removing) a
// current state entry.
func (s *Rooms) AddCurrentState(b *Batch, roomNID int64, typ, key string, eventNID int64, membership *string) {
	if eventNID == 0 {
		b.Add(`DELETE FROM current_state WHERE room_nid = $1 AND type = $2 AND state_key = $3`, roomNID, typ, key)
		return
	}
	b.Add(`INSERT INTO current_state (room_nid, type, state_key, event_nid, membership) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_nid = excluded.event_nid, membership = excluded.membership`,
		roomNID, typ, key, eventNID, membership)
}

// CurrentStateGet returns the event nid of one current state entry;
// ErrNotFound if unset.
func (s *Rooms) CurrentStateGet(ctx context.Context, q Querier, roomNID int64, typ, key string) (int64, error) {
	var nid int64
	err := q.QueryRow(ctx, `SELECT event_nid FROM current_state WHERE room_nid = $1 AND type = $2 AND state_key = $3`, roomNID, typ, key).Scan(&nid)
	return nid, err
}

// CurrentState returns a room's whole current state, or only one type.
func (s *Rooms) CurrentState(ctx context.Context, q Querier, roomNID int64, typ string) ([]CurrentStateEntry, error) {
	sql := `SELECT type, state_key, event_nid, membership FROM current_state WHERE room_nid = $1`
	args := []any{roomNID}
	if typ != "" {
		sql += ` AND type = $2`
		args = append(args, typ)
	}
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("current state: %w", err)
	}
	defer rows.Close()
	var out []CurrentStateEntry
	for rows.Next() {
		var e CurrentStateEntry
		if err := rows.Scan(&e.Type, &e.StateKey, &e.EventNID, &e.Membership); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// UserRoom is a room a user has a membership in.
type UserRoom struct {
	RoomNID    int64
	RoomID     string
	Membership string
	EventNID   int64
}

// RoomsOfUser lists the rooms where a user's current membership is one of
// memberships (all when empty).
func (s *Rooms) RoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]UserRoom, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT c.room_nid, r.room_id, c.membership, c.event_nid FROM current_state c
		JOIN rooms r ON r.room_nid = c.room_nid
		WHERE c.type = 'm.room.member' AND c.state_key = $1 ORDER BY c.room_nid`, userID)
	if err != nil {
		return nil, fmt.Errorf("rooms of user: %w", err)
	}
	defer rows.Close()
	var out []UserRoom
	for rows.Next() {
		var u UserRoom
		var m *string
		if err := rows.Scan(&u.RoomNID, &u.RoomID, &m, &u.EventNID); err != nil {
			return nil, err
		}
		if m != nil {
			u.Membership = *m
		}
		if len(memberships) == 0 || contains(memberships, u.Membership) {
			out = append(out, u)
		}
	}
	return out, rows.Err()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// MemberCounts returns joined and invited member counts of a room.
func (s *Rooms) MemberCounts(ctx context.Context, roomNID int64) (joined, invited int, err error) {
	rows, err := s.db.Read().Query(ctx, `SELECT membership, COUNT(*) FROM current_state WHERE room_nid = $1 AND type = 'm.room.member'
		AND membership IN ('join', 'invite') GROUP BY membership`, roomNID)
	if err != nil {
		return 0, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var m string
		var n int
		if err := rows.Scan(&m, &n); err != nil {
			return 0, 0, err
		}
		if m == "join" {
			joined = n
		} else {
			invited = n
		}
	}
	return joined, invited, rows.Err()
}

// SharedRoomUsers lists users with a join in any room userID is joined to.
func (s *Rooms) SharedRoomUsers(ctx context.Context, userID string) ([]string, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT DISTINCT o.state_key FROM current_state m
		JOIN current_state o ON o.room_nid = m.room_nid AND o.type = 'm.room.member' AND o.membership = 'join'
		WHERE m.type = 'm.room.member' AND m.state_key = $1 AND m.membership = 'join'`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// TxnGet finds the event a transaction ID produced; ErrNotFound if none.
func (s *Rooms) TxnGet(ctx context.Context, q Querier, userID, deviceID, scope, txnID string) (string, error) {
	var id string
	err := q.QueryRow(ctx, `SELECT event_id FROM txn_ids WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4`,
		userID, deviceID, scope, txnID).Scan(&id)
	return id, err
}

// AddTxn queues recording the event a transaction ID produced.
func (s *Rooms) AddTxn(b *Batch, userID, deviceID, scope, txnID, eventID string, ts int64) {
	b.AddRow(insertTxns, userID, deviceID, scope, txnID, eventID, ts)
}

// AliasCreate maps an alias to a room; ErrConflict if taken.
func (s *Rooms) AliasCreate(ctx context.Context, alias string, roomNID int64, creator string, ts int64) error {
	_, err := s.db.Exec(ctx, `INSERT INTO room_aliases (alias, room_nid, creator, created_ts) VALUES ($1, $2, $3, $4)`, alias, roomNID, creator, ts)
	return err
}

// AliasCreateTx is AliasCreate inside a transaction.
func (s *Rooms) AliasCreateTx(ctx context.Context, tx *Tx, alias string, roomNID int64, creator string, ts int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO room_aliases (alias, room_nid, creator, created_ts) VALUES ($1, $2, $3, $4)`, alias, roomNID, creator, ts)
	return err
}

// Alias is a room alias mapping.
type Alias struct {
	Alias   string
	RoomNID int64
	RoomID  string
	Creator string
}

// AliasGet resolves an alias; ErrNotFound if unknown.
func (s *Rooms) AliasGet(ctx context.Context, alias string) (Alias, error) {
	a := Alias{Alias: alias}
	err := s.db.Read().QueryRow(ctx, `SELECT a.room_nid, r.room_id, a.creator FROM room_aliases a JOIN rooms r ON r.room_nid = a.room_nid
		WHERE a.alias = $1`, alias).Scan(&a.RoomNID, &a.RoomID, &a.Creator)
	return a, err
}

// AliasDelete removes an alias.
func (s *Rooms) AliasDelete(ctx context.Context, alias string) error {
	n, err := s.db.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
	if err == nil && n == 0 {
		return ErrNotFound
	}
	return err
}

// RoomAliases lists the local aliases of a room.
func (s *Rooms) RoomAliases(ctx context.Context, roomNID int64) ([]string, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT alias FROM room_aliases WHERE room_nid = $1 ORDER BY alias`, roomNID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Forget hides a left room from a user.
func (s *Rooms) Forget(ctx context.Context, userID string, roomNID int64) error {
	_, err := s.db.Exec(ctx, `INSERT INTO forgotten_rooms (user_id, room_nid) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, roomNID)
	return err
}

// Unforget clears a forget when the user joins again.
func (s *Rooms) Unforget(ctx context.Context, tx *Tx, userID string, roomNID int64) error {
	_, err := tx.Exec(ctx, `DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_nid = $2`, userID, roomNID)
	return err
}

// Forgotten reports whether a user forgot a room.
func (s *Rooms) Forgotten(ctx context.Context, userID string, roomNID int64) (bool, error) {
	var n int
	err := s.db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM forgotten_rooms WHERE user_id = $1 AND room_nid = $2`, userID, roomNID).Scan(&n)
	return n > 0, err
}

// Report is a user's report of content.
type Report struct {
	Kind, Reporter                  string
	RoomID, EventID, UserID, Reason *string
	Score                           *int64
	CreatedTS                       int64
}

// ReportCreate stores a report.
func (s *Rooms) ReportCreate(ctx context.Context, r Report) error {
	_, err := s.db.Exec(ctx, `INSERT INTO reports (kind, room_id, event_id, user_id, reporter, reason, score, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, r.Kind, r.RoomID, r.EventID, r.UserID, r.Reporter, r.Reason, r.Score, r.CreatedTS)
	return err
}

// TxnKey identifies a client transaction.
type TxnKey struct{ UserID, DeviceID, Scope, TxnID string }

// txnLookupArrays is TxnLookup on PostgreSQL: the keys go as four arrays,
// one statement whatever their number, so that its plan is made once; the
// padded VALUES list took milliseconds to plan on every batch.
const txnLookupArrays = `SELECT t.user_id, t.device_id, t.scope, t.txn_id, t.event_id
		FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]), CAST($3 AS TEXT[]), CAST($4 AS TEXT[])) AS v (u, d, s, x)
		JOIN txn_ids t ON t.user_id = v.u AND t.device_id = v.d AND t.scope = v.s AND t.txn_id = v.x`

// txnArrays is txnLookupArrays's arguments for keys.
func txnArrays(keys []TxnKey) []any {
	cols := make([][]string, 4)
	for _, k := range keys {
		cols[0] = append(cols[0], k.UserID)
		cols[1] = append(cols[1], k.DeviceID)
		cols[2] = append(cols[2], k.Scope)
		cols[3] = append(cols[3], k.TxnID)
	}
	return []any{cols[0], cols[1], cols[2], cols[3]}
}

// scanTxns reads txn lookup rows (key columns, event ID) into out.
func scanTxns(rows Rows, out map[TxnKey]string) error {
	for rows.Next() {
		var k TxnKey
		var ev string
		if err := rows.Scan(&k.UserID, &k.DeviceID, &k.Scope, &k.TxnID, &ev); err != nil {
			return fmt.Errorf("txn lookup: %w", err)
		}
		out[k] = ev
	}
	return rows.Err()
}

// PersistStart is what a persisting transaction learns before it builds
// events (StartPersist).
type PersistStart struct {
	// Txns maps the keys already used to the event they produced.
	Txns map[TxnKey]string
	// FirstNID and FirstStream begin the reserved event nids and events
	// stream positions.
	FirstNID, FirstStream int64
	// Rooms holds the rows of the rooms asked for, read under the lock
	// (PostgreSQL only: on SQLite there is no round trip to save).
	Rooms map[int64]Room
}

// StartPersist opens the work of a persisting transaction, which holds
// the persist lock (WriteLocked): it looks up the transaction keys (after
// the lock, so that an instance that held it has committed what it
// wrote), reserves nids event nids and streams events-stream positions,
// and reads the rows of rooms (as RoomForUpdate). On PostgreSQL the
// statements go in one round trip, which the persister, one batch at a
// time, otherwise spent a wait each on.
func (s *Rooms) StartPersist(ctx context.Context, tx *Tx, keys []TxnKey, nids, streams int64, rooms []int64) (PersistStart, error) {
	st := PersistStart{Txns: make(map[TxnKey]string, len(keys))}
	if tx.Dialect() != "postgres" {
		found, err := s.TxnLookup(ctx, tx, keys)
		if err != nil {
			return st, err
		}
		st.Txns = found
		if st.FirstNID, err = s.ReserveNIDs(ctx, tx, "event", nids); err != nil {
			return st, err
		}
		st.FirstStream, err = tx.NextStreamPos(ctx, EventsStream, streams)
		return st, err
	}
	tx.moved = true
	var lastNID, lastStream *int64
	scanLast := func(dst **int64) func(Rows) error {
		return func(r Rows) error {
			for r.Next() {
				var v int64
				if err := r.Scan(&v); err != nil {
					return err
				}
				*dst = &v
			}
			return r.Err()
		}
	}
	var steps []Step
	if len(keys) > 0 {
		steps = append(steps, Step{SQL: txnLookupArrays, Args: txnArrays(keys),
			Scan: func(r Rows) error { return scanTxns(r, st.Txns) }})
	}
	steps = append(steps,
		Step{SQL: advanceStream, Args: []any{nidStream("event"), nids}, Scan: scanLast(&lastNID)},
		Step{SQL: advanceStream, Args: []any{EventsStream, streams}, Scan: scanLast(&lastStream)})
	if len(rooms) > 0 {
		st.Rooms = make(map[int64]Room, len(rooms))
		steps = append(steps, Step{SQL: `SELECT ` + roomCols + ` FROM rooms WHERE room_nid = ANY($1)`, Args: []any{rooms},
			Scan: func(r Rows) error {
				for r.Next() {
					room, err := scanRoom(r)
					if err != nil {
						return err
					}
					st.Rooms[room.NID] = room
				}
				return r.Err()
			}})
	}
	if err := tx.Pipeline(ctx, steps); err != nil {
		return st, fmt.Errorf("start persisting: %w", err)
	}
	// A stream never advanced has no row yet: NextStreamPos makes it.
	var err error
	if lastNID != nil {
		st.FirstNID = *lastNID - nids + 1
	} else if st.FirstNID, err = s.ReserveNIDs(ctx, tx, "event", nids); err != nil {
		return st, err
	}
	if lastStream != nil {
		st.FirstStream = *lastStream - streams + 1
	} else if st.FirstStream, err = tx.NextStreamPos(ctx, EventsStream, streams); err != nil {
		return st, err
	}
	return st, nil
}

// TxnLookup finds the events earlier requests with these transaction IDs
// produced (absent keys were never seen).
func (s *Rooms) TxnLookup(ctx context.Context, q Querier, keys []TxnKey) (map[TxnKey]string, error) {
	out := make(map[TxnKey]string, len(keys))
	if s.db.Dialect() == "postgres" {
		rows, err := q.Query(ctx, txnLookupArrays, txnArrays(keys)...)
		if err != nil {
			return nil, fmt.Errorf("txn lookup: %w", err)
		}
		defer rows.Close()
		return out, scanTxns(rows, out)
	}
	for start := 0; start < len(keys); start += 64 {
		chunk := keys[start:min(start+64, len(keys))]
		size := inSize(len(chunk))
		var sb []byte
		args := make([]any, 0, size*4)
		for i := range size {
			k := chunk[min(i, len(chunk)-1)]
			if i > 0 {
				sb = append(sb, ", "...)
			}
			n := len(args)
			sb = fmt.Appendf(sb, "($%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4)
			args = append(args, k.UserID, k.DeviceID, k.Scope, k.TxnID)
		}
		rows, err := q.Query(ctx, `SELECT user_id, device_id, scope, txn_id, event_id FROM txn_ids
			WHERE (user_id, device_id, scope, txn_id) IN (VALUES `+string(sb)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("txn lookup: %w", err)
		}
		for rows.Next() {
			var k TxnKey
			var ev string
			if err := rows.Scan(&k.UserID, &k.DeviceID, &k.Scope, &k.TxnID, &ev); err != nil {
				rows.Close()
				return nil, err
			}
			out[k] = ev
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// EventIDsByNID maps numeric IDs to event IDs.
func (s *Rooms) EventIDsByNID(ctx context.Context, q Querier, nids []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(nids))
	err := queryIn(ctx, q, `SELECT event_nid, event_id FROM events WHERE event_nid IN (IN)`, nil, nids, func(r Rows) error {
		var nid int64
		var id string
		if err := r.Scan(&nid, &id); err != nil {
			return err
		}
		out[nid] = id
		return nil
	})
	return out, err
}

// MembershipChange is a change of one user's membership.
type MembershipChange struct {
	RoomNID    int64
	RoomID     string
	EventNID   int64
	Membership string
	StreamPos  int64
}

// MembershipChanges lists a user's membership events with from < stream ≤ to.
func (s *Rooms) MembershipChanges(ctx context.Context, userID string, from, to int64) ([]MembershipChange, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT e.room_nid, r.room_id, e.event_nid, COALESCE(e.membership, ''), e.stream_pos
		FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.type = 'm.room.member' AND e.state_key = $1 AND e.stream_pos > $2 AND e.stream_pos <= $3
		ORDER BY e.stream_pos`, userID, from, to)
	if err != nil {
		return nil, fmt.Errorf("membership changes: %w", err)
	}
	defer rows.Close()
	var out []MembershipChange
	for rows.Next() {
		var c MembershipChange
		if err := rows.Scan(&c.RoomNID, &c.RoomID, &c.EventNID, &c.Membership, &c.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// WindowNews is MembershipChanges and LatestStreamPos in one statement,
// for a sync build that expects no membership change of the user: one
// round trip where there were two. Its RoomStreams also carry LastOwn,
// from the index of the user's own newest events that push counting
// keeps (push_own_reads): a build whose rooms saw no event of the user
// counts unread notifications from the inputs it had.
func (s *Rooms) WindowNews(ctx context.Context, userID string, from, to int64, roomNIDs []int64) ([]MembershipChange, map[int64]RoomStreams, error) {
	var changes []MembershipChange
	news := make(map[int64]RoomStreams, len(roomNIDs))
	list := roomNIDs
	if len(list) == 0 {
		list = []int64{0} // no room has NID 0: the statement keeps its shape
	}
	if len(list) > maxInList {
		// Long lists go in chunks; the changes then come on their own.
		c, err := s.MembershipChanges(ctx, userID, from, to)
		if err != nil {
			return nil, nil, err
		}
		n, err := s.LatestStreamPos(ctx, roomNIDs)
		return c, n, err
	}
	err := queryIn(ctx, s.db.Read(), `SELECT 0, e.room_nid, r.room_id, e.event_nid, COALESCE(e.membership, ''), e.stream_pos, 0, 0
			FROM events e JOIN rooms r ON r.room_nid = e.room_nid
			WHERE e.type = 'm.room.member' AND e.state_key = $1 AND e.stream_pos > $2 AND e.stream_pos <= $3
		UNION ALL
		SELECT 1, r.room_nid, '', 0, '', r.last_stream, COALESCE((SELECT MAX(e.stream_pos) FROM events e
				WHERE e.type = 'm.room.member' AND e.room_nid = r.room_nid), 0),
				COALESCE((SELECT MAX(o.stream_pos) FROM push_own_reads o WHERE o.user_id = $1 AND o.room_id = r.room_id), 0)
			FROM rooms r WHERE r.room_nid IN (IN)
		ORDER BY 1, 6`, []any{userID, from, to}, list, func(r Rows) error {
		var kind int
		var c MembershipChange
		var lastMember, lastOwn int64
		if err := r.Scan(&kind, &c.RoomNID, &c.RoomID, &c.EventNID, &c.Membership, &c.StreamPos, &lastMember, &lastOwn); err != nil {
			return err
		}
		if kind == 0 {
			changes = append(changes, c)
		} else if len(roomNIDs) > 0 {
			news[c.RoomNID] = RoomStreams{Last: c.StreamPos, LastMember: lastMember, LastOwn: lastOwn}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("window news: %w", err)
	}
	return changes, news, nil
}

// RoomStreams is how far a room's timeline, and its membership events
// among it, have reached in the events stream; WindowNews adds how far
// the events of the user it reads for have (LastOwn; 0: none, or not read).
type RoomStreams struct{ Last, LastMember, LastOwn int64 }

// LatestStreamPos returns each room's newest timeline stream position and
// that of its newest membership event (0: none).
func (s *Rooms) LatestStreamPos(ctx context.Context, roomNIDs []int64) (map[int64]RoomStreams, error) {
	out := make(map[int64]RoomStreams, len(roomNIDs))
	err := queryIn(ctx, s.db.Read(), `SELECT r.room_nid, r.last_stream, COALESCE((SELECT MAX(e.stream_pos) FROM events e
			WHERE e.type = 'm.room.member' AND e.room_nid = r.room_nid), 0)
		FROM rooms r WHERE r.room_nid IN (IN)`,
		nil, roomNIDs, func(r Rows) error {
			var nid int64
			var st RoomStreams
			if err := r.Scan(&nid, &st.Last, &st.LastMember); err != nil {
				return err
			}
			out[nid] = st
			return nil
		})
	return out, err
}

// LatestJoinPos returns the stream position of a user's newest join to a
// room (0 if none).
func (s *Rooms) LatestJoinPos(ctx context.Context, roomNID int64, userID string) (int64, error) {
	var pos int64
	err := s.db.Read().QueryRow(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events
		WHERE type = 'm.room.member' AND state_key = $1 AND +room_nid = $2 AND membership = 'join' AND +stream_pos IS NOT NULL`,
		userID, roomNID).Scan(&pos)
	return pos, err
}

// RoomPublishTx lists a room in the directory inside a transaction.
func (s *Rooms) RoomPublishTx(ctx context.Context, tx *Tx, nid int64) error {
	_, err := tx.Exec(ctx, `UPDATE rooms SET published = TRUE WHERE room_nid = $1`, nid)
	return err
}

// AnnotationsBySender returns the content of a sender's live annotations
// of an event.
func (s *Rooms) AnnotationsBySender(ctx context.Context, parentID, sender string) ([][]byte, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT json FROM events WHERE relates_to = $1 AND rel_type = 'm.annotation'
		AND sender = $2 AND redacted_by IS NULL AND stream_pos IS NOT NULL`, parentID, sender)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}
