-- Local accounts. user_id is the full Matrix ID (@local:server).
CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest      BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts    BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id              TEXT NOT NULL,
    device_id            TEXT NOT NULL,
    display_name         TEXT,
    created_ts           BIGINT NOT NULL,
    last_seen_ts         BIGINT,
    last_seen_ip         TEXT,
    last_seen_user_agent TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Only the SHA-256 of a token is stored. refresh_hash links an access
-- token to the refresh token issued with it; used records that the token
-- has authenticated a request (which retires the refresh token it replaced).
CREATE TABLE access_tokens (
    token_hash   {{bytes}} PRIMARY KEY,
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    created_ts   BIGINT NOT NULL,
    expires_ts   BIGINT,
    refresh_hash {{bytes}},
    used         BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
CREATE INDEX access_tokens_refresh ON access_tokens (refresh_hash);

-- next_hash is set once a refresh token has been exchanged: it stays valid
-- (so a client that lost the answer can retry) until its successor is used.
CREATE TABLE refresh_tokens (
    token_hash {{bytes}} PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    next_hash  {{bytes}}
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_next ON refresh_tokens (next_hash);

-- Single-use tokens for m.login.token.
CREATE TABLE login_tokens (
    token_hash {{bytes}} PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);

-- User-interactive authentication sessions, shared by every instance.
CREATE TABLE uia_sessions (
    session_id  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL,
    completed   TEXT NOT NULL DEFAULT '[]',
    data        TEXT NOT NULL DEFAULT '{}',
    created_ts  BIGINT NOT NULL
);

CREATE TABLE registration_tokens (
    token        TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    pending      BIGINT NOT NULL DEFAULT 0,
    completed    BIGINT NOT NULL DEFAULT 0,
    expiry_time  BIGINT
);

-- Profile fields, displayname and avatar_url included; value is JSON.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field   TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);

-- Account data; room_id is '' for global data.
CREATE TABLE account_data (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    type       TEXT NOT NULL,
    content    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_pos);

CREATE TABLE filters (
    id           {{serial}},
    user_id      TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    content      TEXT NOT NULL
);
CREATE UNIQUE INDEX filters_dedup ON filters (user_id, content_hash);

-- Nonces for /_synapse/admin/v1/register.
CREATE TABLE admin_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_ts BIGINT NOT NULL
);
