package mediaapi

import (
	"bytes"
	"image"
	"image/color"
	"image/gif"
	"os"
	"path/filepath"
	"testing"

	"github.com/parley-chat/parley/internal/jpegdc/jpegdctest"
	"github.com/parley-chat/parley/storage"
)

func TestProbe(t *testing.T) {
	jpg := encodeJPEG(t, halves(60, 20, red, blue))
	for _, tc := range []struct {
		name string
		data []byte
		want storage.MediaImage
	}{
		{"png", encodePNG(t, halves(30, 10, red, blue)), storage.MediaImage{Format: "png", Width: 30, Height: 10, Orientation: 1, Frames: 1}},
		{"jpeg", jpg, storage.MediaImage{Format: "jpeg", Width: 60, Height: 20, Orientation: 1, Frames: 1}},
		{"jpeg rotated", withEXIF(jpg, 6), storage.MediaImage{Format: "jpeg", Width: 20, Height: 60, Orientation: 6, Frames: 1}},
		{"jpeg mirrored", withEXIF(jpg, 2), storage.MediaImage{Format: "jpeg", Width: 60, Height: 20, Orientation: 2, Frames: 1}},
		{"gif animated", animatedGIF(t, 16, 8, 3), storage.MediaImage{Format: "gif", Width: 16, Height: 8, Orientation: 1, Frames: 3, Animated: true}},
		{"gif still", animatedGIF(t, 16, 8, 1), storage.MediaImage{Format: "gif", Width: 16, Height: 8, Orientation: 1, Frames: 1}},
		{"webp", losslessWebP(12, 6), storage.MediaImage{Format: "webp", Width: 12, Height: 6, Orientation: 1, Frames: 1}},
		{"text", []byte("hello, not an image"), storage.MediaImage{}},
		{"truncated png", encodePNG(t, halves(30, 10, red, blue))[:10], storage.MediaImage{}},
		{"empty", nil, storage.MediaImage{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := probe(bytes.NewReader(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("probe = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestProbeLongHeaders(t *testing.T) {
	jpg := withEXIF(encodeJPEG(t, halves(60, 20, red, blue)), 8)
	// EXIF comes first (the Exif standard puts it right after SOI); pad
	// after it with comment segments past the probe head, as large ICC
	// profiles and XMP packets do.
	exifEnd := 4 + (int(jpg[4])<<8 | int(jpg[5]))
	padded := append([]byte(nil), jpg[:exifEnd]...)
	seg := make([]byte, 60000)
	for len(padded) < probeHead+100_000 {
		padded = append(padded, 0xFF, 0xFE, byte((len(seg)+2)>>8), byte(len(seg)+2))
		padded = append(padded, seg...)
	}
	padded = append(padded, jpg[exifEnd:]...)
	got, err := probe(bytes.NewReader(padded))
	if err != nil || got.Format != "jpeg" || got.Width != 20 || got.Height != 60 || got.Orientation != 8 {
		t.Fatalf("probe of long headers: %+v %v", got, err)
	}
	if img, err := decodeStatic(bytes.NewReader(padded), got, 20, 60); err != nil || img.Bounds().Dx() != 20 {
		t.Fatalf("decode of long headers: %v", err)
	}
}

func TestJPEGOrientationIgnoresGarbage(t *testing.T) {
	for _, b := range [][]byte{
		nil, {0xFF, 0xD8}, {0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x01},
		{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x10, 'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 0xFF, 0xFF, 0xFF, 0x7F},
		append([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x0E}, []byte("Exif\x00\x00MM\x00\x2A\x00\x00\x00\x08")...),
	} {
		if o := jpegOrientation(b); o != 1 {
			t.Errorf("jpegOrientation(%x) = %d", b, o)
		}
	}
}

func TestThumbTarget(t *testing.T) {
	for _, tc := range []struct {
		sw, sh, w, h int
		method       string
		tw, th       int
	}{
		{4000, 3000, 320, 240, "scale", 320, 240},
		{4000, 3000, 320, 320, "scale", 320, 240},
		{3000, 4000, 320, 240, "scale", 180, 240},
		{100, 50, 320, 240, "scale", 100, 50}, // never upscale
		{1000, 100, 500, 500, "scale", 500, 50},
		{4000, 3000, 96, 96, "crop", 96, 96},
		{4000, 3000, 100, 50, "crop", 100, 50},
		{40, 30, 96, 96, "crop", 30, 30},   // largest square inside
		{40, 30, 100, 50, "crop", 40, 20},  // largest 2:1 inside
		{30, 40, 100, 200, "crop", 20, 40}, // largest 1:2 inside
		{1, 1, 32, 32, "crop", 1, 1},
		{1, 10000, 32, 32, "scale", 1, 32},
	} {
		tw, th := thumbTarget(tc.sw, tc.sh, tc.w, tc.h, tc.method)
		if tw != tc.tw || th != tc.th {
			t.Errorf("thumbTarget(%dx%d, %dx%d %s) = %dx%d, want %dx%d", tc.sw, tc.sh, tc.w, tc.h, tc.method, tw, th, tc.tw, tc.th)
		}
	}
}

func TestDecodeStaticAppliesOrientation(t *testing.T) {
	jpg := withEXIF(encodeJPEG(t, halves(60, 20, red, blue)), 6)
	info, err := probe(bytes.NewReader(jpg))
	if err != nil {
		t.Fatal(err)
	}
	img, err := decodeStatic(bytes.NewReader(jpg), info, 20, 60)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if b.Dx() != 20 || b.Dy() != 60 {
		t.Fatalf("upright size %v, want 20x60", b)
	}
	// Orientation 6 is displayed rotated 90° clockwise: the left (red)
	// half ends up on top.
	if top, bottom := img.At(10, 5), img.At(10, 55); !isReddish(top) || !isBluish(bottom) {
		t.Fatalf("top %v bottom %v: orientation not applied", top, bottom)
	}
}

func TestShrinkYCbCr(t *testing.T) {
	src, _ := decode(t, encodeJPEG(t, halves(400, 200, red, blue)))
	if _, ok := src.(*image.YCbCr); !ok {
		t.Fatalf("JPEG decoded to %T", src)
	}
	out := shrink(src, 4)
	if b := out.Bounds(); b.Dx() != 100 || b.Dy() != 50 {
		t.Fatalf("shrunk to %v", b)
	}
	if !isReddish(out.At(10, 25)) || !isBluish(out.At(90, 25)) {
		t.Fatalf("colours lost: %v %v", out.At(10, 25), out.At(90, 25))
	}
}

func TestRenderAnimated(t *testing.T) {
	g, err := gif.DecodeAll(bytes.NewReader(animatedGIF(t, 64, 32, 4)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := renderAnimated(g, target{Width: 16, Height: 16, Method: "crop", Animated: true})
	if err != nil {
		t.Fatal(err)
	}
	out, err := gif.DecodeAll(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Image) != 4 || out.Config.Width != 16 || out.Config.Height != 16 {
		t.Fatalf("animated thumbnail has %d frames of %dx%d", len(out.Image), out.Config.Width, out.Config.Height)
	}
	if !isReddish(out.Image[0].At(8, 8)) || !isBluish(out.Image[1].At(8, 8)) {
		t.Fatalf("frames lost their colours")
	}
}

func TestCountGIFFramesRefusesGarbage(t *testing.T) {
	good := animatedGIF(t, 8, 8, 5)
	if n, err := countGIFFrames(bytes.NewReader(good)); err != nil || n != 5 {
		t.Fatalf("count = %d, %v", n, err)
	}
	for _, b := range [][]byte{nil, []byte("GIF89a"), good[:len(good)/2], append(append([]byte{}, good[:13]...), 0x99)} {
		if _, err := countGIFFrames(bytes.NewReader(b)); err == nil {
			t.Errorf("countGIFFrames(%d bytes) accepted garbage", len(b))
		}
	}
}

func TestPaletteWithTransparency(t *testing.T) {
	p := paletteWithTransparency(color.Palette{red, blue})
	if len(p) != 3 {
		t.Fatalf("palette %v", p)
	}
	if _, _, _, a := p[2].RGBA(); a != 0 {
		t.Fatalf("no transparent entry: %v", p)
	}
}

// TestDecodeStaticEighth checks the 1/8 path for small targets: a
// baseline JPEG is decoded from its DC coefficients, upright; progressive
// and CMYK ones (which that decoder leaves alone) replay to the full
// decoder and give the same size.
func TestDecodeStaticEighth(t *testing.T) {
	jpg := withEXIF(encodeJPEG(t, halves(800, 160, red, blue)), 6)
	info, err := probe(bytes.NewReader(jpg))
	if err != nil {
		t.Fatal(err)
	}
	// 160×800 upright; a 10×50 need shrinks by 10: 1/8, then no more.
	img, err := decodeStatic(bytes.NewReader(jpg), info, 10, 50)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 20 || b.Dy() != 100 {
		t.Fatalf("size %v, want 20x100 (1/8, upright)", b)
	}
	if top, bottom := img.At(10, 5), img.At(10, 95); !isReddish(top) || !isBluish(bottom) {
		t.Fatalf("top %v bottom %v: orientation not applied", top, bottom)
	}
	dir := jpegdctest.GoImageTestdata(t)
	for _, name := range []string{"video-001.progressive.jpeg", "video-001.cmyk.jpeg", "video-001.jpeg"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Skipf("the Go distribution's test images are not here: %v", err)
		}
		info, err := probe(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		img, err := decodeStatic(bytes.NewReader(data), info, 8, 8)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// 150×103, k = 8: 18×12 by shrinking, 19×13 from the DC path.
		if b := img.Bounds(); b.Dx() < 18 || b.Dx() > 19 || b.Dy() < 12 || b.Dy() > 13 {
			t.Fatalf("%s: size %v", name, b)
		}
	}
}
