package mediaapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// adminRoutes are Synapse's media admin API, under /_synapse/admin/v1.
func (e *Engine) adminRoutes(g *httpapi.Group) {
	g.Handle(http.MethodGet, "/media/{serverName}/{mediaId}", e.admin(e.adminMediaInfo))
	g.Handle(http.MethodDelete, "/media/{serverName}/{mediaId}", e.admin(e.adminDeleteMedia))
	g.Handle(http.MethodPost, "/media/quarantine/{serverName}/{mediaId}", e.admin(e.adminQuarantine))
	g.Handle(http.MethodPost, "/media/unquarantine/{serverName}/{mediaId}", e.admin(e.adminUnquarantine))
	g.Handle(http.MethodPost, "/user/{userId}/media/quarantine", e.admin(e.adminQuarantineUser))
	g.Handle(http.MethodGet, "/users/{userId}/media", e.admin(e.adminListUserMedia))
	g.Handle(http.MethodDelete, "/users/{userId}/media", e.admin(e.adminDeleteUserMedia))
	g.Handle(http.MethodPost, "/purge_media_cache", e.admin(e.adminPurgeRemote))
	if e.deps.Rooms != nil {
		g.Handle(http.MethodPost, "/room/{roomId}/media/quarantine", e.admin(e.adminQuarantineRoom))
		g.Handle(http.MethodPost, "/quarantine_media/{roomId}", e.admin(e.adminQuarantineRoom))
	}
}

// admin requires a server admin's access token.
func (e *Engine) admin(h authedHandler) http.Handler {
	return e.authed(func(w http.ResponseWriter, r *http.Request, who Requester) error {
		if !who.IsAdmin {
			return mxerr.Forbidden("You are not a server admin")
		}
		return h(w, r, who)
	}, false)
}

func mediaKey(r *http.Request) storage.MediaKey {
	return storage.MediaKey{Origin: httpapi.Var(r, "serverName"), MediaID: httpapi.Var(r, "mediaId")}
}

// adminMedia is a record as Synapse's admin API shows it.
func adminMedia(m storage.MediaRecord) map[string]any {
	nullable := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	var access any
	if m.LastAccessTS != 0 {
		access = m.LastAccessTS
	}
	return map[string]any{
		"media_id": m.MediaID, "media_origin": m.Origin, "user_id": nullable(m.UserID),
		"media_type": m.ContentType, "media_length": m.Size, "upload_name": nullable(m.UploadName),
		"created_ts": m.CreatedTS, "last_access_ts": access, "quarantined_by": nullable(m.QuarantinedBy),
		"safe_from_quarantine": false, "sha256": nullable(m.SHA256),
	}
}

func (e *Engine) adminMediaInfo(w http.ResponseWriter, r *http.Request, _ Requester) error {
	k := mediaKey(r)
	m, err := e.store.MediaGet(r.Context(), k.Origin, k.MediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return notFound()
	}
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"media_info": adminMedia(m)})
}

func (e *Engine) adminDeleteMedia(w http.ResponseWriter, r *http.Request, _ Requester) error {
	k := mediaKey(r)
	if k.Origin != e.cfg.ServerName {
		return mxerr.Unknown("Can only delete local media")
	}
	deleted, err := e.deleteMedia(r.Context(), []storage.MediaKey{k})
	if err != nil {
		return err
	}
	if len(deleted) == 0 {
		return notFound()
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"deleted_media": []string{k.MediaID}, "total": 1})
}

func (e *Engine) adminQuarantine(w http.ResponseWriter, r *http.Request, who Requester) error {
	if _, err := e.store.MediaQuarantine(r.Context(), []storage.MediaKey{mediaKey(r)}, who.UserID); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (e *Engine) adminUnquarantine(w http.ResponseWriter, r *http.Request, _ Requester) error {
	if _, err := e.store.MediaUnquarantine(r.Context(), []storage.MediaKey{mediaKey(r)}); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (e *Engine) adminQuarantineUser(w http.ResponseWriter, r *http.Request, who Requester) error {
	keys, err := e.store.MediaKeysByUser(r.Context(), e.cfg.ServerName, httpapi.Var(r, "userId"))
	if err != nil {
		return err
	}
	n, err := e.store.MediaQuarantine(r.Context(), keys, who.UserID)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]int64{"num_quarantined": n})
}

// adminQuarantineRoom quarantines every piece of media the room's events
// refer to, local or remote.
func (e *Engine) adminQuarantineRoom(w http.ResponseWriter, r *http.Request, who Requester) error {
	uris, err := e.deps.Rooms.MediaIDsInRoom(r.Context(), httpapi.Var(r, "roomId"))
	if err != nil {
		return err
	}
	var keys []storage.MediaKey
	for _, u := range uris {
		if k, ok := parseMXC(u); ok {
			keys = append(keys, k)
		}
	}
	n, err := e.store.MediaQuarantine(r.Context(), keys, who.UserID)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]int64{"num_quarantined": n})
}

// parseMXC splits mxc://server/id, refusing anything malformed.
func parseMXC(u string) (storage.MediaKey, bool) {
	rest, ok := strings.CutPrefix(u, "mxc://")
	if !ok {
		return storage.MediaKey{}, false
	}
	server, id, ok := strings.Cut(rest, "/")
	if !ok || !validServerName(server) || !validMediaID(id) {
		return storage.MediaKey{}, false
	}
	return storage.MediaKey{Origin: server, MediaID: id}, true
}

// userMediaOptions reads Synapse's from/limit/order_by/dir.
func userMediaOptions(r *http.Request) (storage.MediaListOptions, error) {
	q := r.URL.Query()
	o := storage.MediaListOptions{Limit: 100, OrderBy: q.Get("order_by")}
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"from", &o.From}, {"limit", &o.Limit}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return o, mxerr.InvalidParam("%s must be a non-negative integer", p.name)
			}
			*p.dst = n
		}
	}
	o.Limit = min(o.Limit, 1000)
	if !storage.MediaOrderValid(o.OrderBy) {
		return o, mxerr.InvalidParam("Unknown order_by %q", o.OrderBy)
	}
	switch q.Get("dir") {
	case "", "f":
		// Synapse's default with no ordering asked for: newest first.
		o.Backwards = q.Get("order_by") == "" && q.Get("dir") == ""
	case "b":
		o.Backwards = true
	default:
		return o, mxerr.InvalidParam("dir must be f or b")
	}
	return o, nil
}

// localUser checks that a user ID names an existing local user.
func (e *Engine) localUser(r *http.Request) (string, error) {
	userID := httpapi.Var(r, "userId")
	if !strings.HasSuffix(userID, ":"+e.cfg.ServerName) {
		return "", mxerr.InvalidParam("Can only look up local users")
	}
	if _, err := e.db.Accounts().UserGet(r.Context(), userID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return "", mxerr.NotFound("Unknown user")
		}
		return "", err
	}
	return userID, nil
}

func (e *Engine) adminListUserMedia(w http.ResponseWriter, r *http.Request, _ Requester) error {
	userID, err := e.localUser(r)
	if err != nil {
		return err
	}
	o, err := userMediaOptions(r)
	if err != nil {
		return err
	}
	list, total, err := e.store.MediaListByUser(r.Context(), e.cfg.ServerName, userID, o)
	if err != nil {
		return err
	}
	media := make([]map[string]any, 0, len(list))
	for _, m := range list {
		entry := adminMedia(m)
		delete(entry, "media_origin")
		delete(entry, "user_id")
		delete(entry, "sha256")
		media = append(media, entry)
	}
	body := map[string]any{"media": media, "total": total}
	if next := o.From + int64(len(list)); len(list) > 0 && next < total {
		body["next_token"] = next
	}
	return httpapi.JSON(w, http.StatusOK, body)
}

func (e *Engine) adminDeleteUserMedia(w http.ResponseWriter, r *http.Request, _ Requester) error {
	userID, err := e.localUser(r)
	if err != nil {
		return err
	}
	o, err := userMediaOptions(r)
	if err != nil {
		return err
	}
	list, _, err := e.store.MediaListByUser(r.Context(), e.cfg.ServerName, userID, o)
	if err != nil {
		return err
	}
	keys := make([]storage.MediaKey, len(list))
	for i, m := range list {
		keys[i] = m.Key()
	}
	deleted, err := e.deleteMedia(r.Context(), keys)
	if err != nil {
		return err
	}
	ids := make([]string, len(deleted))
	for i, m := range deleted {
		ids[i] = m.MediaID
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"deleted_media": ids, "total": len(ids)})
}

// adminPurgeRemote deletes cached remote media last read before before_ts.
func (e *Engine) adminPurgeRemote(w http.ResponseWriter, r *http.Request, _ Requester) error {
	before, err := strconv.ParseInt(r.URL.Query().Get("before_ts"), 10, 64)
	if err != nil || before < 0 {
		return mxerr.InvalidParam("before_ts must be a timestamp in milliseconds")
	}
	total := 0
	for range 100 {
		keys, err := e.store.MediaUnused(r.Context(), e.cfg.ServerName, true, before, retentionBatch)
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			break
		}
		deleted, err := e.deleteMedia(r.Context(), keys)
		if err != nil {
			return err
		}
		total += len(deleted)
		if len(deleted) == 0 {
			break
		}
	}
	return httpapi.JSON(w, http.StatusOK, map[string]int{"deleted": total})
}
