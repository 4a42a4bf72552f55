package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// contentSecurityPolicy sandboxes whatever a browser makes of media.
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; " +
	"style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// inlineTypes may be served with Content-Disposition: inline (the spec's
// list); everything else is an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true, "application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true, "audio/wave": true,
	"audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// cacheControl: media never changes under its URI; the cache is private
// because the endpoints are authenticated.
const cacheControl = "private, max-age=31536000, immutable"

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
}

// disposition builds a Content-Disposition: inline only for the safe
// types, with the filename quoted when it is plain ASCII and encoded per
// RFC 5987 (filename*=utf-8”…) otherwise.
func disposition(contentType, filename string, forceInline bool) string {
	d := "attachment"
	if mt, _, err := mime.ParseMediaType(contentType); forceInline || err == nil && inlineTypes[mt] {
		d = "inline"
	}
	if filename == "" {
		return d
	}
	ascii := true
	for i := 0; i < len(filename); i++ {
		if c := filename[i]; c < 0x20 || c >= 0x7F {
			ascii = false
			break
		}
	}
	if ascii {
		return d + `; filename="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(filename) + `"`
	}
	return d + "; filename*=utf-8''" + rfc5987(filename)
}

// rfc5987 percent-encodes everything but attr-char.
func rfc5987(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// serveMedia streams media, honouring Range and conditional requests.
func (e *Engine) serveMedia(w http.ResponseWriter, r *http.Request, m *Media, filename string) error {
	h := w.Header()
	securityHeaders(h)
	ct := m.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	if filename == "" {
		filename = m.UploadName
	}
	h.Set("Content-Type", ct)
	h.Set("Content-Disposition", disposition(ct, filename, false))
	h.Set("ETag", `"`+m.SHA256+`"`)
	h.Set("Cache-Control", cacheControl)
	rs := &blobSeeker{ctx: r.Context(), blobs: e.blobs, key: m.Content.BlobKey, size: m.Content.Size}
	defer rs.Close()
	if err := rs.prime(r); err != nil {
		return err
	}
	http.ServeContent(&errorRewriter{ResponseWriter: w, r: r}, r, "", time.UnixMilli(m.UploadedTS), rs)
	rs.logFailure(r)
	return nil
}

// serveThumbnail streams a thumbnail.
func (e *Engine) serveThumbnail(w http.ResponseWriter, r *http.Request, t *ThumbnailResult) error {
	h := w.Header()
	securityHeaders(h)
	ext := map[string]string{"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif"}[t.ContentType]
	h.Set("Content-Type", t.ContentType)
	h.Set("Content-Disposition", disposition(t.ContentType, "thumbnail."+ext, true))
	h.Set("ETag", fmt.Sprintf(`"%s-%dx%d-%s-%t"`, t.SHA256, t.Width, t.Height, t.Method, t.Animated))
	h.Set("Cache-Control", cacheControl)
	var rs io.ReadSeeker
	if t.Bytes != nil {
		rs = bytes.NewReader(t.Bytes)
	} else {
		bs := &blobSeeker{ctx: r.Context(), blobs: e.blobs, key: t.BlobKey, size: t.Size}
		defer bs.Close()
		if err := bs.prime(r); err != nil {
			return err
		}
		defer bs.logFailure(r)
		rs = bs
	}
	http.ServeContent(&errorRewriter{ResponseWriter: w, r: r}, r, "", time.UnixMilli(t.CreatedTS), rs)
	return nil
}

// blobSeeker is an io.ReadSeeker over a blob that opens a ranged read at
// the current position only when read, so that http.ServeContent's seeks
// cost nothing and a Range request reads only its range onwards.
type blobSeeker struct {
	ctx   context.Context
	blobs *blobStore
	key   string
	size  int64

	pos int64
	r   *blob.Reader
	at  int64 // position of r
	err error // a read failure, logged after the answer
}

// prime opens the blob before the answer starts, so that a missing or
// unreadable blob is an error response rather than a truncated body.
// Range requests open where their range starts instead.
func (s *blobSeeker) prime(r *http.Request) error {
	if r.Header.Get("Range") != "" || r.Method == http.MethodHead || s.size == 0 {
		return nil
	}
	br, err := s.blobs.open(s.ctx, s.key, 0, -1)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return mxerr.NotFound("Media bytes are missing").Wrap(err)
		}
		return err
	}
	s.r, s.at = br, 0
	return nil
}

// logFailure logs a read that failed after the answer began (the client
// sees a truncated body; nothing else can be said to it then).
func (s *blobSeeker) logFailure(r *http.Request) {
	if s.err != nil && r.Context().Err() == nil {
		httpapi.Logger(r.Context()).WarnContext(r.Context(), "media read failed mid-answer", "key", s.key, "err", s.err)
	}
}

func (s *blobSeeker) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += s.pos
	case io.SeekEnd:
		offset += s.size
	default:
		return s.pos, errors.New("mediaapi: bad whence")
	}
	if offset < 0 {
		return s.pos, errors.New("mediaapi: negative position")
	}
	s.pos = offset
	return offset, nil
}

func (s *blobSeeker) Read(p []byte) (int, error) {
	if s.pos >= s.size {
		return 0, io.EOF
	}
	if s.r == nil || s.at != s.pos {
		s.Close()
		r, err := s.blobs.open(s.ctx, s.key, s.pos, -1)
		if err != nil {
			s.err = err
			return 0, err
		}
		s.r, s.at = r, s.pos
	}
	n, err := s.r.Read(p)
	s.pos += int64(n)
	s.at += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

func (s *blobSeeker) Close() {
	if s.r != nil {
		_ = s.r.Close()
		s.r = nil
	}
}

// errorRewriter turns the plain-text errors http.ServeContent writes
// (416 Range Not Satisfiable, 412, a failed seek) into Matrix errors.
type errorRewriter struct {
	http.ResponseWriter
	r       *http.Request
	swallow bool
}

func (e *errorRewriter) WriteHeader(code int) {
	if code < 400 {
		e.ResponseWriter.WriteHeader(code)
		return
	}
	e.swallow = true
	h := e.Header()
	for _, k := range []string{"Content-Disposition", "ETag", "Cache-Control", "Last-Modified", "Content-Length"} {
		h.Del(k)
	}
	msg := http.StatusText(code)
	if code == http.StatusRequestedRangeNotSatisfiable {
		msg = "Requested range not satisfiable"
	}
	httpapi.WriteError(e.ResponseWriter, e.r, mxerr.Custom(code, "M_UNKNOWN", "%s", msg))
}

func (e *errorRewriter) Write(b []byte) (int, error) {
	if e.swallow {
		return len(b), nil
	}
	return e.ResponseWriter.Write(b)
}

// serveChunk is the unit in which a download is copied to the client.
const serveChunk = 256 << 10

// ReadFrom copies http.ServeContent's body in serveChunk pieces rather
// than io.Copy's 32 KiB: an eighth of the reads and writes.
func (e *errorRewriter) ReadFrom(r io.Reader) (int64, error) {
	if e.swallow {
		return io.Copy(io.Discard, r)
	}
	return io.CopyBuffer(struct{ io.Writer }{e.ResponseWriter}, r, make([]byte, serveChunk))
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (e *errorRewriter) Unwrap() http.ResponseWriter { return e.ResponseWriter }
