package mediaapi

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestIPPolicy(t *testing.T) {
	p := IPPolicy{
		Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		Denied:  []netip.Prefix{netip.MustParsePrefix("8.8.4.0/24")},
	}
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true, "127.0.0.2": true, "::ffff:127.0.0.2": true,
		"127.0.0.1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false, "169.254.169.254": false,
		"100.64.0.1": false, "0.0.0.0": false, "224.0.0.1": false, "255.255.255.255": false, "198.18.0.1": false,
		"::1": false, "::": false, "fe80::1": false, "fc00::1": false, "fd12::1": false, "ff02::1": false,
		"::ffff:10.0.0.1": false, "::ffff:127.0.0.1": false, "64:ff9b::a00:1": false, "2002:a00:1::": false,
		"::127.0.0.1": false, "2001:db8::1": false, "8.8.4.4": false,
	} {
		if got := p.Permits(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Permits(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestParseOpenGraph(t *testing.T) {
	base, _ := url.Parse("https://example.org/blog/post")
	for _, tc := range []struct {
		name, html string
		want       map[string]any
	}{
		{"og", `<html><head><meta property="og:title" content="  Hello
			world "><meta property="og:description" content="Desc"><meta property="og:image" content="/img.png">
			<meta property="og:title" content="second"></head></html>`,
			map[string]any{"og:title": "Hello world", "og:description": "Desc", "og:image": "https://example.org/img.png"}},
		{"fallbacks", `<title>Page &amp; title</title><meta name="description" content="About"><body><img src="data:x"><img src="pic.jpg">`,
			map[string]any{"og:title": "Page & title", "og:description": "About", "og:image": "https://example.org/blog/pic.jpg"}},
		{"twitter image", `<meta name="twitter:image" content="https://cdn.example/t.png"><link rel="image_src" href="/x.png">`,
			map[string]any{"og:image": "https://cdn.example/t.png"}},
		{"no image scheme", `<meta property="og:image" content="javascript:alert(1)">`, map[string]any{}},
		{"empty", ``, map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseOpenGraph(strings.NewReader(tc.html), "text/html; charset=utf-8", base)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("%s = %v, want %v (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
	long := "<title>" + strings.Repeat("é", 2000) + "</title>"
	if got := parseOpenGraph(strings.NewReader(long), "text/html", base)["og:title"].(string); len([]rune(got)) != maxOGTitleRunes {
		t.Fatalf("title not truncated: %d runes", len([]rune(got)))
	}
	latin1 := "<title>caf\xe9</title>"
	if got := parseOpenGraph(strings.NewReader(latin1), "text/html; charset=iso-8859-1", base)["og:title"]; got != "café" {
		t.Fatalf("charset not honoured: %q", got)
	}
}

// fixtureServer listens on 127.0.0.2, the address tests allow.
func fixtureServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestPreview(t *testing.T) {
	var pageHits atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		pageHits.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<html><head><title>Fixture</title><meta property="og:description" content="A page">
			<meta property="og:image" content="/image.png"></head><body>hi</body></html>`))
	})
	mux.HandleFunc("/image.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(encodePNG(t, halves(40, 30, red, blue)))
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<title>" + strings.Repeat("x", 5000) + "</title>"))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
	})
	mux.HandleFunc("/gone", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(404) })
	base := fixtureServer(t, mux)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	mux.HandleFunc("/to-loopback", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:"+port+"/page", http.StatusFound)
	})
	mux.HandleFunc("/to-localhost", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://localhost:"+port+"/page", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	s := newTestServer(t, func(c *Config) {
		c.Preview = PreviewConfig{Enabled: true, MaxBytes: 4096, Timeout: time.Second,
			Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}
	}, Deps{})
	preview := func(u string) *response {
		return s.do(t, "GET", "/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(u), "u:p", nil)
	}
	r := mustStatus(t, preview(base+"/page#frag"), 200)
	if r.json["og:title"] != "Fixture" || r.json["og:description"] != "A page" || r.json["og:image:width"] != float64(40) ||
		r.json["og:image:height"] != float64(30) || r.json["og:image:type"] != "image/png" {
		t.Fatalf("preview %s", r.body)
	}
	img, _ := r.json["og:image"].(string)
	if !strings.HasPrefix(img, "mxc://test/") {
		t.Fatalf("og:image %q", img)
	}
	mustStatus(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+strings.TrimPrefix(img, "mxc://test/"), "u:p", nil), 200)
	// Cached: the page is not fetched again.
	mustStatus(t, preview(base+"/page"), 200)
	mustStatus(t, s.do(t, "GET", "/_matrix/media/v3/preview_url?url="+url.QueryEscape(base+"/page"), "u:p", nil), 200)
	if n := pageHits.Load(); n != 1 {
		t.Fatalf("page fetched %d times", n)
	}
	// An image URL previews as itself.
	r = mustStatus(t, preview(base+"/image.png"), 200)
	if r.json["og:image:width"] != float64(40) || r.json["og:title"] != "image.png" {
		t.Fatalf("image preview %s", r.body)
	}
	for _, tc := range []struct {
		url    string
		status int
		code   string
	}{
		{"", 400, "M_MISSING_PARAM"},
		{"ftp://example.org/x", 400, "M_INVALID_PARAM"},
		{"http://user:pw@example.org/", 400, "M_INVALID_PARAM"},
		{"/relative", 400, "M_INVALID_PARAM"},
		{"http://127.0.0.1:" + port + "/page", 403, "M_FORBIDDEN"},
		{"http://localhost:" + port + "/page", 403, "M_FORBIDDEN"},
		{"http://[::1]:" + port + "/page", 403, "M_FORBIDDEN"},
		{"http://[::ffff:127.0.0.1]:" + port + "/page", 403, "M_FORBIDDEN"},
		{"http://10.0.0.1/", 403, "M_FORBIDDEN"},
		{"http://169.254.169.254/latest/meta-data/", 403, "M_FORBIDDEN"},
		{base + "/to-loopback", 403, "M_FORBIDDEN"},
		{base + "/to-localhost", 403, "M_FORBIDDEN"},
		{base + "/loop", 502, "M_UNKNOWN"},
		{base + "/gone", 502, "M_UNKNOWN"},
		{base + "/big", 502, "M_TOO_LARGE"},
		{base + "/slow", 502, "M_UNKNOWN"},
	} {
		t.Run(tc.url, func(t *testing.T) { mustErr(t, preview(tc.url), tc.status, tc.code) })
	}
	mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/preview_url?url=x&ts=yesterday", "u:p", nil), 400, "M_INVALID_PARAM")
	mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/preview_url?url=x", "guest", nil), 403, "M_GUEST_ACCESS_FORBIDDEN")
}

func TestPreviewDisabled(t *testing.T) {
	s := newTestServer(t, nil, Deps{})
	mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/preview_url?url=http://example.org", "u:p", nil), 404, "M_UNRECOGNIZED")
}
