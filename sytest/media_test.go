package sytest

import (
	"bytes"
	"image/gif"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// mediaEnv configures the media test servers: small limits so that tests
// reach them quickly, the deprecated unauthenticated endpoints unfrozen,
// and URL previews allowed to reach the fixtures on 127.0.0.2 only.
func mediaEnv() map[string]string {
	return map[string]string{
		"PARLEY_MEDIA_MAX_UPLOAD_BYTES":           strconv.Itoa(mediaMaxUpload),
		"PARLEY_MEDIA_USER_QUOTA_BYTES":           strconv.Itoa(mediaQuota),
		"PARLEY_MEDIA_UNAUTHENTICATED_BEFORE":     "2999-01-01T00:00:00Z",
		"PARLEY_MEDIA_URL_PREVIEW_ALLOWED_RANGES": "127.0.0.2/32",
		"PARLEY_MEDIA_URL_PREVIEW_TIMEOUT":        "5s",
		"PARLEY_MEDIA_URL_PREVIEW_MAX_BYTES":      "65536",
	}
}

const (
	mediaMaxUpload = 8 << 20
	mediaQuota     = 12 << 20
	mediaBig       = 6 << 20 // larger than an S3 multipart part
)

// TestMediaRepository runs the media repository's behaviour on both
// databases and on both a local folder (file://) and an S3-compatible
// server (s3://, an in-process fake on loopback).
func TestMediaRepository(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		for _, store := range []string{"file", "s3"} {
			t.Run(store, func(t *testing.T) {
				t.Parallel()
				env := mediaEnv()
				var s3 *fakeS3
				if store == "s3" {
					s3 = startFakeS3(t)
					for k, v := range s3.Env() {
						env[k] = v
					}
				}
				s := StartServer(t, Options{Dialect: dialect, Env: env})
				alice, bob := s.Register(t, "alice"), s.Register(t, "bob")
				admin := s.RegisterAdmin(t, "mediaadmin")

				t.Run("upload then download is byte-identical", func(t *testing.T) { mediaRoundTrip(t, alice, bob, s3) })
				t.Run("thumbnails", func(t *testing.T) { mediaThumbnails(t, alice, bob) })
				t.Run("asynchronous upload", func(t *testing.T) { mediaAsyncUpload(t, alice, bob) })
				t.Run("authentication and bad input", func(t *testing.T) { mediaRefusals(t, alice) })
				t.Run("quota", func(t *testing.T) { mediaQuotaEnforced(t, s, admin) })
				t.Run("quarantine and delete", func(t *testing.T) { mediaAdmin(t, alice, bob, admin, s3) })
				t.Run("URL previews", func(t *testing.T) { mediaPreviews(t, bob) })
			})
		}
	})
}

func mediaRoundTrip(t *testing.T, alice, bob *User, s3 *fakeS3) {
	s := alice.Server
	data := mediaRandom(mediaBig)
	id := mediaUpload(t, alice, data, "video/mp4", "holiday vidéo.mp4")
	path := mediaClient + "/download/" + s.Name + "/" + id
	r := Must(t, mediaDo(t, s, "GET", path, bob.Token, nil), 200)
	if !bytes.Equal(r.Body, data) {
		t.Fatalf("downloaded %d bytes differ from the %d uploaded", len(r.Body), len(data))
	}
	for k, v := range map[string]string{
		"Content-Type":                 "video/mp4",
		"Content-Disposition":          "inline; filename*=utf-8''holiday%20vid%C3%A9o.mp4",
		"Content-Security-Policy":      "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';",
		"X-Content-Type-Options":       "nosniff",
		"Cross-Origin-Resource-Policy": "cross-origin",
		"Accept-Ranges":                "bytes",
		"Content-Length":               strconv.Itoa(len(data)),
	} {
		if got := r.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(r.Header.Get("Cache-Control"), "private") || r.Header.Get("ETag") == "" || r.Header.Get("Last-Modified") == "" {
		t.Fatalf("caching headers: %v", r.Header)
	}
	// Ranges, as audio and video players ask for them.
	rr := Must(t, mediaDo(t, s, "GET", path, bob.Token, nil, "Range", "bytes=5000000-5000999"), 206)
	if !bytes.Equal(rr.Body, data[5000000:5001000]) {
		t.Fatal("range answer differs")
	}
	if cr := rr.Header.Get("Content-Range"); cr != "bytes 5000000-5000999/"+strconv.Itoa(len(data)) {
		t.Fatalf("Content-Range %q", cr)
	}
	Must(t, mediaDo(t, s, "GET", path, bob.Token, nil, "If-None-Match", r.Header.Get("ETag")), 304)
	// A file name asked for in the path.
	r = Must(t, mediaDo(t, s, "GET", path+"/other.mp4", bob.Token, nil), 200)
	if d := r.Header.Get("Content-Disposition"); d != `inline; filename="other.mp4"` {
		t.Fatalf("Content-Disposition %q", d)
	}
	// Unsafe types are attachments.
	html := mediaUpload(t, alice, []byte("<html><script>alert(1)</script></html>"), "text/html", "")
	r = Must(t, mediaDo(t, s, "GET", mediaClient+"/download/"+s.Name+"/"+html, bob.Token, nil), 200)
	if d := r.Header.Get("Content-Disposition"); d != "attachment" {
		t.Fatalf("HTML served %q", d)
	}
	// The deprecated unauthenticated endpoint serves media from before
	// the freeze (set in the future on this server).
	r = Must(t, mediaDo(t, s, "GET", mediaV3+"/download/"+s.Name+"/"+id, "", nil), 200)
	if !bytes.Equal(r.Body, data) {
		t.Fatal("legacy download differs")
	}
	// Identical bytes are stored once.
	before := 0
	if s3 != nil {
		before = s3.Objects(t)
	}
	again := mediaUpload(t, bob, data, "application/octet-stream", "")
	if s3 != nil {
		if after := s3.Objects(t); after != before {
			t.Fatalf("identical upload added objects: %d → %d", before, after)
		}
	}
	r = Must(t, mediaDo(t, s, "GET", mediaClient+"/download/"+s.Name+"/"+again, alice.Token, nil), 200)
	if !bytes.Equal(r.Body, data) || r.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatal("deduplicated upload differs")
	}
	cfg := Must(t, mediaDo(t, s, "GET", mediaClient+"/config", bob.Token, nil), 200)
	if cfg.JSON["m.upload.size"] != float64(mediaMaxUpload) {
		t.Fatalf("config: %s", cfg)
	}
}

func mediaThumbnails(t *testing.T, alice, bob *User) {
	s := alice.Server
	for _, tc := range []struct {
		name, contentType string
		data              []byte
		query             string
		wantType          string
		w, h              int
		frames            int
	}{
		{"jpeg crop", "image/jpeg", mediaJPEG(t, mediaHalves(480, 360, mediaRed, mediaBlue)), "width=96&height=96&method=crop", "image/jpeg", 96, 96, 0},
		{"jpeg scale", "image/jpeg", mediaJPEG(t, mediaHalves(480, 360, mediaRed, mediaBlue)), "width=320&height=240&method=scale", "image/jpeg", 320, 240, 0},
		{"png", "image/png", mediaPNG(t, mediaHalves(400, 200, mediaRed, mediaBlue)), "width=640&height=480&method=scale", "image/png", 400, 200, 0},
		{"png crop", "image/png", mediaPNG(t, mediaHalves(400, 200, mediaRed, mediaBlue)), "width=32&height=32&method=crop", "image/png", 32, 32, 0},
		{"gif first frame", "image/gif", mediaGIF(t, 160, 120, 3), "width=96&height=96&method=crop", "image/png", 96, 96, 0},
		{"gif animated", "image/gif", mediaGIF(t, 160, 120, 3), "width=96&height=96&method=crop&animated=true", "image/gif", 96, 96, 3},
		{"webp", "image/webp", mediaWebP(400, 300), "width=320&height=240&method=scale", "image/jpeg", 320, 240, 0},
		{"sniffed, not trusted", "application/octet-stream", mediaPNG(t, mediaHalves(100, 100, mediaRed, mediaBlue)), "width=32&height=32&method=crop", "image/png", 32, 32, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := mediaUpload(t, alice, tc.data, tc.contentType, "")
			r := Must(t, mediaDo(t, s, "GET", mediaClient+"/thumbnail/"+s.Name+"/"+id+"?"+tc.query, bob.Token, nil), 200)
			if ct := r.Header.Get("Content-Type"); ct != tc.wantType {
				t.Fatalf("Content-Type %q, want %q", ct, tc.wantType)
			}
			if d := r.Header.Get("Content-Disposition"); !strings.HasPrefix(d, `inline; filename="thumbnail.`) {
				t.Fatalf("Content-Disposition %q", d)
			}
			b := mediaDecode(t, r.Body).Bounds()
			if b.Dx() != tc.w || b.Dy() != tc.h {
				t.Fatalf("thumbnail %dx%d, want %dx%d", b.Dx(), b.Dy(), tc.w, tc.h)
			}
			if tc.frames > 0 {
				g, err := gif.DecodeAll(bytes.NewReader(r.Body))
				if err != nil || len(g.Image) != tc.frames {
					t.Fatalf("animated thumbnail: %v", err)
				}
			}
		})
	}
	t.Run("EXIF orientation honoured and stripped", func(t *testing.T) {
		jpg := mediaWithEXIF(mediaJPEG(t, mediaHalves(450, 150, mediaRed, mediaBlue)), 6)
		id := mediaUpload(t, alice, jpg, "image/jpeg", "")
		r := Must(t, mediaDo(t, s, "GET", mediaClient+"/thumbnail/"+s.Name+"/"+id+"?width=100&height=300&method=scale", bob.Token, nil), 200)
		if bytes.Contains(r.Body, []byte("Exif")) {
			t.Fatal("thumbnail keeps EXIF")
		}
		img := mediaDecode(t, r.Body)
		if b := img.Bounds(); b.Dx() != 100 || b.Dy() != 300 || !mediaReddish(img.At(50, 20)) || !mediaBluish(img.At(50, 280)) {
			t.Fatalf("thumbnail %v not upright", b)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		id := mediaUpload(t, alice, mediaPNG(t, mediaHalves(64, 64, mediaRed, mediaBlue)), "image/png", "")
		text := mediaUpload(t, alice, []byte("not an image at all"), "image/png", "")
		base := mediaClient + "/thumbnail/" + s.Name + "/"
		for _, tc := range []struct {
			path   string
			status int
			code   string
		}{
			{base + id + "?width=0&height=32", 400, "M_INVALID_PARAM"},
			{base + id + "?width=x&height=32", 400, "M_INVALID_PARAM"},
			{base + id + "?width=32&height=32&method=zoom", 400, "M_INVALID_PARAM"},
			{base + id + "?width=32", 400, "M_MISSING_PARAM"},
			{base + text + "?width=32&height=32", 400, "M_UNKNOWN"},
			{base + "noSuchMedia?width=32&height=32", 404, "M_NOT_FOUND"},
		} {
			MustErr(t, mediaDo(t, s, "GET", tc.path, bob.Token, nil), tc.status, tc.code)
		}
		// The deprecated endpoint thumbnails too (media predates the freeze).
		Must(t, mediaDo(t, s, "GET", mediaV3+"/thumbnail/"+s.Name+"/"+id+"?width=32&height=32&method=crop", "", nil), 200)
	})
}

func mediaAsyncUpload(t *testing.T, alice, bob *User) {
	s := alice.Server
	r := Must(t, mediaDo(t, s, "POST", "/_matrix/media/v1/create", alice.Token, nil), 200)
	uri := r.Str("content_uri")
	if exp, _ := r.JSON["unused_expires_at"].(float64); !strings.HasPrefix(uri, "mxc://"+s.Name+"/") || int64(exp) < time.Now().UnixMilli() {
		t.Fatalf("create: %s", r)
	}
	id := strings.TrimPrefix(uri, "mxc://"+s.Name+"/")
	dl := mediaClient + "/download/" + s.Name + "/" + id
	MustErr(t, mediaDo(t, s, "GET", dl+"?timeout_ms=0", bob.Token, nil), 504, "M_NOT_YET_UPLOADED")

	data := mediaRandom(300_000)
	var wg sync.WaitGroup
	var waited *Response
	wg.Add(1)
	go func() {
		defer wg.Done()
		waited = mediaDo(t, s, "GET", dl+"?timeout_ms=15000", bob.Token, nil)
	}()
	time.Sleep(300 * time.Millisecond)
	put := mediaV3 + "/upload/" + s.Name + "/" + id + "?filename=later.bin"
	MustErr(t, mediaDo(t, s, "PUT", put, bob.Token, data), 403, "M_FORBIDDEN")
	Must(t, mediaDo(t, s, "PUT", put, alice.Token, data, "Content-Type", "application/zip"), 200)
	wg.Wait()
	if waited.Status != 200 || !bytes.Equal(waited.Body, data) {
		t.Fatalf("download waiting for the upload: %d", waited.Status)
	}
	if d := waited.Header.Get("Content-Disposition"); d != `attachment; filename="later.bin"` {
		t.Fatalf("Content-Disposition %q", d)
	}
	MustErr(t, mediaDo(t, s, "PUT", put, alice.Token, data), 409, "M_CANNOT_OVERWRITE_MEDIA")
	MustErr(t, mediaDo(t, s, "PUT", mediaV3+"/upload/"+s.Name+"/neverCreated", alice.Token, data), 404, "M_NOT_FOUND")
	// Pending creates are limited per user (default 10).
	for range 10 {
		Must(t, mediaDo(t, s, "POST", "/_matrix/media/v1/create", bob.Token, nil), 200)
	}
	MustErr(t, mediaDo(t, s, "POST", "/_matrix/media/v1/create", bob.Token, nil), 429, "M_LIMIT_EXCEEDED")
}

func mediaRefusals(t *testing.T, alice *User) {
	s := alice.Server
	id := mediaUpload(t, alice, []byte("hello"), "text/plain", "")
	path := mediaClient + "/download/" + s.Name + "/" + id
	MustErr(t, mediaDo(t, s, "GET", path, "", nil), 401, "M_MISSING_TOKEN")
	MustErr(t, mediaDo(t, s, "GET", path, "not-a-token", nil), 401, "M_UNKNOWN_TOKEN")
	MustErr(t, mediaDo(t, s, "GET", mediaClient+"/thumbnail/"+s.Name+"/"+id+"?width=1&height=1", "", nil), 401, "M_MISSING_TOKEN")
	MustErr(t, mediaDo(t, s, "POST", mediaV3+"/upload", "", []byte("x")), 401, "M_MISSING_TOKEN")
	MustErr(t, mediaDo(t, s, "POST", "/_matrix/media/v1/create", "", nil), 401, "M_MISSING_TOKEN")
	MustErr(t, mediaDo(t, s, "GET", mediaClient+"/config", "", nil), 401, "M_MISSING_TOKEN")
	MustErr(t, mediaDo(t, s, "GET", mediaClient+"/download/"+s.Name+"/noSuchMedia", alice.Token, nil), 404, "M_NOT_FOUND")
	MustErr(t, mediaDo(t, s, "GET", mediaClient+"/download/"+s.Name+"/bad..id", alice.Token, nil), 404, "M_NOT_FOUND")
	MustErr(t, mediaDo(t, s, "GET", mediaV3+"/download/"+s.Name+"/noSuchMedia", "", nil), 404, "M_NOT_FOUND")
	MustErr(t, mediaDo(t, s, "GET", path, alice.Token, nil, "Range", "bytes=100-200"), 416, "M_UNKNOWN")
	// Oversized: refused from the declared length, before the body is sent.
	big := mediaRandom(mediaMaxUpload + 1)
	MustErr(t, mediaDo(t, s, "POST", mediaV3+"/upload", alice.Token, big, "Expect", "100-continue"), 413, "M_TOO_LARGE")
	r := Must(t, mediaDo(t, s, "POST", "/_matrix/media/v1/create", alice.Token, nil), 200)
	put := mediaV3 + "/upload/" + strings.TrimPrefix(r.Str("content_uri"), "mxc://")
	MustErr(t, mediaDo(t, s, "PUT", put, alice.Token, big, "Expect", "100-continue"), 413, "M_TOO_LARGE")
}

func mediaQuotaEnforced(t *testing.T, s *Server, admin *User) {
	q := s.Register(t, "quota")
	data := mediaRandom(mediaBig)
	first := mediaUpload(t, q, data, "application/octet-stream", "")
	mediaUpload(t, q, data, "application/octet-stream", "") // the same bytes still count
	MustErr(t, mediaDo(t, s, "POST", mediaV3+"/upload", q.Token, []byte("one byte too many")), 403, "M_FORBIDDEN")
	// Others are not affected; deleting frees the quota.
	other := s.Register(t, "quota-other")
	mediaUpload(t, other, []byte("fine"), "text/plain", "")
	Must(t, admin.Do(t, "DELETE", "/_synapse/admin/v1/media/"+s.Name+"/"+first, nil), 200)
	mediaUpload(t, q, []byte("fits again"), "text/plain", "")
	list := Must(t, admin.Do(t, "GET", "/_synapse/admin/v1/users/"+url.PathEscape(q.ID)+"/media", nil), 200)
	if list.JSON["total"] != float64(2) {
		t.Fatalf("user media: %s", list)
	}
}

func mediaAdmin(t *testing.T, alice, bob, admin *User, s3 *fakeS3) {
	s := alice.Server
	data := mediaRandom(50_000)
	id := mediaUpload(t, alice, data, "application/pdf", "")
	dl := mediaClient + "/download/" + s.Name + "/" + id
	MustErr(t, mediaDo(t, s, "POST", "/_synapse/admin/v1/media/quarantine/"+s.Name+"/"+id, bob.Token, nil), 403, "M_FORBIDDEN")
	Must(t, mediaDo(t, s, "POST", "/_synapse/admin/v1/media/quarantine/"+s.Name+"/"+id, admin.Token, []byte("{}")), 200)
	MustErr(t, mediaDo(t, s, "GET", dl, bob.Token, nil), 404, "M_NOT_FOUND")
	Must(t, mediaDo(t, s, "POST", "/_synapse/admin/v1/media/unquarantine/"+s.Name+"/"+id, admin.Token, []byte("{}")), 200)
	Must(t, mediaDo(t, s, "GET", dl, bob.Token, nil), 200)
	info := Must(t, admin.Do(t, "GET", "/_synapse/admin/v1/media/"+s.Name+"/"+id, nil), 200)
	if mi, _ := info.JSON["media_info"].(map[string]any); mi["media_type"] != "application/pdf" || mi["user_id"] != alice.ID {
		t.Fatalf("media info: %s", info)
	}
	before := 0
	if s3 != nil {
		before = s3.Objects(t)
	}
	r := Must(t, admin.Do(t, "DELETE", "/_synapse/admin/v1/media/"+s.Name+"/"+id, nil), 200)
	if ids, _ := r.JSON["deleted_media"].([]any); len(ids) != 1 || ids[0] != id || r.JSON["total"] != float64(1) {
		t.Fatalf("delete: %s", r)
	}
	MustErr(t, mediaDo(t, s, "GET", dl, bob.Token, nil), 404, "M_NOT_FOUND")
	MustErr(t, admin.Do(t, "DELETE", "/_synapse/admin/v1/media/"+s.Name+"/"+id, nil), 404, "M_NOT_FOUND")
	if s3 != nil {
		if after := s3.Objects(t); after != before-1 {
			t.Fatalf("deleting media left its object: %d → %d", before, after)
		}
	}
	// Everything a room's events refer to, at once.
	room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
	img := mediaUpload(t, alice, mediaPNG(t, mediaHalves(8, 8, mediaRed, mediaBlue)), "image/png", "")
	file := mediaUpload(t, alice, mediaRandom(1000), "application/zip", "")
	kept := mediaUpload(t, alice, mediaRandom(1000), "application/zip", "")
	alice.sendEvent(t, room, "m.room.message", map[string]any{"msgtype": "m.image", "body": "pic", "url": "mxc://" + s.Name + "/" + img})
	alice.sendEvent(t, room, "m.room.message", map[string]any{"msgtype": "m.file", "body": "zip", "url": "mxc://" + s.Name + "/" + file})
	r = Must(t, admin.Do(t, "POST", "/_synapse/admin/v1/room/"+url.PathEscape(room)+"/media/quarantine", map[string]any{}), 200)
	if r.JSON["num_quarantined"] != float64(2) {
		t.Fatalf("room quarantine: %s", r)
	}
	for _, q := range []string{img, file} {
		MustErr(t, mediaDo(t, s, "GET", mediaClient+"/download/"+s.Name+"/"+q, bob.Token, nil), 404, "M_NOT_FOUND")
	}
	Must(t, mediaDo(t, s, "GET", mediaClient+"/download/"+s.Name+"/"+kept, bob.Token, nil), 200)
	MustErr(t, bob.Do(t, "POST", "/_synapse/admin/v1/room/"+url.PathEscape(room)+"/media/quarantine", map[string]any{}), 403, "M_FORBIDDEN")
}

func mediaPreviews(t *testing.T, u *User) {
	s := u.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<!doctype html><html><head><title>Fallback title</title>
			<meta property="og:title" content="Parley fixture"><meta property="og:description" content="A page for previews">
			<meta property="og:image" content="/logo.png"></head><body><p>Hello</p></body></html>`))
	})
	mux.HandleFunc("/logo.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(mediaPNG(t, mediaHalves(120, 60, mediaRed, mediaBlue)))
	})
	base, port := mediaFixtures(t, mux)
	mux.HandleFunc("/redirect-loopback", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:"+port+"/page", http.StatusFound)
	})
	mux.HandleFunc("/redirect-localhost", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:"+port+"/page", http.StatusFound)
	})
	mux.HandleFunc("/redirect-private", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://10.0.0.1/", http.StatusFound)
	})
	preview := func(target string) *Response {
		return mediaDo(t, s, "GET", mediaClient+"/preview_url?url="+url.QueryEscape(target), u.Token, nil)
	}
	r := Must(t, preview(base+"/page"), 200)
	if r.Str("og:title") != "Parley fixture" || r.Str("og:description") != "A page for previews" ||
		r.JSON["og:image:width"] != float64(120) || r.JSON["og:image:height"] != float64(60) || r.JSON["matrix:image:size"] == nil {
		t.Fatalf("preview: %s", r)
	}
	img := r.Str("og:image")
	if !strings.HasPrefix(img, "mxc://"+s.Name+"/") {
		t.Fatalf("og:image %q", img)
	}
	Must(t, mediaDo(t, s, "GET", mediaClient+"/download/"+strings.TrimPrefix(img, "mxc://"), u.Token, nil), 200)
	// The same preview again comes from the cache.
	if again := Must(t, preview(base+"/page"), 200); again.Str("og:image") != img {
		t.Fatalf("cached preview differs: %s", again)
	}
	// Server-side request forgery: loopback, private and link-local
	// addresses are refused, whether named directly, through a name that
	// resolves to them, or reached by a redirect. Nothing is dialled.
	for _, target := range []string{
		"http://127.0.0.1:" + port + "/page",
		"http://localhost:" + port + "/page",
		"http://[::1]:" + port + "/page",
		"http://[::ffff:127.0.0.1]:" + port + "/page",
		"http://10.0.0.1/",
		"http://192.168.1.1/",
		"http://169.254.169.254/latest/meta-data/",
		base + "/redirect-loopback",
		base + "/redirect-localhost",
		base + "/redirect-private",
	} {
		MustErr(t, preview(target), 403, "M_FORBIDDEN")
	}
	MustErr(t, preview("file:///etc/passwd"), 400, "M_INVALID_PARAM")
	MustErr(t, mediaDo(t, s, "GET", mediaClient+"/preview_url", u.Token, nil), 400, "M_MISSING_PARAM")
	MustErr(t, mediaDo(t, s, "GET", mediaClient+"/preview_url?url="+url.QueryEscape(base+"/page"), "", nil), 401, "M_MISSING_TOKEN")
}

// TestMediaLegacyFrozenByDefault: with no freeze time configured, new
// media is served only on the authenticated endpoints.
func TestMediaLegacyFrozenByDefault(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "frozen")
		id := mediaUpload(t, u, mediaPNG(t, mediaHalves(64, 64, mediaRed, mediaBlue)), "image/png", "")
		MustErr(t, mediaDo(t, s, "GET", mediaV3+"/download/"+s.Name+"/"+id, "", nil), 404, "M_NOT_FOUND")
		MustErr(t, mediaDo(t, s, "GET", "/_matrix/media/r0/download/"+s.Name+"/"+id, "", nil), 404, "M_NOT_FOUND")
		MustErr(t, mediaDo(t, s, "GET", mediaV3+"/thumbnail/"+s.Name+"/"+id+"?width=32&height=32", "", nil), 404, "M_NOT_FOUND")
		Must(t, mediaDo(t, s, "GET", mediaClient+"/download/"+s.Name+"/"+id, u.Token, nil), 200)
		Must(t, mediaDo(t, s, "GET", mediaClient+"/thumbnail/"+s.Name+"/"+id+"?width=32&height=32", u.Token, nil), 200)
		// Remote media cannot be fetched until federation is wired.
		MustErr(t, mediaDo(t, s, "GET", mediaClient+"/download/remote.example/abc", u.Token, nil), 404, "M_NOT_FOUND")
	})
}
