package accounts

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"regexp"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// NonceLifetime is how long a shared-secret registration nonce is valid.
const NonceLifetime = 60 * time.Second

// SharedSecretEnabled reports whether /_synapse/admin/v1/register works.
func (e *Engine) SharedSecretEnabled() bool { return e.cfg.SharedSecret != "" }

// NewNonce issues a nonce for shared-secret registration.
func (e *Engine) NewNonce(ctx context.Context) (string, error) {
	if !e.SharedSecretEnabled() {
		return "", mxerr.Custom(400, "M_UNKNOWN", "Shared secret registration is not enabled")
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	nonce := hex.EncodeToString(b)
	return nonce, e.store.NonceCreate(ctx, nonce, e.now().Add(NonceLifetime).UnixMilli())
}

// SharedSecretRequest is Synapse's admin registration body.
type SharedSecretRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	Password    string `json:"password"`
	Displayname string `json:"displayname"`
	Admin       bool   `json:"admin"`
	UserType    string `json:"user_type"`
	MAC         string `json:"mac"`
}

// RegisterWithSharedSecret checks the HMAC exactly as Synapse does —
// HMAC-SHA1 over nonce, username, password and "admin"/"notadmin" (and
// the user type when given), NUL-separated — and creates the account.
func (e *Engine) RegisterWithSharedSecret(ctx context.Context, r SharedSecretRequest, sp NewSessionParams) (Session, error) {
	if !e.SharedSecretEnabled() {
		return Session{}, mxerr.Custom(400, "M_UNKNOWN", "Shared secret registration is not enabled")
	}
	if r.Nonce == "" || r.Username == "" || r.Password == "" || r.MAC == "" {
		return Session{}, mxerr.MissingParam("nonce, username, password and mac are required")
	}
	ok, err := e.store.NonceConsume(ctx, r.Nonce, e.nowMS())
	if err != nil {
		return Session{}, err
	}
	if !ok {
		return Session{}, mxerr.Custom(400, "M_UNKNOWN", "Unrecognised nonce")
	}
	want := SharedSecretMAC(e.cfg.SharedSecret, r.Nonce, r.Username, r.Password, r.Admin, r.UserType)
	got, err := hex.DecodeString(r.MAC)
	if err != nil || !hmac.Equal(want, got) {
		return Session{}, mxerr.Forbidden("HMAC incorrect")
	}
	sess, err := e.Register(ctx, RegisterParams{Localpart: r.Username, Password: r.Password, Admin: r.Admin, Session: sp})
	if err != nil {
		return Session{}, err
	}
	if r.Displayname != "" {
		if err := e.SetProfileField(ctx, sess.UserID, "displayname", []byte(jsonString(r.Displayname))); err != nil {
			return Session{}, err
		}
	}
	return sess, nil
}

// SharedSecretMAC computes Synapse's registration HMAC.
func SharedSecretMAC(secret, nonce, user, password string, admin bool, userType string) []byte {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte{0})
		m.Write([]byte(userType))
	}
	return m.Sum(nil)
}

var regTokenRE = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)

// RegTokenSpec is an admin's request to create or change a token.
type RegTokenSpec struct {
	Token       *string
	Length      *int
	UsesAllowed *int64
	ExpiryTime  *int64
	// Set* record which fields an update names (null clears a limit).
	SetUses, SetExpiry bool
}

const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"

// CreateRegToken creates a registration token, generating one when none
// is given.
func (e *Engine) CreateRegToken(ctx context.Context, s RegTokenSpec) (storage.RegistrationToken, error) {
	t := storage.RegistrationToken{UsesAllowed: s.UsesAllowed, ExpiryTime: s.ExpiryTime}
	if err := e.checkLimits(s); err != nil {
		return t, err
	}
	if s.Token != nil {
		if !regTokenRE.MatchString(*s.Token) {
			return t, mxerr.InvalidParam("token must be 1–64 characters of A-Z, a-z, 0-9, . _ ~ -")
		}
		t.Token = *s.Token
	} else {
		n := 16
		if s.Length != nil {
			if *s.Length < 1 || *s.Length > 64 {
				return t, mxerr.InvalidParam("length must be between 1 and 64")
			}
			n = *s.Length
		}
		b := make([]byte, n)
		_, _ = rand.Read(b)
		for i := range b {
			b[i] = tokenAlphabet[int(b[i])%len(tokenAlphabet)]
		}
		t.Token = string(b)
	}
	err := e.store.RegTokenCreate(ctx, t)
	if errors.Is(err, storage.ErrConflict) {
		return t, mxerr.InvalidParam("Token already exists")
	}
	return t, err
}

func (e *Engine) checkLimits(s RegTokenSpec) error {
	if s.UsesAllowed != nil && *s.UsesAllowed < 0 {
		return mxerr.InvalidParam("uses_allowed must be a non-negative integer or null")
	}
	if s.ExpiryTime != nil && *s.ExpiryTime < e.nowMS() {
		return mxerr.InvalidParam("expiry_time must not be in the past")
	}
	return nil
}

// RegTokens lists registration tokens, optionally only (in)valid ones.
func (e *Engine) RegTokens(ctx context.Context, valid *bool) ([]storage.RegistrationToken, error) {
	all, err := e.store.RegTokenList(ctx)
	if err != nil {
		return nil, err
	}
	out := []storage.RegistrationToken{}
	now := e.nowMS()
	for _, t := range all {
		if valid == nil || t.Valid(now) == *valid {
			out = append(out, t)
		}
	}
	return out, nil
}

// RegToken returns one registration token.
func (e *Engine) RegToken(ctx context.Context, token string) (storage.RegistrationToken, error) {
	t, err := e.store.RegTokenGet(ctx, e.db.Read(), token)
	return t, notFoundAs(err, mxerr.NotFound("No such registration token"))
}

// UpdateRegToken changes a token's limits.
func (e *Engine) UpdateRegToken(ctx context.Context, token string, s RegTokenSpec) (storage.RegistrationToken, error) {
	t, err := e.RegToken(ctx, token)
	if err != nil {
		return t, err
	}
	if err := e.checkLimits(s); err != nil {
		return t, err
	}
	if s.SetUses {
		t.UsesAllowed = s.UsesAllowed
	}
	if s.SetExpiry {
		t.ExpiryTime = s.ExpiryTime
	}
	if err := e.store.RegTokenUpdate(ctx, t); err != nil {
		return t, notFoundAs(err, mxerr.NotFound("No such registration token"))
	}
	return t, nil
}

// DeleteRegToken removes a token.
func (e *Engine) DeleteRegToken(ctx context.Context, token string) error {
	return notFoundAs(e.store.RegTokenDelete(ctx, token), mxerr.NotFound("No such registration token"))
}

// RegTokenValid answers the client's validity check.
func (e *Engine) RegTokenValid(ctx context.Context, token string) (bool, error) {
	t, err := e.store.RegTokenGet(ctx, e.db.Read(), token)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.Valid(e.nowMS()), nil
}
