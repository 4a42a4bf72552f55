package storage_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

func TestMedia(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		m := db.Media()
		store := func(t *testing.T, id, user, sha, key string, size int64, quota int64) (storage.MediaStoreResult, error) {
			t.Helper()
			return m.MediaStore(ctx, storage.MediaStoreParams{
				Record: storage.MediaRecord{Origin: "hs", MediaID: id, UserID: user, ContentType: "text/plain",
					Size: size, SHA256: sha, CreatedTS: 10, UploadedTS: 20},
				BlobKey: key, Charge: user != "", Quota: quota,
			})
		}

		t.Run("store, deduplicate, delete and collect", func(t *testing.T) {
			r1, err := store(t, "a1", "@a:hs", "sha-a", "key-a1", 100, 0)
			if err != nil || !r1.BlobUsed || r1.Record.Size != 100 || r1.Record.UploadedTS != 20 || r1.Record.QuotaBytes != 100 {
				t.Fatalf("first store: %+v, %v", r1, err)
			}
			r2, err := store(t, "a2", "@b:hs", "sha-a", "key-a2", 100, 0)
			if err != nil || r2.BlobUsed {
				t.Fatalf("duplicate store should reuse the blob: %+v, %v", r2, err)
			}
			if _, err := store(t, "a2", "@b:hs", "sha-a", "key-a3", 100, 0); !errors.Is(err, storage.ErrConflict) {
				t.Fatalf("duplicate ID: %v", err)
			}
			c, err := m.MediaContentGet(ctx, "sha-a")
			if err != nil || c.BlobKey != "key-a1" || c.Refs != 2 {
				t.Fatalf("content %+v, %v", c, err)
			}
			deleted, err := m.MediaDelete(ctx, []storage.MediaKey{{Origin: "hs", MediaID: "a1"}, {Origin: "hs", MediaID: "missing"}})
			if err != nil || len(deleted) != 1 {
				t.Fatalf("delete: %v %v", deleted, err)
			}
			if u, _ := m.MediaUsage(ctx, "@a:hs"); u != 0 {
				t.Fatalf("quota not refunded: %d", u)
			}
			if _, ok, err := m.MediaContentDoom(ctx, "sha-a"); ok || err != nil {
				t.Fatalf("content still in use was doomed: %v %v", ok, err)
			}
			if _, err := m.MediaDelete(ctx, []storage.MediaKey{{Origin: "hs", MediaID: "a2"}}); err != nil {
				t.Fatal(err)
			}
			garbage, err := m.MediaContentGarbage(ctx, 10)
			if err != nil || len(garbage) != 1 || garbage[0] != "sha-a" {
				t.Fatalf("garbage %v %v", garbage, err)
			}
			if ok, err := m.MediaThumbnailPut(ctx, storage.MediaThumbnail{SHA256: "sha-a", Width: 32, Height: 32, Method: "crop",
				ContentType: "image/png", Size: 5, BlobKey: "thumb-a"}); !ok || err != nil {
				t.Fatalf("thumbnail put: %v %v", ok, err)
			}
			d, ok, err := m.MediaContentDoom(ctx, "sha-a")
			if err != nil || !ok || d.BlobKey != "key-a1" || len(d.ThumbnailKeys) != 1 || d.ThumbnailKeys[0] != "thumb-a" {
				t.Fatalf("doom: %+v %v %v", d, ok, err)
			}
			// While its blob is being deleted, the content takes no thumbnails.
			if ok, _ := m.MediaThumbnailPut(ctx, storage.MediaThumbnail{SHA256: "sha-a", Width: 96, Height: 96, Method: "crop",
				ContentType: "image/png", Size: 5, BlobKey: "thumb-b"}); ok {
				t.Fatal("thumbnail recorded on doomed content")
			}
			// An upload of the same bytes meanwhile revives it with its own blob.
			r3, err := store(t, "a3", "@a:hs", "sha-a", "key-a3", 100, 0)
			if err != nil || !r3.BlobUsed {
				t.Fatalf("upload during deletion: %+v %v", r3, err)
			}
			if err := m.MediaContentForget(ctx, d); err != nil {
				t.Fatal(err)
			}
			c, err = m.MediaContentGet(ctx, "sha-a")
			if err != nil || c.BlobKey != "key-a3" || c.Doomed || c.Refs != 1 {
				t.Fatalf("revived content %+v %v", c, err)
			}
			// Forgetting for real.
			if _, err := m.MediaDelete(ctx, []storage.MediaKey{{Origin: "hs", MediaID: "a3"}}); err != nil {
				t.Fatal(err)
			}
			d, ok, _ = m.MediaContentDoom(ctx, "sha-a")
			if !ok || m.MediaContentForget(ctx, d) != nil {
				t.Fatal("could not forget content")
			}
			if _, err := m.MediaContentGet(ctx, "sha-a"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("forgotten content: %v", err)
			}
		})

		t.Run("quota", func(t *testing.T) {
			if _, err := store(t, "q1", "@q:hs", "sha-q1", "kq1", 600, 1000); err != nil {
				t.Fatal(err)
			}
			if _, err := store(t, "q2", "@q:hs", "sha-q2", "kq2", 500, 1000); !errors.Is(err, storage.ErrMediaQuota) {
				t.Fatalf("over quota: %v", err)
			}
			if _, err := m.MediaGet(ctx, "hs", "q2"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("refused upload recorded: %v", err)
			}
			if _, err := store(t, "q3", "@q:hs", "sha-q3", "kq3", 400, 1000); err != nil {
				t.Fatal(err)
			}
			if u, _ := m.MediaUsage(ctx, "@q:hs"); u != 1000 {
				t.Fatalf("usage %d", u)
			}
		})

		t.Run("pending uploads", func(t *testing.T) {
			for i := range 2 {
				err := m.MediaCreatePending(ctx, storage.MediaRecord{Origin: "hs", MediaID: fmt.Sprint("p", i), UserID: "@p:hs",
					CreatedTS: 100, UnusedExpiresTS: 200}, 2)
				if err != nil {
					t.Fatal(err)
				}
			}
			err := m.MediaCreatePending(ctx, storage.MediaRecord{Origin: "hs", MediaID: "p2", UserID: "@p:hs", CreatedTS: 100, UnusedExpiresTS: 200}, 2)
			if !errors.Is(err, storage.ErrMediaPendingLimit) {
				t.Fatalf("third pending: %v", err)
			}
			rec, err := m.MediaGet(ctx, "hs", "p0")
			if err != nil || !rec.Pending() || rec.UnusedExpiresTS != 200 {
				t.Fatalf("pending record %+v %v", rec, err)
			}
			fill := func(id, user string, at int64) error {
				_, err := m.MediaStore(ctx, storage.MediaStoreParams{
					Record: storage.MediaRecord{Origin: "hs", MediaID: id, UserID: user, ContentType: "image/png", Size: 5,
						SHA256: "sha-p", UploadedTS: at},
					BlobKey: "kp-" + id, Pending: true, Charge: true,
				})
				return err
			}
			if err := fill("p0", "@other:hs", 150); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("someone else's pending: %v", err)
			}
			if err := fill("p0", "@p:hs", 250); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("expired pending: %v", err)
			}
			if err := fill("p0", "@p:hs", 150); err != nil {
				t.Fatal(err)
			}
			if err := fill("p0", "@p:hs", 160); !errors.Is(err, storage.ErrConflict) {
				t.Fatalf("second fill: %v", err)
			}
			rec, _ = m.MediaGet(ctx, "hs", "p0")
			if rec.Pending() || rec.UnusedExpiresTS != 0 || rec.ContentType != "image/png" || rec.CreatedTS != 100 {
				t.Fatalf("filled record %+v", rec)
			}
			// The limit counts only unexpired pending uploads.
			if err := m.MediaCreatePending(ctx, storage.MediaRecord{Origin: "hs", MediaID: "p3", UserID: "@p:hs",
				CreatedTS: 300, UnusedExpiresTS: 400}, 2); err != nil {
				t.Fatal(err)
			}
			expired, err := m.MediaExpiredPending(ctx, 250, 10)
			if err != nil || len(expired) != 1 || expired[0].MediaID != "p1" {
				t.Fatalf("expired %v %v", expired, err)
			}
		})

		t.Run("quarantine follows the bytes", func(t *testing.T) {
			for _, id := range []string{"x1", "x2"} {
				if _, err := store(t, id, "@x:hs", "sha-x", "k"+id, 10, 0); err != nil {
					t.Fatal(err)
				}
			}
			n, err := m.MediaQuarantine(ctx, []storage.MediaKey{{Origin: "hs", MediaID: "x1"}, {Origin: "hs", MediaID: "nope"}}, "@admin:hs")
			if err != nil || n != 2 {
				t.Fatalf("quarantine: %d %v", n, err)
			}
			r, err := store(t, "x3", "@y:hs", "sha-x", "kx3", 10, 0)
			if err != nil || r.Record.QuarantinedBy != "@admin:hs" {
				t.Fatalf("new copy of quarantined bytes: %+v %v", r.Record, err)
			}
			n, err = m.MediaUnquarantine(ctx, []storage.MediaKey{{Origin: "hs", MediaID: "x2"}})
			if err != nil || n != 3 {
				t.Fatalf("unquarantine: %d %v", n, err)
			}
			if rec, _ := m.MediaGet(ctx, "hs", "x3"); rec.QuarantinedBy != "" {
				t.Fatal("still quarantined")
			}
		})

		t.Run("list a user's media", func(t *testing.T) {
			for i := range 4 {
				_, err := m.MediaStore(ctx, storage.MediaStoreParams{
					Record: storage.MediaRecord{Origin: "hs", MediaID: fmt.Sprint("l", i), UserID: "@l:hs", ContentType: "text/plain",
						Size: int64(10 - i), SHA256: fmt.Sprint("sha-l", i), CreatedTS: int64(i), UploadedTS: int64(i)},
					BlobKey: fmt.Sprint("kl", i), Charge: true,
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			list, total, err := m.MediaListByUser(ctx, "hs", "@l:hs", storage.MediaListOptions{Limit: 2, Backwards: true})
			if err != nil || total != 4 || len(list) != 2 || list[0].MediaID != "l3" {
				t.Fatalf("newest first: %v %d %v", list, total, err)
			}
			list, _, _ = m.MediaListByUser(ctx, "hs", "@l:hs", storage.MediaListOptions{Limit: 10, From: 1, OrderBy: "media_length"})
			if len(list) != 3 || list[0].MediaID != "l2" {
				t.Fatalf("by size: %v", list)
			}
			if _, _, err := m.MediaListByUser(ctx, "hs", "@l:hs", storage.MediaListOptions{OrderBy: "x; DROP TABLE media"}); err == nil {
				t.Fatal("ordered by an unknown column")
			}
			keys, _ := m.MediaKeysByUser(ctx, "hs", "@l:hs")
			if len(keys) != 4 {
				t.Fatalf("keys %v", keys)
			}
		})

		t.Run("remote media and retention queries", func(t *testing.T) {
			_, err := m.MediaStore(ctx, storage.MediaStoreParams{
				Record: storage.MediaRecord{Origin: "remote.example", MediaID: "r1", ContentType: "image/png", Size: 3,
					SHA256: "sha-r", CreatedTS: 1000, UploadedTS: 1000},
				BlobKey: "kr",
			})
			if err != nil {
				t.Fatal(err)
			}
			old, err := m.MediaUnused(ctx, "hs", true, 2000, 10)
			if err != nil || len(old) != 1 || old[0].Origin != "remote.example" {
				t.Fatalf("unused remote: %v %v", old, err)
			}
			if err := m.MediaTouch(ctx, old, 3000); err != nil {
				t.Fatal(err)
			}
			if old, _ = m.MediaUnused(ctx, "hs", true, 2000, 10); len(old) != 0 {
				t.Fatalf("touched media still unused: %v", old)
			}
			local, err := m.MediaUnused(ctx, "hs", false, 15, 100)
			if err != nil || len(local) == 0 {
				t.Fatalf("unused local: %v %v", local, err)
			}
		})

		t.Run("concurrent uploads", func(t *testing.T) {
			var wg sync.WaitGroup
			var used, ok, quota atomic.Int64
			for i := range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := m.MediaStore(ctx, storage.MediaStoreParams{
						Record: storage.MediaRecord{Origin: "hs", MediaID: fmt.Sprint("c", i), UserID: "@c:hs", Size: 100,
							SHA256: "sha-c", CreatedTS: 1, UploadedTS: 1},
						BlobKey: fmt.Sprint("kc", i), Charge: true, Quota: 500,
					})
					switch {
					case errors.Is(err, storage.ErrMediaQuota):
						quota.Add(1)
					case err != nil:
						t.Error(err)
					default:
						ok.Add(1)
						if r.BlobUsed {
							used.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			c, err := m.MediaContentGet(ctx, "sha-c")
			if ok.Load() != 5 || quota.Load() != 5 || used.Load() != 1 || err != nil || c.Refs != 5 {
				t.Fatalf("ok %d, over quota %d, blobs used %d, refs %d (%v)", ok.Load(), quota.Load(), used.Load(), c.Refs, err)
			}
			if u, _ := m.MediaUsage(ctx, "@c:hs"); u != 500 {
				t.Fatalf("usage %d", u)
			}
		})

		t.Run("blob writes", func(t *testing.T) {
			if err := m.MediaBlobWriteBegin(ctx, "w1", 10); err != nil {
				t.Fatal(err)
			}
			if err := m.MediaBlobWriteBegin(ctx, "w2", 50); err != nil {
				t.Fatal(err)
			}
			stale, err := m.MediaBlobWritesStale(ctx, 20, 10)
			if err != nil || len(stale) != 1 || stale[0] != "w1" {
				t.Fatalf("stale %v %v", stale, err)
			}
			if err := m.MediaBlobWriteEnd(ctx, "w1"); err != nil {
				t.Fatal(err)
			}
			if stale, _ = m.MediaBlobWritesStale(ctx, 100, 10); len(stale) != 1 || stale[0] != "w2" {
				t.Fatalf("stale after end %v", stale)
			}
		})

		t.Run("content probe", func(t *testing.T) {
			img := storage.MediaImage{Format: "jpeg", Width: 30, Height: 40, Orientation: 6, Frames: 1}
			if err := m.MediaContentSetImage(ctx, "sha-r", img); err != nil {
				t.Fatal(err)
			}
			c, err := m.MediaContentGet(ctx, "sha-r")
			if err != nil || !c.Probed || c.Image != img {
				t.Fatalf("probe %+v %v", c, err)
			}
		})

		t.Run("orphan thumbnails", func(t *testing.T) {
			if _, err := db.Exec(ctx, `INSERT INTO media_thumbnails (sha256, width, height, method, animated, content_type, size, blob_key, created_ts)
				VALUES ('gone', 1, 1, 'crop', FALSE, 'image/png', 1, 'orphan-key', 1)`); err != nil {
				t.Fatal(err)
			}
			orphans, err := m.MediaThumbnailOrphans(ctx, 10)
			if err != nil || len(orphans) != 1 || orphans[0].BlobKey != "orphan-key" {
				t.Fatalf("orphans %v %v", orphans, err)
			}
			if err := m.MediaThumbnailDelete(ctx, orphans[0]); err != nil {
				t.Fatal(err)
			}
			if orphans, _ = m.MediaThumbnailOrphans(ctx, 10); len(orphans) != 0 {
				t.Fatalf("orphan left: %v", orphans)
			}
		})

		t.Run("media in a room", func(t *testing.T) {
			var room int64
			if err := db.QueryRowWrite(ctx, `INSERT INTO rooms (room_id, version, created_ts) VALUES ('!media:hs', '11', 1) RETURNING room_nid`).Scan(&room); err != nil {
				t.Fatal(err)
			}
			for i, ev := range []struct{ typ, json string }{
				{"m.room.message", `{"content":{"msgtype":"m.image","url":"mxc://hs/img","info":{"thumbnail_url":"mxc://remote.example/th"}}}`},
				{"m.sticker", `{"content":{"url":"mxc://hs/sticker","body":"mxc://hs/img"}}`},
				{"m.room.member", `{"content":{"membership":"join","avatar_url":"mxc://hs/avatar"}}`},
				{"m.room.encrypted", `{"content":{"ciphertext":"mxc://hs/hidden"}}`},
				{"m.room.message", `{"content":{"body":"see https://example.org","list":["mxc://hs/in-list", 3]}}`},
				{"m.room.message", `not json`},
			} {
				if _, err := db.Exec(ctx, `INSERT INTO events (event_id, room_nid, type, sender, depth, origin_ts, json) VALUES ($1, $2, $3, '@a:hs', $4, 1, $5)`,
					fmt.Sprint("$e", i), room, ev.typ, i, []byte(ev.json)); err != nil {
					t.Fatal(err)
				}
			}
			uris, err := m.MediaURIsInRoom(ctx, "!media:hs")
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{"mxc://hs/img": true, "mxc://remote.example/th": true, "mxc://hs/sticker": true,
				"mxc://hs/avatar": true, "mxc://hs/in-list": true}
			if len(uris) != len(want) {
				t.Fatalf("room media %v", uris)
			}
			for _, u := range uris {
				if !want[u] {
					t.Fatalf("unexpected %s in %v", u, uris)
				}
			}
			if uris, err := m.MediaURIsInRoom(ctx, "!unknown:hs"); err != nil || len(uris) != 0 {
				t.Fatalf("unknown room: %v %v", uris, err)
			}
		})

		t.Run("URL previews", func(t *testing.T) {
			if _, err := m.MediaPreviewGet(ctx, "https://a", 0); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("missing preview: %v", err)
			}
			if err := m.MediaPreviewPut(ctx, "https://a", `{"og:title":"A"}`, 1, 100); err != nil {
				t.Fatal(err)
			}
			if err := m.MediaPreviewPut(ctx, "https://a", `{"og:title":"B"}`, 2, 200); err != nil {
				t.Fatal(err)
			}
			if b, err := m.MediaPreviewGet(ctx, "https://a", 150); err != nil || b != `{"og:title":"B"}` {
				t.Fatalf("preview %q %v", b, err)
			}
			if _, err := m.MediaPreviewGet(ctx, "https://a", 250); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("expired preview served: %v", err)
			}
			if n, err := m.MediaPreviewsExpire(ctx, 250); err != nil || n != 1 {
				t.Fatalf("expire %d %v", n, err)
			}
		})
	})
}
