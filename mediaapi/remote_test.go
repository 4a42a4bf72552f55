package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
)

// fakeFedAuth accepts requests carrying a signature header from the
// fake signer.
type fakeFedAuth struct{}

func (fakeFedAuth) Origin(r *http.Request) (string, error) {
	if o := r.Header.Get("X-Test-Origin"); o != "" {
		return o, nil
	}
	return "", mxerr.Custom(http.StatusUnauthorized, "M_UNAUTHORIZED", "Missing signature")
}

type fakeSigner struct{ origin string }

func (f fakeSigner) Sign(req *http.Request, _ string) error {
	req.Header.Set("X-Test-Origin", f.origin)
	return nil
}

// mapResolver sends every server name to a test server.
type mapResolver map[string]string

func (m mapResolver) Resolve(_ context.Context, name string) (string, error) {
	if u, ok := m[name]; ok {
		return u, nil
	}
	return "", errors.New("unknown server")
}

// loopbackClient may reach test servers on loopback.
func loopbackClient() *http.Client {
	return NewSafeClient(IPPolicy{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, 10*time.Second)
}

// counting counts requests reaching h.
func counting(n *atomic.Int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}

func TestFederationRoundTrip(t *testing.T) {
	origin := newTestServer(t, func(c *Config) { c.ServerName = "origin.test" }, Deps{FederationAuth: fakeFedAuth{}})
	var requests atomic.Int64
	proxy := httptest.NewServer(counting(&requests, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequest(r.Method, origin.url+r.URL.RequestURI(), r.Body)
		req.Header = r.Header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})))
	t.Cleanup(proxy.Close)
	fetcher := &FederationFetcher{Client: loopbackClient(), Signer: fakeSigner{"test"}, Resolver: mapResolver{"origin.test": proxy.URL}}
	s := newTestServer(t, nil, Deps{Remote: fetcher})

	data := randomBytes(200_000)
	r := mustStatus(t, origin.do(t, "POST", "/_matrix/media/v3/upload?filename=notes.txt", "u:o", data, "Content-Type", "text/plain"), 200)
	id := strings.TrimPrefix(r.json["content_uri"].(string), "mxc://origin.test/")

	// The origin refuses unsigned federation requests and serves only its own media.
	mustErr(t, origin.do(t, "GET", "/_matrix/federation/v1/media/download/"+id, "", nil), 401, "M_UNAUTHORIZED")
	mustErr(t, origin.do(t, "GET", "/_matrix/federation/v1/media/download/nope", "", nil, "X-Test-Origin", "x.test"), 404, "M_NOT_FOUND")

	// Many clients at once: one fetch.
	var wg sync.WaitGroup
	results := make([]*response, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.do(t, "GET", "/_matrix/client/v1/media/download/origin.test/"+id, "u:b", nil)
		}()
	}
	wg.Wait()
	for _, r := range results {
		if r.status != 200 || !bytes.Equal(r.body, data) {
			t.Fatalf("remote download: %d, %d bytes", r.status, len(r.body))
		}
		if d := r.header.Get("Content-Disposition"); d != `inline; filename="notes.txt"` {
			t.Fatalf("remote filename lost: %q", d)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("%d fetches for one remote file", n)
	}
	// Cached: no new fetch; thumbnails of remote images are made locally.
	mustStatus(t, s.do(t, "GET", "/_matrix/client/v1/media/download/origin.test/"+id, "u:b", nil), 200)
	if n := requests.Load(); n != 1 {
		t.Fatalf("cached media fetched again (%d)", n)
	}
	img := mustStatus(t, origin.do(t, "POST", "/_matrix/media/v3/upload", "u:o", encodePNG(t, halves(200, 100, red, blue)), "Content-Type", "image/png"), 200)
	imgID := strings.TrimPrefix(img.json["content_uri"].(string), "mxc://origin.test/")
	th := mustStatus(t, s.do(t, "GET", "/_matrix/client/v1/media/thumbnail/origin.test/"+imgID+"?width=32&height=32&method=crop", "u:b", nil), 200)
	if th.header.Get("Content-Type") != "image/png" {
		t.Fatalf("remote thumbnail type %q", th.header.Get("Content-Type"))
	}
	// The origin's own federation thumbnail endpoint.
	ft := mustStatus(t, origin.do(t, "GET", "/_matrix/federation/v1/media/thumbnail/"+imgID+"?width=32&height=32&method=crop", "", nil, "X-Test-Origin", "x.test"), 200)
	if !strings.HasPrefix(ft.header.Get("Content-Type"), "multipart/mixed; boundary=") {
		t.Fatalf("federation thumbnail type %q", ft.header.Get("Content-Type"))
	}
	// Legacy endpoints do not fetch when asked not to.
	mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/download/origin.test/unknownRemote", "u:b", nil), 404, "M_NOT_FOUND")
}

// multipartAnswer writes a federation media answer by hand.
func multipartAnswer(w http.ResponseWriter, meta string, partHeader textproto.MIMEHeader, body []byte) {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	p, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	_, _ = p.Write([]byte(meta))
	p, _ = mw.CreatePart(partHeader)
	_, _ = p.Write(body)
	_ = mw.Close()
}

func TestFederationFetcherAnswers(t *testing.T) {
	payload := randomBytes(5000)
	var legacyHits atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/_matrix/federation/v1/media/download/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test-Origin") != "test" {
			http.Error(w, `{"errcode":"M_UNAUTHORIZED","error":"unsigned"}`, http.StatusUnauthorized)
			return
		}
		switch r.PathValue("id") {
		case "inline":
			multipartAnswer(w, "{}", textproto.MIMEHeader{"Content-Type": {"image/png"}, "Content-Disposition": {`attachment; filename*=utf-8''%E2%82%AC.png`}}, payload)
		case "redirect":
			multipartAnswer(w, `{"future":"field"}`, textproto.MIMEHeader{"Location": {"/cdn/blob"}}, nil)
		case "missing":
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"no"}`))
		case "old":
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"what?"}`))
		case "huge":
			multipartAnswer(w, "{}", textproto.MIMEHeader{"Content-Type": {"application/octet-stream"}}, randomBytes(20_000))
		case "toolarge":
			w.WriteHeader(502)
			_, _ = w.Write([]byte(`{"errcode":"M_TOO_LARGE","error":"big"}`))
		case "notmultipart":
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(payload)
		case "badmeta":
			multipartAnswer(w, "not json", textproto.MIMEHeader{"Content-Type": {"text/plain"}}, payload)
		case "pending":
			w.WriteHeader(504)
			_, _ = w.Write([]byte(`{"errcode":"M_NOT_YET_UPLOADED","error":"later"}`))
		case "private":
			multipartAnswer(w, "{}", textproto.MIMEHeader{"Location": {"http://10.1.2.3/secret"}}, nil)
		default:
			w.WriteHeader(500)
		}
	})
	mux.HandleFunc("/cdn/blob", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Disposition", `inline; filename="cdn.txt"`)
		_, _ = w.Write(payload)
	})
	mux.HandleFunc("/_matrix/media/v3/download/remote.test/old", func(w http.ResponseWriter, r *http.Request) {
		legacyHits.Add(1)
		if r.URL.Query().Get("allow_remote") != "false" {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("Content-Type", "text/csv")
		_, _ = w.Write(payload)
	})
	remote := httptest.NewServer(mux)
	t.Cleanup(remote.Close)
	fetcher := &FederationFetcher{Client: loopbackClient(), Signer: fakeSigner{"test"}, Resolver: mapResolver{"remote.test": remote.URL}}
	s := newTestServer(t, func(c *Config) { c.MaxRemoteBytes = 10_000 }, Deps{Remote: fetcher})
	get := func(id string) *response {
		return s.do(t, "GET", "/_matrix/client/v1/media/download/remote.test/"+id, "u:b", nil)
	}
	for _, tc := range []struct {
		id, contentType, disposition string
	}{
		{"inline", "image/png", `inline; filename*=utf-8''%E2%82%AC.png`},
		{"redirect", "text/plain", `inline; filename="cdn.txt"`},
		{"old", "text/csv", "inline"},
	} {
		r := mustStatus(t, get(tc.id), 200)
		if !bytes.Equal(r.body, payload) || r.header.Get("Content-Type") != tc.contentType || r.header.Get("Content-Disposition") != tc.disposition {
			t.Fatalf("%s: %d bytes, %q, %q", tc.id, len(r.body), r.header.Get("Content-Type"), r.header.Get("Content-Disposition"))
		}
	}
	if legacyHits.Load() != 1 {
		t.Fatalf("legacy fallback used %d times", legacyHits.Load())
	}
	for _, tc := range []struct {
		id     string
		status int
		code   string
	}{
		{"missing", 404, "M_NOT_FOUND"},
		{"huge", 502, "M_TOO_LARGE"},
		{"toolarge", 502, "M_TOO_LARGE"},
		{"notmultipart", 502, "M_UNKNOWN"},
		{"badmeta", 502, "M_UNKNOWN"},
		{"pending", 504, "M_NOT_YET_UPLOADED"},
		{"private", 502, "M_UNKNOWN"},
		{"broken", 502, "M_UNKNOWN"},
	} {
		t.Run(tc.id, func(t *testing.T) { mustErr(t, get(tc.id), tc.status, tc.code) })
	}
	// The three good answers carried the same bytes: stored once; the
	// refused ones left nothing behind.
	if n := blobFiles(t, s.dir); n != 1 {
		t.Fatalf("%d blobs kept, want 1", n)
	}
	// An unsigned fetcher is refused by the remote.
	unsigned := &FederationFetcher{Client: loopbackClient(), Resolver: mapResolver{"remote.test": remote.URL}}
	if _, err := unsigned.Fetch(context.Background(), "remote.test", "inline"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("unsigned fetch: %v", err)
	}
}

func TestDirectResolver(t *testing.T) {
	for in, want := range map[string]string{
		"example.org":      "https://example.org:8448",
		"example.org:443":  "https://example.org:443",
		"1.2.3.4":          "https://1.2.3.4:8448",
		"[2001:db8::1]":    "https://[2001:db8::1]:8448",
		"[2001:db8::1]:80": "https://[2001:db8::1]:80",
	} {
		got, err := DirectResolver{}.Resolve(context.Background(), in)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := (DirectResolver{}).Resolve(context.Background(), "bad/name"); err == nil {
		t.Error("bad server name resolved")
	}
}
