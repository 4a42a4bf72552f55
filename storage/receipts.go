package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
)

// Receipts stores read receipts ("up to" markers per room, user, type and
// thread) and MSC4089 delivery receipts (one per event and reader). Both
// share one stream, ReceiptsStream.
type Receipts struct{ db *DB }

// Receipts returns the receipts store.
func (db *DB) Receipts() *Receipts { return &Receipts{db: db} }

// ReceiptsStream names the stream of receipt positions.
const ReceiptsStream = "receipts"

// Receipt is a read receipt: a user's marker in a room and thread.
type Receipt struct {
	RoomID string
	UserID string
	// Type is m.read or m.read.private.
	Type string
	// ThreadID is "" (unthreaded), "main" or a thread root's event ID.
	ThreadID string
	EventID  string
	// EventPos is the events-stream position of EventID.
	EventPos int64
	TS       int64
	// StreamPos is the receipts-stream position of the last move.
	StreamPos int64
}

// DeliveryReceipt is an MSC4089 delivery receipt.
type DeliveryReceipt struct {
	RoomID      string
	EventID     string
	EventSender string
	UserID      string
	TS          int64
	StreamPos   int64
}

// ReceiptPut moves a read receipt forward: it stores r (with a new stream
// position) unless the current marker of (room, user, type, thread) points
// at an event at or after r.EventPos. It returns the new position and
// whether the marker moved.
func (s *Receipts) ReceiptPut(ctx context.Context, tx *Tx, r Receipt) (int64, bool, error) {
	var cur int64
	err := tx.QueryRow(ctx, `SELECT event_pos FROM receipts
		WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4`,
		r.RoomID, r.UserID, r.Type, r.ThreadID).Scan(&cur)
	switch {
	case err == nil && cur >= r.EventPos:
		return 0, false, nil
	case err != nil && !errors.Is(err, ErrNotFound):
		return 0, false, fmt.Errorf("read receipt: %w", err)
	}
	pos, err := tx.NextStreamPos(ctx, ReceiptsStream, 1)
	if err != nil {
		return 0, false, err
	}
	// The condition repeats the check above for a writer that raced us
	// (PostgreSQL, READ COMMITTED): a marker never moves backwards.
	n, err := tx.Exec(ctx, `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET
			event_id = excluded.event_id, event_pos = excluded.event_pos, ts = excluded.ts, stream_pos = excluded.stream_pos
		WHERE receipts.event_pos < excluded.event_pos`,
		r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.EventPos, r.TS, pos)
	if err != nil {
		return 0, false, fmt.Errorf("put receipt: %w", err)
	}
	return pos, n > 0, nil
}

// DeliveryPut stores a delivery receipt once: a duplicate of (event,
// reader) is not stored again and reports false.
func (s *Receipts) DeliveryPut(ctx context.Context, tx *Tx, d DeliveryReceipt) (int64, bool, error) {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM delivery_receipts WHERE event_id = $1 AND user_id = $2`, d.EventID, d.UserID).Scan(&one)
	switch {
	case err == nil:
		return 0, false, nil
	case !errors.Is(err, ErrNotFound):
		return 0, false, fmt.Errorf("delivery receipt: %w", err)
	}
	pos, err := tx.NextStreamPos(ctx, ReceiptsStream, 1)
	if err != nil {
		return 0, false, err
	}
	n, err := tx.Exec(ctx, `INSERT INTO delivery_receipts (event_id, user_id, room_id, event_sender, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, user_id) DO NOTHING`,
		d.EventID, d.UserID, d.RoomID, d.EventSender, d.TS, pos)
	if err != nil {
		return 0, false, fmt.Errorf("put delivery receipt: %w", err)
	}
	return pos, n > 0, nil
}

// receiptSpan is the widest position range read with one scan of the
// stream index; wider ranges are read room by room.
const receiptSpan = 2000

const receiptCols = `room_id, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos`

func scanReceipt(r Row) (Receipt, error) {
	var x Receipt
	err := r.Scan(&x.RoomID, &x.UserID, &x.Type, &x.ThreadID, &x.EventID, &x.EventPos, &x.TS, &x.StreamPos)
	return x, err
}

// ReceiptsSince returns the read receipts of rooms with from < position ≤
// to that forUser may see (m.read of anyone, m.read.private of their
// own), in position order.
func (s *Receipts) ReceiptsSince(ctx context.Context, forUser string, roomIDs []string, from, to int64) ([]Receipt, error) {
	if from >= to || len(roomIDs) == 0 {
		return nil, nil
	}
	var out []Receipt
	if to-from <= receiptSpan {
		// A short range (incremental sync): scan it once and keep the
		// asked rooms.
		want := make(map[string]bool, len(roomIDs))
		for _, r := range roomIDs {
			want[r] = true
		}
		rows, err := s.db.Read().Query(ctx, `SELECT `+receiptCols+` FROM receipts
			WHERE stream_pos > $1 AND stream_pos <= $2 AND (receipt_type = 'm.read' OR user_id = $3)
			ORDER BY stream_pos`, from, to, forUser)
		if err != nil {
			return nil, fmt.Errorf("receipts since: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			x, err := scanReceipt(rows)
			if err != nil {
				return nil, err
			}
			if want[x.RoomID] {
				out = append(out, x)
			}
		}
		return out, rows.Err()
	}
	err := queryIn(ctx, s.db.Read(), `SELECT `+receiptCols+` FROM receipts
		WHERE stream_pos > $1 AND stream_pos <= $2 AND (receipt_type = 'm.read' OR user_id = $3) AND room_id IN (IN)`,
		[]any{from, to, forUser}, distinctStrings(roomIDs), func(r Rows) error {
			x, err := scanReceipt(r)
			out = append(out, x)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("receipts since: %w", err)
	}
	sortReceipts(out)
	return out, nil
}

// ReceiptsCurrent returns every m.read receipt of the rooms and forUser's
// own m.read.private ones, in position order.
func (s *Receipts) ReceiptsCurrent(ctx context.Context, forUser string, roomIDs []string) ([]Receipt, error) {
	var out []Receipt
	err := queryIn(ctx, s.db.Read(), `SELECT `+receiptCols+` FROM receipts
		WHERE (receipt_type = 'm.read' OR user_id = $1) AND room_id IN (IN)`,
		[]any{forUser}, distinctStrings(roomIDs), func(r Rows) error {
			x, err := scanReceipt(r)
			out = append(out, x)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("current receipts: %w", err)
	}
	sortReceipts(out)
	return out, nil
}

// ReceiptReadUpTo returns the largest events-stream position that the
// user's m.read or m.read.private receipt in the room and thread points
// at; 0 if there is none.
func (s *Receipts) ReceiptReadUpTo(ctx context.Context, userID, roomID, threadID string) (int64, error) {
	var pos int64
	err := s.db.Read().QueryRow(ctx, `SELECT COALESCE(MAX(event_pos), 0) FROM receipts
		WHERE room_id = $1 AND user_id = $2 AND thread_id = $3 AND receipt_type IN ('m.read', 'm.read.private')`,
		roomID, userID, threadID).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("read up to: %w", err)
	}
	return pos, nil
}

// selectReceiptReads reads, by (room, thread), the events-stream position
// a user's furthest read receipt (m.read or m.read.private) points at
// ($1 the user, rooms in (IN)); push counting reads it with its other
// inputs (CountInputsGet).
const selectReceiptReads = `SELECT room_id, thread_id, MAX(event_pos) FROM receipts
		WHERE user_id = $1 AND receipt_type IN ('m.read', 'm.read.private') AND room_id IN (IN)
		GROUP BY room_id, thread_id`

const deliveryCols = `room_id, event_id, event_sender, user_id, ts, stream_pos`

func scanDelivery(r Row) (DeliveryReceipt, error) {
	var d DeliveryReceipt
	err := r.Scan(&d.RoomID, &d.EventID, &d.EventSender, &d.UserID, &d.TS, &d.StreamPos)
	return d, err
}

// DeliveriesSince returns the delivery receipts for sender's events with
// from < position ≤ to, in position order.
func (s *Receipts) DeliveriesSince(ctx context.Context, sender string, from, to int64) ([]DeliveryReceipt, error) {
	if from >= to {
		return nil, nil
	}
	rows, err := s.db.Read().Query(ctx, `SELECT `+deliveryCols+` FROM delivery_receipts
		WHERE event_sender = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, sender, from, to)
	if err != nil {
		return nil, fmt.Errorf("delivery receipts since: %w", err)
	}
	return collectDeliveries(rows)
}

// DeliveriesRecent returns the delivery receipts for sender's events made
// after sinceTS, the newest perRoom of each room, in position order.
func (s *Receipts) DeliveriesRecent(ctx context.Context, sender string, sinceTS int64, perRoom int) ([]DeliveryReceipt, error) {
	rows, err := s.db.Read().Query(ctx, `SELECT `+deliveryCols+` FROM (
			SELECT `+deliveryCols+`, ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY stream_pos DESC) AS n
			FROM delivery_receipts WHERE event_sender = $1 AND ts > $2
		) recent WHERE n <= $3 ORDER BY stream_pos`, sender, sinceTS, perRoom)
	if err != nil {
		return nil, fmt.Errorf("recent delivery receipts: %w", err)
	}
	return collectDeliveries(rows)
}

func collectDeliveries(rows Rows) ([]DeliveryReceipt, error) {
	defer rows.Close()
	var out []DeliveryReceipt
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// DeliveriesPrune deletes delivery receipts made before beforeTS.
func (s *Receipts) DeliveriesPrune(ctx context.Context, beforeTS int64) (int64, error) {
	n, err := s.db.Exec(ctx, `DELETE FROM delivery_receipts WHERE ts < $1`, beforeTS)
	if err != nil {
		return 0, fmt.Errorf("prune delivery receipts: %w", err)
	}
	return n, nil
}

func distinctStrings(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func sortReceipts(rs []Receipt) {
	slices.SortFunc(rs, func(a, b Receipt) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
}
