package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Accounts stores users, devices, tokens, profiles, account data and
// filters.
type Accounts struct{ db *DB }

// Accounts returns the accounts store.
func (db *DB) Accounts() *Accounts { return &Accounts{db: db} }

// User is a local account.
type User struct {
	UserID       string
	PasswordHash string // empty: no password
	IsAdmin      bool
	IsGuest      bool
	Deactivated  bool
	CreatedTS    int64
}

// UserCreate inserts a user; ErrConflict if the ID is taken.
func (a *Accounts) UserCreate(ctx context.Context, q Querier, u User) error {
	var hash *string
	if u.PasswordHash != "" {
		hash = &u.PasswordHash
	}
	_, err := q.Exec(ctx, `INSERT INTO users (user_id, password_hash, is_admin, is_guest, created_ts) VALUES ($1, $2, $3, $4, $5)`,
		u.UserID, hash, u.IsAdmin, u.IsGuest, u.CreatedTS)
	if err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	return nil
}

// UserGet returns a user; ErrNotFound if there is none.
func (a *Accounts) UserGet(ctx context.Context, userID string) (User, error) {
	u := User{UserID: userID}
	var hash *string
	err := a.db.Read().QueryRow(ctx, `SELECT password_hash, is_admin, is_guest, deactivated, created_ts FROM users WHERE user_id = $1`, userID).
		Scan(&hash, &u.IsAdmin, &u.IsGuest, &u.Deactivated, &u.CreatedTS)
	if err != nil {
		return u, fmt.Errorf("get user: %w", err)
	}
	if hash != nil {
		u.PasswordHash = *hash
	}
	return u, nil
}

// UserSetPassword replaces a user's password hash.
func (a *Accounts) UserSetPassword(ctx context.Context, q Querier, userID, hash string) error {
	n, err := q.Exec(ctx, `UPDATE users SET password_hash = $2 WHERE user_id = $1`, userID, hash)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// UserSetAdmin grants or revokes server admin rights.
func (a *Accounts) UserSetAdmin(ctx context.Context, userID string, admin bool) error {
	n, err := a.db.Exec(ctx, `UPDATE users SET is_admin = $2 WHERE user_id = $1`, userID, admin)
	if err != nil {
		return fmt.Errorf("set admin: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// UserDeactivate marks a user deactivated, removes the password, every
// device and token, and (when erase is set) the profile.
func (a *Accounts) UserDeactivate(ctx context.Context, tx *Tx, userID string, erase bool) error {
	if _, err := tx.Exec(ctx, `UPDATE users SET deactivated = TRUE, password_hash = NULL WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("deactivate: %w", err)
	}
	if err := a.DevicesDelete(ctx, tx, userID, nil); err != nil {
		return err
	}
	if erase {
		if _, err := tx.Exec(ctx, `DELETE FROM profile_fields WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("erase profile: %w", err)
		}
	}
	return nil
}

// Device is one of a user's logged-in sessions.
type Device struct {
	UserID        string
	DeviceID      string
	DisplayName   *string
	CreatedTS     int64
	LastSeenTS    *int64
	LastSeenIP    *string
	LastSeenAgent *string
}

// DeviceUpsert creates a device or, when it exists, keeps it (updating
// the display name only if one is given).
func (a *Accounts) DeviceUpsert(ctx context.Context, q Querier, d Device) error {
	_, err := q.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (user_id, device_id) DO UPDATE SET
			display_name = COALESCE(excluded.display_name, devices.display_name),
			last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip,
			last_seen_user_agent = excluded.last_seen_user_agent`,
		d.UserID, d.DeviceID, d.DisplayName, d.CreatedTS, d.LastSeenTS, d.LastSeenIP, d.LastSeenAgent)
	if err != nil {
		return fmt.Errorf("upsert device: %w", err)
	}
	return nil
}

const deviceCols = `user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent`

func scanDevice(r Row) (Device, error) {
	var d Device
	err := r.Scan(&d.UserID, &d.DeviceID, &d.DisplayName, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP, &d.LastSeenAgent)
	return d, err
}

// DeviceGet returns one device; ErrNotFound if there is none.
func (a *Accounts) DeviceGet(ctx context.Context, userID, deviceID string) (Device, error) {
	d, err := scanDevice(a.db.Read().QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID))
	if err != nil {
		return d, fmt.Errorf("get device: %w", err)
	}
	return d, nil
}

// DeviceList returns a user's devices.
func (a *Accounts) DeviceList(ctx context.Context, userID string) ([]Device, error) {
	return a.DeviceListQ(ctx, a.db.Read(), userID)
}

// DeviceListQ returns a user's devices through q (a transaction that must
// see its own writes).
func (a *Accounts) DeviceListQ(ctx context.Context, q Querier, userID string) ([]Device, error) {
	rows, err := q.Query(ctx, `SELECT `+deviceCols+` FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// DeviceSetName sets a device's display name.
func (a *Accounts) DeviceSetName(ctx context.Context, userID, deviceID, name string) error {
	n, err := a.db.Exec(ctx, `UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, name)
	if err != nil {
		return fmt.Errorf("rename device: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeviceTouch records when and from where a device was last seen.
func (a *Accounts) DeviceTouch(ctx context.Context, userID, deviceID string, ts int64, ip, agent string) error {
	_, err := a.db.Exec(ctx, `UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4, last_seen_user_agent = $5 WHERE user_id = $1 AND device_id = $2`,
		userID, deviceID, ts, ip, agent)
	return err
}

// DevicesDelete removes devices (all of the user's when ids is nil) and
// every token bound to them.
func (a *Accounts) DevicesDelete(ctx context.Context, tx *Tx, userID string, ids []string) error {
	if ids == nil {
		for _, q := range []string{
			`DELETE FROM access_tokens WHERE user_id = $1`,
			`DELETE FROM refresh_tokens WHERE user_id = $1`,
			`DELETE FROM devices WHERE user_id = $1`,
		} {
			if _, err := tx.Exec(ctx, q, userID); err != nil {
				return fmt.Errorf("delete devices: %w", err)
			}
		}
		return nil
	}
	for _, id := range ids {
		for _, q := range []string{
			`DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM devices WHERE user_id = $1 AND device_id = $2`,
		} {
			if _, err := tx.Exec(ctx, q, userID, id); err != nil {
				return fmt.Errorf("delete device: %w", err)
			}
		}
	}
	return nil
}

// TokenHash is how tokens are stored: their SHA-256.
func TokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// AccessToken is a stored access token.
type AccessToken struct {
	Hash        []byte
	UserID      string
	DeviceID    string
	CreatedTS   int64
	ExpiresTS   *int64
	RefreshHash []byte
}

// AccessTokenCreate stores an access token.
func (a *Accounts) AccessTokenCreate(ctx context.Context, q Querier, t AccessToken) error {
	_, err := q.Exec(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_hash) VALUES ($1, $2, $3, $4, $5, $6)`,
		t.Hash, t.UserID, t.DeviceID, t.CreatedTS, t.ExpiresTS, t.RefreshHash)
	if err != nil {
		return fmt.Errorf("create access token: %w", err)
	}
	return nil
}

// TokenOwner is who an access token authenticates.
type TokenOwner struct {
	UserID      string
	DeviceID    string
	ExpiresTS   *int64
	Used        bool
	IsAdmin     bool
	IsGuest     bool
	Deactivated bool
}

// AccessTokenLookup finds the owner of a token hash; ErrNotFound if none.
func (a *Accounts) AccessTokenLookup(ctx context.Context, hash []byte) (TokenOwner, error) {
	var o TokenOwner
	err := a.db.Read().QueryRow(ctx, `SELECT t.user_id, t.device_id, t.expires_ts, t.used, u.is_admin, u.is_guest, u.deactivated
		FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = $1`, hash).
		Scan(&o.UserID, &o.DeviceID, &o.ExpiresTS, &o.Used, &o.IsAdmin, &o.IsGuest, &o.Deactivated)
	if err != nil {
		return o, fmt.Errorf("lookup token: %w", err)
	}
	return o, nil
}

// AccessTokenMarkUsed records a token's first use. If it came from a
// refresh, the refresh token it replaced, and that token's access tokens,
// are retired now: the client evidently received its new tokens.
func (a *Accounts) AccessTokenMarkUsed(ctx context.Context, hash []byte) error {
	return a.db.Write(ctx, func(tx *Tx) error {
		var refresh []byte
		err := tx.QueryRow(ctx, `UPDATE access_tokens SET used = TRUE WHERE token_hash = $1 AND NOT used RETURNING refresh_hash`, hash).Scan(&refresh)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("mark token used: %w", err)
		}
		if refresh == nil {
			return nil
		}
		return retireParent(ctx, tx, refresh)
	})
}

// retireParent deletes the refresh token that was exchanged for child,
// with its access tokens.
func retireParent(ctx context.Context, tx *Tx, child []byte) error {
	rows, err := tx.Query(ctx, `SELECT token_hash FROM refresh_tokens WHERE next_hash = $1`, child)
	if err != nil {
		return fmt.Errorf("find parent refresh token: %w", err)
	}
	var parents [][]byte
	for rows.Next() {
		var p []byte
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return err
		}
		parents = append(parents, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, p := range parents {
		if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE refresh_hash = $1`, p); err != nil {
			return fmt.Errorf("retire old access token: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE token_hash = $1`, p); err != nil {
			return fmt.Errorf("retire old refresh token: %w", err)
		}
	}
	return nil
}

// AccessTokenDelete removes one token.
func (a *Accounts) AccessTokenDelete(ctx context.Context, q Querier, hash []byte) error {
	_, err := q.Exec(ctx, `DELETE FROM access_tokens WHERE token_hash = $1`, hash)
	return err
}

// TokenHashesForDevices lists the access token hashes of devices (all of
// the user's when ids is nil), so that caches can drop them.
func (a *Accounts) TokenHashesForDevices(ctx context.Context, q Querier, userID string, ids []string) ([][]byte, error) {
	var out [][]byte
	collect := func(rows Rows, err error) error {
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var h []byte
			if err := rows.Scan(&h); err != nil {
				return err
			}
			out = append(out, h)
		}
		return rows.Err()
	}
	if ids == nil {
		if err := collect(q.Query(ctx, `SELECT token_hash FROM access_tokens WHERE user_id = $1`, userID)); err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		return out, nil
	}
	for _, id := range ids {
		if err := collect(q.Query(ctx, `SELECT token_hash FROM access_tokens WHERE user_id = $1 AND device_id = $2`, userID, id)); err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
	}
	return out, nil
}

// RefreshTokenCreate stores a refresh token.
func (a *Accounts) RefreshTokenCreate(ctx context.Context, q Querier, hash []byte, userID, deviceID string, now int64) error {
	_, err := q.Exec(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)`, hash, userID, deviceID, now)
	if err != nil {
		return fmt.Errorf("create refresh token: %w", err)
	}
	return nil
}

// RefreshToken is a stored refresh token.
type RefreshToken struct {
	UserID, DeviceID string
	Next             []byte
}

// RefreshTokenGet returns a refresh token for update; ErrNotFound if none.
func (a *Accounts) RefreshTokenGet(ctx context.Context, q Querier, hash []byte) (RefreshToken, error) {
	var r RefreshToken
	err := q.QueryRow(ctx, `SELECT user_id, device_id, next_hash FROM refresh_tokens WHERE token_hash = $1`, hash).Scan(&r.UserID, &r.DeviceID, &r.Next)
	if err != nil {
		return r, fmt.Errorf("get refresh token: %w", err)
	}
	return r, nil
}

// RefreshTokenExchange records that old was exchanged for next. A
// previous, never-used successor of old (a retried refresh) is discarded.
func (a *Accounts) RefreshTokenExchange(ctx context.Context, tx *Tx, old, next []byte) error {
	var prev []byte
	if err := tx.QueryRow(ctx, `SELECT next_hash FROM refresh_tokens WHERE token_hash = $1`, old).Scan(&prev); err != nil {
		return fmt.Errorf("exchange refresh token: %w", err)
	}
	if prev != nil {
		if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE refresh_hash = $1`, prev); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE token_hash = $1`, prev); err != nil {
			return err
		}
	}
	_, err := tx.Exec(ctx, `UPDATE refresh_tokens SET next_hash = $2 WHERE token_hash = $1`, old, next)
	return err
}

// RefreshTokenUsed retires the parent of a refresh token that is being
// used: the client has clearly stored it.
func (a *Accounts) RefreshTokenUsed(ctx context.Context, tx *Tx, hash []byte) error {
	return retireParent(ctx, tx, hash)
}

// LoginTokenCreate stores a single-use login token.
func (a *Accounts) LoginTokenCreate(ctx context.Context, hash []byte, userID string, expires int64) error {
	_, err := a.db.Exec(ctx, `INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`, hash, userID, expires)
	return err
}

// LoginTokenConsume deletes a login token and returns its user if it had
// not expired; ErrNotFound otherwise.
func (a *Accounts) LoginTokenConsume(ctx context.Context, hash []byte, now int64) (string, error) {
	var user string
	var exp int64
	err := a.db.QueryRowWrite(ctx, `DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts`, hash).Scan(&user, &exp)
	if err != nil {
		return "", err
	}
	if exp < now {
		return "", ErrNotFound
	}
	return user, nil
}

// UIASession is a user-interactive authentication session.
type UIASession struct {
	ID          string
	UserID      string
	Fingerprint string
	Completed   string // JSON array of stage types
	Data        string // JSON object of stage results
	CreatedTS   int64
}

// UIASessionCreate stores a new session.
func (a *Accounts) UIASessionCreate(ctx context.Context, s UIASession) error {
	_, err := a.db.Exec(ctx, `INSERT INTO uia_sessions (session_id, user_id, fingerprint, completed, data, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		s.ID, s.UserID, s.Fingerprint, s.Completed, s.Data, s.CreatedTS)
	return err
}

// UIASessionGet returns a session; ErrNotFound if none.
func (a *Accounts) UIASessionGet(ctx context.Context, id string) (UIASession, error) {
	s := UIASession{ID: id}
	err := a.db.Read().QueryRow(ctx, `SELECT user_id, fingerprint, completed, data, created_ts FROM uia_sessions WHERE session_id = $1`, id).
		Scan(&s.UserID, &s.Fingerprint, &s.Completed, &s.Data, &s.CreatedTS)
	return s, err
}

// UIASessionUpdate saves a session's progress.
func (a *Accounts) UIASessionUpdate(ctx context.Context, id, completed, data string) error {
	_, err := a.db.Exec(ctx, `UPDATE uia_sessions SET completed = $2, data = $3 WHERE session_id = $1`, id, completed, data)
	return err
}

// UIASessionDelete removes a finished session.
func (a *Accounts) UIASessionDelete(ctx context.Context, id string) error {
	_, err := a.db.Exec(ctx, `DELETE FROM uia_sessions WHERE session_id = $1`, id)
	return err
}

// ExpireOld deletes UIA sessions, login tokens, nonces and expired
// refresh-less access tokens older than their lifetimes.
func (a *Accounts) ExpireOld(ctx context.Context, now time.Time, uiaLifetime time.Duration) (int64, error) {
	var total int64
	ms := now.UnixMilli()
	for _, s := range []struct {
		q   string
		arg int64
	}{
		{`DELETE FROM uia_sessions WHERE created_ts < $1`, now.Add(-uiaLifetime).UnixMilli()},
		{`DELETE FROM login_tokens WHERE expires_ts < $1`, ms},
		{`DELETE FROM admin_nonces WHERE expires_ts < $1`, ms},
	} {
		n, err := a.db.Exec(ctx, s.q, s.arg)
		if err != nil {
			return total, fmt.Errorf("expire: %w", err)
		}
		total += n
	}
	return total, nil
}

// RegistrationToken is a token that allows registration.
type RegistrationToken struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

// Valid reports whether the token can still be used at now (ms).
func (t RegistrationToken) Valid(now int64) bool {
	if t.ExpiryTime != nil && *t.ExpiryTime <= now {
		return false
	}
	return t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed
}

const regTokenCols = `token, uses_allowed, pending, completed, expiry_time`

func scanRegToken(r Row) (RegistrationToken, error) {
	var t RegistrationToken
	err := r.Scan(&t.Token, &t.UsesAllowed, &t.Pending, &t.Completed, &t.ExpiryTime)
	return t, err
}

// RegTokenCreate stores a registration token; ErrConflict if it exists.
func (a *Accounts) RegTokenCreate(ctx context.Context, t RegistrationToken) error {
	_, err := a.db.Exec(ctx, `INSERT INTO registration_tokens (token, uses_allowed, expiry_time) VALUES ($1, $2, $3)`, t.Token, t.UsesAllowed, t.ExpiryTime)
	return err
}

// RegTokenGet returns a registration token; ErrNotFound if none.
func (a *Accounts) RegTokenGet(ctx context.Context, q Querier, token string) (RegistrationToken, error) {
	return scanRegToken(q.QueryRow(ctx, `SELECT `+regTokenCols+` FROM registration_tokens WHERE token = $1`, token))
}

// RegTokenList returns every registration token.
func (a *Accounts) RegTokenList(ctx context.Context) ([]RegistrationToken, error) {
	rows, err := a.db.Read().Query(ctx, `SELECT `+regTokenCols+` FROM registration_tokens ORDER BY token`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RegistrationToken
	for rows.Next() {
		t, err := scanRegToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RegTokenUpdate changes a token's limits.
func (a *Accounts) RegTokenUpdate(ctx context.Context, t RegistrationToken) error {
	n, err := a.db.Exec(ctx, `UPDATE registration_tokens SET uses_allowed = $2, expiry_time = $3 WHERE token = $1`, t.Token, t.UsesAllowed, t.ExpiryTime)
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// RegTokenDelete removes a token.
func (a *Accounts) RegTokenDelete(ctx context.Context, token string) error {
	n, err := a.db.Exec(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// RegTokenReserve counts a pending use of the token if it is still valid;
// false if it is not.
func (a *Accounts) RegTokenReserve(ctx context.Context, token string, now int64) (bool, error) {
	ok := false
	err := a.db.Write(ctx, func(tx *Tx) error {
		t, err := a.RegTokenGet(ctx, tx, token)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if !t.Valid(now) {
			return nil
		}
		ok = true
		_, err = tx.Exec(ctx, `UPDATE registration_tokens SET pending = pending + 1 WHERE token = $1`, token)
		return err
	})
	return ok, err
}

// RegTokenComplete turns a pending use into a completed one.
func (a *Accounts) RegTokenComplete(ctx context.Context, tx *Tx, token string) error {
	_, err := tx.Exec(ctx, `UPDATE registration_tokens SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END, completed = completed + 1 WHERE token = $1`, token)
	return err
}

// ProfileGet returns every profile field of a user (JSON values).
func (a *Accounts) ProfileGet(ctx context.Context, userID string) (map[string]string, error) {
	rows, err := a.db.Read().Query(ctx, `SELECT field, value FROM profile_fields WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("get profile: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, rows.Err()
}

// ProfileSet sets one field (JSON value), or deletes it when value is "".
func (a *Accounts) ProfileSet(ctx context.Context, q Querier, userID, field, value string) error {
	var err error
	if value == "" {
		_, err = q.Exec(ctx, `DELETE FROM profile_fields WHERE user_id = $1 AND field = $2`, userID, field)
	} else {
		_, err = q.Exec(ctx, `INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value`, userID, field, value)
	}
	if err != nil {
		return fmt.Errorf("set profile field: %w", err)
	}
	return nil
}

// AccountDataStream names the account data stream.
const AccountDataStream = "account_data"

// AccountData is one account data entry.
type AccountData struct {
	RoomID    string
	Type      string
	Content   string
	StreamPos int64
}

// AccountDataSet stores an entry and returns its stream position.
func (a *Accounts) AccountDataSet(ctx context.Context, tx *Tx, userID, roomID, typ, content string) (int64, error) {
	pos, err := tx.NextStreamPos(ctx, AccountDataStream, 1)
	if err != nil {
		return 0, err
	}
	_, err = tx.Exec(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		userID, roomID, typ, content, pos)
	if err != nil {
		return 0, fmt.Errorf("set account data: %w", err)
	}
	return pos, nil
}

// AccountDataGet returns one entry's content; ErrNotFound if none.
func (a *Accounts) AccountDataGet(ctx context.Context, userID, roomID, typ string) (string, error) {
	var c string
	err := a.db.Read().QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`, userID, roomID, typ).Scan(&c)
	return c, err
}

// AccountDataSince returns a user's entries with from < position ≤ to.
func (a *Accounts) AccountDataSince(ctx context.Context, userID string, from, to int64) ([]AccountData, error) {
	rows, err := a.db.Read().Query(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, from, to)
	if err != nil {
		return nil, fmt.Errorf("account data since: %w", err)
	}
	defer rows.Close()
	var out []AccountData
	for rows.Next() {
		var d AccountData
		if err := rows.Scan(&d.RoomID, &d.Type, &d.Content, &d.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// FilterCreate stores a filter and returns its ID; storing the same filter
// twice returns the first ID.
func (a *Accounts) FilterCreate(ctx context.Context, userID, content string) (string, error) {
	sum := sha256.Sum256([]byte(content))
	hash := hex.EncodeToString(sum[:])
	var id int64
	err := a.db.Write(ctx, func(tx *Tx) error {
		err := tx.QueryRow(ctx, `SELECT id FROM filters WHERE user_id = $1 AND content_hash = $2`, userID, hash).Scan(&id)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO filters (user_id, content_hash, content) VALUES ($1, $2, $3) RETURNING id`, userID, hash, content).Scan(&id)
	})
	if err != nil {
		return "", fmt.Errorf("create filter: %w", err)
	}
	return fmt.Sprint(id), nil
}

// FilterGet returns a user's filter; ErrNotFound if none.
func (a *Accounts) FilterGet(ctx context.Context, userID string, id int64) (string, error) {
	var c string
	err := a.db.Read().QueryRow(ctx, `SELECT content FROM filters WHERE user_id = $1 AND id = $2`, userID, id).Scan(&c)
	return c, err
}

// NonceCreate stores a shared-secret registration nonce.
func (a *Accounts) NonceCreate(ctx context.Context, nonce string, expires int64) error {
	_, err := a.db.Exec(ctx, `INSERT INTO admin_nonces (nonce, expires_ts) VALUES ($1, $2)`, nonce, expires)
	return err
}

// NonceConsume deletes a nonce, reporting whether it existed unexpired.
func (a *Accounts) NonceConsume(ctx context.Context, nonce string, now int64) (bool, error) {
	var exp int64
	err := a.db.QueryRowWrite(ctx, `DELETE FROM admin_nonces WHERE nonce = $1 RETURNING expires_ts`, nonce).Scan(&exp)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return exp >= now, nil
}

// NextGuestNumber hands out the numeric localparts of guest accounts.
func (a *Accounts) NextGuestNumber(ctx context.Context) (int64, error) {
	var n int64
	err := a.db.Write(ctx, func(tx *Tx) error {
		var err error
		n, err = tx.NextStreamPos(ctx, "guest_numbers", 1)
		return err
	})
	return n, err
}

// DirectoryUser is a user directory search result.
type DirectoryUser struct {
	UserID      string
	DisplayName *string // JSON string
	AvatarURL   *string // JSON string
}

// SearchUsers finds active users whose ID or display name contains term
// (lower-cased) and who share a room with searcher or are joined to a
// published room. It returns up to limit results.
func (a *Accounts) SearchUsers(ctx context.Context, searcher, term string, limit int) ([]DirectoryUser, error) {
	pattern := "%" + escapeLike(term) + "%"
	rows, err := a.db.Read().Query(ctx, `SELECT u.user_id, dn.value, av.value FROM users u
		LEFT JOIN profile_fields dn ON dn.user_id = u.user_id AND dn.field = 'displayname'
		LEFT JOIN profile_fields av ON av.user_id = u.user_id AND av.field = 'avatar_url'
		WHERE NOT u.deactivated AND NOT u.is_guest
		AND (LOWER(u.user_id) LIKE $1 ESCAPE '\' OR LOWER(COALESCE(dn.value, '')) LIKE $1 ESCAPE '\')
		AND (u.user_id = $2
			OR EXISTS (SELECT 1 FROM current_state m JOIN current_state o ON o.room_nid = m.room_nid
				WHERE m.type = 'm.room.member' AND m.state_key = $2 AND m.membership = 'join'
				AND o.type = 'm.room.member' AND o.state_key = u.user_id AND o.membership = 'join')
			OR EXISTS (SELECT 1 FROM current_state o JOIN rooms r ON r.room_nid = o.room_nid
				WHERE r.published AND o.type = 'm.room.member' AND o.state_key = u.user_id AND o.membership = 'join'))
		ORDER BY u.user_id LIMIT $3`, pattern, searcher, limit)
	if err != nil {
		return nil, fmt.Errorf("search users: %w", err)
	}
	defer rows.Close()
	var out []DirectoryUser
	for rows.Next() {
		var d DirectoryUser
		if err := rows.Scan(&d.UserID, &d.DisplayName, &d.AvatarURL); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func escapeLike(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(strings.ToLower(s))
}
