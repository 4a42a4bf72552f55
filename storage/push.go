package storage

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Push stores users' push rules, the push actions their rules produced
// for events (which notification counts are made of) and the events they
// sent themselves (which mark earlier ones read).
type Push struct{ db *DB }

// Push returns the push store.
func (db *DB) Push() *Push { return &Push{db: db} }

// PushRulesGet returns a user's push rules document; ErrNotFound if the
// user never changed their rules.
func (p *Push) PushRulesGet(ctx context.Context, q Querier, userID string) (string, error) {
	var doc string
	err := q.QueryRow(ctx, `SELECT rules FROM push_rules WHERE user_id = $1`, userID).Scan(&doc)
	if err != nil {
		return "", fmt.Errorf("get push rules: %w", err)
	}
	return doc, nil
}

// PushRulesLock serialises changes to one user's push rules until tx
// ends (an advisory lock on PostgreSQL; SQLite's single writer already
// serialises), so that read-modify-write cycles do not lose updates.
func (p *Push) PushRulesLock(ctx context.Context, tx *Tx, userID string) error {
	h := fnv.New64a()
	_, _ = h.Write([]byte("push_rules\x00" + userID))
	return tx.Lock(ctx, int64(h.Sum64()))
}

// PushRulesPut stores a user's push rules document.
func (p *Push) PushRulesPut(ctx context.Context, tx *Tx, userID, doc string, ts int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO push_rules (user_id, rules, updated_ts) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET rules = excluded.rules, updated_ts = excluded.updated_ts`, userID, doc, ts)
	if err != nil {
		return fmt.Errorf("put push rules: %w", err)
	}
	return nil
}

// PushRulesForUsers returns the push rules documents of those users who
// have one.
func (p *Push) PushRulesForUsers(ctx context.Context, users []string) (map[string]string, error) {
	out := make(map[string]string)
	err := queryIn(ctx, p.db.Read(), `SELECT user_id, rules FROM push_rules WHERE user_id IN (IN)`, nil, users,
		func(r Rows) error {
			var u, doc string
			if err := r.Scan(&u, &doc); err != nil {
				return err
			}
			out[u] = doc
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("push rules for users: %w", err)
	}
	return out, nil
}

// IgnoredUserLists returns the m.ignored_user_list account data of those
// users who have one, read in bulk: push evaluation skips ignored senders
// for every member of a room at once.
func (p *Push) IgnoredUserLists(ctx context.Context, users []string) (map[string]string, error) {
	out := make(map[string]string)
	err := queryIn(ctx, p.db.Read(), `SELECT user_id, content FROM account_data
		WHERE room_id = '' AND type = 'm.ignored_user_list' AND user_id IN (IN)`, nil, users,
		func(r Rows) error {
			var u, c string
			if err := r.Scan(&u, &c); err != nil {
				return err
			}
			out[u] = c
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("ignored user lists: %w", err)
	}
	return out, nil
}

// PushAction is what a user's push rules decided for one event that
// notifies them.
type PushAction struct {
	UserID string
	// RoomNID is set when writing, RoomID when reading.
	RoomNID   int64
	RoomID    string
	StreamPos int64
	// EventID is set when reading (it is found by stream position).
	EventID string
	// ThreadID is the thread root's event ID, or "main".
	ThreadID  string
	Highlight bool
	// Actions is the matching rule's actions array (JSON).
	Actions string
	// TS is when the notification was generated (ms).
	TS int64
}

// pushActionCols are the columns AddPushActions writes.
const pushActionCols = `user_id, room_nid, stream_pos, thread_id, highlight, actions, ts`

// insertChunk is the most rows one multi-row INSERT carries.
const insertChunk = 32

// chunkSizes splits n rows into chunks of insertChunk and powers of two
// below it, so that a handful of statement shapes serve every count.
func chunkSizes(n int) []int {
	var out []int
	for n >= insertChunk {
		out = append(out, insertChunk)
		n -= insertChunk
	}
	for s := insertChunk / 2; s > 0; s /= 2 {
		if n >= s {
			out = append(out, s)
			n -= s
		}
	}
	return out
}

// valuesRows returns "($f, $f+1, …), (…)" for rows of cols parameters.
func valuesRows(first, rows, cols int) string {
	b := make([]byte, 0, rows*cols*6)
	n := first
	for i := range rows {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '(')
		for j := range cols {
			if j > 0 {
				b = append(b, ", "...)
			}
			b = append(b, '$')
			b = strconv.AppendInt(b, int64(n), 10)
			n++
		}
		b = append(b, ')')
	}
	return string(b)
}

// insertPushActions holds the INSERT statement for each chunk size (a
// power of two up to insertChunk), built once.
var insertPushActions = func() map[int]string {
	out := map[int]string{}
	for size := 1; size <= insertChunk; size *= 2 {
		out[size] = `INSERT INTO push_actions (` + pushActionCols + `) VALUES ` + valuesRows(1, size, 7) +
			` ON CONFLICT (user_id, room_nid, stream_pos) DO NOTHING`
	}
	return out
}()

// AddPushActions queues inserting push actions into b (the batch that
// persists their events).
func (p *Push) AddPushActions(b *Batch, rows []PushAction) {
	for _, size := range chunkSizes(len(rows)) {
		chunk := rows[:size]
		rows = rows[size:]
		args := make([]any, 0, size*7)
		for _, r := range chunk {
			args = append(args, r.UserID, r.RoomNID, r.StreamPos, r.ThreadID, r.Highlight, r.Actions, r.TS)
		}
		b.Add(insertPushActions[size], args...)
	}
}

// SharedPushAction is one event's push actions shared by the room's local
// members: all those joined before the event but the Skips get them.
type SharedPushAction struct {
	RoomNID, StreamPos int64
	ThreadID           string
	Highlight          bool
	Actions            string
	TS                 int64
	Skips              []string
}

var (
	insertSharedActions = NewRowInsert("push_shared_actions", "room_nid, stream_pos, thread_id, highlight, actions, ts", 6,
		"ON CONFLICT (room_nid, stream_pos) DO NOTHING")
	insertSharedSkips = NewRowInsert("push_shared_skips", "room_nid, stream_pos, user_id", 3, "ON CONFLICT DO NOTHING")
)

// AddSharedPushActions queues inserting shared push actions into b.
func (p *Push) AddSharedPushActions(b *Batch, rows []SharedPushAction) {
	for _, r := range rows {
		b.AddRow(insertSharedActions, r.RoomNID, r.StreamPos, r.ThreadID, r.Highlight, r.Actions, r.TS)
		for _, u := range r.Skips {
			b.AddRow(insertSharedSkips, r.RoomNID, r.StreamPos, u)
		}
	}
}

// MembershipStarts returns, for each given room the user is joined to,
// the stream position of the join that began their current membership
// (profile changes are joins too: the run starts after the newest
// non-join membership event). Rooms the user never joined are absent.
func (p *Push) MembershipStarts(ctx context.Context, userID string, roomIDs []string) (map[string]int64, error) {
	out := map[string]int64{}
	err := queryIn(ctx, p.db.Read(), selectMembershipStarts, []any{userID}, roomIDs, func(r Rows) error {
		var room, thread string
		var start *int64
		if err := r.Scan(&room, &thread, &start); err != nil {
			return err
		}
		if start != nil {
			out[room] = *start
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("membership starts: %w", err)
	}
	return out, nil
}

// The reads counting starts from, for user $1 in the rooms (IN), in the
// same three columns: room, thread ("" for a start), position.
const (
	selectMembershipStarts = `SELECT r.room_id, '' AS thread_id, (
			SELECT MIN(j.stream_pos) FROM events j
			WHERE j.type = 'm.room.member' AND j.state_key = $1 AND +j.room_nid = r.room_nid AND j.membership = 'join'
				AND j.stream_pos > COALESCE((SELECT MAX(x.stream_pos) FROM events x
					WHERE x.type = 'm.room.member' AND x.state_key = $1 AND +x.room_nid = r.room_nid
						AND x.membership <> 'join' AND x.stream_pos IS NOT NULL), 0))
		FROM rooms r WHERE r.room_id IN (IN)`
	selectOwnReads = `SELECT room_id, thread_id, stream_pos FROM push_own_reads
		WHERE user_id = $1 AND room_id IN (IN)`
)

// CountInputs is what counting a user's unread notifications starts
// from in each room: MembershipStarts, OwnReadsGet and the positions of
// the user's read receipts by (room, thread; "" the unthreaded one).
type CountInputs struct {
	Starts   map[string]int64
	Own      []OwnRead
	Receipts map[[2]string]int64
}

// CountInputsGet reads CountInputs in one statement: a sync build needs
// all three, and on PostgreSQL each was a round trip of its own.
func (p *Push) CountInputsGet(ctx context.Context, userID string, roomIDs []string) (CountInputs, error) {
	in := CountInputs{Starts: map[string]int64{}, Receipts: map[[2]string]int64{}}
	q := `SELECT 0, m.* FROM (` + selectMembershipStarts + `) m
		UNION ALL SELECT 1, o.* FROM (` + selectOwnReads + `) o
		UNION ALL SELECT 2, q.* FROM (` + selectReceiptReads + `) q`
	err := queryIn(ctx, p.db.Read(), q, []any{userID}, roomIDs, func(r Rows) error {
		var kind int
		var room, thread string
		var pos *int64
		if err := r.Scan(&kind, &room, &thread, &pos); err != nil {
			return err
		}
		switch {
		case pos == nil:
		case kind == 0:
			in.Starts[room] = *pos
		case kind == 2:
			// A room listed in two chunks comes back twice, the same.
			in.Receipts[[2]string{room, thread}] = *pos
		default:
			in.Own = append(in.Own, OwnRead{UserID: userID, RoomID: room, ThreadID: thread, StreamPos: *pos})
		}
		return nil
	})
	if err != nil {
		return in, fmt.Errorf("count inputs: %w", err)
	}
	// A room listed twice in different chunks would come back twice.
	in.Own = dedupOwnReads(in.Own)
	return in, nil
}

// OwnRead is the newest event a user sent in a room's thread ("main" for
// the main timeline).
type OwnRead struct {
	UserID, RoomID, ThreadID string
	StreamPos                int64
}

// insertOwnReads raises each (user, room, thread)'s newest own event.
var insertOwnReads = NewRowInsert("push_own_reads", "user_id, room_id, thread_id, stream_pos", 4,
	`ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET stream_pos =
		CASE WHEN excluded.stream_pos > push_own_reads.stream_pos THEN excluded.stream_pos ELSE push_own_reads.stream_pos END`)

// AddOwnReads queues recording events users sent into b, a few rows per
// statement: the persister writes one per event sent, and on PostgreSQL a
// statement each was a fifth of a batch's statements.
func (p *Push) AddOwnReads(b *Batch, rows []OwnRead) {
	// One statement may not raise a row twice: keep each key's newest.
	newest := make(map[[3]string]int, len(rows))
	args := make([]any, 0, 4*len(rows))
	for _, r := range rows {
		k := [3]string{r.UserID, r.RoomID, r.ThreadID}
		if i, ok := newest[k]; ok {
			if r.StreamPos > args[i].(int64) {
				args[i] = r.StreamPos
			}
			continue
		}
		newest[k] = len(args) + 3
		args = append(args, r.UserID, r.RoomID, r.ThreadID, r.StreamPos)
	}
	b.AddRows(insertOwnReads, args)
}

// OwnReadsGet returns a user's own-event positions in the given rooms.
func (p *Push) OwnReadsGet(ctx context.Context, userID string, roomIDs []string) ([]OwnRead, error) {
	var out []OwnRead
	err := queryIn(ctx, p.db.Read(), selectOwnReads, []any{userID}, roomIDs,
		func(r Rows) error {
			o := OwnRead{UserID: userID}
			if err := r.Scan(&o.RoomID, &o.ThreadID, &o.StreamPos); err != nil {
				return err
			}
			out = append(out, o)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("own reads: %w", err)
	}
	// A room listed twice in different chunks would come back twice.
	return dedupOwnReads(out), nil
}

func dedupOwnReads(in []OwnRead) []OwnRead {
	seen := make(map[[2]string]bool, len(in))
	out := in[:0]
	for _, o := range in {
		k := [2]string{o.RoomID, o.ThreadID}
		if !seen[k] {
			seen[k] = true
			out = append(out, o)
		}
	}
	return out
}

// PushCount is the number of a user's push actions in one room's thread
// after a position, and how many of them highlight.
type PushCount struct {
	RoomID, ThreadID         string
	Notifications, Highlight int
}

// PushAfter asks for the push actions of a room (of one thread of it when
// ThreadID is set) after a stream position.
type PushAfter struct {
	RoomID, ThreadID string
	After            int64
	// MainAfter, when further than After, bounds the main timeline's
	// rows instead (its own receipt, the user's newest event there).
	MainAfter int64
	// SharedFrom bounds shared rows too: only those after it count (the
	// start of the user's membership; beyond every position when the
	// user is not joined).
	SharedFrom int64
}

// countChunk bounds the rooms or threads one count query carries.
const countChunk = 128

// PushCountsBetween counts a user's push actions, their own and those shared
// by a room's members, with After < position ≤ upper (0: no bound) in each
// given room, or in each given thread when threads is true. The wanted
// rooms (or threads) go as a VALUES list padded to power-of-two sizes with
// rows that match nothing, so that few statement shapes are prepared.
func (p *Push) PushCountsBetween(ctx context.Context, userID string, want []PushAfter, threads bool, upper int64) ([]PushCount, error) {
	var out []PushCount
	if upper <= 0 {
		upper = 1 << 62
	}
	for start := 0; start < len(want); start += countChunk {
		chunk := want[start:min(start+countChunk, len(want))]
		size := inSize(len(chunk))
		args := []any{userID, upper}
		var vals strings.Builder
		for i := range size {
			w := PushAfter{}
			if i < len(chunk) {
				w = chunk[i]
			}
			if i > 0 {
				vals.WriteString(", ")
			}
			n := len(args)
			fmt.Fprintf(&vals, "(CAST($%d AS TEXT), CAST($%d AS TEXT), CAST($%d AS BIGINT), CAST($%d AS BIGINT), CAST($%d AS BIGINT))",
				n+1, n+2, n+3, n+4, n+5)
			args = append(args, w.RoomID, w.ThreadID, w.After, max(w.After, w.MainAfter), max(w.After, w.SharedFrom))
		}
		join, sjoin := ``, ``
		if threads {
			join, sjoin = ` AND a.thread_id = w.thread_id`, ` AND s.thread_id = w.thread_id`
		}
		// The user's own rows, and the rows shared by the room's members
		// that do not skip them after shared_after: callers give
		// positions no earlier than the start of the user's membership
		// (MembershipStarts).
		own := `SELECT a.thread_id, a.highlight FROM push_actions a
			WHERE a.user_id = $1 AND a.room_nid = r.room_nid` + join + ` AND a.stream_pos > w.after_pos AND a.stream_pos <= $2
				AND (a.thread_id <> 'main' OR a.stream_pos > w.main_after)`
		shared := `SELECT s.thread_id, s.highlight FROM push_shared_actions s
			WHERE s.room_nid = r.room_nid` + sjoin + ` AND s.stream_pos > w.shared_after AND s.stream_pos <= $2
				AND (s.thread_id <> 'main' OR s.stream_pos > w.main_after)
				AND NOT EXISTS (SELECT 1 FROM push_shared_skips k
					WHERE k.room_nid = s.room_nid AND k.user_id = $1 AND k.stream_pos = s.stream_pos
						AND k.stream_pos > w.shared_after AND k.stream_pos <= $2)`
		head := `WITH w (room_id, thread_id, after_pos, main_after, shared_after) AS (VALUES ` + vals.String() + `)`
		var q string
		if p.db.d.name() == "postgres" {
			// LATERAL makes each room's bounds index conditions; joined
			// to the VALUES list, PostgreSQL filters a room's whole range.
			q = head + ` SELECT w.room_id, x.thread_id, x.n, x.h FROM w JOIN rooms r ON r.room_id = w.room_id
				CROSS JOIN LATERAL (SELECT thread_id, COUNT(*) AS n, SUM(CASE WHEN highlight THEN 1 ELSE 0 END) AS h
					FROM (` + own + ` UNION ALL ` + shared + `) u GROUP BY thread_id) x`
		} else {
			// SQLite has no LATERAL; its nested loops use the bounds as
			// index ranges anyway.
			q = head + ` SELECT room_id, thread_id, SUM(n), SUM(h) FROM (
				SELECT w.room_id, a.thread_id, COUNT(*) AS n, SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END) AS h
				FROM w JOIN rooms r ON r.room_id = w.room_id
				JOIN push_actions a ON a.user_id = $1 AND a.room_nid = r.room_nid` + join + ` AND a.stream_pos > w.after_pos
					AND a.stream_pos <= $2 AND (a.thread_id <> 'main' OR a.stream_pos > w.main_after)
				GROUP BY w.room_id, a.thread_id
				UNION ALL
				SELECT w.room_id, s.thread_id, COUNT(*), SUM(CASE WHEN s.highlight THEN 1 ELSE 0 END)
				FROM w JOIN rooms r ON r.room_id = w.room_id
				JOIN push_shared_actions s ON s.room_nid = r.room_nid` + sjoin + ` AND s.stream_pos > w.shared_after
					AND s.stream_pos <= $2 AND (s.thread_id <> 'main' OR s.stream_pos > w.main_after)
				WHERE NOT EXISTS (SELECT 1 FROM push_shared_skips k
					WHERE k.room_nid = s.room_nid AND k.user_id = $1 AND k.stream_pos = s.stream_pos
						AND k.stream_pos > w.shared_after AND k.stream_pos <= $2)
				GROUP BY w.room_id, s.thread_id
			) c GROUP BY room_id, thread_id`
		}
		rows, err := p.db.Read().Query(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("push counts: %w", err)
		}
		for rows.Next() {
			var c PushCount
			var n, h int64
			if err := rows.Scan(&c.RoomID, &c.ThreadID, &n, &h); err != nil {
				rows.Close()
				return nil, fmt.Errorf("push counts: %w", err)
			}
			c.Notifications, c.Highlight = int(n), int(h)
			out = append(out, c)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("push counts: %w", err)
		}
	}
	return out, nil
}

// NotificationsPage returns a user's push actions before a stream
// position (0: from the newest), newest first: their own rows, and the
// shared rows of the rooms in joined after each room's After (the start
// of the user's membership there) that do not skip them.
func (p *Push) NotificationsPage(ctx context.Context, userID string, before int64, limit int, onlyHighlight bool, joined []PushAfter) ([]PushAction, error) {
	if before <= 0 {
		before = 1 << 62
	}
	hl, shl := "", ""
	if onlyHighlight {
		hl, shl = " AND a.highlight", " AND s.highlight"
	}
	args := []any{userID, before, limit}
	q := `SELECT r.room_id, a.stream_pos, e.event_id, a.thread_id, a.highlight, a.actions, a.ts
		FROM push_actions a JOIN rooms r ON r.room_nid = a.room_nid JOIN events e ON e.stream_pos = a.stream_pos
		WHERE a.user_id = $1 AND a.stream_pos < $2` + hl
	if len(joined) > 0 {
		// Few statement shapes: the list is padded to a power of two
		// with rows that match nothing.
		size := inSize(len(joined))
		var vals strings.Builder
		for i := range size {
			w := PushAfter{}
			if i < len(joined) {
				w = joined[i]
			}
			if i > 0 {
				vals.WriteString(", ")
			}
			n := len(args)
			fmt.Fprintf(&vals, "(CAST($%d AS TEXT), CAST($%d AS BIGINT))", n+1, n+2)
			args = append(args, w.RoomID, w.After)
		}
		q = `WITH j (room_id, start_pos) AS (VALUES ` + vals.String() + `)
		` + q + `
		UNION ALL
		SELECT r.room_id, s.stream_pos, e.event_id, s.thread_id, s.highlight, s.actions, s.ts
		FROM j JOIN rooms r ON r.room_id = j.room_id
		JOIN push_shared_actions s ON s.room_nid = r.room_nid AND s.stream_pos > j.start_pos AND s.stream_pos < $2` + shl + `
		JOIN events e ON e.stream_pos = s.stream_pos
		WHERE NOT EXISTS (SELECT 1 FROM push_shared_skips k
			WHERE k.room_nid = s.room_nid AND k.stream_pos = s.stream_pos AND k.user_id = $1)`
	}
	q += ` ORDER BY 2 DESC LIMIT $3`
	rows, err := p.db.Read().Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("notifications: %w", err)
	}
	defer rows.Close()
	var out []PushAction
	for rows.Next() {
		a := PushAction{UserID: userID}
		if err := rows.Scan(&a.RoomID, &a.StreamPos, &a.EventID, &a.ThreadID, &a.Highlight, &a.Actions, &a.TS); err != nil {
			return nil, fmt.Errorf("notifications: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// SharedPushRooms lists, in order after the given room, rooms with shared
// push actions older than olderThan (ms): the candidates for pruning.
func (p *Push) SharedPushRooms(ctx context.Context, afterNID int64, olderThan int64, limit int) ([]PushUserRoom, error) {
	rows, err := p.db.Read().Query(ctx, `SELECT s.room_nid, r.room_id FROM (
			SELECT room_nid FROM push_shared_actions WHERE room_nid > $1
			GROUP BY room_nid HAVING MIN(ts) < $2 ORDER BY room_nid LIMIT $3) s
		JOIN rooms r ON r.room_nid = s.room_nid ORDER BY s.room_nid`, afterNID, olderThan, limit)
	if err != nil {
		return nil, fmt.Errorf("shared push rooms: %w", err)
	}
	defer rows.Close()
	var out []PushUserRoom
	for rows.Next() {
		var ur PushUserRoom
		if err := rows.Scan(&ur.RoomNID, &ur.RoomID); err != nil {
			return nil, fmt.Errorf("shared push rooms: %w", err)
		}
		out = append(out, ur)
	}
	return out, rows.Err()
}

// SharedPushPrune deletes a room's shared push actions (and their skips)
// older than olderThan and at or before upTo. It returns how many went.
func (p *Push) SharedPushPrune(ctx context.Context, roomNID, upTo, olderThan int64) (int64, error) {
	var n int64
	err := p.db.Write(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM push_shared_skips WHERE room_nid = $1 AND stream_pos IN (
				SELECT stream_pos FROM push_shared_actions WHERE room_nid = $1 AND stream_pos <= $2 AND ts < $3)`,
			roomNID, upTo, olderThan); err != nil {
			return err
		}
		var err error
		n, err = tx.Exec(ctx, `DELETE FROM push_shared_actions WHERE room_nid = $1 AND stream_pos <= $2 AND ts < $3`,
			roomNID, upTo, olderThan)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune shared push actions: %w", err)
	}
	return n, nil
}

// PushUserRoom names one user's push actions in one room.
type PushUserRoom struct {
	UserID  string
	RoomNID int64
	RoomID  string
}

// PushActionPairs lists, in order after the given pair, the (user, room)
// pairs that have push actions older than olderThan (ms): the candidates
// for pruning.
func (p *Push) PushActionPairs(ctx context.Context, after PushUserRoom, olderThan int64, limit int) ([]PushUserRoom, error) {
	rows, err := p.db.Read().Query(ctx, `SELECT a.user_id, a.room_nid, r.room_id FROM (
			SELECT user_id, room_nid FROM push_actions
			WHERE (user_id, room_nid) > ($1, $2)
			GROUP BY user_id, room_nid HAVING MIN(ts) < $3
			ORDER BY user_id, room_nid LIMIT $4) a
		JOIN rooms r ON r.room_nid = a.room_nid
		ORDER BY a.user_id, a.room_nid`, after.UserID, after.RoomNID, olderThan, limit)
	if err != nil {
		return nil, fmt.Errorf("push action pairs: %w", err)
	}
	defer rows.Close()
	var out []PushUserRoom
	for rows.Next() {
		var ur PushUserRoom
		if err := rows.Scan(&ur.UserID, &ur.RoomNID, &ur.RoomID); err != nil {
			return nil, fmt.Errorf("push action pairs: %w", err)
		}
		out = append(out, ur)
	}
	return out, rows.Err()
}

// PushActionThreads lists the threads of a user's push actions in a room
// that are older than olderThan.
func (p *Push) PushActionThreads(ctx context.Context, ur PushUserRoom, olderThan int64) ([]string, error) {
	rows, err := p.db.Read().Query(ctx, `SELECT DISTINCT thread_id FROM push_actions
		WHERE user_id = $1 AND room_nid = $2 AND ts < $3`, ur.UserID, ur.RoomNID, olderThan)
	if err != nil {
		return nil, fmt.Errorf("push action threads: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("push action threads: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// PushActionsPrune deletes a user's push actions in a room that are older
// than olderThan and at or before upTo, in one thread (all threads when
// threadID is ""). It returns how many went.
func (p *Push) PushActionsPrune(ctx context.Context, ur PushUserRoom, threadID string, upTo, olderThan int64) (int64, error) {
	q := `DELETE FROM push_actions WHERE user_id = $1 AND room_nid = $2 AND stream_pos <= $3 AND ts < $4`
	args := []any{ur.UserID, ur.RoomNID, upTo, olderThan}
	if threadID != "" {
		q += ` AND thread_id = $5`
		args = append(args, threadID)
	}
	n, err := p.db.Exec(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("prune push actions: %w", err)
	}
	return n, nil
}
