package e2ee_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"maunium.net/go/mautrix/crypto/canonicaljson"

	"github.com/parley-chat/parley/e2ee"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

const server = "test.example"

func newEngine(t *testing.T, db *storage.DB, cfg e2ee.Config) *e2ee.Engine {
	t.Helper()
	cfg.ServerName = server
	return e2ee.New(cfg, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// keyPair is an ed25519 key as clients hold them.
type keyPair struct {
	priv ed25519.PrivateKey
	pub  string
}

func newKeyPair(t testing.TB) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{priv: priv, pub: base64.RawStdEncoding.EncodeToString(pub)}
}

// sign adds entity's signature by keyID to obj, as the appendix describes.
func sign(t testing.TB, obj map[string]any, k keyPair, entity, keyID string) map[string]any {
	t.Helper()
	bare := map[string]any{}
	for key, v := range obj {
		if key != "signatures" && key != "unsigned" {
			bare[key] = v
		}
	}
	payload, err := canonicaljson.Marshal(bare)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := obj["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{}
	}
	byEntity, _ := sigs[entity].(map[string]any)
	if byEntity == nil {
		byEntity = map[string]any{}
	}
	byEntity[keyID] = base64.RawStdEncoding.EncodeToString(ed25519.Sign(k.priv, payload))
	sigs[entity] = byEntity
	out := map[string]any{}
	for key, v := range obj {
		out[key] = v
	}
	out["signatures"] = sigs
	return out
}

func raw(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// device is a client device: an account row, a device row and its keys.
type device struct {
	user, id string
	sig      keyPair
	curve    keyPair
}

func newDevice(t *testing.T, db *storage.DB, user, id string) *device {
	t.Helper()
	ctx := context.Background()
	a := db.Accounts()
	err := db.Write(ctx, func(tx *storage.Tx) error {
		return a.UserCreate(ctx, tx, storage.User{UserID: user, CreatedTS: 1})
	})
	if err != nil && !errors.Is(err, storage.ErrConflict) {
		t.Fatal(err)
	}
	err = db.Write(ctx, func(tx *storage.Tx) error {
		return a.DeviceUpsert(ctx, tx, storage.Device{UserID: user, DeviceID: id, CreatedTS: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	return &device{user: user, id: id, sig: newKeyPair(t), curve: newKeyPair(t)}
}

// keysObject is the device keys object, unsigned.
func (d *device) keysObject() map[string]any {
	return map[string]any{
		"user_id": d.user, "device_id": d.id,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + d.id: d.sig.pub, "curve25519:" + d.id: d.curve.pub},
	}
}

func (d *device) signedKeys(t testing.TB) json.RawMessage {
	return raw(t, sign(t, d.keysObject(), d.sig, d.user, "ed25519:"+d.id))
}

// otks returns n signed one-time keys with IDs from start.
func (d *device) otks(t testing.TB, start, n int) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for i := start; i < start+n; i++ {
		k := newKeyPair(t)
		out[fmt.Sprintf("signed_curve25519:K%05d", i)] = raw(t, sign(t, map[string]any{"key": k.pub}, d.sig, d.user, "ed25519:"+d.id))
	}
	return out
}

func (d *device) fallback(t testing.TB, id string) map[string]json.RawMessage {
	k := newKeyPair(t)
	return map[string]json.RawMessage{"signed_curve25519:" + id: raw(t, sign(t, map[string]any{"key": k.pub, "fallback": true}, d.sig, d.user, "ed25519:"+d.id))}
}

// upload uploads the device's keys with n one-time keys and a fallback key.
func (d *device) upload(t *testing.T, e *e2ee.Engine, n int) {
	t.Helper()
	if _, err := e.UploadKeys(context.Background(), d.user, d.id, e2ee.UploadRequest{
		DeviceKeys: d.signedKeys(t), OneTimeKeys: d.otks(t, 0, n), FallbackKeys: d.fallback(t, "FB"),
	}); err != nil {
		t.Fatal(err)
	}
}

// crossSigning is a user's three cross-signing keys.
type crossSigning struct {
	user                  string
	master, self, userKey keyPair
}

func newCrossSigning(t testing.TB, user string) *crossSigning {
	return &crossSigning{user: user, master: newKeyPair(t), self: newKeyPair(t), userKey: newKeyPair(t)}
}

func (c *crossSigning) object(usage string, k keyPair) map[string]any {
	return map[string]any{"user_id": c.user, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + k.pub: k.pub}}
}

// upload is the device_signing/upload body, every key properly signed.
func (c *crossSigning) upload(t testing.TB) e2ee.CrossSigningUpload {
	mk := "ed25519:" + c.master.pub
	return e2ee.CrossSigningUpload{
		MasterKey:      raw(t, c.object("master", c.master)),
		SelfSigningKey: raw(t, sign(t, c.object("self_signing", c.self), c.master, c.user, mk)),
		UserSigningKey: raw(t, sign(t, c.object("user_signing", c.userKey), c.master, c.user, mk)),
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if !mxerr.IsCode(err, code) {
		t.Fatalf("got %v, want %s", err, code)
	}
}

// recorder is a Notifier that remembers what it was told.
type recorder struct {
	mu       sync.Mutex
	toDevice map[string]int64
	lists    map[string]int64
	keys     map[string]int
}

func newRecorder() *recorder {
	return &recorder{toDevice: map[string]int64{}, lists: map[string]int64{}, keys: map[string]int{}}
}

func (r *recorder) ToDevice(userID, deviceID string, pos int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.toDevice[userID+"|"+deviceID] = pos
}

func (r *recorder) DeviceListChanged(userID string, pos int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lists[userID] = pos
}

func (r *recorder) KeysChanged(userID, deviceID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys[userID+"|"+deviceID]++
}

// rooms is a RoomMembership over fixed sets of users who share rooms.
type rooms struct{ groups [][]string }

func (r rooms) SharedRoomUsers(_ context.Context, userID string) ([]string, error) {
	var out []string
	for _, g := range r.groups {
		for _, u := range g {
			if u == userID {
				out = append(out, g...)
				break
			}
		}
	}
	return out, nil
}

func (r rooms) UsersShareRoom(ctx context.Context, a, b string) (bool, error) {
	shared, _ := r.SharedRoomUsers(ctx, a)
	for _, u := range shared {
		if u == b {
			return true, nil
		}
	}
	return false, nil
}
