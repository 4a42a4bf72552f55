package mediaapi

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/parley-chat/parley/storage"
)

// accessTracker batches "media was read" updates: downloads record the
// time in memory and a background loop writes them, so that reading
// media costs no database write.
type accessTracker struct {
	store *storage.Media
	log   *slog.Logger
	every time.Duration

	mu       sync.Mutex
	pending  map[storage.MediaKey]int64
	running  bool
	stopped  bool
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func newAccessTracker(store *storage.Media, log *slog.Logger) *accessTracker {
	return &accessTracker{
		store: store, log: log, every: 30 * time.Second, pending: map[storage.MediaKey]int64{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// touchBatchLimit bounds the keys held between flushes.
const touchBatchLimit = 100_000

func (a *accessTracker) touch(k storage.MediaKey, ts int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) < touchBatchLimit {
		a.pending[k] = ts
	}
}

// Start runs the flush loop; it returns at once.
func (a *accessTracker) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.running || a.stopped {
		return nil
	}
	a.running = true
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer close(a.done)
		t := time.NewTicker(a.every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				a.flush(ctx)
			case <-a.stop:
				a.flush(ctx)
				return
			}
		}
	}()
	return nil
}

// Stop writes what is pending and ends the loop; it is idempotent.
func (a *accessTracker) Stop() {
	a.stopOnce.Do(func() {
		a.mu.Lock()
		running := a.running
		a.stopped = true
		a.mu.Unlock()
		close(a.stop)
		if running {
			<-a.done
		}
	})
}

func (a *accessTracker) flush(ctx context.Context) {
	a.mu.Lock()
	batch := a.pending
	a.pending = map[storage.MediaKey]int64{}
	a.mu.Unlock()
	byTS := map[int64][]storage.MediaKey{}
	for k, ts := range batch {
		// Second resolution is plenty for retention and batches better.
		byTS[ts/1000*1000] = append(byTS[ts/1000*1000], k)
	}
	for ts, keys := range byTS {
		for len(keys) > 0 {
			n := min(len(keys), 500)
			if err := a.store.MediaTouch(ctx, keys[:n], ts); err != nil {
				a.log.WarnContext(ctx, "could not record media access", "err", err)
			}
			keys = keys[n:]
		}
	}
}

// retentionBatch bounds what one retention pass handles per kind.
const retentionBatch = 500

// retentionBudget bounds one retention run; what is left waits for the
// next (hourly) run.
const retentionBudget = 2 * time.Minute

// RunRetention deletes expired unused created URIs, cached remote media
// (and, when configured, local media) not read for the retention period,
// garbage content and its thumbnails, leftovers of interrupted writes and
// expired URL previews. It works in batches until done or out of time,
// and is safe to run on several instances at once.
func (e *Engine) RunRetention(ctx context.Context) error {
	now := e.now()
	deadline := time.Now().Add(retentionBudget)
	steps := []func() ([]storage.MediaKey, error){
		func() ([]storage.MediaKey, error) {
			return e.store.MediaExpiredPending(ctx, now.UnixMilli(), retentionBatch)
		},
	}
	if e.cfg.RemoteRetention > 0 {
		before := now.Add(-e.cfg.RemoteRetention).UnixMilli()
		steps = append(steps, func() ([]storage.MediaKey, error) {
			return e.store.MediaUnused(ctx, e.cfg.ServerName, true, before, retentionBatch)
		})
	}
	if e.cfg.LocalRetention > 0 {
		before := now.Add(-e.cfg.LocalRetention).UnixMilli()
		steps = append(steps, func() ([]storage.MediaKey, error) {
			return e.store.MediaUnused(ctx, e.cfg.ServerName, false, before, retentionBatch)
		})
	}
	deleted := 0
	for _, step := range steps {
		for time.Now().Before(deadline) {
			keys, err := step()
			if err != nil {
				return err
			}
			if len(keys) == 0 {
				break
			}
			gone, err := e.store.MediaDelete(ctx, keys)
			if err != nil {
				return err
			}
			deleted += len(gone)
			if len(keys) < retentionBatch || len(gone) == 0 {
				break
			}
		}
	}
	if deleted > 0 {
		e.log.InfoContext(ctx, "media retention deleted media", "count", deleted)
	}
	for time.Now().Before(deadline) {
		more, err := e.collectGarbage(ctx)
		if err != nil {
			return err
		}
		if !more {
			break
		}
	}
	stale, err := e.store.MediaBlobWritesStale(ctx, now.Add(-24*time.Hour).UnixMilli(), retentionBatch)
	if err != nil {
		return err
	}
	for _, k := range stale {
		e.blobs.deleteLeftovers(k)
		e.forgetBlob(ctx, k)
	}
	if _, err := e.store.MediaPreviewsExpire(ctx, now.UnixMilli()); err != nil {
		return err
	}
	return nil
}

// collectGarbage deletes a batch of the blobs of content nothing refers
// to, with their thumbnails, and of thumbnails left behind by content
// deleted while they were being made. more reports a full batch.
func (e *Engine) collectGarbage(ctx context.Context) (more bool, err error) {
	shas, err := e.store.MediaContentGarbage(ctx, retentionBatch)
	if err != nil {
		return false, err
	}
	if err := e.deleteContent(ctx, shas); err != nil {
		return false, err
	}
	orphans, err := e.store.MediaThumbnailOrphans(ctx, retentionBatch)
	if err != nil {
		return false, err
	}
	for _, t := range orphans {
		if err := e.blobs.delete(ctx, t.BlobKey); err != nil {
			return false, err
		}
		if err := e.store.MediaThumbnailDelete(ctx, t); err != nil {
			return false, err
		}
	}
	return len(shas) == retentionBatch || len(orphans) == retentionBatch, nil
}

// deleteContent deletes unreferenced content: it is condemned, its blobs
// deleted, then forgotten. Content an upload claimed meanwhile survives.
func (e *Engine) deleteContent(ctx context.Context, shas []string) error {
	for _, sha := range shas {
		d, ok, err := e.store.MediaContentDoom(ctx, sha)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		for _, k := range append([]string{d.BlobKey}, d.ThumbnailKeys...) {
			if err := e.blobs.delete(ctx, k); err != nil {
				return err
			}
		}
		if err := e.store.MediaContentForget(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// deleteMedia deletes media records and, at once, the bytes no other
// record shares.
func (e *Engine) deleteMedia(ctx context.Context, keys []storage.MediaKey) ([]storage.MediaRecord, error) {
	deleted, err := e.store.MediaDelete(ctx, keys)
	if err != nil {
		return nil, err
	}
	var shas []string
	seen := map[string]bool{}
	for _, r := range deleted {
		if r.SHA256 != "" && !seen[r.SHA256] {
			seen[r.SHA256] = true
			shas = append(shas, r.SHA256)
		}
	}
	if err := e.deleteContent(ctx, shas); err != nil {
		// The records are gone; retention finishes the bytes.
		e.log.WarnContext(ctx, "could not delete media bytes yet", "err", err)
	}
	return deleted, nil
}
