package storage

import (
	"context"
	"fmt"
)

// Presence stores users' presence: the inputs the presence engine decides
// from and the outputs it last published.
type Presence struct{ db *DB }

// Presence returns the presence store.
func (db *DB) Presence() *Presence { return &Presence{db: db} }

// PresenceRow is one user's presence.
type PresenceRow struct {
	UserID string
	// State is online, unavailable or offline, as last published.
	State string
	// StatusMsg is the user's status message; "" is none.
	StatusMsg       string
	CurrentlyActive bool
	// LastActiveTS is the time of the user's last activity (ms).
	LastActiveTS int64
	// LastSeenTS is the time of the user's last request or sync (ms).
	LastSeenTS int64
	// ExplicitState is "" or the unavailable/offline state the user set at
	// ExplicitTS.
	ExplicitState string
	ExplicitTS    int64
	// StreamPos is the position (ms) of the last change of the outputs.
	StreamPos int64
}

const presenceCols = `user_id, state, status_msg, currently_active, last_active_ts, last_seen_ts, explicit_state, explicit_ts, stream_pos`

func scanPresence(r Row) (PresenceRow, error) {
	var p PresenceRow
	var msg *string
	err := r.Scan(&p.UserID, &p.State, &msg, &p.CurrentlyActive, &p.LastActiveTS, &p.LastSeenTS, &p.ExplicitState, &p.ExplicitTS, &p.StreamPos)
	if msg != nil {
		p.StatusMsg = *msg
	}
	return p, err
}

// PresenceGet returns one user's presence; ErrNotFound if none.
func (s *Presence) PresenceGet(ctx context.Context, q Querier, userID string) (PresenceRow, error) {
	p, err := scanPresence(q.QueryRow(ctx, `SELECT `+presenceCols+` FROM presence WHERE user_id = $1`, userID))
	if err != nil {
		return p, fmt.Errorf("get presence: %w", err)
	}
	return p, nil
}

// PresenceGetMany returns the presence of those of the users who have
// some, keyed by user.
func (s *Presence) PresenceGetMany(ctx context.Context, q Querier, userIDs []string) (map[string]PresenceRow, error) {
	out := make(map[string]PresenceRow, len(userIDs))
	err := queryIn(ctx, q, `SELECT `+presenceCols+` FROM presence WHERE user_id IN (IN)`, nil, distinctStrings(userIDs),
		func(r Rows) error {
			p, err := scanPresence(r)
			out[p.UserID] = p
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("get presence: %w", err)
	}
	return out, nil
}

// PresencePut stores a user's presence whole.
func (s *Presence) PresencePut(ctx context.Context, tx *Tx, p PresenceRow) error {
	var msg *string
	if p.StatusMsg != "" {
		msg = &p.StatusMsg
	}
	_, err := tx.Exec(ctx, `INSERT INTO presence (`+presenceCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
			currently_active = excluded.currently_active, last_active_ts = excluded.last_active_ts,
			last_seen_ts = excluded.last_seen_ts, explicit_state = excluded.explicit_state,
			explicit_ts = excluded.explicit_ts, stream_pos = excluded.stream_pos`,
		p.UserID, p.State, msg, p.CurrentlyActive, p.LastActiveTS, p.LastSeenTS, p.ExplicitState, p.ExplicitTS, p.StreamPos)
	if err != nil {
		return fmt.Errorf("put presence: %w", err)
	}
	return nil
}

// PresenceSince returns the presence of users whose outputs changed after
// position since, oldest change first, at most limit of them.
func (s *Presence) PresenceSince(ctx context.Context, since int64, limit int) ([]PresenceRow, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT `+presenceCols+` FROM presence WHERE stream_pos > $1 ORDER BY stream_pos LIMIT $2`, since, limit)
	if err != nil {
		return nil, fmt.Errorf("presence since: %w", err)
	}
	defer rows.Close()
	var out []PresenceRow
	for rows.Next() {
		p, err := scanPresence(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PresenceDue lists users, not offline, whose presence a timeout changes
// now: not seen since seenBefore (they go offline), online without
// activity since idleBefore (unavailable), or currently active without
// activity since activeBefore. All bounds are inclusive.
func (s *Presence) PresenceDue(ctx context.Context, seenBefore, idleBefore, activeBefore int64, limit int) ([]string, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT user_id FROM presence WHERE state <> 'offline' AND (
			last_seen_ts <= $1 OR (state = 'online' AND last_active_ts <= $2) OR (currently_active AND last_active_ts <= $3))
		LIMIT $4`, seenBefore, idleBefore, activeBefore, limit)
	if err != nil {
		return nil, fmt.Errorf("presence due: %w", err)
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

// PresenceMaxPos returns the newest position of any presence change.
func (s *Presence) PresenceMaxPos(ctx context.Context, q Querier) (int64, error) {
	var pos int64
	if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM presence`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("presence position: %w", err)
	}
	return pos, nil
}
