package clientapi

import (
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/parley-chat/parley/homeserver/slidingsync"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// slidingSyncRoutes registers simplified sliding sync (MSC4186) under its
// unstable prefix.
func (a *API) slidingSyncRoutes(r *mux.Router) {
	if a.deps.SlidingSync == nil {
		return
	}
	g := httpapi.NewGroup(r, "/_matrix/client/unstable/org.matrix.simplified_msc3575")
	g.Handle(http.MethodPost, "/sync", a.auth(a.slidingSync))
}

// slidingSync answers POST /sync. The body carries every parameter;
// clients of the earlier drafts put pos, timeout and set_presence in the
// query string, which is read when the body lacks them.
func (a *API) slidingSync(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req slidingsync.Request
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	q := r.URL.Query()
	if p := q.Get("pos"); req.Pos == "" && p != "" {
		req.Pos, req.Compat = p, true
	}
	if t := q.Get("timeout"); req.Timeout == nil && t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return mxerr.InvalidParam("timeout must be a non-negative number of milliseconds")
		}
		req.Timeout, req.Compat = &ms, true
	}
	if req.SetPresence == "" {
		req.SetPresence = q.Get("set_presence")
	}
	req.UserID, req.DeviceID = d.UserID, d.DeviceID
	resp, err := a.deps.SlidingSync.Sync(r.Context(), &req)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, resp)
}
