package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// Stream names of the end-to-end encryption engine.
const (
	ToDeviceStream    = "to_device"
	DeviceListsStream = "device_lists"
)

// Keys stores what end-to-end encryption needs: device, one-time,
// fallback and cross-signing keys, signatures, device-list changes,
// to-device messages, key backups and dehydrated devices.
type Keys struct{ db *DB }

// Keys returns the end-to-end encryption store.
func (db *DB) Keys() *Keys { return &Keys{db: db} }

// keysLockClass is the first half of the two-key advisory locks this store
// takes on PostgreSQL; single-key advisory locks are a separate space.
const keysLockClass = 8200401

// KeysLock serialises, until tx ends, every transaction that locks the same
// name (a device, a user's backups). SQLite's single writer already does.
func (k *Keys) KeysLock(ctx context.Context, tx *Tx, name string) error {
	if tx.Dialect() != "postgres" {
		return nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, keysLockClass, name); err != nil {
		return fmt.Errorf("lock %s: %w", name, err)
	}
	return nil
}

// jsonList is a SQL subquery listing the strings of a JSON array passed as
// parameter $n, so that one statement serves any number of values.
func jsonList(q Querier, n int) string {
	if d, ok := q.(interface{ Dialect() string }); ok && d.Dialect() == "postgres" {
		return fmt.Sprintf(`SELECT jsonb_array_elements_text($%d::text::jsonb)`, n)
	}
	return fmt.Sprintf(`SELECT value FROM json_each($%d)`, n)
}

func jsonArray(values []string) string {
	if values == nil {
		values = []string{}
	}
	b, _ := json.Marshal(values)
	return string(b)
}

// readQuerier is the read pool with its dialect attached, for jsonList.
type readQuerier struct {
	Querier
	dialect string
}

func (r readQuerier) Dialect() string { return r.dialect }

func (k *Keys) read() readQuerier { return readQuerier{k.db.Read(), k.db.Dialect()} }

// DeviceKeys are a device's identity keys.
type DeviceKeys struct {
	UserID   string
	DeviceID string
	// KeyJSON is the device keys object carrying only the device's own
	// signature.
	KeyJSON string
	// Ed25519 is the device's signing key (unpadded base64).
	Ed25519   string
	CreatedTS int64
	// DisplayName is the device's name, filled in by DeviceKeysForUsers.
	DisplayName *string
}

// DeviceKeysGet returns one device's keys; ErrNotFound if none.
func (k *Keys) DeviceKeysGet(ctx context.Context, q Querier, userID, deviceID string) (DeviceKeys, error) {
	d := DeviceKeys{UserID: userID, DeviceID: deviceID}
	err := q.QueryRow(ctx, `SELECT key_json, ed25519, created_ts FROM e2ee_device_keys WHERE user_id = $1 AND device_id = $2`,
		userID, deviceID).Scan(&d.KeyJSON, &d.Ed25519, &d.CreatedTS)
	if err != nil {
		return d, fmt.Errorf("get device keys: %w", err)
	}
	return d, nil
}

// DeviceKeysPut stores or replaces a device's keys.
func (k *Keys) DeviceKeysPut(ctx context.Context, tx *Tx, d DeviceKeys) error {
	_, err := tx.Exec(ctx, `INSERT INTO e2ee_device_keys (user_id, device_id, key_json, ed25519, created_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, ed25519 = excluded.ed25519`,
		d.UserID, d.DeviceID, d.KeyJSON, d.Ed25519, d.CreatedTS)
	if err != nil {
		return fmt.Errorf("put device keys: %w", err)
	}
	return nil
}

// DeviceKeysForUsers returns the keys of every device of the given users
// that has uploaded keys, with the devices' display names.
func (k *Keys) DeviceKeysForUsers(ctx context.Context, userIDs []string) ([]DeviceKeys, error) {
	q := k.read()
	rows, err := q.Query(ctx, `SELECT k.user_id, k.device_id, k.key_json, k.ed25519, k.created_ts, d.display_name
		FROM e2ee_device_keys k LEFT JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
		WHERE k.user_id IN (`+jsonList(q, 1)+`) ORDER BY k.user_id, k.device_id`, jsonArray(userIDs))
	if err != nil {
		return nil, fmt.Errorf("list device keys: %w", err)
	}
	defer rows.Close()
	var out []DeviceKeys
	for rows.Next() {
		var d DeviceKeys
		if err := rows.Scan(&d.UserID, &d.DeviceID, &d.KeyJSON, &d.Ed25519, &d.CreatedTS, &d.DisplayName); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// UserDeviceIDs lists a user's devices (the accounts table), whether or
// not they have keys.
func (k *Keys) UserDeviceIDs(ctx context.Context, q Querier, userID string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// DeviceExists reports whether a user has a device with that ID.
func (k *Keys) DeviceExists(ctx context.Context, q Querier, userID, deviceID string) (bool, error) {
	var one int
	err := q.QueryRow(ctx, `SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&one)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find device: %w", err)
	}
	return true, nil
}

// OneTimeKeyAdd stores a one-time key. When the device already holds a key
// with that ID, nothing is stored and its JSON is returned instead.
func (k *Keys) OneTimeKeyAdd(ctx context.Context, tx *Tx, userID, deviceID, algorithm, keyID, keyJSON string) (existing string, added bool, err error) {
	n, err := tx.Exec(ctx, `INSERT INTO e2ee_one_time_keys (user_id, device_id, algorithm, key_id, key_json) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING`, userID, deviceID, algorithm, keyID, keyJSON)
	if err != nil {
		return "", false, fmt.Errorf("add one-time key: %w", err)
	}
	if n == 1 {
		return "", true, nil
	}
	err = tx.QueryRow(ctx, `SELECT key_json FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
		userID, deviceID, algorithm, keyID).Scan(&existing)
	if err != nil {
		return "", false, fmt.Errorf("read one-time key: %w", err)
	}
	return existing, false, nil
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys per algorithm.
func (k *Keys) OneTimeKeyCounts(ctx context.Context, q Querier, userID, deviceID string) (map[string]int, error) {
	rows, err := q.Query(ctx, `SELECT algorithm, COUNT(*) FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`,
		userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("count one-time keys: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		out[alg] = n
	}
	return out, rows.Err()
}

// OneTimeKeyClaim removes and returns the oldest one-time key of a device
// for an algorithm; ErrNotFound if none is left. Concurrent claims never
// return the same key: on PostgreSQL a claim skips keys that another
// transaction is claiming, on SQLite the single writer serialises them.
func (k *Keys) OneTimeKeyClaim(ctx context.Context, tx *Tx, userID, deviceID, algorithm string) (keyID, keyJSON string, err error) {
	lock := ""
	if tx.Dialect() == "postgres" {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	err = tx.QueryRow(ctx, `DELETE FROM e2ee_one_time_keys WHERE id = (
			SELECT id FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY id LIMIT 1`+lock+`)
		RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&keyID, &keyJSON)
	if err != nil {
		return "", "", fmt.Errorf("claim one-time key: %w", err)
	}
	return keyID, keyJSON, nil
}

// FallbackKeyPut stores a device's fallback key for an algorithm, replacing
// the previous one. Uploading the same key again keeps its used flag.
func (k *Keys) FallbackKeyPut(ctx context.Context, tx *Tx, userID, deviceID, algorithm, keyID, keyJSON string) error {
	_, err := tx.Exec(ctx, `INSERT INTO e2ee_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, FALSE)
		ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
			used = CASE WHEN e2ee_fallback_keys.key_id = excluded.key_id AND e2ee_fallback_keys.key_json = excluded.key_json
				THEN e2ee_fallback_keys.used ELSE FALSE END,
			key_id = excluded.key_id, key_json = excluded.key_json`,
		userID, deviceID, algorithm, keyID, keyJSON)
	if err != nil {
		return fmt.Errorf("put fallback key: %w", err)
	}
	return nil
}

// FallbackKeyClaim returns a device's fallback key for an algorithm and
// marks it used; ErrNotFound if there is none.
func (k *Keys) FallbackKeyClaim(ctx context.Context, tx *Tx, userID, deviceID, algorithm string) (keyID, keyJSON string, err error) {
	err = tx.QueryRow(ctx, `UPDATE e2ee_fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
		RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&keyID, &keyJSON)
	if err != nil {
		return "", "", fmt.Errorf("claim fallback key: %w", err)
	}
	return keyID, keyJSON, nil
}

// KeyCounts returns OneTimeKeyCounts and the algorithms of the device's
// fallback keys that no claim has handed out yet, in one query: every
// sync response carries both.
func (k *Keys) KeyCounts(ctx context.Context, q Querier, userID, deviceID string) (map[string]int, []string, error) {
	rows, err := q.Query(ctx, `SELECT algorithm, COUNT(*), 0 FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL
		SELECT algorithm, 0, 1 FROM e2ee_fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used`, userID, deviceID)
	if err != nil {
		return nil, nil, fmt.Errorf("key counts: %w", err)
	}
	defer rows.Close()
	counts := map[string]int{}
	fallback := []string{}
	for rows.Next() {
		var alg string
		var n, fb int
		if err := rows.Scan(&alg, &n, &fb); err != nil {
			return nil, nil, fmt.Errorf("key counts: %w", err)
		}
		if fb == 1 {
			fallback = append(fallback, alg)
		} else {
			counts[alg] = n
		}
	}
	slices.Sort(fallback)
	return counts, fallback, rows.Err()
}

// CrossSigningKey is one of a user's cross-signing keys.
type CrossSigningKey struct {
	UserID string
	// Type is master, self_signing or user_signing.
	Type      string
	PublicKey string
	KeyJSON   string
	UpdatedTS int64
}

// CrossSigningKeysGet returns a user's cross-signing keys by type.
func (k *Keys) CrossSigningKeysGet(ctx context.Context, q Querier, userID string) (map[string]CrossSigningKey, error) {
	rows, err := q.Query(ctx, `SELECT user_id, key_type, public_key, key_json, updated_ts FROM e2ee_cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("get cross-signing keys: %w", err)
	}
	out := map[string]CrossSigningKey{}
	list, err := scanCrossSigning(rows)
	for _, c := range list {
		out[c.Type] = c
	}
	return out, err
}

// CrossSigningKeysForUsers returns the cross-signing keys of several users.
func (k *Keys) CrossSigningKeysForUsers(ctx context.Context, userIDs []string) ([]CrossSigningKey, error) {
	q := k.read()
	rows, err := q.Query(ctx, `SELECT user_id, key_type, public_key, key_json, updated_ts FROM e2ee_cross_signing_keys
		WHERE user_id IN (`+jsonList(q, 1)+`)`, jsonArray(userIDs))
	if err != nil {
		return nil, fmt.Errorf("list cross-signing keys: %w", err)
	}
	return scanCrossSigning(rows)
}

func scanCrossSigning(rows Rows) ([]CrossSigningKey, error) {
	defer rows.Close()
	var out []CrossSigningKey
	for rows.Next() {
		var c CrossSigningKey
		if err := rows.Scan(&c.UserID, &c.Type, &c.PublicKey, &c.KeyJSON, &c.UpdatedTS); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// CrossSigningKeyPut stores or replaces one cross-signing key.
func (k *Keys) CrossSigningKeyPut(ctx context.Context, tx *Tx, c CrossSigningKey) error {
	_, err := tx.Exec(ctx, `INSERT INTO e2ee_cross_signing_keys (user_id, key_type, public_key, key_json, updated_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json, updated_ts = excluded.updated_ts`,
		c.UserID, c.Type, c.PublicKey, c.KeyJSON, c.UpdatedTS)
	if err != nil {
		return fmt.Errorf("put cross-signing key: %w", err)
	}
	return nil
}

// CrossSigningKeyDelete removes one of a user's cross-signing keys.
func (k *Keys) CrossSigningKeyDelete(ctx context.Context, tx *Tx, userID, keyType string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM e2ee_cross_signing_keys WHERE user_id = $1 AND key_type = $2`, userID, keyType); err != nil {
		return fmt.Errorf("delete cross-signing key: %w", err)
	}
	return nil
}

// Signature is a signature stored apart from the key it signs.
type Signature struct {
	TargetUserID string
	// TargetKeyID is a device ID or a cross-signing public key.
	TargetKeyID  string
	SignerUserID string
	// SignerKeyID is "ed25519:" and a device ID or public key.
	SignerKeyID string
	Signature   string
}

// SignatureAdd stores (or replaces) a signature.
func (k *Keys) SignatureAdd(ctx context.Context, tx *Tx, s Signature) error {
	_, err := tx.Exec(ctx, `INSERT INTO e2ee_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = excluded.signature`,
		s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature)
	if err != nil {
		return fmt.Errorf("add signature: %w", err)
	}
	return nil
}

// SignaturesForUsers returns every stored signature of the given users'
// keys.
func (k *Keys) SignaturesForUsers(ctx context.Context, targetUserIDs []string) ([]Signature, error) {
	q := k.read()
	rows, err := q.Query(ctx, `SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature FROM e2ee_signatures
		WHERE target_user_id IN (`+jsonList(q, 1)+`)`, jsonArray(targetUserIDs))
	if err != nil {
		return nil, fmt.Errorf("list signatures: %w", err)
	}
	defer rows.Close()
	var out []Signature
	for rows.Next() {
		var s Signature
		if err := rows.Scan(&s.TargetUserID, &s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// SignaturesDeleteBySigner removes every signature a key made (the key was
// replaced).
func (k *Keys) SignaturesDeleteBySigner(ctx context.Context, tx *Tx, signerUserID, signerKeyID string) error {
	_, err := tx.Exec(ctx, `DELETE FROM e2ee_signatures WHERE signer_user_id = $1 AND signer_key_id = $2`, signerUserID, signerKeyID)
	if err != nil {
		return fmt.Errorf("delete signatures by signer: %w", err)
	}
	return nil
}

// SignaturesDeleteForTarget removes every signature of one key or device.
func (k *Keys) SignaturesDeleteForTarget(ctx context.Context, tx *Tx, targetUserID, targetKeyID string) error {
	_, err := tx.Exec(ctx, `DELETE FROM e2ee_signatures WHERE target_user_id = $1 AND target_key_id = $2`, targetUserID, targetKeyID)
	if err != nil {
		return fmt.Errorf("delete signatures of key: %w", err)
	}
	return nil
}

// DeviceListChange is a change of a user's devices or cross-signing keys.
type DeviceListChange struct {
	UserID string
	// OnlyFor, when set, is the only user who is told of the change.
	OnlyFor string
}

// DeviceListChangeAdd records a change on the device_lists stream and
// returns its position. onlyFor is "" when everyone who shares a room with
// the user may be told.
func (k *Keys) DeviceListChangeAdd(ctx context.Context, tx *Tx, userID, onlyFor string, ts int64) (int64, error) {
	pos, err := tx.NextStreamPos(ctx, DeviceListsStream, 1)
	if err != nil {
		return 0, err
	}
	var only *string
	if onlyFor != "" {
		only = &onlyFor
	}
	if _, err := tx.Exec(ctx, `INSERT INTO e2ee_device_list_changes (stream_pos, user_id, only_for, ts) VALUES ($1, $2, $3, $4)`,
		pos, userID, only, ts); err != nil {
		return 0, fmt.Errorf("record device list change: %w", err)
	}
	return pos, nil
}

// deviceListsHorizon names, in server_settings, the newest pruned
// device-list position.
const deviceListsHorizon = "e2ee_device_lists_horizon"

// DeviceListsPrune deletes device-list changes recorded before olderThan
// (ms) and moves the horizon up to the newest of them. It returns how
// many went.
func (k *Keys) DeviceListsPrune(ctx context.Context, olderThan int64) (int64, error) {
	var n int64
	err := k.db.Write(ctx, func(tx *Tx) error {
		var top *int64
		if err := tx.QueryRow(ctx, `SELECT MAX(stream_pos) FROM e2ee_device_list_changes WHERE ts < $1`, olderThan).Scan(&top); err != nil {
			return err
		}
		if top == nil {
			return nil
		}
		var err error
		if n, err = tx.Exec(ctx, `DELETE FROM e2ee_device_list_changes WHERE stream_pos <= $1`, *top); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO server_settings (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value`, deviceListsHorizon, strconv.FormatInt(*top, 10))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune device list changes: %w", err)
	}
	return n, nil
}

// DeviceListsHorizon returns the newest pruned device-list position (0:
// none): changes after a position before it are no longer all known.
func (k *Keys) DeviceListsHorizon(ctx context.Context) (int64, error) {
	var v string
	err := k.db.Read().QueryRow(ctx, `SELECT value FROM server_settings WHERE name = $1`, deviceListsHorizon).Scan(&v)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("device lists horizon: %w", err)
	}
	return strconv.ParseInt(v, 10, 64)
}

// DeviceListChangesBetween returns, once each, the changes with
// from < position ≤ to that viewer may be told of.
func (k *Keys) DeviceListChangesBetween(ctx context.Context, viewer string, from, to int64) ([]DeviceListChange, error) {
	rows, err := k.db.Read().Query(ctx, `SELECT DISTINCT user_id, COALESCE(only_for, '') FROM e2ee_device_list_changes
		WHERE stream_pos > $1 AND stream_pos <= $2 AND (only_for IS NULL OR only_for = $3)`, from, to, viewer)
	if err != nil {
		return nil, fmt.Errorf("device list changes: %w", err)
	}
	defer rows.Close()
	var out []DeviceListChange
	for rows.Next() {
		var c DeviceListChange
		if err := rows.Scan(&c.UserID, &c.OnlyFor); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ToDeviceMessage is a pending to-device message for a local device.
type ToDeviceMessage struct {
	Pos       int64
	UserID    string
	DeviceID  string
	Sender    string
	Type      string
	Content   string
	CreatedTS int64
}

// ToDeviceTxnAdd records that a sending device applied a transaction;
// false if it already had.
func (k *Keys) ToDeviceTxnAdd(ctx context.Context, tx *Tx, userID, deviceID, txnID string, now int64) (bool, error) {
	n, err := tx.Exec(ctx, `INSERT INTO e2ee_to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, device_id, txn_id) DO NOTHING`, userID, deviceID, txnID, now)
	if err != nil {
		return false, fmt.Errorf("record to-device transaction: %w", err)
	}
	return n == 1, nil
}

// ToDeviceTxnsPrune forgets transactions older than before (ms).
func (k *Keys) ToDeviceTxnsPrune(ctx context.Context, before int64) (int64, error) {
	n, err := k.db.Exec(ctx, `DELETE FROM e2ee_to_device_txns WHERE created_ts < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("prune to-device transactions: %w", err)
	}
	return n, nil
}

// ToDeviceAdd queues messages, giving them consecutive positions on the
// to_device stream in the order given, and returns them with their
// positions.
func (k *Keys) ToDeviceAdd(ctx context.Context, tx *Tx, msgs []ToDeviceMessage) ([]ToDeviceMessage, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	first, err := tx.NextStreamPos(ctx, ToDeviceStream, int64(len(msgs)))
	if err != nil {
		return nil, err
	}
	for i := range msgs {
		m := &msgs[i]
		m.Pos = first + int64(i)
		if _, err := tx.Exec(ctx, `INSERT INTO e2ee_to_device (stream_pos, user_id, device_id, sender, type, content, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, m.Pos, m.UserID, m.DeviceID, m.Sender, m.Type, m.Content, m.CreatedTS); err != nil {
			return nil, fmt.Errorf("queue to-device message: %w", err)
		}
	}
	return msgs, nil
}

// ToDeviceSince returns up to limit of a device's messages with
// since < position ≤ upTo, oldest first.
func (k *Keys) ToDeviceSince(ctx context.Context, userID, deviceID string, since, upTo int64, limit int) ([]ToDeviceMessage, error) {
	rows, err := k.db.Read().Query(ctx, `SELECT stream_pos, sender, type, content, created_ts FROM e2ee_to_device
		WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4 ORDER BY stream_pos LIMIT $5`,
		userID, deviceID, since, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("read to-device messages: %w", err)
	}
	defer rows.Close()
	var out []ToDeviceMessage
	for rows.Next() {
		m := ToDeviceMessage{UserID: userID, DeviceID: deviceID}
		if err := rows.Scan(&m.Pos, &m.Sender, &m.Type, &m.Content, &m.CreatedTS); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// ToDeviceAnyUpTo reports whether a device has messages with position
// ≤ upTo (a read, so that acknowledging nothing costs no write).
func (k *Keys) ToDeviceAnyUpTo(ctx context.Context, userID, deviceID string, upTo int64) (bool, error) {
	var one int
	err := k.db.Read().QueryRow(ctx, `SELECT 1 FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3 LIMIT 1`,
		userID, deviceID, upTo).Scan(&one)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find to-device messages: %w", err)
	}
	return true, nil
}

// ToDeviceDeleteUpTo deletes a device's messages with position ≤ upTo.
func (k *Keys) ToDeviceDeleteUpTo(ctx context.Context, userID, deviceID string, upTo int64) (int64, error) {
	n, err := k.db.Exec(ctx, `DELETE FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`, userID, deviceID, upTo)
	if err != nil {
		return 0, fmt.Errorf("delete to-device messages: %w", err)
	}
	return n, nil
}

// OutboxEntry is a to-device request waiting to be sent to another server.
type OutboxEntry struct {
	ID          int64
	Destination string
	Sender      string
	Type        string
	MessageID   string
	// Messages is the JSON map user ID → device ID → content.
	Messages  string
	CreatedTS int64
}

// ToDeviceOutboxAdd queues to-device messages for another server.
func (k *Keys) ToDeviceOutboxAdd(ctx context.Context, tx *Tx, e OutboxEntry) error {
	_, err := tx.Exec(ctx, `INSERT INTO e2ee_to_device_outbox (destination, sender, type, message_id, messages, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		e.Destination, e.Sender, e.Type, e.MessageID, e.Messages, e.CreatedTS)
	if err != nil {
		return fmt.Errorf("queue remote to-device messages: %w", err)
	}
	return nil
}

// ToDeviceOutboxList returns up to limit entries for a destination with
// an ID above after, oldest first.
func (k *Keys) ToDeviceOutboxList(ctx context.Context, destination string, after int64, limit int) ([]OutboxEntry, error) {
	rows, err := k.db.Read().Query(ctx, `SELECT id, sender, type, message_id, messages, created_ts FROM e2ee_to_device_outbox
		WHERE destination = $1 AND id > $2 ORDER BY id LIMIT $3`, destination, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read to-device outbox: %w", err)
	}
	defer rows.Close()
	var out []OutboxEntry
	for rows.Next() {
		e := OutboxEntry{Destination: destination}
		if err := rows.Scan(&e.ID, &e.Sender, &e.Type, &e.MessageID, &e.Messages, &e.CreatedTS); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ToDeviceOutboxDelete removes a destination's entries with ID ≤ upTo.
func (k *Keys) ToDeviceOutboxDelete(ctx context.Context, destination string, upTo int64) error {
	_, err := k.db.Exec(ctx, `DELETE FROM e2ee_to_device_outbox WHERE destination = $1 AND id <= $2`, destination, upTo)
	if err != nil {
		return fmt.Errorf("delete to-device outbox: %w", err)
	}
	return nil
}

// ToDeviceOutboxPrune drops entries older than before (ms).
func (k *Keys) ToDeviceOutboxPrune(ctx context.Context, before int64) (int64, error) {
	n, err := k.db.Exec(ctx, `DELETE FROM e2ee_to_device_outbox WHERE created_ts < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("prune to-device outbox: %w", err)
	}
	return n, nil
}

// BackupVersion is a key backup's metadata.
type BackupVersion struct {
	UserID    string
	Version   int64
	Algorithm string
	AuthData  string
	ETag      int64
	Count     int64
	Deleted   bool
}

const backupCols = `user_id, version, algorithm, auth_data, etag, key_count, deleted`

func scanBackup(r Row) (BackupVersion, error) {
	var b BackupVersion
	err := r.Scan(&b.UserID, &b.Version, &b.Algorithm, &b.AuthData, &b.ETag, &b.Count, &b.Deleted)
	return b, err
}

// BackupVersionCreate adds a backup version numbered above every earlier
// one of the user (deleted ones included) and returns its number. Callers
// hold the user's backup lock (KeysLock).
func (k *Keys) BackupVersionCreate(ctx context.Context, tx *Tx, userID, algorithm, authData string, now int64) (int64, error) {
	var last int64
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM e2ee_backup_versions WHERE user_id = $1`, userID).Scan(&last); err != nil {
		return 0, fmt.Errorf("next backup version: %w", err)
	}
	v := last + 1
	if _, err := tx.Exec(ctx, `INSERT INTO e2ee_backup_versions (user_id, version, algorithm, auth_data, created_ts) VALUES ($1, $2, $3, $4, $5)`,
		userID, v, algorithm, authData, now); err != nil {
		return 0, fmt.Errorf("create backup version: %w", err)
	}
	return v, nil
}

// BackupVersionGet returns a version, deleted or not; ErrNotFound if it
// never existed.
func (k *Keys) BackupVersionGet(ctx context.Context, q Querier, userID string, version int64) (BackupVersion, error) {
	b, err := scanBackup(q.QueryRow(ctx, `SELECT `+backupCols+` FROM e2ee_backup_versions WHERE user_id = $1 AND version = $2`, userID, version))
	if err != nil {
		return b, fmt.Errorf("get backup version: %w", err)
	}
	return b, nil
}

// BackupVersionLatest returns the newest version that is not deleted;
// ErrNotFound if none.
func (k *Keys) BackupVersionLatest(ctx context.Context, q Querier, userID string) (BackupVersion, error) {
	b, err := scanBackup(q.QueryRow(ctx, `SELECT `+backupCols+` FROM e2ee_backup_versions WHERE user_id = $1 AND NOT deleted
		ORDER BY version DESC LIMIT 1`, userID))
	if err != nil {
		return b, fmt.Errorf("latest backup version: %w", err)
	}
	return b, nil
}

// BackupVersionUpdate replaces a version's auth_data.
func (k *Keys) BackupVersionUpdate(ctx context.Context, tx *Tx, userID string, version int64, authData string) error {
	_, err := tx.Exec(ctx, `UPDATE e2ee_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2`, userID, version, authData)
	if err != nil {
		return fmt.Errorf("update backup version: %w", err)
	}
	return nil
}

// BackupVersionDelete deletes a version's keys and marks it deleted.
func (k *Keys) BackupVersionDelete(ctx context.Context, tx *Tx, userID string, version int64) error {
	if _, err := tx.Exec(ctx, `DELETE FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
		return fmt.Errorf("delete backup keys: %w", err)
	}
	_, err := tx.Exec(ctx, `UPDATE e2ee_backup_versions SET deleted = TRUE, key_count = 0, etag = etag + 1 WHERE user_id = $1 AND version = $2`,
		userID, version)
	if err != nil {
		return fmt.Errorf("delete backup version: %w", err)
	}
	return nil
}

// BackupVersionSetCounters stores a version's etag and key count.
func (k *Keys) BackupVersionSetCounters(ctx context.Context, tx *Tx, userID string, version, etag, count int64) error {
	_, err := tx.Exec(ctx, `UPDATE e2ee_backup_versions SET etag = $3, key_count = $4 WHERE user_id = $1 AND version = $2`,
		userID, version, etag, count)
	if err != nil {
		return fmt.Errorf("update backup counters: %w", err)
	}
	return nil
}

// BackupKey is one backed-up Megolm session key (encrypted by the client).
type BackupKey struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       string
}

const backupKeyCols = `room_id, session_id, first_message_index, forwarded_count, is_verified, session_data`

func scanBackupKeys(rows Rows) ([]BackupKey, error) {
	defer rows.Close()
	var out []BackupKey
	for rows.Next() {
		var b BackupKey
		if err := rows.Scan(&b.RoomID, &b.SessionID, &b.FirstMessageIndex, &b.ForwardedCount, &b.IsVerified, &b.SessionData); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// BackupKeyGet returns one stored session key; ErrNotFound if none.
func (k *Keys) BackupKeyGet(ctx context.Context, q Querier, userID string, version int64, roomID, sessionID string) (BackupKey, error) {
	rows, err := q.Query(ctx, `SELECT `+backupKeyCols+` FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`,
		userID, version, roomID, sessionID)
	if err != nil {
		return BackupKey{}, fmt.Errorf("get backup key: %w", err)
	}
	list, err := scanBackupKeys(rows)
	if err != nil {
		return BackupKey{}, err
	}
	if len(list) == 0 {
		return BackupKey{}, ErrNotFound
	}
	return list[0], nil
}

// BackupKeyPut stores or replaces a session key.
func (k *Keys) BackupKeyPut(ctx context.Context, tx *Tx, userID string, version int64, b BackupKey) error {
	_, err := tx.Exec(ctx, `INSERT INTO e2ee_backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
			forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
		userID, version, b.RoomID, b.SessionID, b.FirstMessageIndex, b.ForwardedCount, b.IsVerified, b.SessionData)
	if err != nil {
		return fmt.Errorf("put backup key: %w", err)
	}
	return nil
}

// BackupKeysList returns a version's keys: all of them (roomID ""), a
// room's (sessionID ""), or one session's.
func (k *Keys) BackupKeysList(ctx context.Context, userID string, version int64, roomID, sessionID string) ([]BackupKey, error) {
	var (
		rows Rows
		err  error
		q    = k.db.Read()
	)
	switch {
	case roomID == "":
		rows, err = q.Query(ctx, `SELECT `+backupKeyCols+` FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2 ORDER BY room_id, session_id`,
			userID, version)
	case sessionID == "":
		rows, err = q.Query(ctx, `SELECT `+backupKeyCols+` FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 ORDER BY session_id`,
			userID, version, roomID)
	default:
		rows, err = q.Query(ctx, `SELECT `+backupKeyCols+` FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`,
			userID, version, roomID, sessionID)
	}
	if err != nil {
		return nil, fmt.Errorf("list backup keys: %w", err)
	}
	return scanBackupKeys(rows)
}

// BackupKeysDelete deletes a version's keys in the same three scopes as
// BackupKeysList and returns how many went.
func (k *Keys) BackupKeysDelete(ctx context.Context, tx *Tx, userID string, version int64, roomID, sessionID string) (int64, error) {
	var (
		n   int64
		err error
	)
	switch {
	case roomID == "":
		n, err = tx.Exec(ctx, `DELETE FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2`, userID, version)
	case sessionID == "":
		n, err = tx.Exec(ctx, `DELETE FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3`, userID, version, roomID)
	default:
		n, err = tx.Exec(ctx, `DELETE FROM e2ee_backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`,
			userID, version, roomID, sessionID)
	}
	if err != nil {
		return 0, fmt.Errorf("delete backup keys: %w", err)
	}
	return n, nil
}

// DehydratedDevice is a user's dehydrated device (MSC3814).
type DehydratedDevice struct {
	UserID     string
	DeviceID   string
	DeviceData string
	CreatedTS  int64
}

// DehydratedDeviceGet returns a user's dehydrated device; ErrNotFound if none.
func (k *Keys) DehydratedDeviceGet(ctx context.Context, q Querier, userID string) (DehydratedDevice, error) {
	d := DehydratedDevice{UserID: userID}
	err := q.QueryRow(ctx, `SELECT device_id, device_data, created_ts FROM e2ee_dehydrated_devices WHERE user_id = $1`, userID).
		Scan(&d.DeviceID, &d.DeviceData, &d.CreatedTS)
	if err != nil {
		return d, fmt.Errorf("get dehydrated device: %w", err)
	}
	return d, nil
}

// DehydratedDevicePut stores a user's dehydrated device, replacing any.
func (k *Keys) DehydratedDevicePut(ctx context.Context, tx *Tx, d DehydratedDevice) error {
	_, err := tx.Exec(ctx, `INSERT INTO e2ee_dehydrated_devices (user_id, device_id, device_data, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data, created_ts = excluded.created_ts`,
		d.UserID, d.DeviceID, d.DeviceData, d.CreatedTS)
	if err != nil {
		return fmt.Errorf("put dehydrated device: %w", err)
	}
	return nil
}

// DevicesForget deletes everything end-to-end encryption holds for the
// devices: keys, pending messages, transactions, signatures of them, and
// the dehydrated-device record if one of them is it.
func (k *Keys) DevicesForget(ctx context.Context, tx *Tx, userID string, deviceIDs []string) error {
	for _, id := range deviceIDs {
		for _, q := range []string{
			`DELETE FROM e2ee_device_keys WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM e2ee_one_time_keys WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM e2ee_fallback_keys WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM e2ee_to_device WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM e2ee_to_device_txns WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM e2ee_signatures WHERE target_user_id = $1 AND target_key_id = $2`,
			`DELETE FROM e2ee_dehydrated_devices WHERE user_id = $1 AND device_id = $2`,
		} {
			if _, err := tx.Exec(ctx, q, userID, id); err != nil {
				return fmt.Errorf("forget device keys: %w", err)
			}
		}
		// Signatures the device made (of its user's master key).
		if err := k.SignaturesDeleteBySigner(ctx, tx, userID, "ed25519:"+id); err != nil {
			return err
		}
	}
	return nil
}

// UserKeysForget deletes a user's cross-signing keys, the signatures they
// made or received, their key backups and dehydrated-device record (the
// account is being deactivated).
func (k *Keys) UserKeysForget(ctx context.Context, tx *Tx, userID string) error {
	for _, q := range []string{
		`DELETE FROM e2ee_cross_signing_keys WHERE user_id = $1`,
		`DELETE FROM e2ee_signatures WHERE target_user_id = $1 OR signer_user_id = $1`,
		`DELETE FROM e2ee_backup_keys WHERE user_id = $1`,
		`UPDATE e2ee_backup_versions SET deleted = TRUE, key_count = 0, etag = etag + 1 WHERE user_id = $1`,
		`DELETE FROM e2ee_dehydrated_devices WHERE user_id = $1`,
	} {
		if _, err := tx.Exec(ctx, q, userID); err != nil {
			return fmt.Errorf("forget user keys: %w", err)
		}
	}
	return nil
}
