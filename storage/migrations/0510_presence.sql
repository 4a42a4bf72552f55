-- Presence of users. The inputs (last_active_ts: last activity;
-- last_seen_ts: last request or sync; explicit_state/explicit_ts: an
-- unavailable or offline state the user set, until activity after it)
-- decide the published outputs (state, currently_active, status_msg), whose
-- every change takes a new stream_pos: a millisecond timestamp, increasing.
CREATE TABLE presence (
    user_id          TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    status_msg       TEXT,
    currently_active BOOLEAN NOT NULL,
    last_active_ts   BIGINT NOT NULL,
    last_seen_ts     BIGINT NOT NULL,
    explicit_state   TEXT NOT NULL,
    explicit_ts      BIGINT NOT NULL,
    stream_pos       BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_pos);
-- Users not offline, whose timeouts the sweeper watches.
CREATE INDEX presence_live ON presence (last_seen_ts) WHERE state <> 'offline';
