-- Media repository.
--
-- Bytes live in the blob store; these tables say what they are. Identical
-- content is stored once: media_content has one row per SHA-256, naming the
-- blob that holds it, and media rows (local uploads and cached remote
-- media) point at it. refs counts those media rows so that garbage
-- collection decides on one row it holds locked. A content row is "doomed"
-- while its blob is being deleted; an upload of the same bytes meanwhile
-- replaces blob_key with its own blob and revives the row.
CREATE TABLE media_content (
    sha256         TEXT PRIMARY KEY,
    blob_key       TEXT NOT NULL,
    size           BIGINT NOT NULL,
    refs           BIGINT NOT NULL DEFAULT 0,
    doomed         BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts     BIGINT NOT NULL,
    -- Set when the content (by hash) is quarantined: new uploads of the
    -- same bytes are quarantined too.
    quarantined_by TEXT,
    -- What probing the bytes found: image format (jpeg, png, gif, webp;
    -- '' for anything else), dimensions after EXIF orientation, the EXIF
    -- orientation itself and whether the image is animated.
    probed         BOOLEAN NOT NULL DEFAULT FALSE,
    image_format   TEXT NOT NULL DEFAULT '',
    image_width    INTEGER NOT NULL DEFAULT 0,
    image_height   INTEGER NOT NULL DEFAULT 0,
    orientation    INTEGER NOT NULL DEFAULT 1,
    animated       BOOLEAN NOT NULL DEFAULT FALSE,
    frames         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX media_content_garbage ON media_content (refs, doomed);

-- One row per mxc:// URI we know: local uploads (user_id set), pending
-- asynchronous uploads (sha256 NULL until the bytes arrive, then
-- unused_expires_ts is cleared) and cached remote media (user_id NULL).
CREATE TABLE media (
    origin            TEXT NOT NULL,
    media_id          TEXT NOT NULL,
    user_id           TEXT,
    content_type      TEXT NOT NULL DEFAULT '',
    upload_name       TEXT,
    size              BIGINT NOT NULL DEFAULT 0,
    sha256            TEXT,
    created_ts        BIGINT NOT NULL,
    uploaded_ts       BIGINT,
    unused_expires_ts BIGINT,
    last_access_ts    BIGINT,
    quarantined_by    TEXT,
    -- Bytes charged to the uploader's quota (0 for URL preview images and
    -- remote media); refunded when the media is deleted.
    quota_bytes       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_user ON media (user_id, created_ts);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_pending ON media (unused_expires_ts) WHERE sha256 IS NULL;
CREATE INDEX media_last_access ON media (origin, last_access_ts);

-- Thumbnails belong to content (two uploads of one image share them) and
-- are keyed by their output size, method and whether they animate.
CREATE TABLE media_thumbnails (
    sha256       TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    method       TEXT NOT NULL,
    animated     BOOLEAN NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    blob_key     TEXT NOT NULL,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (sha256, width, height, method, animated)
);

-- Bytes each local user has uploaded, for the quota. The row is also what
-- serialises a user's concurrent uploads and creates.
CREATE TABLE media_usage (
    user_id TEXT PRIMARY KEY,
    bytes   BIGINT NOT NULL DEFAULT 0
);

-- Blobs being written. A row outlives its blob only if the server died
-- mid-upload; retention deletes such leftovers.
CREATE TABLE media_blob_writes (
    blob_key   TEXT PRIMARY KEY,
    started_ts BIGINT NOT NULL
);

-- URL preview results, cached until expires_ts.
CREATE TABLE media_url_previews (
    url        TEXT PRIMARY KEY,
    body       {{json}} NOT NULL,
    fetched_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX media_url_previews_expires ON media_url_previews (expires_ts);
