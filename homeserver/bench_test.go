package homeserver

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/config"
)

// newBenchServer builds a server on a fresh SQLite database with the
// default (production) argon2id parameters.
func newBenchServer(b *testing.B) *Server {
	b.Helper()
	dir := b.TempDir()
	c, err := config.Load("", []string{"PARLEY_DATA_DIR=" + dir, "PARLEY_DATABASE=sqlite://" + filepath.Join(dir, "p.db"),
		"PARLEY_RATE_LIMITS=off", "PARLEY_LOG_LEVEL=error"})
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(context.Background(), c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

// BenchmarkAuthenticatedRequest measures the whole HTTP stack — request
// ID, CORS, access log, metrics, routing, token lookup (warm cache) —
// around GET /account/whoami.
func BenchmarkAuthenticatedRequest(b *testing.B) {
	s := newBenchServer(b)
	sess, err := s.accounts.Register(context.Background(), accounts.RegisterParams{Localpart: "bench", Password: "bench password"})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	req := httptest.NewRequest(http.MethodGet, "/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+sess.AccessToken)
	warm := httptest.NewRecorder()
	h.ServeHTTP(warm, req)
	if warm.Code != 200 {
		b.Fatalf("whoami: %d %s", warm.Code, warm.Body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Errorf("status %d", w.Code)
				return
			}
		}
	})
}

// BenchmarkLogin measures POST /login with the default argon2id cost
// (19 MiB, 2 iterations, 1 lane — OWASP's recommendation).
func BenchmarkLogin(b *testing.B) {
	s := newBenchServer(b)
	if _, err := s.accounts.Register(context.Background(), accounts.RegisterParams{Localpart: "bench", Password: "bench password", InhibitLogin: true}); err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	body, _ := json.Marshal(map[string]any{"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "bench"}, "password": "bench password"})
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/login", strings.NewReader(string(body)))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("login: %d %s", w.Code, w.Body)
		}
	}
}
