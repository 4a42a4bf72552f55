package sytest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	_ "modernc.org/sqlite"
)

const unstable3814 = "/_matrix/client/unstable/org.matrix.msc3814.v1"

// e2eeKey is an ed25519 key pair, as clients hold them.
type e2eeKey struct {
	priv ed25519.PrivateKey
	pub  string
}

func newE2EEKey(t testing.TB) e2eeKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return e2eeKey{priv: priv, pub: base64.RawStdEncoding.EncodeToString(pub)}
}

// e2eeSign returns obj with entity's signature by keyID added, computed as
// the spec's appendix "Signing JSON" says, independently of the server.
func e2eeSign(t testing.TB, obj map[string]any, k e2eeKey, entity, keyID string) map[string]any {
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
	out := map[string]any{}
	for key, v := range obj {
		out[key] = v
	}
	sigs := map[string]any{}
	if old, ok := obj["signatures"].(map[string]any); ok {
		for e, v := range old {
			sigs[e] = v
		}
	}
	byEntity := map[string]any{}
	if old, ok := sigs[entity].(map[string]any); ok {
		for k, v := range old {
			byEntity[k] = v
		}
	}
	byEntity[keyID] = base64.RawStdEncoding.EncodeToString(ed25519.Sign(k.priv, payload))
	sigs[entity] = byEntity
	out["signatures"] = sigs
	return out
}

// e2eeDevice is a logged-in device and its identity keys.
type e2eeDevice struct {
	*User
	id         string
	token      string
	sig, curve e2eeKey
}

// keysDevice returns u's registration device with fresh keys.
func keysDevice(t testing.TB, u *User) *e2eeDevice {
	return &e2eeDevice{User: u, id: u.DeviceID, token: u.Token, sig: newE2EEKey(t), curve: newE2EEKey(t)}
}

// newKeysDevice logs u in again: a new device with fresh keys.
func newKeysDevice(t testing.TB, u *User) *e2eeDevice {
	t.Helper()
	tok := u.login(t)
	id := Must(t, u.Server.Do(t, "GET", v3+"/account/whoami", tok, nil), 200).Str("device_id")
	return &e2eeDevice{User: u, id: id, token: tok, sig: newE2EEKey(t), curve: newE2EEKey(t)}
}

func (d *e2eeDevice) do(t testing.TB, method, path string, body any) *Response {
	t.Helper()
	return d.Server.Do(t, method, path, d.token, body)
}

func (d *e2eeDevice) keysObject() map[string]any {
	return map[string]any{
		"user_id": d.ID, "device_id": d.id,
		"algorithms": []any{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"ed25519:" + d.id: d.sig.pub, "curve25519:" + d.id: d.curve.pub},
	}
}

func (d *e2eeDevice) signedKeys(t testing.TB) map[string]any {
	return e2eeSign(t, d.keysObject(), d.sig, d.ID, "ed25519:"+d.id)
}

// otks returns n one-time keys signed by the device, IDs from start.
func (d *e2eeDevice) otks(t testing.TB, start, n int) map[string]any {
	out := map[string]any{}
	for i := start; i < start+n; i++ {
		out[fmt.Sprintf("signed_curve25519:K%05d", i)] = e2eeSign(t, map[string]any{"key": newE2EEKey(t).pub}, d.sig, d.ID, "ed25519:"+d.id)
	}
	return out
}

func (d *e2eeDevice) fallback(t testing.TB, id string) map[string]any {
	return map[string]any{"signed_curve25519:" + id: e2eeSign(t, map[string]any{"key": newE2EEKey(t).pub, "fallback": true}, d.sig, d.ID, "ed25519:"+d.id)}
}

// uploadKeys uploads device keys, n one-time keys and a fallback key "FB".
func (d *e2eeDevice) uploadKeys(t testing.TB, n int) *Response {
	t.Helper()
	return Must(t, d.do(t, "POST", v3+"/keys/upload", map[string]any{
		"device_keys": d.signedKeys(t), "one_time_keys": d.otks(t, 0, n), "fallback_keys": d.fallback(t, "FB"),
	}), 200)
}

// e2eeCrossSigning is a user's three cross-signing keys.
type e2eeCrossSigning struct {
	user                  string
	master, self, userKey e2eeKey
}

func newE2EECrossSigning(t testing.TB, user string) *e2eeCrossSigning {
	return &e2eeCrossSigning{user: user, master: newE2EEKey(t), self: newE2EEKey(t), userKey: newE2EEKey(t)}
}

func (c *e2eeCrossSigning) object(usage string, k e2eeKey) map[string]any {
	return map[string]any{"user_id": c.user, "usage": []any{usage}, "keys": map[string]any{"ed25519:" + k.pub: k.pub}}
}

func (c *e2eeCrossSigning) body(t testing.TB) map[string]any {
	mk := "ed25519:" + c.master.pub
	return map[string]any{
		"master_key":       c.object("master", c.master),
		"self_signing_key": e2eeSign(t, c.object("self_signing", c.self), c.master, c.user, mk),
		"user_signing_key": e2eeSign(t, c.object("user_signing", c.userKey), c.master, c.user, mk),
	}
}

// e2eeDig digs into decoded JSON along keys, nil when a step is missing.
func e2eeDig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// dbText returns every text value the server's database holds, so that
// a test can check what is (not) stored. It reads the database directly:
// the only way to see what the server keeps.
func dbText(t testing.TB, s *Server) string {
	t.Helper()
	var b strings.Builder
	if strings.HasPrefix(s.Database, "sqlite://") {
		db, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(s.Database, "sqlite://")+"?mode=ro&_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		tables := sqlStrings(t, db, `SELECT name FROM sqlite_master WHERE type = 'table'`)
		for _, tbl := range tables {
			rows, err := db.Query(`SELECT * FROM "` + tbl + `"`)
			if err != nil {
				t.Fatal(err)
			}
			cols, _ := rows.Columns()
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			for rows.Next() {
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				for _, v := range vals {
					fmt.Fprintf(&b, "%s\n", v)
				}
			}
			rows.Close()
		}
		return b.String()
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, s.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT table_schema || '.' || table_name FROM information_schema.tables
		WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	for _, tbl := range tables {
		var dump string
		if err := c.QueryRow(ctx, `SELECT COALESCE(string_agg(x::text, E'\n'), '') FROM `+tbl+` x`).Scan(&dump); err != nil {
			t.Fatal(err)
		}
		b.WriteString(dump)
		b.WriteByte('\n')
	}
	return b.String()
}

func sqlStrings(t testing.TB, db *sql.DB, q string) []string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}
