// Package jpegdctest gives tests JPEGs: of every kind, and a large photograph.
package jpegdctest

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// GoImageTestdata is the Go distribution's folder of test images (JPEGs
// of every subsampling, progressive, CMYK, restart intervals); the test
// is skipped when no go command can say where it is.
func GoImageTestdata(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Skipf("no go command to find the Go distribution's test images: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "src", "image", "testdata")
}

var (
	photoOnce sync.Once
	photo     []byte
	photoErr  error
)

// Photo12MP is a 4000×3000 JPEG (quality 90) with smooth gradients and
// sensor-like noise: close to a phone photograph in size (≈4 MB) and in
// how hard it is to decode. It is made once per test binary.
func Photo12MP(t testing.TB) []byte {
	t.Helper()
	photoOnce.Do(func() {
		img := image.NewRGBA(image.Rect(0, 0, 4000, 3000))
		rnd := rand.New(rand.NewPCG(1, 2))
		for y := 0; y < 3000; y++ {
			for x := 0; x < 4000; x++ {
				n := uint8(rnd.IntN(24))
				img.SetRGBA(x, y, color.RGBA{uint8(x/16) + n, uint8(y/12) + n, uint8((x+y)/28) + n, 255})
			}
		}
		var buf bytes.Buffer
		photoErr = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
		photo = buf.Bytes()
	})
	if photoErr != nil {
		t.Fatal(photoErr)
	}
	return photo
}
