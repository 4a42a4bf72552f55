-- Simplified sliding sync (MSC4186) connections, one per (user, device,
-- conn_id). last_seq is the newest position handed out on the connection;
-- used_ts lets idle connections expire.
CREATE TABLE sliding_sync_connections (
    conn_nid   {{serial}},
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    conn_id    TEXT NOT NULL,
    last_seq   BIGINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL,
    used_ts    BIGINT NOT NULL
);
CREATE UNIQUE INDEX sliding_sync_connections_key ON sliding_sync_connections (user_id, device_id, conn_id);
CREATE INDEX sliding_sync_connections_used ON sliding_sync_connections (used_ts);

-- One row per pos handed out and not yet superseded: the events stream
-- position the response was built up to, the positions the extensions
-- reached (JSON) and the rooms that were in scope (sorted 64-bit hashes).
CREATE TABLE sliding_sync_positions (
    conn_nid   BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    events_pos BIGINT NOT NULL,
    streams    TEXT NOT NULL,
    scope      {{bytes}} NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (conn_nid, seq)
);

-- What the client holds of each room it was sent, versioned: the room's
-- state at pos P is its row with the greatest seq <= P. Rows are written
-- only for rooms a response changes.
CREATE TABLE sliding_sync_rooms (
    conn_nid BIGINT NOT NULL,
    room_id  TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    data     TEXT NOT NULL,
    PRIMARY KEY (conn_nid, room_id, seq)
);

-- The required_state configs rooms were sent with, by digest: room rows
-- name a digest, and a config that grows is compared with the one the
-- client had.
CREATE TABLE sliding_sync_specs (
    conn_nid BIGINT NOT NULL,
    digest   TEXT NOT NULL,
    spec     TEXT NOT NULL,
    PRIMARY KEY (conn_nid, digest)
);
