package mediaapi

import (
	"bytes"
	"context"
	"image/color"
	"image/gif"
	"testing"
)

func (s *testServer) thumbnail(t *testing.T, id, query string) *response {
	t.Helper()
	return s.do(t, "GET", "/_matrix/client/v1/media/thumbnail/test/"+id+"?"+query, "u:viewer", nil)
}

func TestThumbnailFormats(t *testing.T) {
	s := newTestServer(t, nil, Deps{})
	transparent := halves(400, 300, color.NRGBA{}, blue)
	for _, tc := range []struct {
		name, contentType string
		data              []byte
		query             string
		wantType          string
		wantW, wantH      int
		animated          bool
	}{
		{"jpeg crop", "image/jpeg", encodeJPEG(t, halves(500, 400, red, blue)), "width=96&height=96&method=crop", "image/jpeg", 96, 96, false},
		{"jpeg scale", "image/jpeg", encodeJPEG(t, halves(500, 400, red, blue)), "width=320&height=240&method=scale", "image/jpeg", 300, 240, false},
		{"png keeps alpha", "image/png", encodePNG(t, transparent), "width=100&height=100&method=scale", "image/png", 100, 75, false},
		{"gif first frame", "image/gif", animatedGIF(t, 200, 100, 4), "width=50&height=50&method=crop", "image/png", 50, 50, false},
		{"gif animated", "image/gif", animatedGIF(t, 200, 100, 4), "width=50&height=50&method=crop&animated=true", "image/gif", 50, 50, true},
		{"webp", "image/webp", losslessWebP(300, 200), "width=96&height=96&method=crop", "image/jpeg", 96, 96, false},
		{"jpeg animated asked", "image/jpeg", encodeJPEG(t, halves(100, 80, red, blue)), "width=32&height=32&method=crop&animated=true", "image/jpeg", 32, 32, false},
		{"never upscaled", "image/png", encodePNG(t, halves(20, 10, red, blue)), "width=320&height=240", "image/png", 20, 10, false},
		{"content type is sniffed", "application/octet-stream", encodePNG(t, halves(64, 64, red, blue)), "width=32&height=32&method=crop", "image/png", 32, 32, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := s.upload(t, "u:a", tc.data, tc.contentType)
			r := mustStatus(t, s.thumbnail(t, id, tc.query), 200)
			if ct := r.header.Get("Content-Type"); ct != tc.wantType {
				t.Fatalf("Content-Type %q, want %q", ct, tc.wantType)
			}
			if d := r.header.Get("Content-Disposition"); d[:len("inline; filename=\"thumbnail.")] != "inline; filename=\"thumbnail." {
				t.Fatalf("Content-Disposition %q", d)
			}
			img, _ := decode(t, r.body)
			if b := img.Bounds(); b.Dx() != tc.wantW || b.Dy() != tc.wantH {
				t.Fatalf("thumbnail is %dx%d, want %dx%d", b.Dx(), b.Dy(), tc.wantW, tc.wantH)
			}
			if tc.animated {
				g, err := gif.DecodeAll(bytes.NewReader(r.body))
				if err != nil || len(g.Image) != 4 {
					t.Fatalf("animated thumbnail: %v frames, %v", len(g.Image), err)
				}
			}
		})
	}
}

func TestThumbnailOrientationAndMetadata(t *testing.T) {
	s := newTestServer(t, nil, Deps{})
	jpg := withEXIF(encodeJPEG(t, halves(600, 200, red, blue)), 6)
	if !bytes.Contains(jpg, []byte("Exif")) {
		t.Fatal("fixture has no EXIF")
	}
	id := s.upload(t, "u:a", jpg, "image/jpeg")
	r := mustStatus(t, s.thumbnail(t, id, "width=100&height=300&method=scale"), 200)
	if bytes.Contains(r.body, []byte("Exif")) {
		t.Fatal("thumbnail kept the EXIF segment")
	}
	img, _ := decode(t, r.body)
	if b := img.Bounds(); b.Dx() != 100 || b.Dy() != 300 {
		t.Fatalf("thumbnail %v, want upright 100x300", b)
	}
	if !isReddish(img.At(50, 20)) || !isBluish(img.At(50, 280)) {
		t.Fatalf("orientation not honoured: top %v bottom %v", img.At(50, 20), img.At(50, 280))
	}
}

func TestThumbnailErrors(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxThumbnailPixels = 100 * 100 }, Deps{})
	small := s.upload(t, "u:a", encodePNG(t, halves(100, 100, red, blue)), "image/png")
	big := s.upload(t, "u:a", encodePNG(t, halves(101, 100, red, blue)), "image/png")
	text := s.upload(t, "u:a", []byte("just text"), "image/png")
	for _, tc := range []struct {
		id, query string
		status    int
		code      string
	}{
		{small, "width=0&height=32", 400, "M_INVALID_PARAM"},
		{small, "width=abc&height=32", 400, "M_INVALID_PARAM"},
		{small, "width=32&height=-4", 400, "M_INVALID_PARAM"},
		{small, "width=32&height=99999999999", 400, "M_INVALID_PARAM"},
		{small, "width=32&height=32&method=stretch", 400, "M_INVALID_PARAM"},
		{small, "width=32&height=32&animated=maybe", 400, "M_INVALID_PARAM"},
		{small, "width=32", 400, "M_MISSING_PARAM"},
		{"unknownMedia", "width=32&height=32", 404, "M_NOT_FOUND"},
		{text, "width=32&height=32", 400, "M_UNKNOWN"},
		{big, "width=32&height=32", 413, "M_TOO_LARGE"},
	} {
		mustErr(t, s.thumbnail(t, tc.id, tc.query), tc.status, tc.code)
	}
	mustStatus(t, s.thumbnail(t, small, "width=32&height=32"), 200)
}

func TestCommonThumbnailsAndReuse(t *testing.T) {
	s := newTestServer(t, nil, Deps{})
	data := encodeJPEG(t, halves(900, 700, red, blue))
	id := s.upload(t, "u:a", data, "image/jpeg")
	ctx := context.Background()
	rec, err := s.db.Media().MediaGet(ctx, "test", id)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.e.GenerateThumbnails(ctx, rec.SHA256); err != nil {
		t.Fatal(err)
	}
	thumbs, err := s.db.Media().MediaThumbnails(ctx, rec.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if len(thumbs) != len(commonThumbnails) {
		t.Fatalf("%d common thumbnails made: %+v", len(thumbs), thumbs)
	}
	// Running the job again makes nothing new.
	if err := s.e.GenerateThumbnails(ctx, rec.SHA256); err != nil {
		t.Fatal(err)
	}
	// 64×64 crop is served from the 96×96 one; 100×75 scale from 320×240.
	for _, q := range []string{"width=64&height=64&method=crop", "width=100&height=75&method=scale"} {
		mustStatus(t, s.thumbnail(t, id, q), 200)
	}
	// An odd aspect is made on demand, once.
	for range 2 {
		r := mustStatus(t, s.thumbnail(t, id, "width=100&height=40&method=crop"), 200)
		img, _ := decode(t, r.body)
		if b := img.Bounds(); b.Dx() != 100 || b.Dy() != 40 {
			t.Fatalf("on-demand crop %v", b)
		}
	}
	thumbs, _ = s.db.Media().MediaThumbnails(ctx, rec.SHA256)
	if len(thumbs) != len(commonThumbnails)+1 {
		t.Fatalf("%d thumbnails after reuse, want %d", len(thumbs), len(commonThumbnails)+1)
	}
	// Non-images and missing content are no work for the job.
	if err := s.e.GenerateThumbnails(ctx, "0000"); err != nil {
		t.Fatal(err)
	}
}
