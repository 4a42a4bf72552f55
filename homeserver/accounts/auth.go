package accounts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// NewSessionParams describe the device a login or registration creates.
type NewSessionParams struct {
	// DeviceID reuses (or names) a device; empty makes a new one.
	DeviceID    string
	DisplayName string
	// Refresh issues a refresh token and an expiring access token.
	Refresh   bool
	IP, Agent string
}

// RegisterParams describe a new account.
type RegisterParams struct {
	Localpart string // empty: a guest, numbered
	Password  string
	Guest     bool
	Admin     bool
	// InhibitLogin creates the account without a device or token.
	InhibitLogin bool
	// RegistrationToken is counted as completed when set.
	RegistrationToken string
	Session           NewSessionParams
}

// Register creates an account and, unless inhibited, logs it in.
func (e *Engine) Register(ctx context.Context, p RegisterParams) (Session, error) {
	if p.Guest {
		n, err := e.store.NextGuestNumber(ctx)
		if err != nil {
			return Session{}, err
		}
		p.Localpart = fmt.Sprint(n)
	} else if err := e.ValidateLocalpart(p.Localpart); err != nil {
		return Session{}, err
	}
	var hash string
	if !p.Guest {
		if err := e.CheckPasswordStrength(p.Password); err != nil {
			return Session{}, err
		}
		var err error
		if hash, err = e.HashPassword(ctx, p.Password); err != nil {
			return Session{}, err
		}
	}
	userID := e.UserID(p.Localpart)
	var sess Session
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		err := e.store.UserCreate(ctx, tx, storage.User{
			UserID: userID, PasswordHash: hash, IsAdmin: p.Admin, IsGuest: p.Guest, CreatedTS: e.nowMS(),
		})
		if errors.Is(err, storage.ErrConflict) {
			return mxerr.UserInUse("User ID %s is already taken", userID)
		}
		if err != nil {
			return err
		}
		if !p.Guest {
			// The display name starts as the localpart, as users expect.
			if err := e.store.ProfileSet(ctx, tx, userID, "displayname", jsonString(p.Localpart)); err != nil {
				return err
			}
		}
		if p.RegistrationToken != "" {
			if err := e.store.RegTokenComplete(ctx, tx, p.RegistrationToken); err != nil {
				return err
			}
		}
		sess.UserID = userID
		if p.InhibitLogin {
			return nil
		}
		sess, err = e.newSession(ctx, tx, userID, p.Session)
		return err
	})
	if err != nil {
		return Session{}, err
	}
	return sess, nil
}

// newSession creates (or reuses) a device and issues tokens for it.
func (e *Engine) newSession(ctx context.Context, tx *storage.Tx, userID string, p NewSessionParams) (Session, error) {
	now := e.nowMS()
	deviceID := p.DeviceID
	if deviceID == "" {
		deviceID = newDeviceID()
	} else {
		if len(deviceID) > 255 {
			return Session{}, mxerr.InvalidParam("device_id is longer than 255 bytes")
		}
		// A client that names its device takes over that device: its old
		// tokens stop working (spec: relationship between tokens and devices).
		old, err := e.store.TokenHashesForDevices(ctx, tx, userID, []string{deviceID})
		if err != nil {
			return Session{}, err
		}
		for _, h := range old {
			if err := e.store.AccessTokenDelete(ctx, tx, h); err != nil {
				return Session{}, err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
			return Session{}, err
		}
		tx.AfterCommit(func() { e.revoked(old) })
	}
	var name *string
	if p.DisplayName != "" {
		n := truncate(p.DisplayName, 100)
		name = &n
	}
	ip, agent := p.IP, truncate(p.Agent, 512)
	if err := e.store.DeviceUpsert(ctx, tx, storage.Device{
		UserID: userID, DeviceID: deviceID, DisplayName: name, CreatedTS: now,
		LastSeenTS: &now, LastSeenIP: &ip, LastSeenAgent: &agent,
	}); err != nil {
		return Session{}, err
	}
	sess := Session{UserID: userID, DeviceID: deviceID, HomeServer: e.cfg.ServerName}
	if err := e.issueTokens(ctx, tx, &sess, p.Refresh); err != nil {
		return Session{}, err
	}
	return sess, nil
}

// issueTokens fills in the session's access (and refresh) token.
func (e *Engine) issueTokens(ctx context.Context, tx *storage.Tx, sess *Session, refresh bool) error {
	now := e.nowMS()
	sess.AccessToken = newToken("pat_")
	at := storage.AccessToken{Hash: storage.TokenHash(sess.AccessToken), UserID: sess.UserID, DeviceID: sess.DeviceID, CreatedTS: now}
	if refresh {
		sess.RefreshToken = newToken("prt_")
		rh := storage.TokenHash(sess.RefreshToken)
		if err := e.store.RefreshTokenCreate(ctx, tx, rh, sess.UserID, sess.DeviceID, now); err != nil {
			return err
		}
		exp := now + e.cfg.AccessTokenLifetime.Milliseconds()
		at.ExpiresTS = &exp
		at.RefreshHash = rh
		sess.ExpiresInMS = e.cfg.AccessTokenLifetime.Milliseconds()
	}
	return e.store.AccessTokenCreate(ctx, tx, at)
}

// Authenticate resolves an access token. Expired tokens answer
// M_UNKNOWN_TOKEN with soft_logout, so that clients refresh or re-login
// keeping their keys.
func (e *Engine) Authenticate(ctx context.Context, token string) (*Device, error) {
	if token == "" {
		return nil, mxerr.MissingToken("Missing access token")
	}
	hash := storage.TokenHash(token)
	now := e.now()
	if c, ok := e.cache.get(hash, now); ok {
		if c.expires != 0 && c.expires <= now.UnixMilli() {
			return nil, mxerr.UnknownToken(true, "Access token has expired")
		}
		d := c.dev
		return &d, nil
	}
	o, err := e.store.AccessTokenLookup(ctx, hash)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.UnknownToken(false, "Unrecognised access token")
	}
	if err != nil {
		return nil, err
	}
	if o.Deactivated {
		return nil, mxerr.UnknownToken(false, "Account has been deactivated")
	}
	if !o.Used {
		if err := e.store.AccessTokenMarkUsed(ctx, hash); err != nil {
			return nil, err
		}
	}
	dev := Device{UserID: o.UserID, DeviceID: o.DeviceID, IsGuest: o.IsGuest, IsAdmin: o.IsAdmin, TokenHash: hash}
	var exp int64
	if o.ExpiresTS != nil {
		exp = *o.ExpiresTS
	}
	e.cache.put(hash, cachedToken{dev: dev, expires: exp}, now)
	if exp != 0 && exp <= now.UnixMilli() {
		return nil, mxerr.UnknownToken(true, "Access token has expired")
	}
	return &dev, nil
}

// ForgetTokens drops tokens from this instance's cache (revoked elsewhere).
func (e *Engine) ForgetTokens(hashes [][]byte) { e.cache.forget(hashes) }

// ForgetAllTokens empties the token cache.
func (e *Engine) ForgetAllTokens() { e.cache.clear() }

func (e *Engine) revoked(hashes [][]byte) {
	if len(hashes) == 0 {
		return
	}
	e.cache.forget(hashes)
	if e.hooks.TokensRevoked != nil {
		e.hooks.TokensRevoked(hashes)
	}
}

// LoginPassword checks a password and opens a session.
func (e *Engine) LoginPassword(ctx context.Context, userID, password string, p NewSessionParams) (Session, error) {
	if err := e.CheckPassword(ctx, userID, password); err != nil {
		return Session{}, err
	}
	return e.openSession(ctx, userID, p)
}

// CheckPassword verifies a user's password. Unknown users cost the same
// time as known ones, so that timing does not reveal which exist.
func (e *Engine) CheckPassword(ctx context.Context, userID, password string) error {
	u, err := e.store.UserGet(ctx, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	hash := u.PasswordHash
	if hash == "" {
		hash = e.dummy
	}
	ok, err := e.comparePassword(ctx, password, hash)
	if err != nil {
		return err
	}
	if !ok || u.PasswordHash == "" {
		return mxerr.Forbidden("Invalid username or password")
	}
	if u.Deactivated {
		return mxerr.UserDeactivated("This account has been deactivated")
	}
	return nil
}

// LoginToken exchanges a single-use login token for a session.
func (e *Engine) LoginToken(ctx context.Context, token string, p NewSessionParams) (Session, error) {
	userID, err := e.store.LoginTokenConsume(ctx, storage.TokenHash(token), e.nowMS())
	if errors.Is(err, storage.ErrNotFound) {
		return Session{}, mxerr.Forbidden("Invalid or expired login token")
	}
	if err != nil {
		return Session{}, err
	}
	u, err := e.store.UserGet(ctx, userID)
	if err != nil {
		return Session{}, notFoundAs(err, mxerr.Forbidden("Invalid login token"))
	}
	if u.Deactivated {
		return Session{}, mxerr.UserDeactivated("This account has been deactivated")
	}
	return e.openSession(ctx, userID, p)
}

func (e *Engine) openSession(ctx context.Context, userID string, p NewSessionParams) (Session, error) {
	var sess Session
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		sess, err = e.newSession(ctx, tx, userID, p)
		return err
	})
	return sess, err
}

// LoginTokenLifetime is how long a token from /login/get_token lives.
const LoginTokenLifetime = 2 * time.Minute

// CreateLoginToken issues a single-use login token for userID.
func (e *Engine) CreateLoginToken(ctx context.Context, userID string) (string, time.Duration, error) {
	tok := newToken("plt_")
	if err := e.store.LoginTokenCreate(ctx, storage.TokenHash(tok), userID, e.now().Add(LoginTokenLifetime).UnixMilli()); err != nil {
		return "", 0, err
	}
	return tok, LoginTokenLifetime, nil
}

// Refresh exchanges a refresh token for new tokens. The old refresh token
// stays usable until one of the new tokens is used.
func (e *Engine) Refresh(ctx context.Context, refreshToken string) (Session, error) {
	old := storage.TokenHash(refreshToken)
	var sess Session
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		rt, err := e.store.RefreshTokenGet(ctx, tx, old)
		if errors.Is(err, storage.ErrNotFound) {
			return mxerr.UnknownToken(false, "Unrecognised refresh token")
		}
		if err != nil {
			return err
		}
		// Using this token proves its own predecessor was received.
		if err := e.store.RefreshTokenUsed(ctx, tx, old); err != nil {
			return err
		}
		sess = Session{UserID: rt.UserID, DeviceID: rt.DeviceID}
		if err := e.issueTokens(ctx, tx, &sess, true); err != nil {
			return err
		}
		return e.store.RefreshTokenExchange(ctx, tx, old, storage.TokenHash(sess.RefreshToken))
	})
	if err != nil {
		return Session{}, err
	}
	sess.UserID, sess.DeviceID = "", ""
	return sess, nil
}

// Logout deletes the device behind the token (and so every token of it).
func (e *Engine) Logout(ctx context.Context, d *Device) error {
	return e.DeleteDevices(ctx, d.UserID, []string{d.DeviceID})
}

// LogoutAll deletes every device of the user.
func (e *Engine) LogoutAll(ctx context.Context, userID string) error {
	return e.DeleteDevices(ctx, userID, nil)
}

// DeleteDevices deletes devices (all when ids is nil) and their tokens.
func (e *Engine) DeleteDevices(ctx context.Context, userID string, ids []string) error {
	var hashes [][]byte
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		if hashes, err = e.store.TokenHashesForDevices(ctx, tx, userID, ids); err != nil {
			return err
		}
		if ids == nil {
			devs, err := e.store.DeviceListQ(ctx, tx, userID)
			if err != nil {
				return err
			}
			for _, d := range devs {
				ids = append(ids, d.DeviceID)
			}
		}
		if err := e.store.DevicesDelete(ctx, tx, userID, ids); err != nil {
			return err
		}
		if e.hooks.DevicesDeleted != nil && len(ids) > 0 {
			return e.hooks.DevicesDeleted(ctx, tx, userID, ids)
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.revoked(hashes)
	return nil
}

// ChangePassword sets a new password; with logoutOthers every device but
// keep is logged out.
func (e *Engine) ChangePassword(ctx context.Context, userID, password string, logoutOthers bool, keep string) error {
	if err := e.CheckPasswordStrength(password); err != nil {
		return err
	}
	hash, err := e.HashPassword(ctx, password)
	if err != nil {
		return err
	}
	if err := e.db.Write(ctx, func(tx *storage.Tx) error {
		return e.store.UserSetPassword(ctx, tx, userID, hash)
	}); err != nil {
		return err
	}
	if !logoutOthers {
		return nil
	}
	devs, err := e.store.DeviceList(ctx, userID)
	if err != nil {
		return err
	}
	var others []string
	for _, d := range devs {
		if d.DeviceID != keep {
			others = append(others, d.DeviceID)
		}
	}
	if len(others) == 0 {
		return nil
	}
	return e.DeleteDevices(ctx, userID, others)
}

// Deactivate permanently disables an account.
func (e *Engine) Deactivate(ctx context.Context, userID string, erase bool) error {
	var hashes [][]byte
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		if hashes, err = e.store.TokenHashesForDevices(ctx, tx, userID, nil); err != nil {
			return err
		}
		devs, err := e.store.DeviceListQ(ctx, tx, userID)
		if err != nil {
			return err
		}
		if err := e.store.UserDeactivate(ctx, tx, userID, erase); err != nil {
			return err
		}
		if e.hooks.DevicesDeleted != nil && len(devs) > 0 {
			ids := make([]string, len(devs))
			for i, d := range devs {
				ids[i] = d.DeviceID
			}
			return e.hooks.DevicesDeleted(ctx, tx, userID, ids)
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.revoked(hashes)
	if e.hooks.Deactivated != nil {
		e.hooks.Deactivated(ctx, userID)
	}
	return nil
}

// UserExists reports whether a local user exists (deactivated or not).
func (e *Engine) UserExists(ctx context.Context, userID string) (bool, error) {
	_, err := e.store.UserGet(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// User returns a local user.
func (e *Engine) User(ctx context.Context, userID string) (storage.User, error) {
	u, err := e.store.UserGet(ctx, userID)
	return u, notFoundAs(err, mxerr.NotFound("No such user"))
}

// SetAdmin grants or revokes admin rights.
func (e *Engine) SetAdmin(ctx context.Context, userID string, admin bool) error {
	return notFoundAs(e.store.UserSetAdmin(ctx, userID, admin), mxerr.NotFound("No such user"))
}

// Devices lists a user's devices.
func (e *Engine) Devices(ctx context.Context, userID string) ([]storage.Device, error) {
	return e.store.DeviceList(ctx, userID)
}

// GetDevice returns one of the user's devices.
func (e *Engine) GetDevice(ctx context.Context, userID, deviceID string) (storage.Device, error) {
	d, err := e.store.DeviceGet(ctx, userID, deviceID)
	return d, notFoundAs(err, mxerr.NotFound("No such device"))
}

// RenameDevice sets a device's display name.
func (e *Engine) RenameDevice(ctx context.Context, userID, deviceID, name string) error {
	if len(name) > 100 {
		return mxerr.InvalidParam("display_name is longer than 100 bytes")
	}
	return notFoundAs(e.store.DeviceSetName(ctx, userID, deviceID, name), mxerr.NotFound("No such device"))
}

// TouchDevice records activity; callers coalesce (see clientapi).
func (e *Engine) TouchDevice(ctx context.Context, d *Device, ip, agent string) error {
	return e.store.DeviceTouch(ctx, d.UserID, d.DeviceID, e.nowMS(), ip, truncate(agent, 512))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
