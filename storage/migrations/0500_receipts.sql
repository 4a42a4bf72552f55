-- Read receipts: one "up to" marker per (room, user, type, thread).
-- receipt_type is m.read or m.read.private; thread_id is '' for the
-- unthreaded receipt, 'main' for the main timeline or a thread root's event
-- ID. event_pos is the events-stream position of the event the marker
-- points at (markers only move forward); stream_pos is the receipts-stream
-- position of the marker's last move.
CREATE TABLE receipts (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_pos    BIGINT NOT NULL,
    ts           BIGINT NOT NULL,
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
-- Incremental sync by room and by position; initial sync by room.
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_pos);
CREATE INDEX receipts_stream ON receipts (stream_pos);

-- Delivery receipts (MSC4089): one per (event, reader), seen only by the
-- event's sender; they share the receipts stream. Old ones are pruned.
CREATE TABLE delivery_receipts (
    event_id     TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    room_id      TEXT NOT NULL,
    event_sender TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX delivery_receipts_sender ON delivery_receipts (event_sender, stream_pos);
CREATE INDEX delivery_receipts_ts ON delivery_receipts (ts);
