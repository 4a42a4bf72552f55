package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/parley-chat/parley/homeserver/receipts"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// ephemeralRoutes registers receipts, read markers, typing and presence.
// Guests may use them all, as the spec's guest access module allows.
func (a *API) ephemeralRoutes(s *httpapi.Group) {
	if a.deps.Receipts != nil {
		s.Handle(http.MethodPost, "/rooms/{roomId}/receipt/{receiptType}/{eventId}", a.auth(a.postReceipt))
		s.Handle(http.MethodPost, "/rooms/{roomId}/read_markers", a.auth(a.postReadMarkers))
	}
	if a.deps.Typing != nil {
		s.Handle(http.MethodPut, "/rooms/{roomId}/typing/{userId}", a.auth(a.putTyping))
	}
	if a.deps.Presence != nil {
		s.Handle(http.MethodPut, "/presence/{userId}/status", a.auth(a.putPresence))
		s.Handle(http.MethodGet, "/presence/{userId}/status", a.auth(a.getPresence))
	}
}

func (a *API) postReceipt(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	room, err := roomID(r)
	if err != nil {
		return err
	}
	var body struct {
		ThreadID json.RawMessage `json:"thread_id"`
	}
	if err := httpapi.Decode(r, &body); err != nil {
		return err
	}
	var thread *string
	if len(body.ThreadID) > 0 && string(body.ThreadID) != "null" {
		var s string
		if err := json.Unmarshal(body.ThreadID, &s); err != nil {
			return mxerr.InvalidParam("thread_id must be a string")
		}
		thread = &s
	}
	if err := a.deps.Receipts.Send(r.Context(), d.UserID, room, httpapi.Var(r, "receiptType"), httpapi.Var(r, "eventId"), thread); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) postReadMarkers(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	room, err := roomID(r)
	if err != nil {
		return err
	}
	var body struct {
		FullyRead   *string `json:"m.fully_read"`
		Read        *string `json:"m.read"`
		ReadPrivate *string `json:"m.read.private"`
	}
	if err := httpapi.Decode(r, &body); err != nil {
		return err
	}
	var m receipts.Markers
	for _, f := range []struct {
		name string
		v    *string
		to   *string
	}{{receipts.FullyRead, body.FullyRead, &m.FullyRead}, {receipts.Read, body.Read, &m.Read}, {receipts.ReadPrivate, body.ReadPrivate, &m.ReadPrivate}} {
		if f.v == nil {
			continue
		}
		if *f.v == "" {
			return mxerr.InvalidParam("%s must be an event ID", f.name)
		}
		*f.to = *f.v
	}
	if err := a.deps.Receipts.SetReadMarkers(r.Context(), d.UserID, room, m); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) putTyping(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	room, err := roomID(r)
	if err != nil {
		return err
	}
	if httpapi.Var(r, "userId") != d.UserID {
		return mxerr.Forbidden("You cannot set another user's typing state")
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := httpapi.Decode(r, &body); err != nil {
		return err
	}
	if body.Typing == nil {
		return mxerr.MissingParam("typing is required")
	}
	if err := a.deps.Typing.Set(r.Context(), d.UserID, room, *body.Typing, body.Timeout); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) putPresence(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if httpapi.Var(r, "userId") != d.UserID {
		return mxerr.Forbidden("You cannot set another user's presence")
	}
	var body struct {
		Presence  *string `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := httpapi.Decode(r, &body); err != nil {
		return err
	}
	if body.Presence == nil {
		return mxerr.MissingParam("presence is required")
	}
	if err := a.deps.Presence.SetStatus(r.Context(), d.UserID, *body.Presence, body.StatusMsg); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) getPresence(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	target := httpapi.Var(r, "userId")
	if !rooms.ValidUserID(target) {
		return mxerr.InvalidParam("%q is not a valid user ID", target)
	}
	st, err := a.deps.Presence.Status(r.Context(), d.UserID, target)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, st)
}
