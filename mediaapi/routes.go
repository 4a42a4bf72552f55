package mediaapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// Routes registers the media endpoints on r (the server's root router).
// The federation endpoints exist only with a FederationAuth, the room
// quarantine only with a RoomMedia, URL previews only when enabled.
func (e *Engine) Routes(r *mux.Router) {
	legacy := httpapi.NewGroup(r, "/_matrix/media/v3", "/_matrix/media/r0")
	legacy.Handle(http.MethodPost, "/upload", e.authed(e.handleUpload, false))
	legacy.Handle(http.MethodPut, "/upload/{serverName}/{mediaId}", e.authed(e.handleUploadTo, false))
	legacy.Handle(http.MethodGet, "/config", e.authed(e.handleConfig, true))
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		legacy.Handle(m, "/download/{serverName}/{mediaId}", httpapi.Wrap(e.handleLegacyDownload))
		legacy.Handle(m, "/download/{serverName}/{mediaId}/{fileName}", httpapi.Wrap(e.handleLegacyDownload))
		legacy.Handle(m, "/thumbnail/{serverName}/{mediaId}", httpapi.Wrap(e.handleLegacyThumbnail))
	}
	httpapi.NewGroup(r, "/_matrix/media/v1").Handle(http.MethodPost, "/create", e.authed(e.handleCreate, false))

	client := httpapi.NewGroup(r, "/_matrix/client/v1/media")
	client.Handle(http.MethodGet, "/config", e.authed(e.handleConfig, true))
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		client.Handle(m, "/download/{serverName}/{mediaId}", e.authed(e.handleDownload, true))
		client.Handle(m, "/download/{serverName}/{mediaId}/{fileName}", e.authed(e.handleDownload, true))
		client.Handle(m, "/thumbnail/{serverName}/{mediaId}", e.authed(e.handleThumbnail, true))
	}
	if e.cfg.Preview.Enabled {
		legacy.Handle(http.MethodGet, "/preview_url", e.authed(e.handlePreview, false))
		client.Handle(http.MethodGet, "/preview_url", e.authed(e.handlePreview, false))
	}
	if e.deps.FederationAuth != nil {
		fed := httpapi.NewGroup(r, "/_matrix/federation/v1/media")
		fed.Handle(http.MethodGet, "/download/{mediaId}", e.federation(e.handleFederationDownload))
		fed.Handle(http.MethodGet, "/thumbnail/{mediaId}", e.federation(e.handleFederationThumbnail))
	}
	e.adminRoutes(httpapi.NewGroup(r, "/_synapse/admin/v1"))
}

// authedHandler is a handler for an authenticated user.
type authedHandler func(w http.ResponseWriter, r *http.Request, who Requester) error

// authed requires an access token (guests only where allowed).
func (e *Engine) authed(h authedHandler, guests bool) http.Handler {
	return httpapi.Wrap(func(w http.ResponseWriter, r *http.Request) error {
		who, err := e.authenticate(r)
		if err != nil {
			return err
		}
		if who.IsGuest && !guests {
			return mxerr.GuestAccessForbidden("Guests cannot use this endpoint")
		}
		return h(w, r, who)
	})
}

func (e *Engine) authenticate(r *http.Request) (Requester, error) {
	token := r.URL.Query().Get("access_token")
	if h := r.Header.Get("Authorization"); h != "" {
		t, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return Requester{}, mxerr.MissingToken("Authorization header must use the Bearer scheme")
		}
		token = strings.TrimSpace(t)
	}
	if token == "" {
		return Requester{}, mxerr.MissingToken("Missing access token")
	}
	who, err := e.deps.Auth.Authenticate(r.Context(), token)
	if err != nil {
		return Requester{}, err
	}
	httpapi.SetLogUser(r.Context(), who.UserID)
	return who, nil
}

func (e *Engine) allow(ctx context.Context, action, userID string) error {
	if e.deps.Limiter == nil {
		return nil
	}
	return e.deps.Limiter.Allow(ctx, action, userID)
}

func uploadParams(r *http.Request, who Requester) UploadParams {
	body := r.Body
	if body == nil {
		body = http.NoBody
	}
	return UploadParams{
		UserID: who.UserID, ContentType: r.Header.Get("Content-Type"), Filename: r.URL.Query().Get("filename"),
		Length: r.ContentLength, Body: body,
	}
}

func (e *Engine) handleUpload(w http.ResponseWriter, r *http.Request, who Requester) error {
	if err := e.allow(r.Context(), "upload", who.UserID); err != nil {
		return err
	}
	uri, err := e.Upload(r.Context(), uploadParams(r, who))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"content_uri": uri})
}

func (e *Engine) handleCreate(w http.ResponseWriter, r *http.Request, who Requester) error {
	if err := e.allow(r.Context(), "create", who.UserID); err != nil {
		return err
	}
	uri, expires, err := e.Create(r.Context(), who.UserID)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"content_uri": uri, "unused_expires_at": expires})
}

func (e *Engine) handleUploadTo(w http.ResponseWriter, r *http.Request, who Requester) error {
	if err := e.allow(r.Context(), "upload", who.UserID); err != nil {
		return err
	}
	if err := e.UploadTo(r.Context(), httpapi.Var(r, "serverName"), httpapi.Var(r, "mediaId"), uploadParams(r, who)); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (e *Engine) handleConfig(w http.ResponseWriter, _ *http.Request, _ Requester) error {
	return httpapi.JSON(w, http.StatusOK, map[string]any{"m.upload.size": e.cfg.MaxUploadBytes})
}

// waitParam reads timeout_ms (default 20 s, at most the configured cap).
func (e *Engine) waitParam(r *http.Request) (time.Duration, error) {
	wait := 20 * time.Second
	if v := r.URL.Query().Get("timeout_ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, mxerr.InvalidParam("timeout_ms must be an integer")
		}
		wait = time.Duration(max(ms, 0)) * time.Millisecond
		if ms > e.cfg.MaxWait.Milliseconds() {
			wait = e.cfg.MaxWait
		}
	}
	return min(wait, e.cfg.MaxWait), nil
}

// boolParam reads an optional true/false query parameter.
func boolParam(r *http.Request, name string, def bool) (bool, error) {
	v := r.URL.Query().Get(name)
	switch v {
	case "":
		return def, nil
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, mxerr.InvalidParam("%s must be true or false", name)
}

func (e *Engine) handleDownload(w http.ResponseWriter, r *http.Request, who Requester) error {
	m, err := e.lookupFor(r, who, false)
	if err != nil {
		return err
	}
	return e.serveMedia(w, r, m, httpapi.Var(r, "fileName"))
}

func (e *Engine) handleLegacyDownload(w http.ResponseWriter, r *http.Request) error {
	m, err := e.lookupFor(r, Requester{}, true)
	if err != nil {
		return err
	}
	return e.serveMedia(w, r, m, httpapi.Var(r, "fileName"))
}

// lookupFor reads a download's parameters and finds the media.
func (e *Engine) lookupFor(r *http.Request, who Requester, legacy bool) (*Media, error) {
	wait, err := e.waitParam(r)
	if err != nil {
		return nil, err
	}
	o := LookupOptions{Wait: wait, AllowRemote: true, Legacy: legacy}
	if legacy {
		if o.AllowRemote, err = boolParam(r, "allow_remote", true); err != nil {
			return nil, err
		}
	}
	if who.IsAdmin {
		if o.BypassQuarantine, err = boolParam(r, "admin_unsafely_bypass_quarantine", false); err != nil {
			return nil, err
		}
	}
	return e.Lookup(r.Context(), httpapi.Var(r, "serverName"), httpapi.Var(r, "mediaId"), o)
}

// thumbnailParams reads width, height, method and animated.
func thumbnailParams(r *http.Request) (ThumbnailRequest, error) {
	q := r.URL.Query()
	var t ThumbnailRequest
	for _, p := range []struct {
		name string
		dst  *int
	}{{"width", &t.Width}, {"height", &t.Height}} {
		v := q.Get(p.name)
		if v == "" {
			return t, mxerr.MissingParam("Missing %s", p.name)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return t, mxerr.InvalidParam("%s must be an integer from 1 to 65535", p.name)
		}
		*p.dst = n
	}
	switch t.Method = q.Get("method"); t.Method {
	case "":
		t.Method = "scale"
	case "scale", "crop":
	default:
		return t, mxerr.InvalidParam("method must be crop or scale")
	}
	var err error
	t.Animated, err = boolParam(r, "animated", false)
	return t, err
}

func (e *Engine) handleThumbnail(w http.ResponseWriter, r *http.Request, who Requester) error {
	return e.thumbnail(w, r, who, false)
}

func (e *Engine) handleLegacyThumbnail(w http.ResponseWriter, r *http.Request) error {
	return e.thumbnail(w, r, Requester{}, true)
}

func (e *Engine) thumbnail(w http.ResponseWriter, r *http.Request, who Requester, legacy bool) error {
	req, err := thumbnailParams(r)
	if err != nil {
		return err
	}
	m, err := e.lookupFor(r, who, legacy)
	if err != nil {
		return err
	}
	t, err := e.Thumbnail(r.Context(), m, req)
	if err != nil {
		return err
	}
	return e.serveThumbnail(w, r, t)
}

func (e *Engine) handlePreview(w http.ResponseWriter, r *http.Request, who Requester) error {
	if v := r.URL.Query().Get("ts"); v != "" {
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return mxerr.InvalidParam("ts must be an integer")
		}
	}
	if err := e.allow(r.Context(), "preview", who.UserID); err != nil {
		return err
	}
	og, err := e.Preview(r.Context(), who.UserID, r.URL.Query().Get("url"))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, og)
}
