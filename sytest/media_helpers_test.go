package sytest

import (
	"bytes"
	"crypto/rand"
	encbin "encoding/binary"
	"encoding/json"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	_ "golang.org/x/image/webp" // to check WebP fixtures decode
)

// Helpers for the media repository's black-box tests. Test images are
// generated here rather than committed.

const (
	mediaV3     = "/_matrix/media/v3"
	mediaClient = "/_matrix/client/v1/media"
)

// mediaDo sends raw bytes (uploads set their own Content-Type) with extra
// headers given as name, value pairs.
func mediaDo(t testing.TB, s *Server, method, path, token string, body []byte, headers ...string) *Response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(b, &r.JSON)
	}
	return r
}

// mediaUpload uploads bytes and returns the media ID (on server s.Name).
func mediaUpload(t testing.TB, u *User, body []byte, contentType, filename string) string {
	t.Helper()
	path := mediaV3 + "/upload"
	if filename != "" {
		path += "?filename=" + url.QueryEscape(filename)
	}
	r := Must(t, mediaDo(t, u.Server, "POST", path, u.Token, body, "Content-Type", contentType), 200)
	uri := r.Str("content_uri")
	prefix := "mxc://" + u.Server.Name + "/"
	if !strings.HasPrefix(uri, prefix) {
		t.Fatalf("content_uri %q", uri)
	}
	return strings.TrimPrefix(uri, prefix)
}

func mediaRandom(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

var (
	mediaRed  = color.NRGBA{R: 255, A: 255}
	mediaBlue = color.NRGBA{B: 255, A: 255}
)

// mediaHalves is w×h, left half a, right half b.
func mediaHalves(w, h int, a, b color.Color) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if x < w/2 {
				img.Set(x, y, a)
			} else {
				img.Set(x, y, b)
			}
		}
	}
	return img
}

func mediaPNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mediaJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mediaWithEXIF inserts an APP1 Exif segment (orientation, and a GPS IFD
// that thumbnails must not keep) after a JPEG's SOI.
func mediaWithEXIF(jpg []byte, orientation uint16) []byte {
	var tiff bytes.Buffer
	le := encbin.LittleEndian
	tiff.WriteString("II")
	_ = encbin.Write(&tiff, le, []uint16{42})
	_ = encbin.Write(&tiff, le, []uint32{8})
	_ = encbin.Write(&tiff, le, []uint16{2, 0x0112, 3})
	_ = encbin.Write(&tiff, le, []uint32{1})
	_ = encbin.Write(&tiff, le, []uint16{orientation, 0, 0x8825, 4})
	_ = encbin.Write(&tiff, le, []uint32{1, 8 + 2 + 2*12 + 4, 0})
	_ = encbin.Write(&tiff, le, []uint16{0})
	seg := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	out := []byte{0xFF, 0xD8, 0xFF, 0xE1, byte((len(seg) + 2) >> 8), byte(len(seg) + 2)}
	return append(append(out, seg...), jpg[2:]...)
}

// mediaGIF has n frames of w×h, alternately red and blue.
func mediaGIF(t testing.TB, w, h, n int) []byte {
	t.Helper()
	g := &gif.GIF{}
	for i := 0; i < n; i++ {
		f := image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{mediaRed, mediaBlue})
		for p := range f.Pix {
			f.Pix[p] = uint8(i % 2)
		}
		g.Image = append(g.Image, f)
		g.Delay = append(g.Delay, 10)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mediaWebP writes a lossless (VP8L) WebP, left half red and right half
// blue, with "simple" prefix codes: one bit per pixel for red and for
// blue, none for green and alpha.
func mediaWebP(w, h int) []byte {
	var buf []byte
	var acc uint64
	var n uint
	put := func(v uint32, bits uint) {
		acc |= uint64(v) << n
		n += bits
		for n >= 8 {
			buf = append(buf, byte(acc))
			acc >>= 8
			n -= 8
		}
	}
	put(0x2f, 8)
	put(uint32(w-1), 14)
	put(uint32(h-1), 14)
	put(0, 1+3+1+1+1) // no alpha, version 0, no transform, no cache, no meta codes
	single := func(sym uint32) { put(1, 1); put(0, 1); put(1, 1); put(sym, 8) }
	pair := func(a, b uint32) { put(1, 1); put(1, 1); put(1, 1); put(a, 8); put(b, 8) }
	single(0)    // green
	pair(0, 255) // red
	pair(0, 255) // blue
	single(255)  // alpha
	single(0)    // distance
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if x < w/2 {
				put(1, 1)
				put(0, 1)
			} else {
				put(0, 1)
				put(1, 1)
			}
		}
	}
	if n > 0 {
		buf = append(buf, byte(acc))
	}
	var out bytes.Buffer
	pad := len(buf) % 2
	out.WriteString("RIFF")
	_ = encbin.Write(&out, encbin.LittleEndian, uint32(12+len(buf)+pad))
	out.WriteString("WEBPVP8L")
	_ = encbin.Write(&out, encbin.LittleEndian, uint32(len(buf)))
	out.Write(buf)
	if pad == 1 {
		out.WriteByte(0)
	}
	return out.Bytes()
}

// mediaDecode decodes an image answer.
func mediaDecode(t testing.TB, b []byte) image.Image {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return img
}

func mediaReddish(c color.Color) bool {
	r, g, b, _ := c.RGBA()
	return r > 0xC000 && g < 0x4000 && b < 0x4000
}

func mediaBluish(c color.Color) bool {
	r, g, b, _ := c.RGBA()
	return b > 0xC000 && g < 0x4000 && r < 0x4000
}

// fakeS3 is an S3-compatible server on loopback, in the test process.
type fakeS3 struct {
	URL     string
	Bucket  string
	backend *s3mem.Backend
}

// startFakeS3 starts an in-memory S3 server with one bucket.
func startFakeS3(t testing.TB) *fakeS3 {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("parley-media"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	return &fakeS3{URL: srv.URL, Bucket: "parley-media", backend: backend}
}

// Env is what a parley server needs to use the bucket.
func (f *fakeS3) Env() map[string]string {
	q := url.Values{"endpoint": {f.URL}, "region": {"us-east-1"}, "use_path_style": {"true"}, "disable_https": {"true"}}
	return map[string]string{
		"PARLEY_MEDIA_STORE":        "s3://" + f.Bucket + "?" + q.Encode(),
		"AWS_ACCESS_KEY_ID":         "sytest",
		"AWS_SECRET_ACCESS_KEY":     "sytest-secret",
		"AWS_EC2_METADATA_DISABLED": "true",
	}
}

// Objects counts the objects in the bucket.
func (f *fakeS3) Objects(t testing.TB) int {
	t.Helper()
	list, err := f.backend.ListBucket(f.Bucket, &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Contents)
}

// mediaFixtures serves web pages for URL previews on 127.0.0.2, the one
// address the media test servers allow (127.0.0.1 and the rest of
// loopback stay refused).
func mediaFixtures(t testing.TB, mux *http.ServeMux) (base, port string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	return srv.URL, port
}
