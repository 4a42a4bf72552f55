// Package mediaapi is Parley's media repository: the /_matrix/media/*
// and /_matrix/client/v1/media/* endpoints, the federation media
// endpoints, the Synapse-compatible media admin API, thumbnails, URL
// previews and remote media.
//
// Bytes live in a gocloud blob bucket (file://, s3://, gs://, azblob://,
// mem://); what they are lives in the database (storage.Media). Nothing
// is ever held whole in memory on the way in or out:
//
//	upload body ─► size limit ─► sha256 ─► blob (fresh random key)
//	                                          │
//	        one transaction: quota, content claimed by sha256
//	        (an existing blob wins; ours is then deleted), media row,
//	        thumbnail job ──────────────────────► River: common sizes
//
//	download ─► media row ─► content (blob key) ─► ranged blob reads
//
// Identical bytes are stored once: content rows are keyed by SHA-256 and
// counted by the media rows that use them; when the count drops to zero,
// retention deletes the blob (and the content's thumbnails).
//
// The package depends on nothing of Parley's but storage and the shared
// HTTP helpers: what it needs from elsewhere (authentication, rate limits,
// federation request signing and authentication, the media of a room) are
// the small interfaces declared here, supplied by the server's wiring.
package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"time"

	"github.com/parley-chat/parley/storage"
)

// Config is what the media repository needs from the server configuration.
type Config struct {
	// ServerName is the local server name, the authority of local mxc URIs.
	ServerName string
	// StoreURL is the gocloud blob URL the bytes go to.
	StoreURL string
	// MaxUploadBytes bounds one upload (reported as m.upload.size).
	MaxUploadBytes int64
	// UserQuotaBytes bounds the bytes one user may have uploaded; 0 is
	// unlimited.
	UserQuotaBytes int64
	// QuotaInfoURI, when set, turns quota refusals into
	// M_USER_LIMIT_EXCEEDED errors that point the user at it.
	QuotaInfoURI string
	// MaxPendingUploads bounds a user's unexpired asynchronous uploads.
	MaxPendingUploads int
	// UnusedExpiry is how long a created mxc URI waits for its bytes.
	UnusedExpiry time.Duration
	// MaxWait caps how long a download waits for bytes not yet uploaded.
	MaxWait time.Duration
	// UnauthenticatedBefore: media uploaded (or remote media cached)
	// before this time stays downloadable from the deprecated
	// unauthenticated endpoints. The zero time freezes all media.
	UnauthenticatedBefore time.Time
	// MaxThumbnailPixels refuses to decode larger images.
	MaxThumbnailPixels int64
	// MaxRemoteBytes bounds remote media fetched over federation.
	MaxRemoteBytes int64
	// RemoteRetention deletes cached remote media unread for this long
	// (0 keeps it); LocalRetention does the same for local uploads.
	RemoteRetention time.Duration
	LocalRetention  time.Duration
	// Preview configures URL previews.
	Preview PreviewConfig
}

// PreviewConfig configures URL previews.
type PreviewConfig struct {
	Enabled bool
	// MaxBytes bounds a fetched page or image.
	MaxBytes int64
	// Timeout bounds one preview, redirects and image included.
	Timeout time.Duration
	// CacheTTL is how long a preview is reused.
	CacheTTL time.Duration
	// Denied ranges are refused in addition to the built-in private,
	// loopback, link-local, multicast and reserved ranges; Allowed ranges
	// are reachable even so (test fixtures, an intranet wiki).
	Denied  []netip.Prefix
	Allowed []netip.Prefix
	// UserAgent is sent with preview requests.
	UserAgent string
}

func (c *Config) defaults() {
	if c.MaxUploadBytes <= 0 {
		c.MaxUploadBytes = 100 << 20
	}
	if c.MaxPendingUploads <= 0 {
		c.MaxPendingUploads = 10
	}
	if c.UnusedExpiry <= 0 {
		c.UnusedExpiry = 24 * time.Hour
	}
	if c.MaxWait <= 0 {
		c.MaxWait = time.Minute
	}
	if c.MaxThumbnailPixels <= 0 {
		c.MaxThumbnailPixels = 32 << 20
	}
	if c.MaxRemoteBytes <= 0 {
		c.MaxRemoteBytes = c.MaxUploadBytes
	}
	p := &c.Preview
	if p.MaxBytes <= 0 {
		p.MaxBytes = 10 << 20
	}
	if p.Timeout <= 0 {
		p.Timeout = 10 * time.Second
	}
	if p.CacheTTL <= 0 {
		p.CacheTTL = time.Hour
	}
	if p.UserAgent == "" {
		p.UserAgent = "Parley URL preview (+https://matrix.org)"
	}
}

// Requester is who made a client request.
type Requester struct {
	UserID  string
	IsAdmin bool
	IsGuest bool
}

// Authenticator checks client access tokens. Errors are Matrix errors
// (M_MISSING_TOKEN, M_UNKNOWN_TOKEN, …) passed to the client as they are.
type Authenticator interface {
	Authenticate(ctx context.Context, accessToken string) (Requester, error)
}

// Limiter rate-limits an action ("upload", "create", "preview") per user;
// it returns M_LIMIT_EXCEEDED when the user must wait.
type Limiter interface {
	Allow(ctx context.Context, action, userID string) error
}

// RoomMedia finds the media a room's events refer to, as mxc:// URIs.
type RoomMedia interface {
	MediaIDsInRoom(ctx context.Context, roomID string) ([]string, error)
}

// FederationAuth authenticates a federation request (X-Matrix) and
// returns the requesting server's name.
type FederationAuth interface {
	Origin(r *http.Request) (serverName string, err error)
}

// Hooks let the server act on media events.
type Hooks struct {
	// Stored runs inside the transaction that records a local upload
	// whose bytes look like an image, to enqueue the generation of its
	// common thumbnails (GenerateThumbnails) durably.
	Stored func(ctx context.Context, tx *storage.Tx, sha256 string) error
	// Uploaded runs after bytes arrive for a URI (to wake downloads
	// waiting on other instances; see Wake).
	Uploaded func(origin, mediaID string)
}

// Deps are the repository's collaborators; Auth is required, the rest
// may be nil (no rate limits, no remote media, no room quarantine, no
// federation endpoints).
type Deps struct {
	Auth           Authenticator
	Limiter        Limiter
	Remote         RemoteFetcher
	Rooms          RoomMedia
	FederationAuth FederationAuth
	Hooks          Hooks
}

// Engine is the media repository.
type Engine struct {
	cfg   Config
	deps  Deps
	db    *storage.DB
	store *storage.Media
	blobs *blobStore
	log   *slog.Logger
	now   func() time.Time

	waiters  *notifier
	fetches  flightGroup
	thumbs   flightGroup
	previews flightGroup
	decodes  chan struct{}
	access   *accessTracker
	preview  *previewer
}

// New opens the blob store and builds the repository.
func New(ctx context.Context, cfg Config, db *storage.DB, deps Deps, log *slog.Logger) (*Engine, error) {
	if deps.Auth == nil {
		return nil, errors.New("mediaapi: an Authenticator is required")
	}
	cfg.defaults()
	blobs, err := openBlobStore(ctx, cfg.StoreURL)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg: cfg, deps: deps, db: db, store: db.Media(), blobs: blobs, log: log, now: time.Now,
		waiters: newNotifier(),
		// Decoding holds whole images in memory: bound how many at once.
		decodes: make(chan struct{}, max(2, runtime.GOMAXPROCS(0)/2)),
	}
	e.access = newAccessTracker(e.store, log)
	e.preview = newPreviewer(cfg.Preview)
	return e, nil
}

// Close releases the blob store.
func (e *Engine) Close() error {
	if err := e.blobs.close(); err != nil {
		return fmt.Errorf("mediaapi: close blob store: %w", err)
	}
	return nil
}

// Services are the repository's background parts (Start/Stop), for the
// server to run.
func (e *Engine) Services() []interface {
	Start(ctx context.Context) error
	Stop()
} {
	return []interface {
		Start(ctx context.Context) error
		Stop()
	}{e.access}
}

// Wake tells downloads waiting on this instance that bytes for a URI
// arrived (on another instance).
func (e *Engine) Wake(origin, mediaID string) { e.waiters.wake(origin + "/" + mediaID) }

// WakeAll wakes every waiting download, to re-check (after the bus
// between instances lost messages).
func (e *Engine) WakeAll() { e.waiters.wakeAll() }
