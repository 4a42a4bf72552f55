package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// MembershipParams describe a membership change.
type MembershipParams struct {
	RoomID   string
	Sender   string
	Target   string // the affected user; the sender for join, leave, knock
	Reason   string
	IsDirect bool
}

// ResolveRoom accepts a room ID or a local alias and returns the room ID.
func (e *Engine) ResolveRoom(ctx context.Context, roomIDOrAlias string) (string, error) {
	switch {
	case strings.HasPrefix(roomIDOrAlias, "!"):
		if !ValidRoomID(roomIDOrAlias) {
			return "", mxerr.InvalidParam("%q is not a valid room ID", roomIDOrAlias)
		}
		return roomIDOrAlias, nil
	case strings.HasPrefix(roomIDOrAlias, "#"):
		if !ValidAlias(roomIDOrAlias) {
			return "", mxerr.InvalidParam("%q is not a valid room alias", roomIDOrAlias)
		}
		a, err := e.store.AliasGet(ctx, roomIDOrAlias)
		if errors.Is(err, storage.ErrNotFound) {
			return "", mxerr.NotFound("Room alias %s not found", roomIDOrAlias)
		}
		if err != nil {
			return "", err
		}
		return a.RoomID, nil
	}
	return "", mxerr.InvalidParam("%q is neither a room ID nor a room alias", roomIDOrAlias)
}

// Join joins a local room.
func (e *Engine) Join(ctx context.Context, p MembershipParams) (string, error) {
	if p.Reason != "" && len(p.Reason) > 1024 {
		return "", mxerr.InvalidParam("reason is too long")
	}
	m, err := e.meta(ctx, p.RoomID)
	if err != nil {
		if errors.Is(err, ErrUnknownRoom) {
			return "", mxerr.NotFound("This server does not know the room %s and cannot join it over federation yet", p.RoomID)
		}
		return "", err
	}
	dn, av := e.profile(ctx, p.Sender)
	content := memberContent("join", dn, av, p.Reason, false)
	if err := e.authoriseRestrictedJoin(ctx, m, p.Sender, content); err != nil {
		return "", err
	}
	ev, err := e.membership(ctx, m, p.Sender, p.Sender, content)
	if err != nil {
		return "", err
	}
	if err := e.db.Write(ctx, func(tx *storage.Tx) error { return e.store.Unforget(ctx, tx, p.Sender, m.NID) }); err != nil {
		return "", err
	}
	return ev, nil
}

// authoriseRestrictedJoin fills join_authorised_via_users_server when the
// room is restricted and the user qualifies through an allowed room.
func (e *Engine) authoriseRestrictedJoin(ctx context.Context, m *roomMeta, user string, content map[string]any) error {
	if !m.Version.RestrictedJoins() {
		return nil
	}
	jr, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.join_rules", "")
	if err != nil || jr == nil {
		return err
	}
	rule := gjson.GetBytes(jr.Content(), "join_rule").String()
	if rule != "restricted" && rule != "knock_restricted" {
		return nil
	}
	cur, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.member", user)
	if err != nil {
		return err
	}
	if cur != nil {
		if mem := membershipOf(cur.Content()); mem == "join" || mem == "invite" {
			return nil
		}
	}
	allowed := false
	for _, a := range gjson.GetBytes(jr.Content(), "allow").Array() {
		if a.Get("type").String() != "m.room_membership" {
			continue
		}
		other, err := e.meta(ctx, a.Get("room_id").String())
		if err != nil {
			continue
		}
		mem, err := e.currentStateEvent(ctx, e.db.Read(), other.NID, "m.room.member", user)
		if err == nil && mem != nil && membershipOf(mem.Content()) == "join" {
			allowed = true
			break
		}
	}
	if !allowed {
		return mxerr.Forbidden("You are not a member of any room that this restricted room allows (auth rule 5.3.5)")
	}
	// A local member with the power to invite vouches for the join.
	members, err := e.store.CurrentState(ctx, e.db.Read(), m.NID, "m.room.member")
	if err != nil {
		return err
	}
	pl, _ := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.power_levels", "")
	create, _ := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.create", "")
	lv := newLevels(pl, create)
	for _, mem := range members {
		if mem.Membership != nil && *mem.Membership == "join" && e.isLocal(mem.StateKey) && lv.user(mem.StateKey) >= lv.invite() {
			content["join_authorised_via_users_server"] = mem.StateKey
			return nil
		}
	}
	return mxerr.Forbidden("No member of this server can authorise your join to the restricted room")
}

// Leave leaves a room, rejects an invite or retracts a knock.
func (e *Engine) Leave(ctx context.Context, p MembershipParams) error {
	m, err := e.meta(ctx, p.RoomID)
	if err != nil {
		return err
	}
	_, err = e.membership(ctx, m, p.Sender, p.Sender, memberContent("leave", "", "", p.Reason, false))
	return err
}

// Invite invites Target.
func (e *Engine) Invite(ctx context.Context, p MembershipParams) error {
	if !ValidUserID(p.Target) {
		return mxerr.InvalidParam("%q is not a valid user ID", p.Target)
	}
	if !e.isLocal(p.Target) {
		return mxerr.Forbidden("Inviting users of other servers needs federation, which this server does not run yet")
	}
	m, err := e.meta(ctx, p.RoomID)
	if err != nil {
		return err
	}
	dn, av := e.profile(ctx, p.Target)
	_, err = e.membership(ctx, m, p.Sender, p.Target, memberContent("invite", dn, av, p.Reason, p.IsDirect))
	return err
}

// Kick removes Target from the room.
func (e *Engine) Kick(ctx context.Context, p MembershipParams) error {
	return e.changeOther(ctx, p, "leave", "join", "invite", "knock")
}

// Ban bans Target.
func (e *Engine) Ban(ctx context.Context, p MembershipParams) error {
	return e.changeOther(ctx, p, "ban")
}

// Unban lifts Target's ban.
func (e *Engine) Unban(ctx context.Context, p MembershipParams) error {
	return e.changeOther(ctx, p, "leave", "ban")
}

// changeOther sets Target's membership to to, if their current membership
// is one of from (any when from is empty).
func (e *Engine) changeOther(ctx context.Context, p MembershipParams, to string, from ...string) error {
	if !ValidUserID(p.Target) {
		return mxerr.InvalidParam("%q is not a valid user ID", p.Target)
	}
	m, err := e.meta(ctx, p.RoomID)
	if err != nil {
		return err
	}
	if len(from) > 0 {
		cur, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.member", p.Target)
		if err != nil {
			return err
		}
		have := "leave"
		if cur != nil {
			have = membershipOf(cur.Content())
		}
		ok := false
		for _, f := range from {
			ok = ok || f == have
		}
		if !ok {
			return mxerr.Forbidden("%s's membership is %s, which this action cannot change", p.Target, have)
		}
	}
	content := memberContent(to, "", "", p.Reason, false)
	_, err = e.membership(ctx, m, p.Sender, p.Target, content)
	return err
}

// Knock asks to join a room whose join rule allows knocking.
func (e *Engine) Knock(ctx context.Context, p MembershipParams) (string, error) {
	m, err := e.meta(ctx, p.RoomID)
	if err != nil {
		if errors.Is(err, ErrUnknownRoom) {
			return "", mxerr.NotFound("This server does not know the room %s and cannot knock over federation yet", p.RoomID)
		}
		return "", err
	}
	dn, av := e.profile(ctx, p.Sender)
	if _, err := e.membership(ctx, m, p.Sender, p.Sender, memberContent("knock", dn, av, p.Reason, false)); err != nil {
		return "", err
	}
	return m.ID, nil
}

// membership sends an m.room.member event.
func (e *Engine) membership(ctx context.Context, m *roomMeta, sender, target string, content map[string]any) (string, error) {
	b, _ := json.Marshal(content)
	res := e.persister.submit(ctx, &request{roomID: m.ID, protos: []Proto{{
		Type: "m.room.member", StateKey: ptr(target), Content: b, Sender: sender,
	}}})
	if res.err != nil {
		return "", res.err
	}
	return res.events[0].EventID, nil
}

// Forget hides a room the user has left from their view.
func (e *Engine) Forget(ctx context.Context, userID, roomID string) error {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return err
	}
	cur, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.member", userID)
	if err != nil {
		return err
	}
	if cur != nil {
		if mem := membershipOf(cur.Content()); mem == "join" || mem == "invite" || mem == "knock" {
			return mxerr.Custom(400, "M_UNKNOWN", "You must leave the room before forgetting it")
		}
	}
	return e.store.Forget(ctx, userID, m.NID)
}

// UpdateProfile sends a fresh join event, with the user's current display
// name and avatar, into every room the user has joined.
func (e *Engine) UpdateProfile(ctx context.Context, userID string) error {
	rs, err := e.store.RoomsOfUser(ctx, userID, "join")
	if err != nil {
		return err
	}
	dn, av := e.profile(ctx, userID)
	var errs []error
	for _, r := range rs {
		m, err := e.meta(ctx, r.RoomID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cur, _, err := e.membershipNow(ctx, m, userID)
		if err != nil || cur == nil {
			continue
		}
		var c map[string]any
		_ = json.Unmarshal(cur.PDU.Content, &c)
		if c == nil {
			c = map[string]any{}
		}
		c["membership"] = "join"
		delete(c, "reason")
		delete(c, "join_authorised_via_users_server")
		setOrDelete(c, "displayname", dn)
		setOrDelete(c, "avatar_url", av)
		if _, err := e.membership(ctx, m, userID, userID, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func setOrDelete(m map[string]any, k, v string) {
	if v == "" {
		delete(m, k)
	} else {
		m[k] = v
	}
}

// LeaveAll leaves (or rejects) every room of a user, as deactivation does.
func (e *Engine) LeaveAll(ctx context.Context, userID string) error {
	rs, err := e.store.RoomsOfUser(ctx, userID, "join", "invite", "knock")
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range rs {
		if err := e.Leave(ctx, MembershipParams{RoomID: r.RoomID, Sender: userID}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
