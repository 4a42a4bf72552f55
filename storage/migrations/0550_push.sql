-- Push rules and notifications.

-- What a user changed of their push rules, as one JSON document: their
-- own rules in priority order, and the enabled flags and actions they set
-- on server-default rules. The server-default rules themselves live in
-- code, so that a new server version's defaults reach every user.
CREATE TABLE push_rules (
    user_id    TEXT PRIMARY KEY,
    rules      TEXT NOT NULL,
    updated_ts BIGINT NOT NULL
);

-- One row per local user and event that the user's push rules said to
-- notify about, written in the transaction that persists the event. A
-- room's unread counts are its rows after the user's read-up-to position.
-- The event is found by stream_pos (events.stream_pos is unique) and the
-- room by room_nid: a message in a big room writes one row per member,
-- so rows are kept small. thread_id is the thread root's event ID, or
-- 'main'; actions are the matching rule's actions (JSON), for pushers.
-- On SQLite the table is clustered on its key (WITHOUT ROWID).
-- postgres only
CREATE TABLE push_actions (
    user_id    TEXT NOT NULL,
    room_nid   BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    thread_id  TEXT NOT NULL,
    highlight  BOOLEAN NOT NULL,
    actions    TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_nid, stream_pos)
);
-- end
-- sqlite only
CREATE TABLE push_actions (
    user_id    TEXT NOT NULL,
    room_nid   BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    thread_id  TEXT NOT NULL,
    highlight  BOOLEAN NOT NULL,
    actions    TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_nid, stream_pos)
) WITHOUT ROWID;
-- end

-- The newest event each local user sent in each room and thread: sending
-- an event marks what came before it as read, like a receipt would.
CREATE TABLE push_own_reads (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    thread_id  TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);
