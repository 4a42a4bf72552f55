package mediaapi

import (
	"bytes"
	"context"
	"image"
	"testing"

	"github.com/parley-chat/parley/internal/jpegdc/jpegdctest"
	"github.com/parley-chat/parley/storage"
)

// photo12MP is the large photograph the thumbnail benchmarks work on.
func photo12MP(b testing.TB) []byte { return jpegdctest.Photo12MP(b) }

// BenchmarkThumbnail12MP is one on-demand thumbnail of a 12-megapixel
// JPEG: probe, decode, shrink, resize, encode (the blob store is memory,
// so this is the image work alone).
func BenchmarkThumbnail12MP(b *testing.B) {
	data := photo12MP(b)
	for _, tc := range []struct {
		name    string
		targets []target
	}{
		{"320x240 scale", []target{{Width: 320, Height: 240, Method: "scale"}}},
		{"96x96 crop", []target{{Width: 96, Height: 96, Method: "crop"}}},
		{"common sizes", func() []target {
			var ts []target
			for _, r := range commonThumbnails {
				t := target{Method: r.Method}
				t.Width, t.Height = thumbTarget(4000, 3000, r.Width, r.Height, r.Method)
				ts = append(ts, t)
			}
			return ts
		}()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				info, err := probe(bytes.NewReader(data))
				if err != nil || info.Width != 4000 {
					b.Fatal(info, err)
				}
				needW, needH := 1, 1
				for _, t := range tc.targets {
					w, h := t.resizeDims(info.Width, info.Height)
					needW, needH = max(needW, w), max(needH, h)
				}
				src, err := decodeStatic(bytes.NewReader(data), info, needW, needH)
				if err != nil {
					b.Fatal(err)
				}
				for _, thumb := range renderAll(src, tc.targets) {
					if _, _, err := encodeStatic(thumb, info.Format); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkThumbnailEndToEnd is the engine's path for a thumbnail not yet
// stored: blob read, decode, render, encode, blob write and record.
func BenchmarkThumbnailEndToEnd(b *testing.B) {
	data := photo12MP(b)
	db := openBenchDB(b)
	e, err := New(context.Background(), Config{ServerName: "bench", StoreURL: "file://" + b.TempDir()}, db, Deps{Auth: fakeAuth{}}, discardLog())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	rec, err := e.storeLocal(ctx, storage.MediaRecord{Origin: "bench", MediaID: "photo", UserID: "@b:bench", CreatedTS: 1}, bytes.NewReader(data), storeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	m, err := e.Lookup(ctx, "bench", "photo", LookupOptions{})
	if err != nil {
		b.Fatal(err)
	}
	_ = rec
	w := 300
	for b.Loop() {
		// A new size each time, so that nothing is served from the cache.
		w++
		if _, err := e.Thumbnail(ctx, m, ThumbnailRequest{Width: w, Height: 240, Method: "crop"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJPEGDecode12MP is the standard library's decoder alone on the
// same photograph: the floor under BenchmarkThumbnail12MP.
func BenchmarkJPEGDecode12MP(b *testing.B) {
	data := photo12MP(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := image.Decode(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
