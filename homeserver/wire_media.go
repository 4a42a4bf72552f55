package homeserver

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/ratelimit"
	"github.com/parley-chat/parley/mediaapi"
	"github.com/parley-chat/parley/storage"
)

// mediaChannel tells other instances that bytes arrived for a created
// media ID, so that downloads waiting there answer at once.
const mediaChannel = "parley_media"

// Rate limits of the media repository, close to Synapse's defaults.
var (
	mediaUploadRule  = ratelimit.Rule{Name: "media_upload", PerSecond: 10, Burst: 50}
	mediaCreateRule  = ratelimit.Rule{Name: "media_create", PerSecond: 10, Burst: 50}
	mediaPreviewRule = ratelimit.Rule{Name: "media_preview", PerSecond: 2, Burst: 20}
)

// wireMedia builds the media engine and its API routes.
//
// Not wired yet, because what they need does not exist: remote media (a
// mediaapi.FederationFetcher needs the federation work's request signing
// and server discovery) and the federation media endpoints (they need its
// X-Matrix authentication). Until then remote media answers 404
// M_NOT_FOUND and the federation media routes 404 M_UNRECOGNIZED.
func (s *Server) wireMedia() error {
	m := s.cfg.Media
	cfg := mediaapi.Config{
		ServerName:            s.cfg.ServerName,
		StoreURL:              s.cfg.MediaStore,
		MaxUploadBytes:        m.MaxUploadBytes,
		UserQuotaBytes:        m.UserQuotaBytes,
		QuotaInfoURI:          m.QuotaInfoURI,
		MaxPendingUploads:     m.MaxPendingUploads,
		UnusedExpiry:          m.UnusedExpiry.Std(),
		MaxWait:               m.MaxDownloadWait.Std(),
		MaxThumbnailPixels:    m.MaxThumbnailPixels,
		MaxRemoteBytes:        m.MaxRemoteBytes,
		RemoteRetention:       m.RemoteRetention.Std(),
		LocalRetention:        m.LocalRetention.Std(),
		UnauthenticatedBefore: parseRFC3339(m.UnauthenticatedBefore),
		Preview: mediaapi.PreviewConfig{
			Enabled:  bool(m.URLPreview.Enabled),
			MaxBytes: m.URLPreview.MaxBytes,
			Timeout:  m.URLPreview.Timeout.Std(),
			CacheTTL: m.URLPreview.CacheTTL.Std(),
			Denied:   parsePrefixes(m.URLPreview.DeniedRanges),
			Allowed:  parsePrefixes(m.URLPreview.AllowedRanges),
		},
	}
	deps := mediaapi.Deps{
		Auth:    mediaAuth{s.accounts},
		Limiter: mediaLimiter{s.limiter},
		Rooms:   roomMedia{s.db.Media()},
		Hooks: mediaapi.Hooks{
			Stored: func(ctx context.Context, tx *storage.Tx, sha string) error {
				return s.jobs.InsertTx(ctx, tx, mediaThumbnailsArgs{SHA256: sha}, &river.InsertOpts{MaxAttempts: 3})
			},
			Uploaded: func(origin, mediaID string) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := s.bus.Publish(ctx, mediaChannel, origin+"/"+mediaID); err != nil {
					s.log.Warn("could not tell other instances about an upload", "err", err)
				}
			},
		},
	}
	engine, err := mediaapi.New(context.Background(), cfg, s.db, deps, s.log.With("engine", "media"))
	if err != nil {
		return err
	}
	s.bus.Subscribe(mediaChannel, func(payload string) {
		if origin, id, ok := strings.Cut(payload, "/"); ok {
			engine.Wake(origin, id)
		}
	})
	s.bus.OnResume(engine.WakeAll)
	s.routes = append(s.routes, engine.Routes)
	for _, svc := range engine.Services() {
		s.services = append(s.services, svc)
	}
	river.AddWorker(s.workers, &mediaThumbnailsWorker{media: engine})
	river.AddWorker(s.workers, &mediaRetentionWorker{media: engine})
	s.periodicJob(time.Hour, func() river.JobArgs { return mediaRetentionArgs{} })
	return nil
}

// mediaAuth adapts the accounts engine to the media repository.
type mediaAuth struct{ accounts *accounts.Engine }

func (a mediaAuth) Authenticate(ctx context.Context, token string) (mediaapi.Requester, error) {
	d, err := a.accounts.Authenticate(ctx, token)
	if err != nil {
		return mediaapi.Requester{}, err
	}
	return mediaapi.Requester{UserID: d.UserID, IsAdmin: d.IsAdmin, IsGuest: d.IsGuest}, nil
}

// roomMedia finds the media a room's stored events refer to.
type roomMedia struct{ store *storage.Media }

func (r roomMedia) MediaIDsInRoom(ctx context.Context, roomID string) ([]string, error) {
	return r.store.MediaURIsInRoom(ctx, roomID)
}

// mediaLimiter applies the server's rate limiter to media actions.
type mediaLimiter struct{ limiter *ratelimit.Limiter }

func (l mediaLimiter) Allow(ctx context.Context, action, userID string) error {
	rule := mediaUploadRule
	switch action {
	case "create":
		rule = mediaCreateRule
	case "preview":
		rule = mediaPreviewRule
	}
	return l.limiter.Allow(ctx, rule, userID)
}

// parsePrefixes reads validated IP addresses and CIDR ranges.
func parsePrefixes(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

// parseRFC3339 reads a validated time; the zero time when empty.
func parseRFC3339(s string) time.Time {
	t, _ := time.Parse(time.RFC3339, s)
	return t
}

// mediaThumbnailsArgs makes the common thumbnails of new content.
type mediaThumbnailsArgs struct {
	SHA256 string `json:"sha256"`
}

func (mediaThumbnailsArgs) Kind() string { return "parley.media_thumbnails" }

type mediaThumbnailsWorker struct {
	river.WorkerDefaults[mediaThumbnailsArgs]
	media *mediaapi.Engine
}

func (w *mediaThumbnailsWorker) Timeout(*river.Job[mediaThumbnailsArgs]) time.Duration {
	return 2 * time.Minute
}

func (w *mediaThumbnailsWorker) Work(ctx context.Context, job *river.Job[mediaThumbnailsArgs]) error {
	if err := w.media.GenerateThumbnails(ctx, job.Args.SHA256); err != nil {
		return fmt.Errorf("thumbnails of %s: %w", job.Args.SHA256, err)
	}
	return nil
}

// mediaRetentionArgs is the periodic clean-up of the media repository.
type mediaRetentionArgs struct{}

func (mediaRetentionArgs) Kind() string { return "parley.media_retention" }

type mediaRetentionWorker struct {
	river.WorkerDefaults[mediaRetentionArgs]
	media *mediaapi.Engine
}

func (w *mediaRetentionWorker) Work(ctx context.Context, _ *river.Job[mediaRetentionArgs]) error {
	return w.media.RunRetention(ctx)
}
