package mediaapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// fakeAuth: token "admin" is an admin, "guest" a guest, "u:NAME" @NAME:test.
type fakeAuth struct{}

func (fakeAuth) Authenticate(_ context.Context, token string) (Requester, error) {
	switch {
	case token == "admin":
		return Requester{UserID: "@admin:test", IsAdmin: true}, nil
	case token == "guest":
		return Requester{UserID: "@guest:test", IsGuest: true}, nil
	case strings.HasPrefix(token, "u:"):
		return Requester{UserID: "@" + token[2:] + ":test"}, nil
	}
	return Requester{}, mxerr.UnknownToken(false, "Unrecognised access token")
}

type testServer struct {
	e   *Engine
	db  *storage.DB
	dir string
	url string
}

func newTestServer(t *testing.T, tweak func(*Config), deps Deps) *testServer {
	t.Helper()
	db := storagetest.OpenSQLite(t)
	dir := t.TempDir()
	cfg := Config{ServerName: "test", StoreURL: "file://" + dir, MaxUploadBytes: 4 << 20, MaxWait: 10 * time.Second}
	if tweak != nil {
		tweak(&cfg)
	}
	deps.Auth = fakeAuth{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := New(context.Background(), cfg, db, deps, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	for _, svc := range e.Services() {
		if err := svc.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Stop)
	}
	r := mux.NewRouter()
	r.NotFoundHandler = httpapi.NotFound()
	r.MethodNotAllowedHandler = httpapi.MethodNotAllowed()
	e.Routes(r)
	stack := &httpapi.Stack{Logger: log, MaxBody: 1 << 20, Unlimited: []string{"/_matrix/media/"}}
	srv := httptest.NewServer(stack.Handler(r))
	t.Cleanup(srv.Close)
	return &testServer{e: e, db: db, dir: dir, url: srv.URL}
}

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (r *response) errcode() string { s, _ := r.json["errcode"].(string); return s }

func (s *testServer) do(t *testing.T, method, path, token string, body []byte, headers ...string) *response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := &response{status: resp.StatusCode, header: resp.Header, body: b}
	_ = json.Unmarshal(b, &out.json)
	return out
}

func mustStatus(t *testing.T, r *response, status int) *response {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %d %s, want %d", r.status, r.body, status)
	}
	return r
}

func mustErr(t *testing.T, r *response, status int, code string) {
	t.Helper()
	if r.status != status || r.errcode() != code {
		t.Fatalf("got %d %s, want %d %s", r.status, r.body, status, code)
	}
}

// upload posts bytes and returns the media ID.
func (s *testServer) upload(t *testing.T, token string, b []byte, contentType string) string {
	t.Helper()
	r := mustStatus(t, s.do(t, "POST", "/_matrix/media/v3/upload", token, b, "Content-Type", contentType), 200)
	uri, _ := r.json["content_uri"].(string)
	if !strings.HasPrefix(uri, "mxc://test/") {
		t.Fatalf("content_uri %q", uri)
	}
	return strings.TrimPrefix(uri, "mxc://test/")
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// blobFiles counts the files in a file:// store.
func blobFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUploadDownload(t *testing.T) {
	s := newTestServer(t, nil, Deps{})
	data := randomBytes(1<<20 + 17)
	r := mustStatus(t, s.do(t, "POST", "/_matrix/media/v3/upload?filename=caf%C3%A9%20menu.pdf", "u:alice", data,
		"Content-Type", "application/pdf"), 200)
	id := strings.TrimPrefix(r.json["content_uri"].(string), "mxc://test/")
	path := "/_matrix/client/v1/media/download/test/" + id

	got := mustStatus(t, s.do(t, "GET", path, "u:bob", nil), 200)
	if !bytes.Equal(got.body, data) {
		t.Fatal("downloaded bytes differ")
	}
	for k, v := range map[string]string{
		"Content-Type":                 "application/pdf",
		"Content-Disposition":          "attachment; filename*=utf-8''caf%C3%A9%20menu.pdf",
		"X-Content-Type-Options":       "nosniff",
		"Cross-Origin-Resource-Policy": "cross-origin",
		"Content-Security-Policy":      contentSecurityPolicy,
		"Cache-Control":                cacheControl,
		"Accept-Ranges":                "bytes",
	} {
		if h := got.header.Get(k); h != v {
			t.Errorf("%s = %q, want %q", k, h, v)
		}
	}
	etag := got.header.Get("ETag")
	if etag == "" || got.header.Get("Last-Modified") == "" {
		t.Fatalf("missing ETag or Last-Modified: %v", got.header)
	}

	t.Run("range", func(t *testing.T) {
		r := mustStatus(t, s.do(t, "GET", path, "u:bob", nil, "Range", "bytes=1000-1999"), 206)
		if !bytes.Equal(r.body, data[1000:2000]) || r.header.Get("Content-Range") != "bytes 1000-1999/"+strconv.Itoa(len(data)) {
			t.Fatalf("range: %d bytes, %q", len(r.body), r.header.Get("Content-Range"))
		}
		r = mustStatus(t, s.do(t, "GET", path, "u:bob", nil, "Range", "bytes=-10"), 206)
		if !bytes.Equal(r.body, data[len(data)-10:]) {
			t.Fatal("suffix range")
		}
		mustErr(t, s.do(t, "GET", path, "u:bob", nil, "Range", "bytes=99999999-"), 416, "M_UNKNOWN")
		// Two ranges come as multipart/byteranges, copied through a pipe.
		r = mustStatus(t, s.do(t, "GET", path, "u:bob", nil, "Range", "bytes=0-9,300000-599999"), 206)
		_, params, err := mime.ParseMediaType(r.header.Get("Content-Type"))
		if err != nil {
			t.Fatal(err)
		}
		mr := multipart.NewReader(bytes.NewReader(r.body), params["boundary"])
		for _, want := range [][]byte{data[:10], data[300000:600000]} {
			p, err := mr.NextPart()
			if err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(p); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("part %q: %d bytes, %v", p.Header.Get("Content-Range"), len(got), err)
			}
		}
	})
	t.Run("conditional", func(t *testing.T) {
		mustStatus(t, s.do(t, "GET", path, "u:bob", nil, "If-None-Match", etag), 304)
	})
	t.Run("head", func(t *testing.T) {
		r := mustStatus(t, s.do(t, "HEAD", path, "u:bob", nil), 200)
		if r.header.Get("Content-Length") != strconv.Itoa(len(data)) || len(r.body) != 0 {
			t.Fatalf("HEAD: %v", r.header)
		}
	})
	t.Run("filename override and inline types", func(t *testing.T) {
		img := s.upload(t, "u:alice", encodePNG(t, halves(4, 4, red, blue)), "image/png")
		r := mustStatus(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+img+"/pic%20one.png", "u:bob", nil), 200)
		if d := r.header.Get("Content-Disposition"); d != `inline; filename="pic one.png"` {
			t.Fatalf("disposition %q", d)
		}
		html := s.upload(t, "u:alice", []byte("<script>alert(1)</script>"), "text/html")
		r = mustStatus(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+html, "u:bob", nil), 200)
		if d := r.header.Get("Content-Disposition"); d != "attachment" {
			t.Fatalf("HTML served as %q", d)
		}
	})
	t.Run("errors", func(t *testing.T) {
		mustErr(t, s.do(t, "GET", path, "", nil), 401, "M_MISSING_TOKEN")
		mustErr(t, s.do(t, "GET", path, "nonsense", nil), 401, "M_UNKNOWN_TOKEN")
		mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/doesNotExist", "u:bob", nil), 404, "M_NOT_FOUND")
		mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/bad.id", "u:bob", nil), 404, "M_NOT_FOUND")
		mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/download/bad%20server/abc", "u:bob", nil), 404, "M_NOT_FOUND")
		mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/download/other.example/abc", "u:bob", nil), 404, "M_NOT_FOUND")
		mustErr(t, s.do(t, "GET", path+"?timeout_ms=soon", "u:bob", nil), 400, "M_INVALID_PARAM")
		mustErr(t, s.do(t, "POST", "/_matrix/media/v3/upload", "", []byte("x")), 401, "M_MISSING_TOKEN")
		mustErr(t, s.do(t, "POST", "/_matrix/media/v3/upload", "guest", []byte("x")), 403, "M_GUEST_ACCESS_FORBIDDEN")
		mustErr(t, s.do(t, "POST", "/_matrix/media/v3/upload?filename=a%2Fb", "u:alice", []byte("x")), 400, "M_INVALID_PARAM")
		mustErr(t, s.do(t, "DELETE", path, "u:bob", nil), 405, "M_UNRECOGNIZED")
		// Legacy endpoints are frozen for everything by default.
		mustErr(t, s.do(t, "GET", "/_matrix/media/v3/download/test/"+id, "", nil), 404, "M_NOT_FOUND")
	})
	t.Run("config", func(t *testing.T) {
		r := mustStatus(t, s.do(t, "GET", "/_matrix/client/v1/media/config", "u:bob", nil), 200)
		if r.json["m.upload.size"] != float64(4<<20) {
			t.Fatalf("config %s", r.body)
		}
	})
}

func TestUploadLimits(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxUploadBytes = 1000; c.UserQuotaBytes = 2500 }, Deps{})
	// Declared too large: refused before reading.
	mustErr(t, s.do(t, "POST", "/_matrix/media/v3/upload", "u:q", randomBytes(1001)), 413, "M_TOO_LARGE")
	// Undeclared (chunked) and too large: refused while streaming, nothing kept.
	req, _ := http.NewRequest("POST", s.url+"/_matrix/media/v3/upload", io.MultiReader(bytes.NewReader(randomBytes(600)), bytes.NewReader(randomBytes(600))))
	req.Header.Set("Authorization", "Bearer u:q")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || resp.ContentLength == 0 {
		t.Fatalf("chunked oversize upload: %d", resp.StatusCode)
	}
	if n := blobFiles(t, s.dir); n != 0 {
		t.Fatalf("%d files left behind by refused uploads", n)
	}
	// Quota: 2500 bytes per user.
	s.upload(t, "u:q", randomBytes(1000), "application/octet-stream")
	s.upload(t, "u:q", randomBytes(1000), "application/octet-stream")
	mustErr(t, s.do(t, "POST", "/_matrix/media/v3/upload", "u:q", randomBytes(600)), 403, "M_FORBIDDEN")
	s.upload(t, "u:other", randomBytes(600), "application/octet-stream")
	// Undeclared length: the quota holds at commit time too.
	req, _ = http.NewRequest("POST", s.url+"/_matrix/media/v3/upload", io.MultiReader(bytes.NewReader(randomBytes(300)), bytes.NewReader(randomBytes(300))))
	req.Header.Set("Authorization", "Bearer u:q")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("chunked upload over quota: %d", resp.StatusCode)
	}
	if used, _ := s.db.Media().MediaUsage(context.Background(), "@q:test"); used != 2000 {
		t.Fatalf("usage %d", used)
	}
}

func TestQuotaInfoURI(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.UserQuotaBytes = 10; c.QuotaInfoURI = "https://example.org/quota" }, Deps{})
	r := s.do(t, "POST", "/_matrix/media/v3/upload", "u:q", randomBytes(11))
	mustErr(t, r, 403, "M_USER_LIMIT_EXCEEDED")
	if r.json["info_uri"] != "https://example.org/quota" {
		t.Fatalf("info_uri missing: %s", r.body)
	}
}

func TestDeduplication(t *testing.T) {
	s := newTestServer(t, nil, Deps{})
	data := randomBytes(5000)
	a := s.upload(t, "u:a", data, "application/octet-stream")
	b := s.upload(t, "u:b", data, "text/plain")
	if n := blobFiles(t, s.dir); n != 1 {
		t.Fatalf("identical content stored %d times", n)
	}
	// Each record keeps its own metadata.
	if ct := mustStatus(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+b, "u:a", nil), 200).header.Get("Content-Type"); ct != "text/plain" {
		t.Fatalf("content type %q", ct)
	}
	mustStatus(t, s.do(t, "DELETE", "/_synapse/admin/v1/media/test/"+a, "admin", nil), 200)
	if n := blobFiles(t, s.dir); n != 1 {
		t.Fatalf("shared content deleted while still used (%d files)", n)
	}
	if r := s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+b, "u:a", nil); !bytes.Equal(r.body, data) {
		t.Fatal("surviving copy unreadable")
	}
	mustStatus(t, s.do(t, "DELETE", "/_synapse/admin/v1/media/test/"+b, "admin", nil), 200)
	if n := blobFiles(t, s.dir); n != 0 {
		t.Fatalf("unreferenced content kept (%d files)", n)
	}
	// The same bytes uploaded again after deletion are stored afresh.
	c := s.upload(t, "u:a", data, "application/octet-stream")
	if r := s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+c, "u:a", nil); !bytes.Equal(r.body, data) {
		t.Fatal("re-uploaded content unreadable")
	}
}

func TestAsyncUpload(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxPendingUploads = 3 }, Deps{})
	r := mustStatus(t, s.do(t, "POST", "/_matrix/media/v1/create", "u:a", []byte("{}")), 200)
	uri := r.json["content_uri"].(string)
	if exp, _ := r.json["unused_expires_at"].(float64); int64(exp) <= time.Now().UnixMilli() {
		t.Fatalf("unused_expires_at %v", r.json["unused_expires_at"])
	}
	id := strings.TrimPrefix(uri, "mxc://test/")
	dl := "/_matrix/client/v1/media/download/test/" + id

	mustErr(t, s.do(t, "GET", dl+"?timeout_ms=0", "u:b", nil), 504, "M_NOT_YET_UPLOADED")
	mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/thumbnail/test/"+id+"?width=32&height=32&timeout_ms=0", "u:b", nil), 504, "M_NOT_YET_UPLOADED")

	data := randomBytes(3000)
	var wg sync.WaitGroup
	var waited *response
	wg.Add(1)
	go func() {
		defer wg.Done()
		waited = s.do(t, "GET", dl+"?timeout_ms=8000", "u:b", nil)
	}()
	time.Sleep(200 * time.Millisecond)
	mustErr(t, s.do(t, "PUT", "/_matrix/media/v3/upload/test/"+id, "u:b", data), 403, "M_FORBIDDEN")
	mustStatus(t, s.do(t, "PUT", "/_matrix/media/v3/upload/test/"+id, "u:a", data, "Content-Type", "text/plain"), 200)
	wg.Wait()
	if waited.status != 200 || !bytes.Equal(waited.body, data) {
		t.Fatalf("waiting download: %d", waited.status)
	}
	mustErr(t, s.do(t, "PUT", "/_matrix/media/v3/upload/test/"+id, "u:a", data), 409, "M_CANNOT_OVERWRITE_MEDIA")
	mustErr(t, s.do(t, "PUT", "/_matrix/media/v3/upload/test/unknownID", "u:a", data), 404, "M_NOT_FOUND")
	mustErr(t, s.do(t, "PUT", "/_matrix/media/v3/upload/elsewhere/"+id, "u:a", data), 404, "M_NOT_FOUND")

	// At most three pending per user.
	for range 3 {
		mustStatus(t, s.do(t, "POST", "/_matrix/media/v1/create", "u:c", nil), 200)
	}
	mustErr(t, s.do(t, "POST", "/_matrix/media/v1/create", "u:c", nil), 429, "M_LIMIT_EXCEEDED")
	mustStatus(t, s.do(t, "POST", "/_matrix/media/v1/create", "u:d", nil), 200)
}

func TestPendingExpiry(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.UnusedExpiry = time.Hour }, Deps{})
	r := mustStatus(t, s.do(t, "POST", "/_matrix/media/v1/create", "u:a", nil), 200)
	id := strings.TrimPrefix(r.json["content_uri"].(string), "mxc://test/")
	s.e.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	mustErr(t, s.do(t, "PUT", "/_matrix/media/v3/upload/test/"+id, "u:a", []byte("late")), 404, "M_NOT_FOUND")
	mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+id, "u:a", nil), 404, "M_NOT_FOUND")
	if err := s.e.RunRetention(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Media().MediaGet(context.Background(), "test", id); err == nil {
		t.Fatal("expired pending media survived retention")
	}
}

func TestLegacyFreeze(t *testing.T) {
	freeze := time.Now().Add(time.Hour)
	s := newTestServer(t, func(c *Config) { c.UnauthenticatedBefore = freeze }, Deps{})
	png := encodePNG(t, halves(64, 64, red, blue))
	id := s.upload(t, "u:a", png, "image/png")
	r := mustStatus(t, s.do(t, "GET", "/_matrix/media/v3/download/test/"+id, "", nil), 200)
	if !bytes.Equal(r.body, png) {
		t.Fatal("legacy download differs")
	}
	mustStatus(t, s.do(t, "GET", "/_matrix/media/r0/thumbnail/test/"+id+"?width=32&height=32&method=crop", "", nil), 200)
	// Media uploaded after the freeze is only on the authenticated endpoints.
	s.e.now = func() time.Time { return freeze.Add(time.Minute) }
	late := s.upload(t, "u:a", randomBytes(10), "application/octet-stream")
	mustErr(t, s.do(t, "GET", "/_matrix/media/v3/download/test/"+late, "", nil), 404, "M_NOT_FOUND")
	mustStatus(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+late, "u:a", nil), 200)
	mustErr(t, s.do(t, "GET", "/_matrix/media/v3/download/test/"+id+"?allow_remote=perhaps", "", nil), 400, "M_INVALID_PARAM")
}

func openBenchDB(b *testing.B) *storage.DB { return storagetest.OpenSQLite(b) }

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestRetention(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.RemoteRetention = time.Hour; c.LocalRetention = 48 * time.Hour }, Deps{})
	ctx := context.Background()
	// Cached remote media, last read two hours ago.
	key := newKey("content")
	w, err := s.e.blobs.write(ctx, key, bytes.NewReader(randomBytes(100)), 1000)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	if _, err := s.db.Media().MediaStore(ctx, storage.MediaStoreParams{
		Record:  storage.MediaRecord{Origin: "remote.example", MediaID: "old", Size: w.size, SHA256: w.sha256, CreatedTS: old, UploadedTS: old},
		BlobKey: key,
	}); err != nil {
		t.Fatal(err)
	}
	// A recent local upload, and the leftover of a write that never ended.
	local := s.upload(t, "u:a", randomBytes(100), "application/octet-stream")
	leftover := newKey("content")
	if err := s.e.blobs.writeAll(ctx, leftover, []byte("orphan")); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Media().MediaBlobWriteBegin(ctx, leftover, time.Now().Add(-25*time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	// A crash mid-write leaves a temporary file beside the key.
	if err := os.WriteFile(filepath.Join(s.dir, filepath.FromSlash(leftover))+".17a2b3c4.tmp", []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n := blobFiles(t, s.dir); n != 4 {
		t.Fatalf("%d blobs before retention", n)
	}
	if err := s.e.RunRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Media().MediaGet(ctx, "remote.example", "old"); err == nil {
		t.Fatal("stale remote media kept")
	}
	mustStatus(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+local, "u:a", nil), 200)
	if n := blobFiles(t, s.dir); n != 1 {
		t.Fatalf("%d blobs after retention, want the local upload's", n)
	}
	// Three days later the local upload, unread since, goes too.
	s.e.now = func() time.Time { return time.Now().Add(72 * time.Hour) }
	if err := s.e.RunRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if n := blobFiles(t, s.dir); n != 0 {
		t.Fatalf("%d blobs after local retention", n)
	}
}
