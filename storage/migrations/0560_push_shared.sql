-- Shared push actions: when most local members of a room get the same
-- actions for an event (a plain message in a group room), one row stands
-- for all of them instead of one row per member, so that a message costs
-- the same whatever the room's size. The row applies to every local user
-- joined to the room before the event, except those listed in
-- push_shared_skips (the sender, members whose rules decided otherwise:
-- they have their own push_actions row, or none). Readers bound it by the
-- start of the user's current membership, so that joining later never
-- inherits older rows.
-- postgres only
CREATE TABLE push_shared_actions (
    room_nid   BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    thread_id  TEXT NOT NULL,
    highlight  BOOLEAN NOT NULL,
    actions    TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    PRIMARY KEY (room_nid, stream_pos)
);
CREATE TABLE push_shared_skips (
    room_nid   BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    user_id    TEXT NOT NULL,
    PRIMARY KEY (room_nid, user_id, stream_pos)
);
-- end
-- sqlite only
CREATE TABLE push_shared_actions (
    room_nid   BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    thread_id  TEXT NOT NULL,
    highlight  BOOLEAN NOT NULL,
    actions    TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    PRIMARY KEY (room_nid, stream_pos)
) WITHOUT ROWID;
CREATE TABLE push_shared_skips (
    room_nid   BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    user_id    TEXT NOT NULL,
    PRIMARY KEY (room_nid, user_id, stream_pos)
) WITHOUT ROWID;
-- end
