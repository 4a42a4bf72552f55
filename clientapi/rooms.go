package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/parley-chat/parley/homeserver/filter"
	"github.com/parley-chat/parley/homeserver/ratelimit"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// roomRoutes registers the room endpoints.
func (a *API) roomRoutes(s *httpapi.Group) {
	s.Handle(http.MethodPost, "/createRoom", a.noGuests(a.createRoom))
	s.Handle(http.MethodPost, "/join/{roomIdOrAlias}", a.auth(a.joinAny))
	s.Handle(http.MethodPost, "/knock/{roomIdOrAlias}", a.noGuests(a.knock))
	s.Handle(http.MethodPost, "/rooms/{roomId}/join", a.auth(a.joinRoom))
	s.Handle(http.MethodPost, "/rooms/{roomId}/leave", a.auth(a.leave))
	s.Handle(http.MethodPost, "/rooms/{roomId}/forget", a.auth(a.forget))
	s.Handle(http.MethodPost, "/rooms/{roomId}/invite", a.noGuests(a.invite))
	s.Handle(http.MethodPost, "/rooms/{roomId}/kick", a.auth(a.kick))
	s.Handle(http.MethodPost, "/rooms/{roomId}/ban", a.auth(a.ban))
	s.Handle(http.MethodPost, "/rooms/{roomId}/unban", a.auth(a.unban))
	s.Handle(http.MethodPut, "/rooms/{roomId}/state/{eventType}", a.auth(a.putState))
	s.Handle(http.MethodPut, "/rooms/{roomId}/state/{eventType}/{stateKey:[^/]*}", a.auth(a.putState))
	s.Handle(http.MethodGet, "/rooms/{roomId}/state", a.auth(a.getState))
	s.Handle(http.MethodGet, "/rooms/{roomId}/state/{eventType}", a.auth(a.getStateEvent))
	s.Handle(http.MethodGet, "/rooms/{roomId}/state/{eventType}/{stateKey:[^/]*}", a.auth(a.getStateEvent))
	s.Handle(http.MethodPut, "/rooms/{roomId}/redact/{eventId}/{txnId}", a.auth(a.redact))
	s.Handle(http.MethodGet, "/rooms/{roomId}/event/{eventId}", a.auth(a.getEvent))
	s.Handle(http.MethodGet, "/rooms/{roomId}/messages", a.auth(a.messages))
	s.Handle(http.MethodGet, "/rooms/{roomId}/context/{eventId}", a.auth(a.eventContext))
	s.Handle(http.MethodGet, "/rooms/{roomId}/members", a.auth(a.members))
	s.Handle(http.MethodGet, "/rooms/{roomId}/joined_members", a.auth(a.joinedMembers))
	s.Handle(http.MethodGet, "/joined_rooms", a.auth(a.joinedRooms))
}

// roomID reads and checks the {roomId} path variable.
func roomID(r *http.Request) (string, error) {
	id := httpapi.Var(r, "roomId")
	if !rooms.ValidRoomID(id) {
		return "", mxerr.InvalidParam("%q is not a valid room ID", id)
	}
	return id, nil
}

func (a *API) createRoom(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req rooms.CreateRoomRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	id, err := a.deps.Rooms.CreateRoom(r.Context(), d.UserID, req)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"room_id": id})
}

type membershipBody struct {
	Reason string `json:"reason"`
	UserID string `json:"user_id"`
}

func (a *API) joinAny(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := a.deps.Rooms.ResolveRoom(r.Context(), httpapi.Var(r, "roomIdOrAlias"))
	if err != nil {
		return err
	}
	return a.join(w, r, d, id)
}

func (a *API) joinRoom(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	return a.join(w, r, d, id)
}

func (a *API) join(w http.ResponseWriter, r *http.Request, d *deviceT, id string) error {
	var b membershipBody
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	if _, err := a.deps.Rooms.Join(r.Context(), rooms.MembershipParams{RoomID: id, Sender: d.UserID, Reason: b.Reason}); err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"room_id": id})
}

func (a *API) knock(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var b membershipBody
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	id, err := a.deps.Rooms.ResolveRoom(r.Context(), httpapi.Var(r, "roomIdOrAlias"))
	if err != nil {
		return err
	}
	id, err = a.deps.Rooms.Knock(r.Context(), rooms.MembershipParams{RoomID: id, Sender: d.UserID, Reason: b.Reason})
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"room_id": id})
}

// memberOp parses a membership request and runs op.
func (a *API) memberOp(w http.ResponseWriter, r *http.Request, d *deviceT, needTarget bool,
	op func(p rooms.MembershipParams) error) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	var b membershipBody
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	if needTarget && b.UserID == "" {
		return mxerr.MissingParam("user_id is required")
	}
	if needTarget && !rooms.ValidUserID(b.UserID) {
		return mxerr.InvalidParam("%q is not a valid user ID", b.UserID)
	}
	if len(b.Reason) > 1024 {
		return mxerr.InvalidParam("reason is longer than 1024 bytes")
	}
	if err := op(rooms.MembershipParams{RoomID: id, Sender: d.UserID, Target: b.UserID, Reason: b.Reason}); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) leave(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	return a.memberOp(w, r, d, false, func(p rooms.MembershipParams) error { return a.deps.Rooms.Leave(r.Context(), p) })
}

func (a *API) invite(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	return a.memberOp(w, r, d, true, func(p rooms.MembershipParams) error { return a.deps.Rooms.Invite(r.Context(), p) })
}

func (a *API) kick(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	return a.memberOp(w, r, d, true, func(p rooms.MembershipParams) error { return a.deps.Rooms.Kick(r.Context(), p) })
}

func (a *API) ban(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	return a.memberOp(w, r, d, true, func(p rooms.MembershipParams) error { return a.deps.Rooms.Ban(r.Context(), p) })
}

func (a *API) unban(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	return a.memberOp(w, r, d, true, func(p rooms.MembershipParams) error { return a.deps.Rooms.Unban(r.Context(), p) })
}

func (a *API) forget(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	if err := a.deps.Rooms.Forget(r.Context(), d.UserID, id); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) send(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	if err := a.limits.Allow(r.Context(), ratelimit.MessagesPerUser, d.UserID); err != nil {
		return err
	}
	body, err := httpapi.ReadObject(r)
	if err != nil {
		return err
	}
	eventID, err := a.deps.Rooms.Send(r.Context(), rooms.SendParams{
		RoomID: id, Sender: d.UserID, DeviceID: d.DeviceID, TxnID: httpapi.Var(r, "txnId"),
		Type: httpapi.Var(r, "eventType"), Content: body,
	})
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"event_id": eventID})
}

func (a *API) putState(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	body, err := httpapi.ReadObject(r)
	if err != nil {
		return err
	}
	key := httpapi.Var(r, "stateKey")
	eventID, err := a.deps.Rooms.Send(r.Context(), rooms.SendParams{
		RoomID: id, Sender: d.UserID, Type: httpapi.Var(r, "eventType"), StateKey: &key, Content: body,
	})
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"event_id": eventID})
}

func (a *API) getState(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	evs, err := a.deps.Rooms.State(r.Context(), d.UserID, id)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, evs)
}

func (a *API) getStateEvent(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	ev, err := a.deps.Rooms.StateEvent(r.Context(), d.UserID, id, httpapi.Var(r, "eventType"), httpapi.Var(r, "stateKey"))
	if err != nil {
		return err
	}
	if r.URL.Query().Get("format") == "event" {
		return httpapi.JSON(w, http.StatusOK, ev)
	}
	return httpapi.RawJSON(w, http.StatusOK, ev.Content)
}

func (a *API) redact(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	if err := a.limits.Allow(r.Context(), ratelimit.MessagesPerUser, d.UserID); err != nil {
		return err
	}
	var b struct {
		Reason string `json:"reason"`
	}
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	eventID, err := a.deps.Rooms.Redact(r.Context(), d.UserID, d.DeviceID, httpapi.Var(r, "txnId"), id, httpapi.Var(r, "eventId"), b.Reason)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"event_id": eventID})
}

func (a *API) getEvent(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	ev, err := a.deps.Rooms.Event(r.Context(), rooms.Requester{UserID: d.UserID, DeviceID: d.DeviceID}, id, httpapi.Var(r, "eventId"))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, ev)
}

// roomFilter parses the filter query parameter of /messages and /context.
func roomFilter(r *http.Request) (*filter.RoomEventFilter, error) {
	raw := r.URL.Query().Get("filter")
	if raw == "" {
		return nil, nil
	}
	var f filter.RoomEventFilter
	if err := json.Unmarshal([]byte(raw), &f); err != nil {
		return nil, mxerr.BadJSON("filter is not a valid RoomEventFilter: %v", err)
	}
	if f.Limit != nil && *f.Limit < 0 {
		return nil, mxerr.BadJSON("filter.limit must not be negative")
	}
	return &f, nil
}

func intParam(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, mxerr.InvalidParam("%s must be a non-negative integer", name)
	}
	return n, nil
}

func (a *API) messages(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		if dir == "" {
			return mxerr.MissingParam("dir is required (b or f)")
		}
		return mxerr.InvalidParam("dir must be b or f")
	}
	limit, err := intParam(r, "limit", rooms.DefaultMessagesLimit)
	if err != nil {
		return err
	}
	f, err := roomFilter(r)
	if err != nil {
		return err
	}
	res, err := a.deps.Rooms.Messages(r.Context(), rooms.Requester{UserID: d.UserID, DeviceID: d.DeviceID}, id, rooms.MessagesQuery{
		From: q.Get("from"), To: q.Get("to"), Backward: dir == "b", Limit: limit, Filter: f,
	})
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) eventContext(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", 10)
	if err != nil {
		return err
	}
	f, err := roomFilter(r)
	if err != nil {
		return err
	}
	res, err := a.deps.Rooms.Context(r.Context(), rooms.Requester{UserID: d.UserID, DeviceID: d.DeviceID}, id, httpapi.Var(r, "eventId"), limit, f)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) members(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	for _, k := range []string{"membership", "not_membership"} {
		switch q.Get(k) {
		case "", "join", "invite", "knock", "leave", "ban":
		default:
			return mxerr.InvalidParam("%s must be join, invite, knock, leave or ban", k)
		}
	}
	evs, err := a.deps.Rooms.Members(r.Context(), d.UserID, id, rooms.MembersQuery{
		At: q.Get("at"), Membership: q.Get("membership"), NotMembership: q.Get("not_membership"),
	})
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"chunk": evs})
}

func (a *API) joinedMembers(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := roomID(r)
	if err != nil {
		return err
	}
	m, err := a.deps.Rooms.JoinedMembers(r.Context(), d.UserID, id)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"joined": m})
}

func (a *API) joinedRooms(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	ids, err := a.deps.Rooms.JoinedRooms(r.Context(), d.UserID)
	if err != nil {
		return err
	}
	if ids == nil {
		ids = []string{}
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"joined_rooms": ids})
}
