package rooms

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// fakeKeys is a key ring that knows the keys it was given.
type fakeKeys map[string]ed25519.PublicKey

func (f fakeKeys) VerifyKey(_ context.Context, server string, _ id.KeyID, _ time.Time) (ed25519.PublicKey, time.Time, error) {
	return f[server], time.Now().Add(time.Hour), nil
}

func newSigner(t testing.TB, server string) *Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{ServerName: server, KeyID: "ed25519:test", Key: priv}
}

// newTestEngine starts an engine on db for server "local.test", trusting
// the given remote signers.
func newTestEngine(t testing.TB, db *storage.DB, remotes ...*Signer) *Engine {
	t.Helper()
	e := New(Config{ServerName: "local.test", Signer: newSigner(t, "local.test")}, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	keys := fakeKeys{}
	for _, r := range remotes {
		keys[r.ServerName] = r.Key.Public().(ed25519.PublicKey)
	}
	e.SetKeyRing(keys)
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

func forEachDB(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	t.Helper()
	storagetest.ForEach(t, fn)
}

func content(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
