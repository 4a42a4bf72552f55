package clientapi

import (
	"net/http"
	"strconv"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// roomExtraRoutes registers relations, threads, aliases, the published
// room directory, reports, upgrades and timestamp_to_event.
func (a *API) roomExtraRoutes(v3 *httpapi.Group, v1 *httpapi.Group) {
	v1.Handle(http.MethodGet, "/rooms/{roomId}/relations/{eventId}", a.auth(a.relations))
	v1.Handle(http.MethodGet, "/rooms/{roomId}/relations/{eventId}/{relType}", a.auth(a.relations))
	v1.Handle(http.MethodGet, "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", a.auth(a.relations))
	v1.Handle(http.MethodGet, "/rooms/{roomId}/threads", a.auth(a.threads))
	v1.Handle(http.MethodGet, "/rooms/{roomId}/timestamp_to_event", a.auth(a.timestampToEvent))

	v3.Handle(http.MethodGet, "/directory/room/{roomAlias}", httpapi.Wrap(a.getAlias))
	v3.Handle(http.MethodPut, "/directory/room/{roomAlias}", a.noGuests(a.putAlias))
	v3.Handle(http.MethodDelete, "/directory/room/{roomAlias}", a.noGuests(a.deleteAlias))
	v3.Handle(http.MethodGet, "/rooms/{roomId}/aliases", a.auth(a.roomAliases))
	v3.Handle(http.MethodGet, "/directory/list/room/{roomId}", httpapi.Wrap(a.getDirectoryVisibility))
	v3.Handle(http.MethodPut, "/directory/list/room/{roomId}", a.noGuests(a.putDirectoryVisibility))
	v3.Handle(http.MethodGet, "/publicRooms", httpapi.Wrap(a.getPublicRooms))
	v3.Handle(http.MethodPost, "/publicRooms", a.auth(a.postPublicRooms))
	v3.Handle(http.MethodPost, "/rooms/{roomId}/report/{eventId}", a.noGuests(a.reportEvent))
	v3.Handle(http.MethodPost, "/rooms/{roomId}/report", a.noGuests(a.reportRoom))
	v3.Handle(http.MethodPost, "/users/{userId}/report", a.noGuests(a.reportUser))
	v3.Handle(http.MethodPost, "/rooms/{roomId}/upgrade", a.noGuests(a.upgradeRoom))
}

func requester(d *deviceT) rooms.Requester {
	return rooms.Requester{UserID: d.UserID, DeviceID: d.DeviceID}
}

// limitParam reads an optional positive integer query parameter (0 when
// absent).
func limitParam(r *http.Request, name string) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, mxerr.InvalidParam("%s must be a positive integer", name)
	}
	return n, nil
}

// dirParam reads dir (b or f); def applies when it is absent, and an
// empty def makes it required.
func dirParam(r *http.Request, def string) (backward bool, err error) {
	dir := r.URL.Query().Get("dir")
	if dir == "" {
		if def == "" {
			return false, mxerr.MissingParam("dir is required (b or f)")
		}
		dir = def
	}
	if dir != "b" && dir != "f" {
		return false, mxerr.InvalidParam("dir must be b or f")
	}
	return dir == "b", nil
}

func (a *API) relations(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	rq := rooms.RelationsQuery{RelType: httpapi.Var(r, "relType"), EventType: httpapi.Var(r, "eventType"),
		From: q.Get("from"), To: q.Get("to")}
	if rq.Backward, err = dirParam(r, "b"); err != nil {
		return err
	}
	if rq.Limit, err = limitParam(r, "limit"); err != nil {
		return err
	}
	if v := q.Get("recurse"); v != "" {
		if v != "true" && v != "false" {
			return mxerr.InvalidParam("recurse must be true or false")
		}
		recurse := v == "true"
		rq.Recurse = &recurse
	}
	res, err := a.deps.Rooms.Relations(r.Context(), requester(d), id, httpapi.Var(r, "eventId"), rq)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) threads(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	limit, err := limitParam(r, "limit")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	res, err := a.deps.Rooms.Threads(r.Context(), requester(d), id, rooms.ThreadsQuery{Include: q.Get("include"), From: q.Get("from"), Limit: limit})
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) timestampToEvent(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	raw := r.URL.Query().Get("ts")
	if raw == "" {
		return mxerr.MissingParam("ts is required")
	}
	ts, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return mxerr.InvalidParam("ts must be a timestamp in milliseconds")
	}
	backward, err := dirParam(r, "")
	if err != nil {
		return err
	}
	res, err := a.deps.Rooms.EventAtTimestamp(r.Context(), d.UserID, id, ts, !backward)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) getAlias(w http.ResponseWriter, r *http.Request) error {
	res, err := a.deps.Rooms.ResolveAlias(r.Context(), httpapi.Var(r, "roomAlias"))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) putAlias(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var b struct {
		RoomID *string `json:"room_id"`
	}
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	if b.RoomID == nil {
		return mxerr.MissingParam("room_id is required")
	}
	if err := a.deps.Rooms.CreateAlias(r.Context(), d.UserID, d.IsAdmin, httpapi.Var(r, "roomAlias"), *b.RoomID); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) deleteAlias(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := a.deps.Rooms.DeleteAlias(r.Context(), d.UserID, d.IsAdmin, httpapi.Var(r, "roomAlias")); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) roomAliases(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	aliases, err := a.deps.Rooms.RoomAliases(r.Context(), d.UserID, d.IsAdmin, id)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"aliases": aliases})
}

func (a *API) getDirectoryVisibility(w http.ResponseWriter, r *http.Request) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	v, err := a.deps.Rooms.DirectoryVisibility(r.Context(), id)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"visibility": v})
}

func (a *API) putDirectoryVisibility(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	var b struct {
		Visibility string `json:"visibility"`
	}
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	if err := a.deps.Rooms.SetDirectoryVisibility(r.Context(), d.UserID, d.IsAdmin, id, b.Visibility); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) getPublicRooms(w http.ResponseWriter, r *http.Request) error {
	limit, err := limitParam(r, "limit")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	res, err := a.deps.Rooms.PublicRooms(r.Context(), rooms.PublicRoomsQuery{Limit: limit, Since: q.Get("since"), Server: q.Get("server")})
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) postPublicRooms(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var b struct {
		Limit  *int   `json:"limit"`
		Since  string `json:"since"`
		Filter *struct {
			GenericSearchTerm string    `json:"generic_search_term"`
			RoomTypes         []*string `json:"room_types"`
		} `json:"filter"`
		IncludeAllNetworks   bool   `json:"include_all_networks"`
		ThirdPartyInstanceID string `json:"third_party_instance_id"`
	}
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	q := rooms.PublicRoomsQuery{Since: b.Since, Server: r.URL.Query().Get("server"),
		IncludeAllNetworks: b.IncludeAllNetworks, ThirdPartyInstanceID: b.ThirdPartyInstanceID}
	if b.Limit != nil {
		if *b.Limit < 1 {
			return mxerr.InvalidParam("limit must be a positive integer")
		}
		q.Limit = *b.Limit
	}
	if b.Filter != nil {
		q.SearchTerm = b.Filter.GenericSearchTerm
		for _, t := range b.Filter.RoomTypes {
			if t == nil {
				q.RoomTypes = append(q.RoomTypes, "")
			} else {
				q.RoomTypes = append(q.RoomTypes, *t)
			}
		}
	}
	res, err := a.deps.Rooms.PublicRooms(r.Context(), q)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) reportEvent(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	var b struct {
		Reason string `json:"reason"`
		Score  *int64 `json:"score"`
	}
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	if err := a.deps.Rooms.ReportEvent(r.Context(), d.UserID, id, httpapi.Var(r, "eventId"), b.Reason, b.Score); err != nil {
		return err
	}
	return httpapi.OK(w)
}

// reasonBody is the body of room and user reports, whose reason is
// required (but may be blank).
type reasonBody struct {
	Reason *string `json:"reason"`
}

func (b reasonBody) reason() (string, error) {
	if b.Reason == nil {
		return "", mxerr.MissingParam("reason is required")
	}
	return *b.Reason, nil
}

func (a *API) reportRoom(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	var b reasonBody
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	reason, err := b.reason()
	if err != nil {
		return err
	}
	if err := a.deps.Rooms.ReportRoom(r.Context(), d.UserID, id, reason); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) reportUser(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var b reasonBody
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	reason, err := b.reason()
	if err != nil {
		return err
	}
	if err := a.deps.Rooms.ReportUser(r.Context(), d.UserID, httpapi.Var(r, "userId"), reason); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) upgradeRoom(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	var b rooms.UpgradeRequest
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	newID, err := a.deps.Rooms.UpgradeRoom(r.Context(), d.UserID, id, b)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"replacement_room": newID})
}
