-- Stream positions: one row per stream, advanced inside the writing
-- transaction so that positions of a stream commit in order.
CREATE TABLE stream_positions (
    stream TEXT PRIMARY KEY,
    pos    BIGINT NOT NULL
);

-- Server-wide key/value settings that must survive restarts.
CREATE TABLE server_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
