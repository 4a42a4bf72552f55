package e2ee

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// MegolmBackupV1 is the backup algorithm the spec defines.
const MegolmBackupV1 = "m.megolm_backup.v1.curve25519-aes-sha2"

// BackupVersionInfo describes a backup version.
type BackupVersionInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// BackupCounters is what a change of a backup's keys answers.
type BackupCounters struct {
	ETag  string `json:"etag"`
	Count int64  `json:"count"`
}

// BackupSession is one backed-up session key as clients see it.
type BackupSession struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// BackupSessionUpload is one session key as uploaded; every field is
// required.
type BackupSessionUpload struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// RoomBackupUpload is a room's session keys as uploaded.
type RoomBackupUpload struct {
	Sessions map[string]BackupSessionUpload `json:"sessions"`
}

var errUnknownVersion = mxerr.NotFound("Unknown backup version")

// parseVersion reads a version as this server writes them; anything else
// names no version.
func parseVersion(s string) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v > 0 && strconv.FormatInt(v, 10) == s
}

// isObject reports whether raw is a JSON object.
func isObject(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return false
	}
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil
}

func checkAuthData(algorithm string, authData json.RawMessage) error {
	if algorithm == "" || len(algorithm) > MaxIDBytes {
		return mxerr.MissingParam("algorithm is required")
	}
	if len(authData) > MaxBlobBytes {
		return mxerr.TooLarge("auth_data is larger than %d bytes", MaxBlobBytes)
	}
	if !isObject(authData) {
		return mxerr.BadJSON("auth_data must be a JSON object")
	}
	if algorithm == MegolmBackupV1 {
		var ad struct {
			PublicKey any `json:"public_key"`
		}
		_ = json.Unmarshal(authData, &ad)
		pk, _ := ad.PublicKey.(string)
		if b, err := decodeBase64(pk); err != nil || len(b) != 32 {
			return mxerr.InvalidParam("auth_data.public_key must be a Curve25519 public key")
		}
	}
	return nil
}

func versionInfo(b storage.BackupVersion) *BackupVersionInfo {
	return &BackupVersionInfo{Algorithm: b.Algorithm, AuthData: json.RawMessage(b.AuthData), Count: b.Count,
		ETag: strconv.FormatInt(b.ETag, 10), Version: strconv.FormatInt(b.Version, 10)}
}

func (e *Engine) lockBackups(ctx context.Context, tx *storage.Tx, userID string) error {
	return e.store.KeysLock(ctx, tx, "backup|"+userID)
}

// CreateBackupVersion starts a new backup version, which becomes the one
// keys are written to, and returns its version.
func (e *Engine) CreateBackupVersion(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error) {
	if err := checkAuthData(algorithm, authData); err != nil {
		return "", err
	}
	var v int64
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.lockBackups(ctx, tx, userID); err != nil {
			return err
		}
		var err error
		v, err = e.store.BackupVersionCreate(ctx, tx, userID, algorithm, string(authData), e.nowMS())
		return err
	})
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(v, 10), nil
}

// BackupVersion describes a backup version, or the current one when
// version is "".
func (e *Engine) BackupVersion(ctx context.Context, userID, version string) (*BackupVersionInfo, error) {
	if version == "" {
		b, err := e.store.BackupVersionLatest(ctx, e.db.Read(), userID)
		if err != nil {
			return nil, notFoundAs(err, mxerr.NotFound("No current backup version"))
		}
		return versionInfo(b), nil
	}
	b, err := e.liveVersion(ctx, e.db.Read(), userID, version)
	if err != nil {
		return nil, err
	}
	return versionInfo(b), nil
}

// liveVersion returns a version that exists and is not deleted.
func (e *Engine) liveVersion(ctx context.Context, q storage.Querier, userID, version string) (storage.BackupVersion, error) {
	v, ok := parseVersion(version)
	if !ok {
		return storage.BackupVersion{}, errUnknownVersion
	}
	b, err := e.store.BackupVersionGet(ctx, q, userID, v)
	if err != nil {
		return b, notFoundAs(err, errUnknownVersion)
	}
	if b.Deleted {
		return b, errUnknownVersion
	}
	return b, nil
}

// UpdateBackupVersion replaces a version's auth_data; the algorithm must
// stay the same, and bodyVersion, when given, must name the same version.
func (e *Engine) UpdateBackupVersion(ctx context.Context, userID, version, algorithm string, authData json.RawMessage, bodyVersion string) error {
	if bodyVersion != "" && bodyVersion != version {
		return mxerr.InvalidParam("The version in the body does not match the path")
	}
	if err := checkAuthData(algorithm, authData); err != nil {
		return err
	}
	return e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.lockBackups(ctx, tx, userID); err != nil {
			return err
		}
		b, err := e.liveVersion(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		if b.Algorithm != algorithm {
			return mxerr.InvalidParam("Algorithm does not match the backup's")
		}
		return e.store.BackupVersionUpdate(ctx, tx, userID, b.Version, string(authData))
	})
}

// DeleteBackupVersion deletes a version and its keys. Deleting a deleted
// version succeeds; a version that never existed is M_NOT_FOUND.
func (e *Engine) DeleteBackupVersion(ctx context.Context, userID, version string) error {
	v, ok := parseVersion(version)
	if !ok {
		return errUnknownVersion
	}
	return e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.lockBackups(ctx, tx, userID); err != nil {
			return err
		}
		b, err := e.store.BackupVersionGet(ctx, tx, userID, v)
		if err != nil {
			return notFoundAs(err, errUnknownVersion)
		}
		if b.Deleted {
			return nil
		}
		return e.store.BackupVersionDelete(ctx, tx, userID, v)
	})
}

// betterBackupKey reports whether cand should replace cur, by the spec's
// rules: a verified key wins, then the lower first_message_index, then the
// lower forwarded_count; on a tie the stored key stays.
func betterBackupKey(cur, cand storage.BackupKey) bool {
	if cur.IsVerified != cand.IsVerified {
		return cand.IsVerified
	}
	if cur.FirstMessageIndex != cand.FirstMessageIndex {
		return cand.FirstMessageIndex < cur.FirstMessageIndex
	}
	return cand.ForwardedCount < cur.ForwardedCount
}

func validRoomID(s string) bool { return strings.HasPrefix(s, "!") && validID(s) }

// checkBackupKeys validates uploaded session keys.
func checkBackupKeys(rooms map[string]RoomBackupUpload) ([]storage.BackupKey, error) {
	var out []storage.BackupKey
	for _, roomID := range sortedKeys(rooms) {
		if !validRoomID(roomID) {
			return nil, mxerr.InvalidParam("%q is not a room ID", roomID)
		}
		sessions := rooms[roomID].Sessions
		if sessions == nil {
			return nil, mxerr.MissingParam("sessions is required for %s", roomID)
		}
		for _, sid := range sortedKeys(sessions) {
			s := sessions[sid]
			if !validID(sid) {
				return nil, mxerr.InvalidParam("%q is not a session ID", sid)
			}
			if s.FirstMessageIndex == nil || s.ForwardedCount == nil || s.IsVerified == nil || s.SessionData == nil {
				return nil, mxerr.BadJSON("Session %s needs first_message_index, forwarded_count, is_verified and session_data", sid)
			}
			if *s.FirstMessageIndex < 0 || *s.ForwardedCount < 0 {
				return nil, mxerr.InvalidParam("Session %s: first_message_index and forwarded_count cannot be negative", sid)
			}
			if len(s.SessionData) > MaxBlobBytes {
				return nil, mxerr.TooLarge("Session %s: session_data is larger than %d bytes", sid, MaxBlobBytes)
			}
			if !isObject(s.SessionData) {
				return nil, mxerr.BadJSON("Session %s: session_data must be a JSON object", sid)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, s.SessionData); err != nil {
				return nil, mxerr.BadJSON("Session %s: session_data is not JSON", sid)
			}
			out = append(out, storage.BackupKey{RoomID: roomID, SessionID: sid, FirstMessageIndex: *s.FirstMessageIndex,
				ForwardedCount: *s.ForwardedCount, IsVerified: *s.IsVerified, SessionData: compact.String()})
		}
	}
	return out, nil
}

// PutBackupKeys stores session keys in the current backup version, each
// replacing a stored key of the same session only if it is better (see
// betterBackupKey). Writing to another version is
// M_WRONG_ROOM_KEYS_VERSION with the current version.
func (e *Engine) PutBackupKeys(ctx context.Context, userID, version string, rooms map[string]RoomBackupUpload) (BackupCounters, error) {
	keys, err := checkBackupKeys(rooms)
	if err != nil {
		return BackupCounters{}, err
	}
	var out BackupCounters
	err = e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.lockBackups(ctx, tx, userID); err != nil {
			return err
		}
		cur, err := e.store.BackupVersionLatest(ctx, tx, userID)
		if errors.Is(err, storage.ErrNotFound) {
			return errUnknownVersion
		}
		if err != nil {
			return err
		}
		if v, ok := parseVersion(version); !ok || v != cur.Version {
			current := strconv.FormatInt(cur.Version, 10)
			return mxerr.Custom(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version; the current one is %s", current).
				With("current_version", current)
		}
		changed := false
		count := cur.Count
		for _, k := range keys {
			old, err := e.store.BackupKeyGet(ctx, tx, userID, cur.Version, k.RoomID, k.SessionID)
			switch {
			case errors.Is(err, storage.ErrNotFound):
				count++
			case err != nil:
				return err
			case !betterBackupKey(old, k):
				continue
			}
			if err := e.store.BackupKeyPut(ctx, tx, userID, cur.Version, k); err != nil {
				return err
			}
			changed = true
		}
		if count > e.cfg.MaxBackupKeys {
			return mxerr.TooLarge("A backup holds at most %d keys", e.cfg.MaxBackupKeys)
		}
		etag := cur.ETag
		if changed {
			etag++
			if err := e.store.BackupVersionSetCounters(ctx, tx, userID, cur.Version, etag, count); err != nil {
				return err
			}
		}
		out = BackupCounters{ETag: strconv.FormatInt(etag, 10), Count: count}
		return nil
	})
	return out, err
}

// BackupKeys returns a version's keys by room and session: all of them
// (roomID ""), one room's (sessionID "") or one session's.
func (e *Engine) BackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (map[string]map[string]BackupSession, error) {
	b, err := e.liveVersion(ctx, e.db.Read(), userID, version)
	if err != nil {
		return nil, err
	}
	keys, err := e.store.BackupKeysList(ctx, userID, b.Version, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]BackupSession{}
	for _, k := range keys {
		if out[k.RoomID] == nil {
			out[k.RoomID] = map[string]BackupSession{}
		}
		out[k.RoomID][k.SessionID] = BackupSession{FirstMessageIndex: k.FirstMessageIndex, ForwardedCount: k.ForwardedCount,
			IsVerified: k.IsVerified, SessionData: json.RawMessage(k.SessionData)}
	}
	if sessionID != "" && len(out) == 0 {
		return nil, mxerr.NotFound("Key not found")
	}
	return out, nil
}

// DeleteBackupKeys deletes a version's keys in the same scopes as
// BackupKeys.
func (e *Engine) DeleteBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (BackupCounters, error) {
	var out BackupCounters
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.lockBackups(ctx, tx, userID); err != nil {
			return err
		}
		b, err := e.liveVersion(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		n, err := e.store.BackupKeysDelete(ctx, tx, userID, b.Version, roomID, sessionID)
		if err != nil {
			return err
		}
		etag, count := b.ETag, b.Count
		if n > 0 {
			etag, count = etag+1, max(0, count-n)
			if err := e.store.BackupVersionSetCounters(ctx, tx, userID, b.Version, etag, count); err != nil {
				return err
			}
		}
		out = BackupCounters{ETag: strconv.FormatInt(etag, 10), Count: count}
		return nil
	})
	return out, err
}
