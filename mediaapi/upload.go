package mediaapi

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// UploadParams describe bytes a user uploads.
type UploadParams struct {
	UserID      string
	ContentType string
	Filename    string
	// Length is the declared size (Content-Length), or -1.
	Length int64
	Body   io.Reader
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newMediaID returns 24 random alphanumerics (~143 bits), drawn without
// modulo bias.
func newMediaID() string {
	out := make([]byte, 0, 24)
	buf := make([]byte, 32)
	for len(out) < cap(out) {
		_, _ = rand.Read(buf)
		for _, c := range buf {
			if int(c) < 4*len(idAlphabet) && len(out) < cap(out) {
				out = append(out, idAlphabet[int(c)%len(idAlphabet)])
			}
		}
	}
	return string(out)
}

// validMediaID is the spec's rule: only A-Z a-z 0-9 _ -.
func validMediaID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validServerName checks the grammar of a server name (host[:port]).
func validServerName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		i := strings.IndexByte(s, ']')
		if i < 0 {
			return false
		}
		host, port = s[1:i], strings.TrimPrefix(s[i+1:], ":")
		if s[i+1:] != "" && !strings.HasPrefix(s[i+1:], ":") {
			return false
		}
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return false
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if host == "" {
			return false
		}
		for _, c := range host {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				return false
			}
		}
	} else {
		for _, c := range host {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				return false
			}
		}
	}
	if port != "" || strings.HasSuffix(s, ":") {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || len(port) > 5 {
			return false
		}
	}
	return true
}

// cleanContentType normalises a declared content type; anything that does
// not parse is application/octet-stream.
func cleanContentType(ct string) string {
	t, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(t, "/") {
		return "application/octet-stream"
	}
	if s := mime.FormatMediaType(t, params); s != "" {
		return s
	}
	return "application/octet-stream"
}

// checkFilename refuses names that cannot be served back safely.
func checkFilename(name string) error {
	if len(name) > 255 {
		return mxerr.InvalidParam("filename is longer than 255 bytes")
	}
	if !utf8.ValidString(name) {
		return mxerr.InvalidParam("filename is not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == '/' || r == '\\' {
			return mxerr.InvalidParam("filename contains a control character or a slash")
		}
	}
	return nil
}

// mxc builds an mxc:// URI.
func mxc(origin, mediaID string) string { return "mxc://" + origin + "/" + mediaID }

// Upload stores bytes and returns their new mxc URI.
func (e *Engine) Upload(ctx context.Context, p UploadParams) (string, error) {
	if err := e.checkUpload(ctx, p); err != nil {
		return "", err
	}
	now := e.now().UnixMilli()
	rec := storage.MediaRecord{
		Origin: e.cfg.ServerName, MediaID: newMediaID(), UserID: p.UserID,
		ContentType: cleanContentType(p.ContentType), UploadName: p.Filename, CreatedTS: now,
	}
	if _, err := e.storeLocal(ctx, rec, p.Body, storeOptions{}); err != nil {
		return "", err
	}
	return mxc(rec.Origin, rec.MediaID), nil
}

// Create reserves an mxc URI for a later upload and returns it with the
// time (ms) by which the bytes must arrive.
func (e *Engine) Create(ctx context.Context, userID string) (string, int64, error) {
	now := e.now()
	rec := storage.MediaRecord{
		Origin: e.cfg.ServerName, MediaID: newMediaID(), UserID: userID,
		CreatedTS: now.UnixMilli(), UnusedExpiresTS: now.Add(e.cfg.UnusedExpiry).UnixMilli(),
	}
	err := e.store.MediaCreatePending(ctx, rec, e.cfg.MaxPendingUploads)
	if errors.Is(err, storage.ErrMediaPendingLimit) {
		return "", 0, mxerr.Custom(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED",
			"You have %d uploads pending; finish or abandon one first", e.cfg.MaxPendingUploads)
	}
	if err != nil {
		return "", 0, err
	}
	return mxc(rec.Origin, rec.MediaID), rec.UnusedExpiresTS, nil
}

// UploadTo fills a URI made by Create. Only its creator may, only once.
func (e *Engine) UploadTo(ctx context.Context, origin, mediaID string, p UploadParams) error {
	if origin != e.cfg.ServerName || !validMediaID(mediaID) {
		return mxerr.NotFound("Unknown media ID")
	}
	rec, err := e.store.MediaGet(ctx, origin, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return mxerr.NotFound("Unknown media ID")
	}
	if err != nil {
		return err
	}
	switch {
	case rec.UserID != p.UserID:
		return mxerr.Forbidden("This media ID was created by another user")
	case !rec.Pending():
		return mxerr.Custom(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
	case rec.UnusedExpiresTS <= e.now().UnixMilli():
		return mxerr.NotFound("Media ID has expired")
	}
	if err := e.checkUpload(ctx, p); err != nil {
		return err
	}
	rec.ContentType, rec.UploadName = cleanContentType(p.ContentType), p.Filename
	_, err = e.storeLocal(ctx, rec, p.Body, storeOptions{pending: true})
	return err
}

// checkUpload refuses, before reading a byte, what is bound to fail.
func (e *Engine) checkUpload(ctx context.Context, p UploadParams) error {
	if err := checkFilename(p.Filename); err != nil {
		return err
	}
	if p.Length > e.cfg.MaxUploadBytes {
		return e.tooLarge()
	}
	if e.cfg.UserQuotaBytes > 0 && p.Length > 0 {
		used, err := e.store.MediaUsage(ctx, p.UserID)
		if err != nil {
			return err
		}
		if used+p.Length > e.cfg.UserQuotaBytes {
			return e.quotaExceeded()
		}
	}
	return nil
}

func (e *Engine) tooLarge() error {
	return mxerr.TooLarge("Cannot upload files larger than %d bytes", e.cfg.MaxUploadBytes)
}

// quotaExceeded is the spec's 403 for a full quota: M_USER_LIMIT_EXCEEDED
// (Matrix 1.18), which must carry an info_uri, when one is configured;
// M_FORBIDDEN otherwise, as the upload endpoints document.
func (e *Engine) quotaExceeded() error {
	if e.cfg.QuotaInfoURI != "" {
		return mxerr.Custom(http.StatusForbidden, "M_USER_LIMIT_EXCEEDED",
			"You have used your media storage quota of %d bytes", e.cfg.UserQuotaBytes).
			With("info_uri", e.cfg.QuotaInfoURI).With("can_upgrade", false)
	}
	return mxerr.Forbidden("You have used your media storage quota of %d bytes", e.cfg.UserQuotaBytes)
}

// readError marks a failure to read the client's body (not ours to fix).
type readError struct{ err error }

func (r readError) Error() string { return "read upload: " + r.err.Error() }
func (r readError) Unwrap() error { return r.err }

type errReader struct{ r io.Reader }

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		err = readError{err}
	}
	return n, err
}

// storeOptions shape storeLocal.
type storeOptions struct {
	// pending fills a URI made by Create.
	pending bool
	// uncharged media (URL preview images) does not count against the
	// quota.
	uncharged bool
	// limit overrides the maximum upload size.
	limit int64
	// accept, when set, vets the first bytes (sniffing); refused content
	// is not stored and errNotAccepted returned.
	accept func(head []byte) bool
}

var errNotAccepted = errors.New("mediaapi: content refused")

// storeLocal streams body into the blob store and records it as rec.
func (e *Engine) storeLocal(ctx context.Context, rec storage.MediaRecord, body io.Reader, o storeOptions) (storage.MediaRecord, error) {
	key := newKey("content")
	if err := e.store.MediaBlobWriteBegin(ctx, key, e.now().UnixMilli()); err != nil {
		return rec, err
	}
	limit := e.cfg.MaxUploadBytes
	if o.limit > 0 {
		limit = o.limit
	}
	w, err := e.blobs.write(ctx, key, errReader{body}, limit)
	if err == nil && o.accept != nil && !o.accept(w.head) {
		err = errNotAccepted
	}
	if err != nil {
		e.forgetBlob(ctx, key)
		var re readError
		switch {
		case errors.Is(err, errTooLarge) && o.limit == 0:
			return rec, e.tooLarge()
		case errors.As(err, &re) && ctx.Err() == nil && !o.uncharged:
			return rec, mxerr.Unknown("Could not read the upload").Wrap(err)
		}
		return rec, err
	}
	rec.Size, rec.SHA256, rec.UploadedTS = w.size, w.sha256, e.now().UnixMilli()
	sniffed := http.DetectContentType(w.head)
	if rec.ContentType == "" {
		rec.ContentType = cleanContentType(sniffed)
	}
	image := isThumbnailable(sniffed)
	res, err := e.store.MediaStore(ctx, storage.MediaStoreParams{
		Record: rec, BlobKey: key, Pending: o.pending, Charge: !o.uncharged, Quota: e.cfg.UserQuotaBytes,
		InTx: func(tx *storage.Tx) error {
			if image && e.deps.Hooks.Stored != nil {
				return e.deps.Hooks.Stored(ctx, tx, rec.SHA256)
			}
			return nil
		},
	})
	if err != nil {
		e.forgetBlob(ctx, key)
		switch {
		case errors.Is(err, storage.ErrMediaQuota):
			return rec, e.quotaExceeded()
		case o.pending && errors.Is(err, storage.ErrConflict):
			return rec, mxerr.Custom(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
		case o.pending && errors.Is(err, storage.ErrNotFound):
			return rec, mxerr.NotFound("Media ID has expired")
		}
		return rec, err
	}
	if !res.BlobUsed {
		// The same bytes were already stored: keep one copy.
		e.dropBlob(ctx, key)
	}
	e.uploaded(rec.Origin, rec.MediaID)
	return res.Record, nil
}

// uploaded wakes local and remote waiters for a URI.
func (e *Engine) uploaded(origin, mediaID string) {
	e.waiters.wake(origin + "/" + mediaID)
	if e.deps.Hooks.Uploaded != nil {
		e.deps.Hooks.Uploaded(origin, mediaID)
	}
}

// forgetBlob deletes a blob that was never recorded, and its write trace.
func (e *Engine) forgetBlob(ctx context.Context, key string) {
	ctx = context.WithoutCancel(ctx)
	if err := e.blobs.delete(ctx, key); err != nil {
		e.log.WarnContext(ctx, "could not delete unrecorded blob; retention will retry", "key", key, "err", err)
		return
	}
	if err := e.store.MediaBlobWriteEnd(ctx, key); err != nil {
		e.log.WarnContext(ctx, "could not forget blob write", "key", key, "err", err)
	}
}

// dropBlob deletes a blob made redundant by deduplication.
func (e *Engine) dropBlob(ctx context.Context, key string) { e.forgetBlob(ctx, key) }

// isThumbnailable reports whether a sniffed type is an image format the
// thumbnailer reads.
func isThumbnailable(sniffed string) bool {
	switch sniffed {
	case "image/jpeg", "image/png", "image/gif", "image/webp":
		return true
	}
	return false
}
