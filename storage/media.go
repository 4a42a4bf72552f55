package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Media stores the media repository's metadata: which mxc:// URIs exist,
// who uploaded them, where their bytes live (content, once per SHA-256),
// thumbnails, quotas and cached URL previews. The bytes themselves are in
// the blob store, which this store never touches.
type Media struct{ db *DB }

// Media returns the media store.
func (db *DB) Media() *Media { return &Media{db: db} }

// Errors particular to the media store.
var (
	// ErrMediaQuota is returned when an upload would take its user over
	// their quota.
	ErrMediaQuota = errors.New("storage: media quota exceeded")
	// ErrMediaPendingLimit is returned when a user already has as many
	// pending asynchronous uploads as allowed.
	ErrMediaPendingLimit = errors.New("storage: too many pending media uploads")
)

// MediaKey names one piece of media: mxc://Origin/MediaID.
type MediaKey struct {
	Origin  string
	MediaID string
}

// MediaRecord is one mxc:// URI: a local upload, a pending asynchronous
// upload (SHA256 empty) or cached remote media (UserID empty).
type MediaRecord struct {
	Origin          string
	MediaID         string
	UserID          string
	ContentType     string
	UploadName      string
	Size            int64
	SHA256          string
	CreatedTS       int64
	UploadedTS      int64
	UnusedExpiresTS int64
	LastAccessTS    int64
	QuarantinedBy   string
	QuotaBytes      int64
}

// Pending reports whether the record is a created URI still waiting for
// its bytes.
func (r MediaRecord) Pending() bool { return r.SHA256 == "" }

// Key returns the record's key.
func (r MediaRecord) Key() MediaKey { return MediaKey{Origin: r.Origin, MediaID: r.MediaID} }

const mediaCols = `origin, media_id, user_id, content_type, upload_name, size, sha256, created_ts,
	uploaded_ts, unused_expires_ts, last_access_ts, quarantined_by, quota_bytes`

func scanMedia(r Row) (MediaRecord, error) {
	var (
		m                          MediaRecord
		user, name, sha, quar      *string
		uploaded, expires, touched *int64
	)
	err := r.Scan(&m.Origin, &m.MediaID, &user, &m.ContentType, &name, &m.Size, &sha, &m.CreatedTS,
		&uploaded, &expires, &touched, &quar, &m.QuotaBytes)
	m.UserID, m.UploadName, m.SHA256, m.QuarantinedBy = deref(user), deref(name), deref(sha), deref(quar)
	m.UploadedTS, m.UnusedExpiresTS, m.LastAccessTS = derefInt(uploaded), derefInt(expires), derefInt(touched)
	return m, err
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func derefInt(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}

func nullStr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// lockUsage makes sure the user's usage row exists and locks it until tx
// ends, which serialises a user's uploads and creates.
func lockUsage(ctx context.Context, tx *Tx, userID string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO media_usage (user_id, bytes) VALUES ($1, 0) ON CONFLICT (user_id) DO NOTHING`, userID); err != nil {
		return fmt.Errorf("media usage: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE media_usage SET bytes = bytes WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("lock media usage: %w", err)
	}
	return nil
}

// MediaCreatePending records a URI created for a later asynchronous
// upload. When maxPending > 0 and the user already has that many
// unexpired pending uploads at r.CreatedTS, it returns ErrMediaPendingLimit.
func (m *Media) MediaCreatePending(ctx context.Context, r MediaRecord, maxPending int) error {
	return m.db.Write(ctx, func(tx *Tx) error {
		if err := lockUsage(ctx, tx, r.UserID); err != nil {
			return err
		}
		if maxPending > 0 {
			var n int64
			if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM media WHERE user_id = $1 AND sha256 IS NULL AND unused_expires_ts > $2`,
				r.UserID, r.CreatedTS).Scan(&n); err != nil {
				return fmt.Errorf("count pending media: %w", err)
			}
			if n >= int64(maxPending) {
				return ErrMediaPendingLimit
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO media (origin, media_id, user_id, created_ts, unused_expires_ts) VALUES ($1, $2, $3, $4, $5)`,
			r.Origin, r.MediaID, r.UserID, r.CreatedTS, r.UnusedExpiresTS)
		if err != nil {
			return fmt.Errorf("create pending media: %w", err)
		}
		return nil
	})
}

// MediaStoreParams describes bytes that have been written to the blob store
// and are to be recorded.
type MediaStoreParams struct {
	// Record is the media: Origin, MediaID, UserID, ContentType,
	// UploadName, Size, SHA256, CreatedTS and UploadedTS are used.
	Record MediaRecord
	// BlobKey is where the bytes were written.
	BlobKey string
	// Pending fills a URI made by MediaCreatePending, which must exist,
	// belong to Record.UserID, be unfilled and unexpired at UploadedTS.
	Pending bool
	// Charge counts Size against the uploader's quota; Quota > 0 refuses
	// (ErrMediaQuota) an upload that would take them over it.
	Charge bool
	Quota  int64
	// InTx runs inside the same transaction, so that work it enqueues
	// exists if and only if the media does.
	InTx func(tx *Tx) error
}

// MediaStoreResult is what MediaStore recorded.
type MediaStoreResult struct {
	Record MediaRecord
	// BlobUsed is false when identical content was already stored: the
	// caller's blob is redundant and should be deleted, then its write
	// forgotten (MediaBlobWriteEnd).
	BlobUsed bool
}

// MediaStore records an upload (or a fetched remote file) whose bytes are
// in the blob store at p.BlobKey: it charges the quota, claims the content
// by hash (keeping the existing blob if there is one) and writes the media
// row, all in one transaction. A duplicate URI is ErrConflict; a pending URI
// that is missing, expired or someone else's is ErrNotFound, and one that
// was already filled is ErrConflict.
func (m *Media) MediaStore(ctx context.Context, p MediaStoreParams) (MediaStoreResult, error) {
	r := p.Record
	var res MediaStoreResult
	err := m.db.Write(ctx, func(tx *Tx) error {
		res = MediaStoreResult{}
		r.QuotaBytes = 0
		if p.Charge && r.UserID != "" {
			if err := lockUsage(ctx, tx, r.UserID); err != nil {
				return err
			}
			var (
				n   int64
				err error
			)
			if p.Quota > 0 {
				n, err = tx.Exec(ctx, `UPDATE media_usage SET bytes = bytes + $2 WHERE user_id = $1 AND bytes + $2 <= $3`, r.UserID, r.Size, p.Quota)
			} else {
				n, err = tx.Exec(ctx, `UPDATE media_usage SET bytes = bytes + $2 WHERE user_id = $1`, r.UserID, r.Size)
			}
			if err != nil {
				return fmt.Errorf("charge media quota: %w", err)
			}
			if n == 0 {
				return ErrMediaQuota
			}
			r.QuotaBytes = r.Size
		}
		var (
			blobKey string
			quar    *string
		)
		err := tx.QueryRow(ctx, `INSERT INTO media_content (sha256, blob_key, size, refs, created_ts) VALUES ($1, $2, $3, 1, $4)
			ON CONFLICT (sha256) DO UPDATE SET
				refs = CASE WHEN media_content.doomed THEN 1 ELSE media_content.refs + 1 END,
				blob_key = CASE WHEN media_content.doomed THEN excluded.blob_key ELSE media_content.blob_key END,
				doomed = FALSE
			RETURNING blob_key, quarantined_by`, r.SHA256, p.BlobKey, r.Size, r.UploadedTS).Scan(&blobKey, &quar)
		if err != nil {
			return fmt.Errorf("claim media content: %w", err)
		}
		res.BlobUsed = blobKey == p.BlobKey
		if quar != nil {
			r.QuarantinedBy = *quar
		}
		if p.Pending {
			n, err := tx.Exec(ctx, `UPDATE media SET content_type = $3, upload_name = $4, size = $5, sha256 = $6, uploaded_ts = $7,
					unused_expires_ts = NULL, quota_bytes = $8, quarantined_by = COALESCE(quarantined_by, $9)
				WHERE origin = $1 AND media_id = $2 AND user_id = $10 AND sha256 IS NULL AND unused_expires_ts > $7`,
				r.Origin, r.MediaID, r.ContentType, nullStr(r.UploadName), r.Size, r.SHA256, r.UploadedTS, r.QuotaBytes,
				nullStr(r.QuarantinedBy), r.UserID)
			if err != nil {
				return fmt.Errorf("fill pending media: %w", err)
			}
			if n == 0 {
				var sha *string
				err := tx.QueryRow(ctx, `SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2`, r.Origin, r.MediaID).Scan(&sha)
				if err == nil && sha != nil {
					return ErrConflict
				}
				return ErrNotFound
			}
		} else {
			_, err := tx.Exec(ctx, `INSERT INTO media (`+mediaCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10, $11)`,
				r.Origin, r.MediaID, nullStr(r.UserID), r.ContentType, nullStr(r.UploadName), r.Size, r.SHA256, r.CreatedTS,
				r.UploadedTS, nullStr(r.QuarantinedBy), r.QuotaBytes)
			if err != nil {
				return fmt.Errorf("record media: %w", err)
			}
		}
		if res.BlobUsed {
			// The blob is now owned by the content row. A redundant one
			// keeps its trace until the caller has deleted it.
			if _, err := tx.Exec(ctx, `DELETE FROM media_blob_writes WHERE blob_key = $1`, p.BlobKey); err != nil {
				return fmt.Errorf("end blob write: %w", err)
			}
		}
		if p.InTx != nil {
			if err := p.InTx(tx); err != nil {
				return err
			}
		}
		res.Record, err = scanMedia(tx.QueryRow(ctx, `SELECT `+mediaCols+` FROM media WHERE origin = $1 AND media_id = $2`, r.Origin, r.MediaID))
		if err != nil {
			return fmt.Errorf("read stored media: %w", err)
		}
		return nil
	})
	if err != nil {
		return MediaStoreResult{}, err
	}
	return res, nil
}

// MediaGet returns one record; ErrNotFound if there is none.
func (m *Media) MediaGet(ctx context.Context, origin, mediaID string) (MediaRecord, error) {
	r, err := scanMedia(m.db.Read().QueryRow(ctx, `SELECT `+mediaCols+` FROM media WHERE origin = $1 AND media_id = $2`, origin, mediaID))
	if err != nil {
		return r, fmt.Errorf("get media: %w", err)
	}
	return r, nil
}

// MediaImage is what probing content found.
type MediaImage struct {
	// Format is jpeg, png, gif or webp; empty when the content is not an
	// image Parley can read.
	Format string
	// Width and Height are after EXIF orientation.
	Width, Height int
	// Orientation is the EXIF orientation (1–8; 1 is upright).
	Orientation int
	Animated    bool
	Frames      int
}

// MediaContent is one stored blob of distinct bytes.
type MediaContent struct {
	SHA256        string
	BlobKey       string
	Size          int64
	Refs          int64
	Doomed        bool
	QuarantinedBy string
	// Probed says whether Image has been filled in.
	Probed bool
	Image  MediaImage
}

// MediaContentGet returns the content with a hash; ErrNotFound if none.
func (m *Media) MediaContentGet(ctx context.Context, sha string) (MediaContent, error) {
	c := MediaContent{SHA256: sha}
	var quar *string
	err := m.db.Read().QueryRow(ctx, `SELECT blob_key, size, refs, doomed, quarantined_by, probed, image_format, image_width,
			image_height, orientation, animated, frames FROM media_content WHERE sha256 = $1`, sha).
		Scan(&c.BlobKey, &c.Size, &c.Refs, &c.Doomed, &quar, &c.Probed, &c.Image.Format, &c.Image.Width,
			&c.Image.Height, &c.Image.Orientation, &c.Image.Animated, &c.Image.Frames)
	if err != nil {
		return c, fmt.Errorf("get media content: %w", err)
	}
	c.QuarantinedBy = deref(quar)
	return c, nil
}

// MediaContentSetImage records what probing the content found.
func (m *Media) MediaContentSetImage(ctx context.Context, sha string, img MediaImage) error {
	_, err := m.db.Exec(ctx, `UPDATE media_content SET probed = TRUE, image_format = $2, image_width = $3, image_height = $4,
		orientation = $5, animated = $6, frames = $7 WHERE sha256 = $1`,
		sha, img.Format, img.Width, img.Height, img.Orientation, img.Animated, img.Frames)
	if err != nil {
		return fmt.Errorf("record media probe: %w", err)
	}
	return nil
}

// MediaThumbnail is a stored thumbnail of some content.
type MediaThumbnail struct {
	SHA256      string
	Width       int
	Height      int
	Method      string
	Animated    bool
	ContentType string
	Size        int64
	BlobKey     string
	CreatedTS   int64
}

// MediaThumbnails lists the thumbnails of a content hash.
func (m *Media) MediaThumbnails(ctx context.Context, sha string) ([]MediaThumbnail, error) {
	rows, err := m.db.Read().Query(ctx, `SELECT width, height, method, animated, content_type, size, blob_key, created_ts
		FROM media_thumbnails WHERE sha256 = $1 ORDER BY width, height`, sha)
	if err != nil {
		return nil, fmt.Errorf("list thumbnails: %w", err)
	}
	defer rows.Close()
	var out []MediaThumbnail
	for rows.Next() {
		t := MediaThumbnail{SHA256: sha}
		if err := rows.Scan(&t.Width, &t.Height, &t.Method, &t.Animated, &t.ContentType, &t.Size, &t.BlobKey, &t.CreatedTS); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// MediaThumbnailPut records a thumbnail whose bytes are at t.BlobKey and
// forgets the blob's write trace. It returns false, recording nothing,
// when the same thumbnail already exists or its content is gone or being
// deleted: the caller's blob is then redundant.
func (m *Media) MediaThumbnailPut(ctx context.Context, t MediaThumbnail) (bool, error) {
	stored := false
	err := m.db.Write(ctx, func(tx *Tx) error {
		stored = false
		var doomed bool
		err := tx.QueryRow(ctx, `SELECT doomed FROM media_content WHERE sha256 = $1`, t.SHA256).Scan(&doomed)
		if errors.Is(err, ErrNotFound) || doomed {
			return nil
		}
		if err != nil {
			return fmt.Errorf("check thumbnail content: %w", err)
		}
		n, err := tx.Exec(ctx, `INSERT INTO media_thumbnails (sha256, width, height, method, animated, content_type, size, blob_key, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (sha256, width, height, method, animated) DO NOTHING`,
			t.SHA256, t.Width, t.Height, t.Method, t.Animated, t.ContentType, t.Size, t.BlobKey, t.CreatedTS)
		if err != nil {
			return fmt.Errorf("record thumbnail: %w", err)
		}
		if n == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `DELETE FROM media_blob_writes WHERE blob_key = $1`, t.BlobKey); err != nil {
			return fmt.Errorf("end blob write: %w", err)
		}
		stored = true
		return nil
	})
	return stored, err
}

// MediaTouch records that media was read at ts, for retention.
func (m *Media) MediaTouch(ctx context.Context, keys []MediaKey, ts int64) error {
	if len(keys) == 0 {
		return nil
	}
	return m.db.Write(ctx, func(tx *Tx) error {
		for _, k := range keys {
			if _, err := tx.Exec(ctx, `UPDATE media SET last_access_ts = $3 WHERE origin = $1 AND media_id = $2`, k.Origin, k.MediaID, ts); err != nil {
				return fmt.Errorf("touch media: %w", err)
			}
		}
		return nil
	})
}

// MediaDelete removes media records (missing ones are skipped), releases
// their content and refunds their uploaders' quota. It returns the records
// it removed; content left without references is for MediaContentDoom.
func (m *Media) MediaDelete(ctx context.Context, keys []MediaKey) ([]MediaRecord, error) {
	var out []MediaRecord
	err := m.db.Write(ctx, func(tx *Tx) error {
		out = out[:0]
		for _, k := range keys {
			r, err := scanMedia(tx.QueryRow(ctx, `DELETE FROM media WHERE origin = $1 AND media_id = $2 RETURNING `+mediaCols, k.Origin, k.MediaID))
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("delete media: %w", err)
			}
			if r.SHA256 != "" {
				if _, err := tx.Exec(ctx, `UPDATE media_content SET refs = refs - 1 WHERE sha256 = $1`, r.SHA256); err != nil {
					return fmt.Errorf("release media content: %w", err)
				}
			}
			if r.QuotaBytes > 0 && r.UserID != "" {
				if _, err := tx.Exec(ctx, `UPDATE media_usage SET bytes = bytes - $2 WHERE user_id = $1`, r.UserID, r.QuotaBytes); err != nil {
					return fmt.Errorf("refund media quota: %w", err)
				}
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// MediaListOptions page and order a user's media.
type MediaListOptions struct {
	From  int64
	Limit int64
	// OrderBy is one of media_id, upload_name, created_ts, last_access_ts,
	// media_length, media_type, quarantined_by (Synapse's names); empty is
	// created_ts.
	OrderBy   string
	Backwards bool
}

var mediaOrderColumns = map[string]string{
	"":               "created_ts",
	"media_id":       "media_id",
	"upload_name":    "upload_name",
	"created_ts":     "created_ts",
	"last_access_ts": "last_access_ts",
	"media_length":   "size",
	"media_type":     "content_type",
	"quarantined_by": "quarantined_by",
}

// MediaOrderValid reports whether name is a column MediaListByUser can
// order by.
func MediaOrderValid(name string) bool { _, ok := mediaOrderColumns[name]; return ok }

// MediaListByUser returns one page of the media a local user created and
// how many they have in all.
func (m *Media) MediaListByUser(ctx context.Context, origin, userID string, o MediaListOptions) ([]MediaRecord, int64, error) {
	col, ok := mediaOrderColumns[o.OrderBy]
	if !ok {
		return nil, 0, fmt.Errorf("list media: cannot order by %q", o.OrderBy)
	}
	dir := "ASC"
	if o.Backwards {
		dir = "DESC"
	}
	var total int64
	if err := m.db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM media WHERE origin = $1 AND user_id = $2`, origin, userID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count media: %w", err)
	}
	rows, err := m.db.Read().Query(ctx, `SELECT `+mediaCols+` FROM media WHERE origin = $1 AND user_id = $2
		ORDER BY `+col+` `+dir+`, media_id ASC LIMIT $3 OFFSET $4`, origin, userID, o.Limit, o.From)
	if err != nil {
		return nil, 0, fmt.Errorf("list media: %w", err)
	}
	defer rows.Close()
	var out []MediaRecord
	for rows.Next() {
		r, err := scanMedia(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, r)
	}
	return out, total, rows.Err()
}

// MediaQuarantine marks media quarantined by an admin, together with every
// other record of the same bytes; later uploads of those bytes are
// quarantined too. It returns how many records it newly quarantined.
func (m *Media) MediaQuarantine(ctx context.Context, keys []MediaKey, by string) (int64, error) {
	var total int64
	err := m.db.Write(ctx, func(tx *Tx) error {
		total = 0
		for _, k := range keys {
			var sha *string
			err := tx.QueryRow(ctx, `SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2`, k.Origin, k.MediaID).Scan(&sha)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("quarantine media: %w", err)
			}
			n, err := tx.Exec(ctx, `UPDATE media SET quarantined_by = $3 WHERE origin = $1 AND media_id = $2 AND quarantined_by IS NULL`, k.Origin, k.MediaID, by)
			if err != nil {
				return fmt.Errorf("quarantine media: %w", err)
			}
			total += n
			if sha == nil {
				continue
			}
			n, err = tx.Exec(ctx, `UPDATE media SET quarantined_by = $2 WHERE sha256 = $1 AND quarantined_by IS NULL`, *sha, by)
			if err != nil {
				return fmt.Errorf("quarantine media: %w", err)
			}
			total += n
			if _, err := tx.Exec(ctx, `UPDATE media_content SET quarantined_by = $2 WHERE sha256 = $1`, *sha, by); err != nil {
				return fmt.Errorf("quarantine media content: %w", err)
			}
		}
		return nil
	})
	return total, err
}

// MediaUnquarantine lifts the quarantine of media and of every other
// record of the same bytes. It returns how many records it released.
func (m *Media) MediaUnquarantine(ctx context.Context, keys []MediaKey) (int64, error) {
	var total int64
	err := m.db.Write(ctx, func(tx *Tx) error {
		total = 0
		for _, k := range keys {
			var sha *string
			err := tx.QueryRow(ctx, `SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2`, k.Origin, k.MediaID).Scan(&sha)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("unquarantine media: %w", err)
			}
			n, err := tx.Exec(ctx, `UPDATE media SET quarantined_by = NULL WHERE origin = $1 AND media_id = $2 AND quarantined_by IS NOT NULL`, k.Origin, k.MediaID)
			if err != nil {
				return fmt.Errorf("unquarantine media: %w", err)
			}
			total += n
			if sha == nil {
				continue
			}
			n, err = tx.Exec(ctx, `UPDATE media SET quarantined_by = NULL WHERE sha256 = $1 AND quarantined_by IS NOT NULL`, *sha)
			if err != nil {
				return fmt.Errorf("unquarantine media: %w", err)
			}
			total += n
			if _, err := tx.Exec(ctx, `UPDATE media_content SET quarantined_by = NULL WHERE sha256 = $1`, *sha); err != nil {
				return fmt.Errorf("unquarantine media content: %w", err)
			}
		}
		return nil
	})
	return total, err
}

// MediaKeysByUser lists the keys of every record a local user created.
func (m *Media) MediaKeysByUser(ctx context.Context, origin, userID string) ([]MediaKey, error) {
	return m.keys(ctx, `SELECT origin, media_id FROM media WHERE origin = $1 AND user_id = $2`, origin, userID)
}

// MediaExpiredPending lists created URIs whose upload window closed
// before now.
func (m *Media) MediaExpiredPending(ctx context.Context, now int64, limit int) ([]MediaKey, error) {
	return m.keys(ctx, `SELECT origin, media_id FROM media WHERE sha256 IS NULL AND unused_expires_ts < $1 LIMIT $2`, now, limit)
}

// MediaUnused lists media not read since before: cached remote media
// (remote set, origin other than local) or local uploads.
func (m *Media) MediaUnused(ctx context.Context, local string, remote bool, before int64, limit int) ([]MediaKey, error) {
	if remote {
		return m.keys(ctx, `SELECT origin, media_id FROM media WHERE origin <> $1 AND COALESCE(last_access_ts, created_ts) < $2 LIMIT $3`,
			local, before, limit)
	}
	return m.keys(ctx, `SELECT origin, media_id FROM media WHERE origin = $1 AND sha256 IS NOT NULL
		AND COALESCE(last_access_ts, uploaded_ts, created_ts) < $2 LIMIT $3`, local, before, limit)
}

func (m *Media) keys(ctx context.Context, q string, args ...any) ([]MediaKey, error) {
	rows, err := m.db.Read().Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list media: %w", err)
	}
	defer rows.Close()
	var out []MediaKey
	for rows.Next() {
		var k MediaKey
		if err := rows.Scan(&k.Origin, &k.MediaID); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// MediaContentGarbage lists content no media refers to any more (or whose
// deletion was interrupted).
func (m *Media) MediaContentGarbage(ctx context.Context, limit int) ([]string, error) {
	rows, err := m.db.Read().Query(ctx, `SELECT sha256 FROM media_content WHERE refs <= 0 OR doomed LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list media garbage: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// MediaDoomed is content condemned by MediaContentDoom: the blobs to delete.
type MediaDoomed struct {
	SHA256        string
	BlobKey       string
	ThumbnailKeys []string
}

// MediaContentDoom condemns content that nothing refers to: it is marked
// doomed and its thumbnails are forgotten. The caller deletes the blobs
// and then calls MediaContentForget. ok is false when the content is in
// use (or gone).
func (m *Media) MediaContentDoom(ctx context.Context, sha string) (d MediaDoomed, ok bool, err error) {
	err = m.db.Write(ctx, func(tx *Tx) error {
		d, ok = MediaDoomed{SHA256: sha}, false
		err := tx.QueryRow(ctx, `UPDATE media_content SET doomed = TRUE WHERE sha256 = $1 AND (refs <= 0 OR doomed) RETURNING blob_key`, sha).Scan(&d.BlobKey)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("doom media content: %w", err)
		}
		rows, err := tx.Query(ctx, `DELETE FROM media_thumbnails WHERE sha256 = $1 RETURNING blob_key`, sha)
		if err != nil {
			return fmt.Errorf("delete thumbnails: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				return err
			}
			d.ThumbnailKeys = append(d.ThumbnailKeys, k)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		ok = true
		return nil
	})
	return d, ok, err
}

// MediaContentForget removes doomed content once its blob is deleted,
// unless an upload has revived it (with another blob) meanwhile.
func (m *Media) MediaContentForget(ctx context.Context, d MediaDoomed) error {
	_, err := m.db.Exec(ctx, `DELETE FROM media_content WHERE sha256 = $1 AND doomed AND blob_key = $2`, d.SHA256, d.BlobKey)
	if err != nil {
		return fmt.Errorf("forget media content: %w", err)
	}
	return nil
}

// MediaThumbnailOrphans lists thumbnails whose content is gone or being
// deleted (a thumbnail recorded while its content was being condemned).
func (m *Media) MediaThumbnailOrphans(ctx context.Context, limit int) ([]MediaThumbnail, error) {
	rows, err := m.db.Read().Query(ctx, `SELECT t.sha256, t.width, t.height, t.method, t.animated, t.blob_key FROM media_thumbnails t
		WHERE NOT EXISTS (SELECT 1 FROM media_content c WHERE c.sha256 = t.sha256 AND NOT c.doomed) LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list orphan thumbnails: %w", err)
	}
	defer rows.Close()
	var out []MediaThumbnail
	for rows.Next() {
		var t MediaThumbnail
		if err := rows.Scan(&t.SHA256, &t.Width, &t.Height, &t.Method, &t.Animated, &t.BlobKey); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// MediaThumbnailDelete forgets one thumbnail.
func (m *Media) MediaThumbnailDelete(ctx context.Context, t MediaThumbnail) error {
	_, err := m.db.Exec(ctx, `DELETE FROM media_thumbnails WHERE sha256 = $1 AND width = $2 AND height = $3 AND method = $4 AND animated = $5`,
		t.SHA256, t.Width, t.Height, t.Method, t.Animated)
	if err != nil {
		return fmt.Errorf("delete thumbnail: %w", err)
	}
	return nil
}

// MediaBlobWriteBegin records that a blob is about to be written, so that
// a crash mid-write leaves a trace for retention to clean up.
func (m *Media) MediaBlobWriteBegin(ctx context.Context, key string, ts int64) error {
	if _, err := m.db.Exec(ctx, `INSERT INTO media_blob_writes (blob_key, started_ts) VALUES ($1, $2)`, key, ts); err != nil {
		return fmt.Errorf("begin blob write: %w", err)
	}
	return nil
}

// MediaBlobWriteEnd forgets a blob write (one that failed and was
// cleaned up, or whose blob is now owned by a record).
func (m *Media) MediaBlobWriteEnd(ctx context.Context, key string) error {
	if _, err := m.db.Exec(ctx, `DELETE FROM media_blob_writes WHERE blob_key = $1`, key); err != nil {
		return fmt.Errorf("end blob write: %w", err)
	}
	return nil
}

// MediaBlobWritesStale lists blob writes begun before ts and never ended.
func (m *Media) MediaBlobWritesStale(ctx context.Context, before int64, limit int) ([]string, error) {
	rows, err := m.db.Read().Query(ctx, `SELECT blob_key FROM media_blob_writes WHERE started_ts < $1 LIMIT $2`, before, limit)
	if err != nil {
		return nil, fmt.Errorf("list stale blob writes: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// MediaUsage returns the bytes a user has uploaded (what the quota counts).
func (m *Media) MediaUsage(ctx context.Context, userID string) (int64, error) {
	var n int64
	err := m.db.Read().QueryRow(ctx, `SELECT bytes FROM media_usage WHERE user_id = $1`, userID).Scan(&n)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("media usage: %w", err)
	}
	return n, nil
}

// MediaPreviewGet returns a cached URL preview (JSON) still fresh at now;
// ErrNotFound if there is none.
func (m *Media) MediaPreviewGet(ctx context.Context, url string, now int64) (string, error) {
	var body string
	err := m.db.Read().QueryRow(ctx, `SELECT body FROM media_url_previews WHERE url = $1 AND expires_ts > $2`, url, now).Scan(&body)
	if err != nil {
		return "", fmt.Errorf("get URL preview: %w", err)
	}
	return body, nil
}

// MediaPreviewPut caches a URL preview until expires.
func (m *Media) MediaPreviewPut(ctx context.Context, url, body string, fetched, expires int64) error {
	_, err := m.db.Exec(ctx, `INSERT INTO media_url_previews (url, body, fetched_ts, expires_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (url) DO UPDATE SET body = excluded.body, fetched_ts = excluded.fetched_ts, expires_ts = excluded.expires_ts`,
		url, body, fetched, expires)
	if err != nil {
		return fmt.Errorf("cache URL preview: %w", err)
	}
	return nil
}

// MediaPreviewsExpire drops URL previews that expired before now.
func (m *Media) MediaPreviewsExpire(ctx context.Context, now int64) (int64, error) {
	n, err := m.db.Exec(ctx, `DELETE FROM media_url_previews WHERE expires_ts <= $1`, now)
	if err != nil {
		return 0, fmt.Errorf("expire URL previews: %w", err)
	}
	return n, nil
}

// MediaURIsInRoom lists the distinct mxc:// URIs the events of a room
// refer to anywhere in their content (images, files, stickers, avatars,
// thumbnails), for quarantining a room's media. Encrypted events keep
// theirs hidden.
func (m *Media) MediaURIsInRoom(ctx context.Context, roomID string) ([]string, error) {
	rows, err := m.db.Read().Query(ctx, `SELECT e.json FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE r.room_id = $1 AND e.type <> 'm.room.encrypted'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("list room media: %w", err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	var out []string
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		var ev struct {
			Content any `json:"content"`
		}
		if json.Unmarshal(raw, &ev) != nil {
			continue
		}
		collectMXC(ev.Content, func(u string) {
			if !seen[u] {
				seen[u] = true
				out = append(out, u)
			}
		})
	}
	return out, rows.Err()
}

// collectMXC calls fn for every string in v that is an mxc:// URI.
func collectMXC(v any, fn func(string)) {
	switch x := v.(type) {
	case string:
		if strings.HasPrefix(x, "mxc://") {
			fn(x)
		}
	case map[string]any:
		for _, e := range x {
			collectMXC(e, fn)
		}
	case []any:
		for _, e := range x {
			collectMXC(e, fn)
		}
	}
}
