package mediaapi

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"testing"
)

// Test images are made here rather than committed.

// halves is w×h, left half a, right half b.
func halves(w, h int, a, b color.Color) *image.NRGBA {
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

var (
	red  = color.NRGBA{R: 255, A: 255}
	blue = color.NRGBA{B: 255, A: 255}
)

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// withEXIF inserts an APP1 Exif segment (orientation and a GPS IFD
// pointer, the kind of metadata thumbnails must not keep) after SOI.
func withEXIF(jpg []byte, orientation uint16) []byte {
	var tiff bytes.Buffer
	le := binary.LittleEndian
	tiff.WriteString("II")
	_ = binary.Write(&tiff, le, uint16(42))
	_ = binary.Write(&tiff, le, uint32(8))
	_ = binary.Write(&tiff, le, uint16(2)) // two entries
	// Orientation, SHORT, 1, value.
	_ = binary.Write(&tiff, le, []uint16{0x0112, 3})
	_ = binary.Write(&tiff, le, uint32(1))
	_ = binary.Write(&tiff, le, []uint16{orientation, 0})
	// GPSInfo IFD pointer, LONG, 1, offset (to an empty IFD).
	_ = binary.Write(&tiff, le, []uint16{0x8825, 4})
	_ = binary.Write(&tiff, le, uint32(1))
	_ = binary.Write(&tiff, le, uint32(8+2+2*12+4))
	_ = binary.Write(&tiff, le, uint32(0)) // no next IFD
	_ = binary.Write(&tiff, le, uint16(0)) // empty GPS IFD
	seg := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	out := []byte{0xFF, 0xD8, 0xFF, 0xE1, byte((len(seg) + 2) >> 8), byte(len(seg) + 2)}
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

// animatedGIF has n frames of w×h, alternating red and blue.
func animatedGIF(t testing.TB, w, h, n int) []byte {
	t.Helper()
	pal := color.Palette{red, blue}
	g := &gif.GIF{}
	for i := 0; i < n; i++ {
		f := image.NewPaletted(image.Rect(0, 0, w, h), pal)
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

// losslessWebP writes a VP8L image whose pixels are each pure red or pure
// blue (left half red), using "simple" prefix codes: one bit per pixel
// for red and for blue, none for green and alpha.
func losslessWebP(w, h int) []byte {
	var bw bitWriter
	bw.write(0x2f, 8)
	bw.write(uint32(w-1), 14)
	bw.write(uint32(h-1), 14)
	bw.write(0, 1) // no alpha
	bw.write(0, 3) // version
	bw.write(0, 1) // no transform
	bw.write(0, 1) // no colour cache
	bw.write(0, 1) // no meta prefix codes
	single := func(sym uint32) {
		bw.write(1, 1) // simple code
		bw.write(0, 1) // one symbol
		bw.write(1, 1) // eight bits
		bw.write(sym, 8)
	}
	pair := func(a, b uint32) {
		bw.write(1, 1)
		bw.write(1, 1) // two symbols
		bw.write(1, 1)
		bw.write(a, 8)
		bw.write(b, 8)
	}
	single(0)    // green
	pair(0, 255) // red
	pair(0, 255) // blue
	single(255)  // alpha
	single(0)    // distance
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if x < w/2 {
				bw.write(1, 1) // red 255
				bw.write(0, 1) // blue 0
			} else {
				bw.write(0, 1)
				bw.write(1, 1)
			}
		}
	}
	data := bw.bytes()
	var out bytes.Buffer
	chunk := len(data)
	pad := chunk % 2
	out.WriteString("RIFF")
	_ = binary.Write(&out, binary.LittleEndian, uint32(4+8+chunk+pad))
	out.WriteString("WEBPVP8L")
	_ = binary.Write(&out, binary.LittleEndian, uint32(chunk))
	out.Write(data)
	if pad == 1 {
		out.WriteByte(0)
	}
	return out.Bytes()
}

// bitWriter writes bits least significant first, as VP8L reads them.
type bitWriter struct {
	buf  []byte
	acc  uint64
	nacc uint
}

func (b *bitWriter) write(v uint32, n uint) {
	b.acc |= uint64(v) << b.nacc
	b.nacc += n
	for b.nacc >= 8 {
		b.buf = append(b.buf, byte(b.acc))
		b.acc >>= 8
		b.nacc -= 8
	}
}

func (b *bitWriter) bytes() []byte {
	out := b.buf
	if b.nacc > 0 {
		out = append(out, byte(b.acc))
	}
	return out
}

// decode decodes an encoded image, failing t if it does not.
func decode(t testing.TB, b []byte) (image.Image, string) {
	t.Helper()
	img, format, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return img, format
}

// isReddish reports whether c is mostly red.
func isReddish(c color.Color) bool {
	r, g, b, _ := c.RGBA()
	return r > 0xC000 && g < 0x4000 && b < 0x4000
}

// isBluish reports whether c is mostly blue.
func isBluish(c color.Color) bool {
	r, g, b, _ := c.RGBA()
	return b > 0xC000 && g < 0x4000 && r < 0x4000
}
