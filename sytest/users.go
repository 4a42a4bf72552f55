package sytest

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// User is a registered test account.
type User struct {
	ID       string
	Password string
	Token    string
	DeviceID string
	Server   *Server
}

// On returns the same user, session and device, talking to another
// instance of the same database.
func (u *User) On(s *Server) *User {
	c := *u
	c.Server = s
	return &c
}

var userSeq atomic.Int64

// UniqueName returns a localpart no other test uses.
func UniqueName(prefix string) string {
	return prefix + "-" + randHex(3) + "-" + time.Now().Format("150405") + "-" + itoa(userSeq.Add(1))
}

func itoa(n int64) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{digits[n%10]}, b...)
		n /= 10
	}
	return string(b)
}

// Register creates a user through open registration (m.login.dummy).
func (s *Server) Register(t testing.TB, prefix string) *User {
	t.Helper()
	name := UniqueName(prefix)
	pw := "password-" + randHex(4)
	r := s.Do(t, http.MethodPost, "/_matrix/client/v3/register", "", map[string]any{
		"username": name, "password": pw, "auth": map[string]string{"type": "m.login.dummy"},
	})
	Must(t, r, http.StatusOK)
	return &User{ID: r.Str("user_id"), Password: pw, Token: r.Str("access_token"), DeviceID: r.Str("device_id"), Server: s}
}

// RegisterAdmin creates a server admin through shared-secret registration.
func (s *Server) RegisterAdmin(t testing.TB, prefix string) *User {
	t.Helper()
	name := UniqueName(prefix)
	pw := "password-" + randHex(4)
	nonce := Must(t, s.Do(t, http.MethodGet, "/_synapse/admin/v1/register", "", nil), http.StatusOK).Str("nonce")
	r := s.Do(t, http.MethodPost, "/_synapse/admin/v1/register", "", map[string]any{
		"nonce": nonce, "username": name, "password": pw, "admin": true,
		"mac": SharedSecretMAC(SharedSecret, nonce, name, pw, true),
	})
	Must(t, r, http.StatusOK)
	return &User{ID: r.Str("user_id"), Password: pw, Token: r.Str("access_token"), DeviceID: r.Str("device_id"), Server: s}
}

// SharedSecretMAC is the HMAC Synapse's admin registration expects,
// computed here independently of the server's code.
func SharedSecretMAC(secret, nonce, user, password string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00" + role))
	return hex.EncodeToString(m.Sum(nil))
}

// Client returns a mautrix client logged in as u.
func (u *User) Client(t testing.TB) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(u.Server.URL, id.UserID(u.ID), u.Token)
	if err != nil {
		t.Fatal(err)
	}
	c.DeviceID = id.DeviceID(u.DeviceID)
	return c
}

// Do sends a request as u.
func (u *User) Do(t testing.TB, method, path string, body any) *Response {
	t.Helper()
	return u.Server.Do(t, method, path, u.Token, body)
}
