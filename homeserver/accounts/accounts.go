// Package accounts is the engine behind accounts and authentication:
// registration, passwords, access and refresh tokens, devices, profiles,
// account data, filters and user-interactive authentication. Handlers in
// clientapi parse requests and call it; it calls storage.
package accounts

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/alexedwards/argon2id"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// Config is what the engine needs from the server configuration.
type Config struct {
	ServerName          string
	AccessTokenLifetime time.Duration
	MinPasswordLength   int
	Argon2              argon2id.Params
	AllowGuests         bool
	// Registration is closed, open or token.
	Registration string
	SharedSecret string
}

// Hooks let other engines react to account changes without this package
// importing them.
type Hooks struct {
	// TokensRevoked is told the hashes of access tokens that stopped being
	// valid, so that other instances can drop them from their caches.
	TokensRevoked func(hashes [][]byte)
	// DevicesDeleted runs inside the transaction that deletes devices (the
	// E2EE engine removes their keys).
	DevicesDeleted func(ctx context.Context, tx *storage.Tx, userID string, deviceIDs []string) error
	// ProfileChanged runs after a displayname or avatar_url change.
	ProfileChanged func(ctx context.Context, userID string)
	// AccountDataChanged runs after account data is written.
	AccountDataChanged func(userID string, pos int64)
	// Deactivated runs after a user is deactivated (rooms are left).
	Deactivated func(ctx context.Context, userID string)
}

// Engine is the accounts engine.
type Engine struct {
	cfg    Config
	db     *storage.DB
	store  *storage.Accounts
	log    *slog.Logger
	cache  *tokenCache
	hooks  Hooks
	hashes chan struct{} // bounds concurrent argon2id work, and so memory
	dummy  string        // a hash to compare against for unknown users
	now    func() time.Time
}

// New builds the engine.
func New(cfg Config, db *storage.DB, log *slog.Logger) (*Engine, error) {
	e := &Engine{
		cfg:    cfg,
		db:     db,
		store:  db.Accounts(),
		log:    log,
		cache:  newTokenCache(100_000, 5*time.Minute),
		hashes: make(chan struct{}, max(2, runtime.GOMAXPROCS(0))),
		now:    time.Now,
	}
	dummy, err := argon2id.CreateHash("parley-dummy-password", &cfg.Argon2)
	if err != nil {
		return nil, fmt.Errorf("accounts: argon2id: %w", err)
	}
	e.dummy = dummy
	return e, nil
}

// SetHooks installs the hooks; call before serving.
func (e *Engine) SetHooks(h Hooks) { e.hooks = h }

// Hooks returns the installed hooks, so that wiring can add to them.
func (e *Engine) Hooks() Hooks { return e.hooks }

// ServerName is the server's name.
func (e *Engine) ServerName() string { return e.cfg.ServerName }

// RegistrationMode is closed, open or token.
func (e *Engine) RegistrationMode() string { return e.cfg.Registration }

// GuestsAllowed reports whether guest registration is enabled.
func (e *Engine) GuestsAllowed() bool { return e.cfg.AllowGuests }

// Device is an authenticated request's identity.
type Device struct {
	UserID   string
	DeviceID string
	IsGuest  bool
	IsAdmin  bool
	// TokenHash identifies the access token used.
	TokenHash []byte
}

// Session is what a successful login or registration returns.
type Session struct {
	UserID       string `json:"user_id"`
	DeviceID     string `json:"device_id,omitempty"`
	AccessToken  string `json:"access_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
	HomeServer   string `json:"home_server,omitempty"`
}

// localpartRE is the spec's grammar for new user IDs' localparts.
var localpartRE = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

// UserID builds a local user ID.
func (e *Engine) UserID(localpart string) string { return "@" + localpart + ":" + e.cfg.ServerName }

// ValidateLocalpart checks that localpart may be registered.
func (e *Engine) ValidateLocalpart(localpart string) error {
	switch {
	case localpart == "":
		return mxerr.InvalidUsername("User name must not be empty")
	case !localpartRE.MatchString(localpart):
		return mxerr.InvalidUsername("User name may only contain a-z, 0-9, and . _ = - / +")
	case strings.Trim(localpart, "0123456789") == "":
		return mxerr.InvalidUsername("Numeric user names are reserved for guests")
	case len(e.UserID(localpart)) > 255:
		return mxerr.InvalidUsername("User ID is longer than 255 bytes")
	}
	return nil
}

// ParseLocalUser accepts a localpart or a full user ID of this server and
// returns the full ID; it does not check that the user exists.
func (e *Engine) ParseLocalUser(s string) (string, error) {
	if strings.HasPrefix(s, "@") {
		local, server, ok := strings.Cut(s[1:], ":")
		if !ok || local == "" {
			return "", mxerr.InvalidParam("%q is not a user ID", s)
		}
		if server != e.cfg.ServerName {
			return "", mxerr.Forbidden("%s is not a user of this server", s)
		}
		return "@" + strings.ToLower(local) + ":" + server, nil
	}
	if s == "" {
		return "", mxerr.MissingParam("No user given")
	}
	return e.UserID(strings.ToLower(s)), nil
}

// IsLocal reports whether userID belongs to this server.
func (e *Engine) IsLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+e.cfg.ServerName) && strings.HasPrefix(userID, "@")
}

// CheckPasswordStrength enforces the password policy.
func (e *Engine) CheckPasswordStrength(pw string) error {
	if len(pw) < e.cfg.MinPasswordLength {
		return mxerr.WeakPassword("Password must be at least %d characters", e.cfg.MinPasswordLength)
	}
	if len(pw) > 512 {
		return mxerr.WeakPassword("Password must be at most 512 bytes")
	}
	return nil
}

// HashPassword hashes with argon2id, bounded so that a burst of logins
// cannot take all memory.
func (e *Engine) HashPassword(ctx context.Context, pw string) (string, error) {
	if err := e.acquireHasher(ctx); err != nil {
		return "", err
	}
	defer func() { <-e.hashes }()
	h, err := argon2id.CreateHash(pw, &e.cfg.Argon2)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return h, nil
}

func (e *Engine) comparePassword(ctx context.Context, pw, hash string) (bool, error) {
	if err := e.acquireHasher(ctx); err != nil {
		return false, err
	}
	defer func() { <-e.hashes }()
	ok, err := argon2id.ComparePasswordAndHash(pw, hash)
	if err != nil {
		return false, fmt.Errorf("compare password: %w", err)
	}
	return ok, nil
}

func (e *Engine) acquireHasher(ctx context.Context) error {
	select {
	case e.hashes <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

const deviceAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

func newDeviceID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = deviceAlphabet[int(b[i])%len(deviceAlphabet)]
	}
	return string(b)
}

// newToken returns a 256-bit random token with a readable prefix.
func newToken(prefix string) string { return prefix + randomString(32) }

func (e *Engine) nowMS() int64 { return e.now().UnixMilli() }

func notFoundAs(err error, me *mxerr.Error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return me
	}
	return err
}
