package clientapi

import (
	"net/http"
	"strconv"
	"time"

	syncengine "github.com/parley-chat/parley/homeserver/sync"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// parseSyncRequest reads /sync's query parameters.
func (a *API) parseSyncRequest(r *http.Request, d *deviceT) (syncengine.Request, error) {
	q := r.URL.Query()
	req := syncengine.Request{UserID: d.UserID, DeviceID: d.DeviceID}
	if s := q.Get("since"); s != "" {
		t, err := syncengine.ParseToken(s)
		if err != nil {
			return req, err
		}
		req.Since = &t
	}
	if s := q.Get("timeout"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			return req, mxerr.InvalidParam("timeout must be a non-negative number of milliseconds")
		}
		req.Timeout = time.Duration(min(ms, int64(syncengine.MaxTimeout/time.Millisecond))) * time.Millisecond
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.FullState = true
	default:
		return req, mxerr.InvalidParam("full_state must be true or false")
	}
	switch p := q.Get("set_presence"); p {
	case "", "online", "offline", "unavailable":
		req.SetPresence = p
	default:
		return req, mxerr.InvalidParam("set_presence must be online, offline or unavailable")
	}
	for _, k := range []string{"use_state_after", "org.matrix.msc4222.use_state_after"} {
		if q.Get(k) == "true" {
			req.UseStateAfter = true
		}
	}
	f, err := a.deps.Sync.ResolveFilter(r.Context(), d.UserID, q.Get("filter"))
	if err != nil {
		return req, err
	}
	req.Filter = f
	return req, nil
}

func (a *API) sync(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	req, err := a.parseSyncRequest(r, d)
	if err != nil {
		return err
	}
	resp, err := a.deps.Sync.Sync(r.Context(), req)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, resp)
}
