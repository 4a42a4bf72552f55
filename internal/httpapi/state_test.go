package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestJSONMatchesMarshal checks that JSON writes what json.Marshal makes,
// with no trailing newline, through a reused buffer.
func TestJSONMatchesMarshal(t *testing.T) {
	big := strings.Repeat("x", maxPooledJSON+1)
	for _, v := range []any{
		map[string]any{"a": 1, "b": []string{"x", "y"}},
		map[string]string{"html": "<script>&</script>", "uni": "é\u2028"},
		[]int{},
		"plain",
		map[string]string{"big": big},
		nil,
	} {
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second from a pooled buffer
			rec := httptest.NewRecorder()
			if err := JSON(rec, http.StatusTeapot, v); err != nil {
				t.Fatal(err)
			}
			if rec.Code != http.StatusTeapot || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			if got := rec.Body.String(); got != string(want) {
				t.Fatalf("JSON(%.60v) wrote %.80q, want %.80q", v, got, want)
			}
		}
	}
	if err := JSON(httptest.NewRecorder(), http.StatusOK, func() {}); err == nil {
		t.Fatal("an unencodable value was written")
	}
}

// TestRequestState checks what the stack records of a request and hands
// to handlers, and that a context outside it answers empty.
func TestRequestState(t *testing.T) {
	st := &Stack{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	type seen struct {
		id, ip string
		logger bool
	}
	var got seen
	h := st.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		SetLogUser(ctx, "@alice:x")
		got = seen{id: RequestID(ctx), ip: ClientIP(ctx), logger: Logger(ctx) != slog.Default()}
	}))
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	req.RemoteAddr = "192.0.2.7:5555"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	want := seen{id: rec.Header().Get("X-Request-Id"), ip: "192.0.2.7", logger: true}
	if got != want || got.id == "" {
		t.Fatalf("inside the stack: %+v, want %+v", got, want)
	}
	ctx := context.Background()
	if RequestID(ctx) != "" || ClientIP(ctx) != "" || Logger(ctx) != slog.Default() {
		t.Fatal("a context outside the stack answered")
	}
}
