// Package jpegdctest helps tests find JPEGs of every kind.
package jpegdctest

import (
	"os/exec"
	"path/filepath"
	"strings"
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
