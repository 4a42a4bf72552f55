package storage

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
)

// SlidingSync stores simplified sliding sync connections: the positions
// handed out and what each connection's client holds of each room.
//
// A connection's state is versioned by seq. Each response commits a new
// seq whose parent is the pos the request came with; rows of positions
// above the parent that are not the new one belong to responses the client
// never acknowledged (it came back with the parent again) and are dropped
// in the same transaction, so the rows at or below any live seq always
// form one line of history.
type SlidingSync struct{ db *DB }

// SlidingSync returns the sliding sync store.
func (db *DB) SlidingSync() *SlidingSync { return &SlidingSync{db: db} }

// SlidingPosition is one pos of a connection, with its connection's owner.
type SlidingPosition struct {
	ConnNID   int64
	Seq       int64
	UserID    string
	DeviceID  string
	ConnID    string
	EventsPos int64
	Streams   string
	Scope     []byte
	UsedTS    int64
}

// PositionGet returns a position; ErrNotFound if it does not exist (any
// more).
func (s *SlidingSync) PositionGet(ctx context.Context, connNID, seq int64) (SlidingPosition, error) {
	p := SlidingPosition{ConnNID: connNID, Seq: seq}
	err := s.db.Read().QueryRow(ctx, `SELECT c.user_id, c.device_id, c.conn_id, c.used_ts, p.events_pos, p.streams, p.scope
		FROM sliding_sync_positions p JOIN sliding_sync_connections c ON c.conn_nid = p.conn_nid
		WHERE p.conn_nid = $1 AND p.seq = $2`, connNID, seq).
		Scan(&p.UserID, &p.DeviceID, &p.ConnID, &p.UsedTS, &p.EventsPos, &p.Streams, &p.Scope)
	return p, err
}

// RoomStates returns, for each of the rooms that has one, the room's data
// as of seq.
func (s *SlidingSync) RoomStates(ctx context.Context, connNID, seq int64, roomIDs []string) (map[string]string, error) {
	out := make(map[string]string, len(roomIDs))
	best := make(map[string]int64, len(roomIDs))
	err := queryIn(ctx, s.db.Read(), `SELECT room_id, seq, data FROM sliding_sync_rooms
		WHERE conn_nid = $1 AND seq <= $2 AND room_id IN (IN)`, []any{connNID, seq}, roomIDs, func(r Rows) error {
		var room, data string
		var sq int64
		if err := r.Scan(&room, &sq, &data); err != nil {
			return err
		}
		if b, ok := best[room]; !ok || sq > b {
			best[room] = sq
			out[room] = data
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sliding sync room states: %w", err)
	}
	return out, nil
}

// SlidingCommit is what one response adds to its connection.
type SlidingCommit struct {
	// ConnNID is the connection; 0 starts a new one for (UserID,
	// DeviceID, ConnID), replacing any earlier connection of that key.
	ConnNID                  int64
	UserID, DeviceID, ConnID string
	// Parent is the seq the response was computed from (0 for a new
	// connection).
	Parent    int64
	EventsPos int64
	Streams   string
	Scope     []byte
	// Rooms are the rooms whose data changed: room ID → data.
	Rooms map[string]string
	// Specs are required_state configs to remember, digest → config, up
	// to MaxSpecs per connection.
	Specs    map[string]string
	MaxSpecs int
	Now      int64
	// MaxPerDevice bounds a device's connections: starting one more drops
	// the least recently used.
	MaxPerDevice int
}

// Commit records a response and returns its connection and seq.
// ErrNotFound means the connection or the parent position is gone (the
// connection was replaced, expired, or a concurrent request superseded
// the parent).
func (s *SlidingSync) Commit(ctx context.Context, c SlidingCommit) (connNID, seq int64, err error) {
	err = s.db.Write(ctx, func(tx *Tx) error {
		connNID = c.ConnNID
		if connNID == 0 {
			var err error
			if connNID, err = s.newConnection(ctx, tx, c); err != nil {
				return err
			}
		}
		err := tx.QueryRow(ctx, `UPDATE sliding_sync_connections SET last_seq = last_seq + 1, used_ts = $2
			WHERE conn_nid = $1 RETURNING last_seq`, connNID, c.Now).Scan(&seq)
		if err != nil {
			return err
		}
		if c.Parent > 0 {
			var one int
			if err := tx.QueryRow(ctx, `SELECT 1 FROM sliding_sync_positions WHERE conn_nid = $1 AND seq = $2`,
				connNID, c.Parent).Scan(&one); err != nil {
				return err
			}
		}
		b := &Batch{}
		// Positions before the parent are acknowledged away; those after it
		// were never acknowledged.
		b.Add(`DELETE FROM sliding_sync_positions WHERE conn_nid = $1 AND seq <> $2`, connNID, c.Parent)
		b.Add(`DELETE FROM sliding_sync_rooms WHERE conn_nid = $1 AND seq > $2`, connNID, c.Parent)
		// Rows the parent's rows supersede.
		b.Add(`DELETE FROM sliding_sync_rooms WHERE conn_nid = $1 AND seq < $2
			AND room_id IN (SELECT room_id FROM sliding_sync_rooms WHERE conn_nid = $1 AND seq = $2)`, connNID, c.Parent)
		b.Add(`INSERT INTO sliding_sync_positions (conn_nid, seq, events_pos, streams, scope, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6)`, connNID, seq, c.EventsPos, c.Streams, c.Scope, c.Now)
		for room, data := range c.Rooms {
			b.Add(`INSERT INTO sliding_sync_rooms (conn_nid, room_id, seq, data) VALUES ($1, $2, $3, $4)`, connNID, room, seq, data)
		}
		if err := tx.ExecBatch(ctx, b); err != nil {
			return err
		}
		return s.addSpecs(ctx, tx, connNID, c)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("sliding sync commit: %w", err)
	}
	return connNID, seq, nil
}

// addSpecs remembers the configs a connection does not know yet, while
// it has fewer than MaxSpecs.
func (s *SlidingSync) addSpecs(ctx context.Context, tx *Tx, connNID int64, c SlidingCommit) error {
	if len(c.Specs) == 0 {
		return nil
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM sliding_sync_specs WHERE conn_nid = $1`, connNID).Scan(&n); err != nil {
		return err
	}
	digests := make([]string, 0, len(c.Specs))
	for d := range c.Specs {
		digests = append(digests, d)
	}
	slices.Sort(digests)
	for _, d := range digests {
		if n >= c.MaxSpecs {
			break
		}
		added, err := tx.Exec(ctx, `INSERT INTO sliding_sync_specs (conn_nid, digest, spec) VALUES ($1, $2, $3)
			ON CONFLICT (conn_nid, digest) DO NOTHING`, connNID, d, c.Specs[d])
		if err != nil {
			return err
		}
		n += int(added)
	}
	return nil
}

// Specs returns the remembered configs among digests.
func (s *SlidingSync) Specs(ctx context.Context, connNID int64, digests []string) (map[string]string, error) {
	out := map[string]string{}
	err := queryIn(ctx, s.db.Read(), `SELECT digest, spec FROM sliding_sync_specs WHERE conn_nid = $1 AND digest IN (IN)`,
		[]any{connNID}, digests, func(r Rows) error {
			var d, spec string
			if err := r.Scan(&d, &spec); err != nil {
				return err
			}
			out[d] = spec
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("sliding sync specs: %w", err)
	}
	return out, nil
}

// newConnection replaces the connection of c's key and drops the device's
// least recently used connections beyond the bound.
func (s *SlidingSync) newConnection(ctx context.Context, tx *Tx, c SlidingCommit) (int64, error) {
	// Starts on one device wait for each other (an advisory lock on
	// PostgreSQL; SQLite's single writer already serialises).
	h := fnv.New64a()
	_, _ = h.Write([]byte("sliding_sync\x00" + c.UserID + "\x00" + c.DeviceID))
	if err := tx.Lock(ctx, int64(h.Sum64())); err != nil {
		return 0, err
	}
	var old int64
	err := tx.QueryRow(ctx, `SELECT conn_nid FROM sliding_sync_connections WHERE user_id = $1 AND device_id = $2 AND conn_id = $3`,
		c.UserID, c.DeviceID, c.ConnID).Scan(&old)
	switch {
	case err == nil:
		if err := deleteConnections(ctx, tx, []int64{old}); err != nil {
			return 0, err
		}
	case !errors.Is(err, ErrNotFound):
		return 0, err
	}
	var nid int64
	if err := tx.QueryRow(ctx, `INSERT INTO sliding_sync_connections (user_id, device_id, conn_id, created_ts, used_ts)
		VALUES ($1, $2, $3, $4, $4) RETURNING conn_nid`, c.UserID, c.DeviceID, c.ConnID, c.Now).Scan(&nid); err != nil {
		return 0, err
	}
	if c.MaxPerDevice > 0 {
		rows, err := tx.Query(ctx, `SELECT conn_nid FROM sliding_sync_connections WHERE user_id = $1 AND device_id = $2
			ORDER BY used_ts DESC, conn_nid DESC LIMIT 1000 OFFSET $3`, c.UserID, c.DeviceID, c.MaxPerDevice)
		if err != nil {
			return 0, err
		}
		extra, err := scanInt64s(rows)
		if err != nil {
			return 0, err
		}
		if err := deleteConnections(ctx, tx, extra); err != nil {
			return 0, err
		}
	}
	return nid, nil
}

func deleteConnections(ctx context.Context, tx *Tx, nids []int64) error {
	for _, n := range nids {
		for _, q := range []string{
			`DELETE FROM sliding_sync_specs WHERE conn_nid = $1`,
			`DELETE FROM sliding_sync_rooms WHERE conn_nid = $1`,
			`DELETE FROM sliding_sync_positions WHERE conn_nid = $1`,
			`DELETE FROM sliding_sync_connections WHERE conn_nid = $1`,
		} {
			if _, err := tx.Exec(ctx, q, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// Touch records that a connection is still in use.
func (s *SlidingSync) Touch(ctx context.Context, connNID, now int64) error {
	_, err := s.db.Exec(ctx, `UPDATE sliding_sync_connections SET used_ts = $2 WHERE conn_nid = $1`, connNID, now)
	return err
}

// ExpireConnections deletes up to limit connections unused since before
// and returns how many went.
func (s *SlidingSync) ExpireConnections(ctx context.Context, before int64, limit int) (int, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT conn_nid FROM sliding_sync_connections WHERE used_ts < $1 ORDER BY used_ts LIMIT $2`, before, limit)
	if err != nil {
		return 0, err
	}
	nids, err := scanInt64s(rows)
	if err != nil || len(nids) == 0 {
		return 0, err
	}
	err = s.db.Write(ctx, func(tx *Tx) error {
		var stale []int64
		for _, n := range nids {
			// Checked again under the writer: a request may have used it since.
			var used int64
			err := tx.QueryRow(ctx, `SELECT used_ts FROM sliding_sync_connections WHERE conn_nid = $1`, n).Scan(&used)
			if err == nil && used < before {
				stale = append(stale, n)
			} else if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		nids = stale
		return deleteConnections(ctx, tx, stale)
	})
	if err != nil {
		return 0, fmt.Errorf("expire sliding sync connections: %w", err)
	}
	return len(nids), nil
}

// DeleteDeviceConnections deletes every connection of a device.
func (s *SlidingSync) DeleteDeviceConnections(ctx context.Context, tx *Tx, userID, deviceID string) error {
	rows, err := tx.Query(ctx, `SELECT conn_nid FROM sliding_sync_connections WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	if err != nil {
		return err
	}
	nids, err := scanInt64s(rows)
	if err != nil {
		return err
	}
	return deleteConnections(ctx, tx, nids)
}

// RoomTags returns the content of a user's m.tag room account data,
// room ID → content.
func (s *SlidingSync) RoomTags(ctx context.Context, userID string) (map[string]string, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT room_id, content FROM account_data
		WHERE user_id = $1 AND type = 'm.tag' AND room_id <> ''`, userID)
	if err != nil {
		return nil, fmt.Errorf("room tags: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var room, c string
		if err := rows.Scan(&room, &c); err != nil {
			return nil, err
		}
		out[room] = c
	}
	return out, rows.Err()
}

// RoomAccountData returns a user's account data of the given rooms, at or
// below position to.
func (s *SlidingSync) RoomAccountData(ctx context.Context, userID string, roomIDs []string, to int64) ([]AccountData, error) {
	var out []AccountData
	err := queryIn(ctx, s.db.Read(), `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos <= $2 AND room_id IN (IN)`, []any{userID, to}, roomIDs, func(r Rows) error {
		var d AccountData
		if err := r.Scan(&d.RoomID, &d.Type, &d.Content, &d.StreamPos); err != nil {
			return err
		}
		out = append(out, d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("room account data: %w", err)
	}
	return out, nil
}

// SlidingUserRoom is a room a user has a membership in, as sliding sync
// lists it.
type SlidingUserRoom struct {
	RoomNID    int64
	RoomID     string
	Membership string
	// MemberSender sent the membership event; MemberStream is its stream
	// position (0 for an outlier).
	MemberSender string
	MemberStream int64
	// LastStream is the room's newest timeline position.
	LastStream int64
}

// SlidingRoomsOfUser lists the rooms where a user has a membership,
// leaving out the rooms they left and forgot.
func (s *Rooms) SlidingRoomsOfUser(ctx context.Context, userID string) ([]SlidingUserRoom, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT c.room_nid, r.room_id, COALESCE(c.membership, ''), e.sender,
		COALESCE(e.stream_pos, 0), r.last_stream
		FROM current_state c
		JOIN rooms r ON r.room_nid = c.room_nid
		JOIN events e ON e.event_nid = c.event_nid
		WHERE c.type = 'm.room.member' AND c.state_key = $1
		AND NOT EXISTS (SELECT 1 FROM forgotten_rooms f WHERE f.user_id = $1 AND f.room_nid = c.room_nid)`, userID)
	if err != nil {
		return nil, fmt.Errorf("sliding rooms of user: %w", err)
	}
	defer rows.Close()
	var out []SlidingUserRoom
	for rows.Next() {
		var u SlidingUserRoom
		if err := rows.Scan(&u.RoomNID, &u.RoomID, &u.Membership, &u.MemberSender, &u.MemberStream, &u.LastStream); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// EverJoined returns which of the rooms the user has ever joined.
func (s *Rooms) EverJoined(ctx context.Context, userID string, roomNIDs []int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	err := queryIn(ctx, s.db.Read(), `SELECT DISTINCT room_nid FROM events WHERE type = 'm.room.member' AND state_key = $1
		AND membership = 'join' AND stream_pos IS NOT NULL AND room_nid IN (IN)`, []any{userID}, roomNIDs, func(r Rows) error {
		var nid int64
		if err := r.Scan(&nid); err != nil {
			return err
		}
		out[nid] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ever joined: %w", err)
	}
	return out, nil
}

// CurrentStateOfType returns the current state entries of one type and
// state key in each of the rooms, room nid → event nid.
func (s *Rooms) CurrentStateOfType(ctx context.Context, roomNIDs []int64, typ, stateKey string) (map[int64]int64, error) {
	out := map[int64]int64{}
	err := queryIn(ctx, s.db.Read(), `SELECT room_nid, event_nid FROM current_state WHERE type = $1 AND state_key = $2
		AND room_nid IN (IN)`, []any{typ, stateKey}, roomNIDs, func(r Rows) error {
		var room, ev int64
		if err := r.Scan(&room, &ev); err != nil {
			return err
		}
		out[room] = ev
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("current state of type: %w", err)
	}
	return out, nil
}

// NewestOfTypes returns the stream position of a room's newest accepted
// timeline event at or below upTo whose type is one of types (0 if none).
func (s *Rooms) NewestOfTypes(ctx context.Context, roomNID, upTo int64, types []string) (int64, error) {
	args := []any{roomNID, upTo}
	for _, t := range types {
		args = append(args, t)
	}
	var pos int64
	err := s.db.Read().QueryRow(ctx, `SELECT stream_pos FROM events WHERE room_nid = $1 AND stream_pos <= $2 AND status = 0
		AND type IN (`+inPlaceholders(3, len(types))+`) ORDER BY stream_pos DESC LIMIT 1`, args...).Scan(&pos)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	return pos, err
}

// MembersByOrder returns up to limit current member entries of a room
// with one of the memberships, other than exclude's: joined first, then
// invited, then the others, oldest first within each.
func (s *Rooms) MembersByOrder(ctx context.Context, roomNID int64, exclude string, memberships []string, limit int) ([]CurrentStateEntry, error) {
	args := []any{roomNID, exclude, limit}
	for _, m := range memberships {
		args = append(args, m)
	}
	rows, err := s.db.Read().Query(ctx, `SELECT type, state_key, event_nid, membership FROM current_state
		WHERE room_nid = $1 AND type = 'm.room.member' AND state_key <> $2
		AND membership IN (`+inPlaceholders(4, len(memberships))+`)
		ORDER BY CASE membership WHEN 'join' THEN 0 WHEN 'invite' THEN 1 ELSE 2 END, event_nid LIMIT $3`, args...)
	if err != nil {
		return nil, fmt.Errorf("members by order: %w", err)
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
