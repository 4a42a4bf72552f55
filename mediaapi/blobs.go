package mediaapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob://
	_ "gocloud.dev/blob/fileblob"  // file://
	_ "gocloud.dev/blob/gcsblob"   // gs://
	_ "gocloud.dev/blob/memblob"   // mem://
	_ "gocloud.dev/blob/s3blob"    // s3://
	"gocloud.dev/gcerrors"
)

// blobStore is the bucket the bytes live in. Keys are random: identical
// content is found through the database, never by key.
type blobStore struct {
	bucket *blob.Bucket
	// dir is the folder of a file:// bucket, whose writes are fsynced
	// before they count: an acknowledged upload survives power loss.
	dir string
}

// errTooLarge is returned by write when the reader has more than the limit.
var errTooLarge = errors.New("mediaapi: content larger than the limit")

func openBlobStore(ctx context.Context, raw string) (*blobStore, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("mediaapi: media store URL: %w", err)
	}
	s := &blobStore{}
	if u.Scheme == "file" {
		// Temporary files beside their final place (so the rename at the
		// end of a write stays on one file system), no sidecar attribute
		// files (metadata is in the database) and the folder created.
		q := u.Query()
		for k, v := range map[string]string{"no_tmp_dir": "1", "metadata": "skip", "create_dir": "1"} {
			if _, set := q[k]; !set {
				q.Set(k, v)
			}
		}
		u.RawQuery = q.Encode()
		s.dir = filepath.FromSlash(u.Path)
		if u.Host == "." {
			s.dir = strings.TrimPrefix(s.dir, string(filepath.Separator))
		}
	}
	s.bucket, err = blob.OpenBucket(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("mediaapi: open media store: %w", err)
	}
	return s, nil
}

func (s *blobStore) close() error { return s.bucket.Close() }

// newKey returns a fresh key, fanned out over folders by its first bytes.
func newKey(kind string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return kind + "/" + h[:2] + "/" + h[2:4] + "/" + h
}

// written is what write learned about the bytes.
type written struct {
	size   int64
	sha256 string
	// head is the first bytes, for sniffing the content type.
	head []byte
}

// headCapture keeps the first bytes that pass through it.
type headCapture struct {
	buf []byte
	max int
}

func (h *headCapture) Write(p []byte) (int, error) {
	if room := h.max - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// blobWriter is a blob being written, with what a file:// store needs
// to make it durable.
type blobWriter struct {
	*blob.Writer
	store  *blobStore
	key    string
	file   *os.File
	cancel context.CancelFunc
	// flushed and pending are the bytes of file whose writeback has been
	// started, and those written since.
	flushed, pending int64
}

// writebackUnit is how many written bytes start their writeback to disk
// while an upload is still arriving.
const writebackUnit = 8 << 20

// Write writes p, and starts writing a file:// blob's bytes to disk every
// writebackUnit so that commit's fsync has little left to do.
func (w *blobWriter) Write(p []byte) (int, error) {
	n, err := w.Writer.Write(p)
	if w.file != nil {
		w.pending += int64(n)
		if w.pending >= writebackUnit {
			startWriteback(w.file, w.flushed, w.pending)
			w.flushed += w.pending
			w.pending = 0
		}
	}
	return n, err
}

func (s *blobStore) newWriter(ctx context.Context, key string) (*blobWriter, error) {
	ctx, cancel := context.WithCancel(ctx)
	bw := &blobWriter{store: s, key: key, cancel: cancel}
	w, err := s.bucket.NewWriter(ctx, key, &blob.WriterOptions{
		ContentType: "application/octet-stream",
		// Object stores buffer a part per concurrent upload: bound it.
		BufferSize:     5 << 20,
		MaxConcurrency: 2,
		BeforeWrite: func(as func(any) bool) error {
			var f *os.File
			if as(&f) {
				bw.file = f
			}
			return nil
		},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("mediaapi: open blob writer: %w", err)
	}
	bw.Writer = w
	return bw, nil
}

// abort discards the blob: cancelling before Close leaves nothing behind.
func (w *blobWriter) abort() {
	w.cancel()
	_ = w.Writer.Close()
}

// commit makes the blob durable and visible.
func (w *blobWriter) commit() error {
	defer w.cancel()
	if w.file != nil {
		if err := w.file.Sync(); err != nil {
			w.abort()
			return fmt.Errorf("mediaapi: sync blob: %w", err)
		}
	}
	if err := w.Writer.Close(); err != nil {
		return fmt.Errorf("mediaapi: write blob: %w", err)
	}
	if w.store.dir != "" {
		// The rename that published the file must be durable too.
		if d, err := os.Open(filepath.Dir(filepath.Join(w.store.dir, filepath.FromSlash(w.key)))); err == nil {
			_ = d.Sync()
			_ = d.Close()
		}
	}
	return nil
}

// write streams r into a new blob at key, hashing as it goes; at most
// limit bytes are accepted (errTooLarge past that, and nothing is kept).
func (s *blobStore) write(ctx context.Context, key string, r io.Reader, limit int64) (written, error) {
	w, err := s.newWriter(ctx, key)
	if err != nil {
		return written{}, err
	}
	h := sha256.New()
	head := &headCapture{max: 512}
	n, err := pipeline(w, io.LimitReader(r, limit+1), io.MultiWriter(h, head))
	if err == nil && n > limit {
		err = errTooLarge
	}
	if err != nil {
		w.abort()
		return written{}, err
	}
	if err := w.commit(); err != nil {
		return written{}, err
	}
	return written{size: n, sha256: hex.EncodeToString(h.Sum(nil)), head: head.buf}, nil
}

// writeAll stores small bytes (thumbnails) at a new key.
func (s *blobStore) writeAll(ctx context.Context, key string, b []byte) error {
	w, err := s.newWriter(ctx, key)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		w.abort()
		return fmt.Errorf("mediaapi: write blob: %w", err)
	}
	return w.commit()
}

// chunkSize is the unit of a streamed copy.
const chunkSize = 256 << 10

// pipelineDepth is how many chunks may be in flight (memory: depth ×
// chunkSize per copy).
const pipelineDepth = 4

// chunk is a buffer on its way to the hasher and the writer; the last of
// the two to finish with it returns it to the free list.
type chunk struct {
	buf   []byte
	n     int
	users atomic.Int32
}

// pipeline copies r to w and to hash in three overlapping stages: the
// caller's goroutine reads, one helper hashes, another writes. Both
// helpers are waited for before pipeline returns.
func pipeline(w io.Writer, r io.Reader, hash io.Writer) (int64, error) {
	free := make(chan *chunk, pipelineDepth)
	for range pipelineDepth {
		free <- &chunk{buf: make([]byte, chunkSize)}
	}
	release := func(c *chunk) {
		if c.users.Add(-1) == 0 {
			free <- c
		}
	}
	toHash := make(chan *chunk, pipelineDepth)
	toWrite := make(chan *chunk, pipelineDepth)
	var (
		wg       sync.WaitGroup
		werrOnce sync.Once
		werr     error
		failed   atomic.Bool
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for c := range toHash {
			_, _ = hash.Write(c.buf[:c.n])
			release(c)
		}
	}()
	go func() {
		defer wg.Done()
		for c := range toWrite {
			if !failed.Load() {
				if _, err := w.Write(c.buf[:c.n]); err != nil {
					werrOnce.Do(func() { werr = fmt.Errorf("mediaapi: write blob: %w", err) })
					failed.Store(true)
				}
			}
			release(c)
		}
	}()
	var (
		n   int64
		err error
	)
	for !failed.Load() {
		c := <-free
		k, rerr := io.ReadFull(r, c.buf)
		if k > 0 {
			c.n = k
			c.users.Store(2)
			toHash <- c
			toWrite <- c
			n += int64(k)
		} else {
			free <- c
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	close(toHash)
	close(toWrite)
	wg.Wait()
	if werr != nil {
		return n, werr
	}
	return n, err
}

// open returns a reader of length bytes from offset (length < 0: to the end).
func (s *blobStore) open(ctx context.Context, key string, offset, length int64) (*blob.Reader, error) {
	r, err := s.bucket.NewRangeReader(ctx, key, offset, length, nil)
	if err != nil {
		return nil, fmt.Errorf("mediaapi: read blob %s: %w", key, err)
	}
	return r, nil
}

// deleteLeftovers removes what a write interrupted by a crash left of a
// key: in a file:// store, the temporary files beside it (object stores
// abort unfinished uploads themselves).
func (s *blobStore) deleteLeftovers(key string) {
	if s.dir == "" {
		return
	}
	tmps, _ := filepath.Glob(filepath.Join(s.dir, filepath.FromSlash(key)) + ".*.tmp")
	for _, t := range tmps {
		_ = os.Remove(t)
	}
}

// delete removes a blob; a missing one is not an error.
func (s *blobStore) delete(ctx context.Context, key string) error {
	err := s.bucket.Delete(ctx, key)
	if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("mediaapi: delete blob %s: %w", key, err)
	}
	return nil
}
