package mediaapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"
)

// TestBlobWrite streams sizes around the writeback unit into a file://
// store: what is read back is what was written, hashed right, and a
// write over the limit leaves no file behind.
func TestBlobWrite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := openBlobStore(ctx, "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.close()
	for _, tc := range []struct {
		name  string
		size  int
		limit int64
	}{
		{"empty", 0, 1 << 30},
		{"one chunk", chunkSize - 1, 1 << 30},
		{"one writeback unit", writebackUnit, 1 << 30},
		{"several units and a tail", 2*writebackUnit + 12345, 1 << 30},
		{"at the limit", writebackUnit + 1, writebackUnit + 1},
		{"over the limit", writebackUnit + 2, writebackUnit + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(tc.size)
			key := newKey("test")
			before := blobFiles(t, dir)
			w, err := store.write(ctx, key, bytes.NewReader(data), tc.limit)
			if int64(tc.size) > tc.limit {
				if !errors.Is(err, errTooLarge) {
					t.Fatalf("over the limit: %v", err)
				}
				if n := blobFiles(t, dir); n != before {
					t.Fatalf("%d files after a refused write, %d before", n, before)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if w.size != int64(tc.size) || w.sha256 != hex.EncodeToString(sum[:]) {
				t.Fatalf("written %d bytes, sha256 %s", w.size, w.sha256)
			}
			if !bytes.Equal(w.head, data[:min(512, len(data))]) {
				t.Fatal("head differs")
			}
			r, err := store.open(ctx, key, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			_ = r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(data))
			}
		})
	}
}
