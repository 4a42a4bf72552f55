-- Rooms. state_nid is the snapshot of the room's current state (the
-- resolved state after its forward extremities).
CREATE TABLE rooms (
    room_nid   {{serial}},
    room_id    TEXT NOT NULL,
    version    TEXT NOT NULL,
    state_nid  BIGINT NOT NULL DEFAULT 0,
    max_depth  BIGINT NOT NULL DEFAULT 0,
    -- the newest event persisted: caches of the room's head are valid
    -- while it has not changed
    last_event BIGINT NOT NULL DEFAULT 0,
    -- its stream position: sync finds rooms with news without scanning
    last_stream BIGINT NOT NULL DEFAULT 0,
    published  BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX rooms_room_id ON rooms (room_id);

-- (type, state_key) pairs, interned so that snapshots hold small numbers.
CREATE TABLE state_keys (
    key_nid   {{serial}},
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL
);
CREATE UNIQUE INDEX state_keys_pair ON state_keys (type, state_key);

-- State snapshots as binary skip deltas: a snapshot at sequence n holds the
-- entries changed in (n - 2^tz(n), n] and points (skip_nid) at the
-- snapshot at n - 2^tz(n). See homeserver/rooms/snapshot.go.
CREATE TABLE state_snapshots (
    snapshot_nid {{serial}},
    seq          BIGINT NOT NULL,
    skip_nid     BIGINT NOT NULL,
    entries      {{bytes}} NOT NULL
);

-- Events, immutable but for the flags. status: 0 accepted, 1 rejected,
-- 2 soft-failed, 3 outlier. stream_pos is set for events in the timeline.
CREATE TABLE events (
    event_nid     {{serial}},
    event_id      TEXT NOT NULL,
    room_nid      BIGINT NOT NULL,
    type          TEXT NOT NULL,
    state_key     TEXT,
    membership    TEXT,
    sender        TEXT NOT NULL,
    depth         BIGINT NOT NULL,
    origin_ts     BIGINT NOT NULL,
    stream_pos    BIGINT,
    state_before  BIGINT,
    state_after   BIGINT,
    status        SMALLINT NOT NULL DEFAULT 0,
    reject_reason TEXT,
    redacted_by   TEXT,
    relates_to    TEXT,
    rel_type      TEXT,
    txn_device    TEXT,
    txn_id        TEXT,
    json          {{bytes}} NOT NULL
);
CREATE UNIQUE INDEX events_event_id ON events (event_id);
CREATE UNIQUE INDEX events_stream ON events (stream_pos);
CREATE INDEX events_room_stream ON events (room_nid, stream_pos);
CREATE INDEX events_room_topo ON events (room_nid, depth, stream_pos);
CREATE INDEX events_room_ts ON events (room_nid, origin_ts);
CREATE INDEX events_relates ON events (relates_to, rel_type);
CREATE INDEX events_member_stream ON events (state_key, stream_pos) WHERE type = 'm.room.member';

CREATE TABLE event_auth_edges (
    event_nid BIGINT NOT NULL,
    auth_nid  BIGINT NOT NULL,
    PRIMARY KEY (event_nid, auth_nid)
);

CREATE TABLE event_prev_edges (
    event_nid     BIGINT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_nid, prev_event_id)
);
CREATE INDEX event_prev_edges_prev ON event_prev_edges (prev_event_id);

CREATE TABLE forward_extremities (
    room_nid  BIGINT NOT NULL,
    event_nid BIGINT NOT NULL,
    PRIMARY KEY (room_nid, event_nid)
);

-- The current state of every room, for fast reads (members, joined rooms).
CREATE TABLE current_state (
    room_nid   BIGINT NOT NULL,
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_nid  BIGINT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_nid, type, state_key)
);
CREATE INDEX current_state_membership ON current_state (state_key, membership) WHERE type = 'm.room.member';

-- Client transaction IDs: a retried request finds its first answer. scope
-- is the endpoint and its path (send/!room/type, redact/!room/$event).
CREATE TABLE txn_ids (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);

CREATE TABLE room_aliases (
    alias      TEXT PRIMARY KEY,
    room_nid   BIGINT NOT NULL,
    creator    TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_nid);

CREATE TABLE forgotten_rooms (
    user_id  TEXT NOT NULL,
    room_nid BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_nid)
);

CREATE TABLE reports (
    report_id   {{serial}},
    kind        TEXT NOT NULL,
    room_id     TEXT,
    event_id    TEXT,
    user_id     TEXT,
    reporter    TEXT NOT NULL,
    reason      TEXT,
    score       BIGINT,
    created_ts  BIGINT NOT NULL
);
