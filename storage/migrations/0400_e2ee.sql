-- End-to-end encryption: the server stores and routes public keys,
-- signatures, encrypted backups and to-device messages; it never holds
-- anything that decrypts them.

-- A device's identity keys exactly as the device signed them (key_json
-- keeps only the device's own signature; other signatures live in
-- e2ee_signatures). ed25519 is the device's signing key, kept apart to
-- check signatures made by the device.
CREATE TABLE e2ee_device_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    ed25519    TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys, handed out once each in upload order (id).
CREATE TABLE e2ee_one_time_keys (
    id        {{serial}},
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL
);
CREATE UNIQUE INDEX e2ee_one_time_keys_key ON e2ee_one_time_keys (user_id, device_id, algorithm, key_id);
CREATE INDEX e2ee_one_time_keys_claim ON e2ee_one_time_keys (user_id, device_id, algorithm, id);

-- At most one fallback key per device and algorithm; used is set once a
-- claim has handed it out.
CREATE TABLE e2ee_fallback_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    used      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys: key_type is master, self_signing or user_signing;
-- public_key is the unpadded base64 ed25519 key.
CREATE TABLE e2ee_cross_signing_keys (
    user_id    TEXT NOT NULL,
    key_type   TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    updated_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded apart from the keys they sign. target_key_id is a
-- device ID or a cross-signing public key; signer_key_id is "ed25519:…".
CREATE TABLE e2ee_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id  TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
CREATE INDEX e2ee_signatures_signer ON e2ee_signatures (signer_user_id, signer_key_id);

-- Device-list changes, one row per change of a user's devices or
-- cross-signing keys. only_for, when set, limits who is told (a
-- user-signing signature concerns only its signer).
CREATE TABLE e2ee_device_list_changes (
    stream_pos BIGINT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    only_for   TEXT
);
CREATE INDEX e2ee_device_list_changes_user ON e2ee_device_list_changes (user_id, stream_pos);

-- Pending to-device messages for local devices, deleted once the device
-- acknowledges them.
CREATE TABLE e2ee_to_device (
    stream_pos BIGINT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    sender     TEXT NOT NULL,
    type       TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX e2ee_to_device_device ON e2ee_to_device (user_id, device_id, stream_pos);

-- Transaction IDs of sendToDevice requests already applied, per sending
-- device, so that a retried request (even after a restart) is not
-- delivered twice.
CREATE TABLE e2ee_to_device_txns (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX e2ee_to_device_txns_age ON e2ee_to_device_txns (created_ts);

-- To-device messages for users of other servers, waiting for federation.
-- messages is the JSON map user ID → device ID → content for destination.
CREATE TABLE e2ee_to_device_outbox (
    id          {{serial}},
    destination TEXT NOT NULL,
    sender      TEXT NOT NULL,
    type        TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    messages    TEXT NOT NULL,
    created_ts  BIGINT NOT NULL
);
CREATE INDEX e2ee_to_device_outbox_destination ON e2ee_to_device_outbox (destination, id);
CREATE INDEX e2ee_to_device_outbox_age ON e2ee_to_device_outbox (created_ts);

-- Key backup versions; version numbers are never reused, deleted versions
-- stay as tombstones so that deleting twice succeeds. etag changes
-- whenever the stored keys change; key_count is the number of keys.
CREATE TABLE e2ee_backup_versions (
    user_id    TEXT NOT NULL,
    version    BIGINT NOT NULL,
    algorithm  TEXT NOT NULL,
    auth_data  TEXT NOT NULL,
    etag       BIGINT NOT NULL DEFAULT 0,
    key_count  BIGINT NOT NULL DEFAULT 0,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE e2ee_backup_keys (
    user_id             TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         BOOLEAN NOT NULL,
    session_data        TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- A user's dehydrated device (MSC3814): at most one. The device itself is
-- a row of devices; device_data is the client's encrypted pickle.
CREATE TABLE e2ee_dehydrated_devices (
    user_id     TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    device_data TEXT NOT NULL,
    created_ts  BIGINT NOT NULL
);
