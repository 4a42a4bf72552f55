package mediaapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// Media is media ready to serve: its record and where its bytes are.
type Media struct {
	storage.MediaRecord
	Content storage.MediaContent
}

// LookupOptions shape Lookup.
type LookupOptions struct {
	// Wait is how long to wait for the bytes of a created URI.
	Wait time.Duration
	// AllowRemote fetches remote media that is not cached yet.
	AllowRemote bool
	// LocalOnly refuses remote media (federation serves only its own).
	LocalOnly bool
	// Legacy is a request on a deprecated unauthenticated endpoint: media
	// newer than the freeze is not found there.
	Legacy bool
	// BypassQuarantine lets an admin read quarantined media.
	BypassQuarantine bool
}

func notFound() error { return mxerr.NotFound("Media not found") }

// notYetUploaded is the spec's 504 for a created URI still without bytes.
func notYetUploaded() error {
	return mxerr.Custom(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
}

// Lookup finds media to serve, waiting for pending uploads and fetching
// remote media as the options allow.
func (e *Engine) Lookup(ctx context.Context, origin, mediaID string, o LookupOptions) (*Media, error) {
	if !validServerName(origin) || !validMediaID(mediaID) {
		return nil, notFound()
	}
	var (
		rec storage.MediaRecord
		err error
	)
	if origin == e.cfg.ServerName {
		rec, err = e.localRecord(ctx, origin, mediaID, o.Wait)
	} else if o.LocalOnly {
		return nil, notFound()
	} else {
		rec, err = e.remoteRecord(ctx, origin, mediaID, o.AllowRemote)
	}
	if err != nil {
		return nil, err
	}
	if rec.QuarantinedBy != "" && !o.BypassQuarantine {
		return nil, notFound()
	}
	if o.Legacy && !e.unfrozen(rec) {
		return nil, mxerr.NotFound("Media not found: use the authenticated /_matrix/client/v1/media endpoints")
	}
	c, err := e.store.MediaContentGet(ctx, rec.SHA256)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, notFound()
	}
	if err != nil {
		return nil, err
	}
	e.access.touch(rec.Key(), e.now().UnixMilli())
	return &Media{MediaRecord: rec, Content: c}, nil
}

// unfrozen reports whether media predates the freeze of unauthenticated
// access (for remote media: whether it was cached before it).
func (e *Engine) unfrozen(rec storage.MediaRecord) bool {
	if e.cfg.UnauthenticatedBefore.IsZero() {
		return false
	}
	ts := rec.UploadedTS
	if rec.UserID == "" || rec.Origin != e.cfg.ServerName {
		ts = rec.CreatedTS
	}
	return ts < e.cfg.UnauthenticatedBefore.UnixMilli()
}

// recheckEvery bounds a wait for another instance's upload when the
// message that it finished was lost.
const recheckEvery = 5 * time.Second

// localRecord returns a local record, waiting up to wait for the bytes of
// a created URI; woken by the upload (here or, through the bus, on another
// instance), not by polling.
func (e *Engine) localRecord(ctx context.Context, origin, mediaID string, wait time.Duration) (storage.MediaRecord, error) {
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		woken, done := e.waiters.subscribe(origin + "/" + mediaID)
		rec, err := e.store.MediaGet(ctx, origin, mediaID)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			done()
			return rec, notFound()
		case err != nil:
			done()
			return rec, err
		case !rec.Pending():
			done()
			return rec, nil
		case rec.UnusedExpiresTS <= e.now().UnixMilli():
			done()
			return rec, notFound()
		case deadline == nil:
			done()
			return rec, notYetUploaded()
		}
		select {
		case <-woken:
		case <-deadline:
			done()
			return rec, notYetUploaded()
		case <-ctx.Done():
			done()
			return rec, ctx.Err()
		case <-time.After(recheckEvery):
		}
		done()
	}
}

// remoteRecord returns cached remote media, fetching it once (however
// many ask at the same time) when it is not cached.
func (e *Engine) remoteRecord(ctx context.Context, origin, mediaID string, allowRemote bool) (storage.MediaRecord, error) {
	rec, err := e.store.MediaGet(ctx, origin, mediaID)
	if err == nil && !rec.Pending() {
		return rec, nil
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return rec, err
	}
	if !allowRemote || e.deps.Remote == nil {
		return rec, notFound()
	}
	err = e.fetches.do(ctx, origin+"/"+mediaID, func() error {
		ctx := context.WithoutCancel(ctx)
		// A fetch that finished between our read and this flight has
		// stored it already.
		if got, err := e.store.MediaGet(ctx, origin, mediaID); err == nil && !got.Pending() {
			return nil
		}
		return e.fetchRemote(ctx, origin, mediaID)
	})
	if err != nil {
		return rec, remoteError(err)
	}
	rec, err = e.store.MediaGet(ctx, origin, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return rec, notFound()
	}
	return rec, err
}

// remoteFetchTimeout bounds one remote download, however large.
const remoteFetchTimeout = 5 * time.Minute

// fetchRemote downloads remote media into the cache.
func (e *Engine) fetchRemote(ctx context.Context, origin, mediaID string) error {
	ctx, cancel := context.WithTimeout(ctx, remoteFetchTimeout)
	defer cancel()
	rm, err := e.deps.Remote.Fetch(ctx, origin, mediaID)
	if err != nil {
		return err
	}
	defer rm.Body.Close()
	key := newKey("content")
	if err := e.store.MediaBlobWriteBegin(ctx, key, e.now().UnixMilli()); err != nil {
		return err
	}
	w, err := e.blobs.write(ctx, key, rm.Body, e.cfg.MaxRemoteBytes)
	if err != nil {
		e.forgetBlob(ctx, key)
		if errors.Is(err, errTooLarge) {
			return ErrRemoteTooLarge
		}
		return err
	}
	name := rm.Filename
	if checkFilename(name) != nil {
		name = ""
	}
	now := e.now().UnixMilli()
	res, err := e.store.MediaStore(ctx, storage.MediaStoreParams{
		Record: storage.MediaRecord{
			Origin: origin, MediaID: mediaID, ContentType: cleanContentType(rm.ContentType), UploadName: name,
			Size: w.size, SHA256: w.sha256, CreatedTS: now, UploadedTS: now,
		},
		BlobKey: key,
	})
	if err != nil {
		e.forgetBlob(ctx, key)
		if errors.Is(err, storage.ErrConflict) {
			return nil // another instance cached it first
		}
		return err
	}
	if !res.BlobUsed {
		e.dropBlob(ctx, key)
	}
	return nil
}

// remoteError turns a fetch failure into what the client sees.
func remoteError(err error) error {
	switch {
	case errors.Is(err, ErrRemoteNotFound):
		return notFound()
	case errors.Is(err, ErrRemoteTooLarge):
		return mxerr.Custom(http.StatusBadGateway, "M_TOO_LARGE", "Remote media is too large")
	case errors.Is(err, ErrRemoteNotYetUploaded):
		return notYetUploaded()
	}
	if _, ok := mxerr.As(err); ok {
		return err
	}
	return mxerr.Custom(http.StatusBadGateway, "M_UNKNOWN", "Could not fetch remote media").Wrap(err)
}
