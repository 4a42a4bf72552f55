package jpegdc

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/parley-chat/parley/internal/jpegdc/jpegdctest"
)

// planes returns an image's planes and their subsampling (1 or 2) for a
// comparison block by block.
func planes(img image.Image) (p [][]uint8, strides []int, sizes []image.Point) {
	switch m := img.(type) {
	case *image.Gray:
		b := m.Bounds()
		return [][]uint8{m.Pix}, []int{m.Stride}, []image.Point{b.Size()}
	case *image.YCbCr:
		b := m.Bounds()
		cw, ch := b.Dx(), b.Dy()
		switch m.SubsampleRatio {
		case image.YCbCrSubsampleRatio422:
			cw = (cw + 1) / 2
		case image.YCbCrSubsampleRatio420:
			cw, ch = (cw+1)/2, (ch+1)/2
		case image.YCbCrSubsampleRatio440:
			ch = (ch + 1) / 2
		}
		return [][]uint8{m.Y, m.Cb, m.Cr}, []int{m.YStride, m.CStride, m.CStride},
			[]image.Point{b.Size(), {cw, ch}, {cw, ch}}
	}
	return nil, nil, nil
}

// compare checks that each sample of small is the average of the 8×8
// block of full's plane it stands for, as far as IDCT rounding and
// clamping allow.
func compare(t *testing.T, name string, full, small image.Image) {
	t.Helper()
	fp, fs, fsz := planes(full)
	sp, ss, ssz := planes(small)
	if fp == nil || len(fp) != len(sp) {
		t.Fatalf("%s: full %T, small %T", name, full, small)
	}
	if fb, sb := full.Bounds(), small.Bounds(); sb.Dx() != (fb.Dx()+7)/8 || sb.Dy() != (fb.Dy()+7)/8 {
		t.Fatalf("%s: %v at 1/8 is %v", name, fb, sb)
	}
	for i := range fp {
		var sum, n, worst int
		for by := 0; by < ssz[i].Y; by++ {
			for bx := 0; bx < ssz[i].X; bx++ {
				var acc, cnt int
				for y := by * 8; y < min(by*8+8, fsz[i].Y); y++ {
					for x := bx * 8; x < min(bx*8+8, fsz[i].X); x++ {
						acc += int(fp[i][y*fs[i]+x])
						cnt++
					}
				}
				if cnt == 0 {
					continue
				}
				d := int(sp[i][by*ss[i]+bx]) - (acc+cnt/2)/cnt
				if d < 0 {
					d = -d
				}
				worst = max(worst, d)
				if cnt == 64 {
					sum += d
					n++
				}
			}
		}
		// Edge blocks average only the pixels inside the image, while
		// the DC also covers the encoder's padding: allow for that.
		if mean := float64(sum) / float64(max(n, 1)); mean > 1.0 || worst > 24 {
			t.Errorf("%s plane %d: mean difference %.2f, worst %d", name, i, mean, worst)
		}
	}
}

func TestAgainstFullDecoder(t *testing.T) {
	dir := jpegdctest.GoImageTestdata(t)
	cases := map[string]error{
		"video-001.jpeg":              nil,
		"video-001.q50.420.jpeg":      nil,
		"video-001.q50.422.jpeg":      nil,
		"video-001.q50.440.jpeg":      nil,
		"video-001.q50.444.jpeg":      nil,
		"video-001.restart2.jpeg":     nil,
		"video-005.gray.q50.jpeg":     nil,
		"video-005.gray.q50.2x2.jpeg": nil,
		"video-001.q50.411.jpeg":      ErrUnsupported,
		"video-001.q50.410.jpeg":      ErrUnsupported,
		"video-001.progressive.jpeg":  ErrUnsupported,
		"video-001.cmyk.jpeg":         ErrUnsupported,
		"video-001.rgb.jpeg":          ErrUnsupported,
		"video-001.221212.jpeg":       ErrUnsupported,
	}
	for name, wantErr := range cases {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Skipf("the Go distribution's test images are not here: %v", err)
		}
		small, err := Decode(bytes.NewReader(data), nil)
		if wantErr != nil {
			if !errors.Is(err, wantErr) {
				t.Errorf("%s: got %v, want %v", name, err, wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		full, err := jpeg.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		compare(t, name, full, small)
	}
}

// TestEncoded checks sizes that are not multiples of a block, at several
// qualities, as this server's own encoder writes them.
func TestEncoded(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	for _, size := range []image.Point{{1, 1}, {7, 9}, {17, 33}, {640, 480}, {1001, 203}} {
		for _, q := range []int{30, 90, 100} {
			img := image.NewRGBA(image.Rect(0, 0, size.X, size.Y))
			for y := 0; y < size.Y; y++ {
				for x := 0; x < size.X; x++ {
					n := uint8(rnd.IntN(16))
					img.SetRGBA(x, y, color.RGBA{uint8(x) + n, uint8(y*3) + n, uint8(x^y) + n, 255})
				}
			}
			var buf bytes.Buffer
			if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
				t.Fatal(err)
			}
			small, err := Decode(bytes.NewReader(buf.Bytes()), nil)
			if err != nil {
				t.Fatalf("%v q%d: %v", size, q, err)
			}
			full, err := jpeg.Decode(bytes.NewReader(buf.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			compare(t, fmt.Sprintf("%v q%d", size, q), full, small)
		}
	}
}

// TestBadInput checks that damaged files fail cleanly rather than panic.
func TestBadInput(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 64, 64))
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	for _, cut := range []int{0, 1, 2, 10, 100, len(good) / 2, len(good) - 3} {
		if _, err := Decode(bytes.NewReader(good[:cut]), nil); err == nil {
			t.Errorf("cut at %d: no error", cut)
		}
	}
	rnd := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		b := bytes.Clone(good)
		for range 1 + rnd.IntN(4) {
			b[rnd.IntN(len(b))] = byte(rnd.IntN(256))
		}
		_, _ = Decode(bytes.NewReader(b), nil) // must not panic
	}
}

func BenchmarkDecode12MP(b *testing.B) {
	data := jpegdctest.Photo12MP(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Decode(bytes.NewReader(data), nil); err != nil {
			b.Fatal(err)
		}
	}
}
