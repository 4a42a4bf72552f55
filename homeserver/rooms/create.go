package rooms

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"slices"

	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/mxerr"
)

// Profiles gives the engine the display names and avatars that membership
// events carry.
type Profiles interface {
	MemberProfile(ctx context.Context, userID string) (displayname, avatarURL string)
}

// SetProfiles installs the profile source; call before serving.
func (e *Engine) SetProfiles(p Profiles) { e.profiles = p }

// StateEventSpec is a state event of createRoom's initial_state.
type StateEventSpec struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRoomRequest is POST /createRoom's body.
type CreateRoomRequest struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             string            `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	Invite3PID                []json.RawMessage `json:"invite_3pid"`
	RoomVersion               string            `json:"room_version"`
	CreationContent           map[string]any    `json:"creation_content"`
	InitialState              []StateEventSpec  `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride map[string]any    `json:"power_level_content_override"`
}

// Limits of createRoom.
const (
	maxInitialState = 100
	maxInvites      = 100
)

func randomLocal(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// CreateRoom creates a room as creator and returns its ID.
func (e *Engine) CreateRoom(ctx context.Context, creator string, r CreateRoomRequest) (string, error) {
	version := e.cfg.DefaultVersion
	if r.RoomVersion != "" {
		version = id.RoomVersion(r.RoomVersion)
		if !slices.Contains(SupportedVersions, version) {
			return "", mxerr.Custom(400, "M_UNSUPPORTED_ROOM_VERSION", "Room version %q is not supported", r.RoomVersion)
		}
	}
	preset := r.Preset
	switch {
	case preset == "" && r.Visibility == "public":
		preset = "public_chat"
	case preset == "":
		preset = "private_chat"
	case preset != "private_chat" && preset != "public_chat" && preset != "trusted_private_chat":
		return "", mxerr.InvalidParam("Unknown preset %q", r.Preset)
	}
	if r.Visibility != "" && r.Visibility != "public" && r.Visibility != "private" {
		return "", mxerr.InvalidParam("visibility must be public or private")
	}
	if len(r.InitialState) > maxInitialState {
		return "", mxerr.InvalidParam("At most %d initial_state events", maxInitialState)
	}
	if len(r.Invite) > maxInvites {
		return "", mxerr.InvalidParam("At most %d invites", maxInvites)
	}
	if len(r.Invite3PID) > 0 {
		return "", mxerr.Custom(400, "M_UNRECOGNIZED", "Third-party invites (invite_3pid) are not supported: no identity server integration")
	}
	for _, u := range r.Invite {
		if !ValidUserID(u) {
			return "", mxerr.InvalidParam("%q is not a valid user ID", u)
		}
		if !e.isLocal(u) {
			return "", mxerr.Forbidden("Inviting users of other servers needs federation, which this server does not run yet")
		}
	}
	var aliases []string
	if r.RoomAliasName != "" {
		alias := "#" + r.RoomAliasName + ":" + e.cfg.ServerName
		if !ValidAlias(alias) || len(r.RoomAliasName) > 200 {
			return "", mxerr.InvalidParam("room_alias_name is not a valid alias localpart")
		}
		if _, err := e.store.AliasGet(ctx, alias); err == nil {
			return "", mxerr.Custom(400, "M_ROOM_IN_USE", "Room alias %s is already taken", alias)
		}
		aliases = append(aliases, alias)
	}
	protos, err := e.creationEvents(ctx, creator, version, preset, r, aliases)
	if err != nil {
		return "", err
	}
	req := &request{create: version, protos: protos, aliases: aliases, publish: r.Visibility == "public"}
	if !version.RoomIDIsCreateEventID() {
		req.roomID = "!" + randomLocal(18) + ":" + e.cfg.ServerName
	}
	res := e.persister.submit(ctx, req)
	if res.err != nil {
		if me, ok := mxerr.As(res.err); ok && me.Code == "M_FORBIDDEN" {
			return "", mxerr.Custom(400, "M_INVALID_ROOM_STATE", "The initial state is invalid: %s", me.Msg)
		}
		return "", res.err
	}
	return res.events[0].RoomID, nil
}

// creationEvents lists a new room's events in the order the spec gives.
func (e *Engine) creationEvents(ctx context.Context, creator string, version id.RoomVersion, preset string, r CreateRoomRequest, aliases []string) ([]Proto, error) {
	state := func(typ, key string, content any) Proto {
		return Proto{Type: typ, StateKey: ptr(key), Content: mustJSON(content), Sender: creator}
	}
	trusted := preset == "trusted_private_chat"
	cc := map[string]any{}
	for k, v := range r.CreationContent {
		cc[k] = v
	}
	cc["room_version"] = string(version)
	if version.CreatorInContent() {
		cc["creator"] = creator
	} else {
		delete(cc, "creator")
	}
	if version.PrivilegedRoomCreators() && trusted {
		var extra []string
		if list, ok := cc["additional_creators"].([]any); ok {
			for _, v := range list {
				if s, ok := v.(string); ok {
					extra = append(extra, s)
				}
			}
		}
		for _, u := range r.Invite {
			if !slices.Contains(extra, u) && u != creator {
				extra = append(extra, u)
			}
		}
		if len(extra) > 0 {
			cc["additional_creators"] = extra
		}
	}
	protos := []Proto{state("m.room.create", "", cc)}
	dn, av := e.profile(ctx, creator)
	protos = append(protos, state("m.room.member", creator, memberContent("join", dn, av, "", false)))
	protos = append(protos, state("m.room.power_levels", "", e.defaultPowerLevels(creator, version, preset, r)))
	if len(aliases) > 0 {
		protos = append(protos, state("m.room.canonical_alias", "", map[string]any{"alias": aliases[0]}))
	}
	overridden := map[[2]string]bool{}
	for _, s := range r.InitialState {
		overridden[[2]string{s.Type, s.StateKey}] = true
	}
	joinRule, guest := "invite", "can_join"
	if preset == "public_chat" {
		joinRule, guest = "public", "forbidden"
	}
	for _, p := range []Proto{
		state("m.room.join_rules", "", map[string]any{"join_rule": joinRule}),
		state("m.room.history_visibility", "", map[string]any{"history_visibility": "shared"}),
		state("m.room.guest_access", "", map[string]any{"guest_access": guest}),
	} {
		if !overridden[[2]string{p.Type, ""}] {
			protos = append(protos, p)
		}
	}
	for _, s := range r.InitialState {
		if s.Type == "" || s.Type == "m.room.create" || s.Type == "m.room.member" {
			return nil, mxerr.Custom(400, "M_INVALID_ROOM_STATE", "initial_state may not contain %q events", s.Type)
		}
		if (s.Type == "m.room.name" && r.Name != nil) || (s.Type == "m.room.topic" && r.Topic != nil) {
			continue
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(s.Content, &obj) != nil || obj == nil {
			return nil, mxerr.BadJSON("initial_state content must be an object")
		}
		if s.Type == "m.room.canonical_alias" {
			// A new room has no aliases but the one created with it.
			var c struct {
				Alias      string   `json:"alias"`
				AltAliases []string `json:"alt_aliases"`
			}
			_ = json.Unmarshal(s.Content, &c)
			for _, a := range append(c.AltAliases, c.Alias) {
				if a != "" && !slices.Contains(aliases, a) {
					return nil, mxerr.Custom(400, "M_BAD_ALIAS", "Alias %s does not point to the new room", a)
				}
			}
		}
		protos = append(protos, Proto{Type: s.Type, StateKey: ptr(s.StateKey), Content: s.Content, Sender: creator})
	}
	if r.Name != nil {
		protos = append(protos, state("m.room.name", "", map[string]any{"name": *r.Name}))
	}
	if r.Topic != nil {
		protos = append(protos, state("m.room.topic", "", map[string]any{
			"topic":   *r.Topic,
			"m.topic": map[string]any{"m.text": []map[string]string{{"body": *r.Topic, "mimetype": "text/plain"}}},
		}))
	}
	for _, u := range r.Invite {
		if u == creator {
			continue
		}
		idn, iav := e.profile(ctx, u)
		protos = append(protos, state("m.room.member", u, memberContent("invite", idn, iav, "", r.IsDirect)))
	}
	return protos, nil
}

func (e *Engine) defaultPowerLevels(creator string, version id.RoomVersion, preset string, r CreateRoomRequest) map[string]any {
	users := map[string]any{}
	if !version.PrivilegedRoomCreators() {
		users[creator] = 100
		if preset == "trusted_private_chat" {
			for _, u := range r.Invite {
				users[u] = 100
			}
		}
	}
	tombstone := 100
	if version.PrivilegedRoomCreators() {
		// The spec wants it above state_default explicitly in v12.
		tombstone = 150
	}
	invite := 50
	if preset != "public_chat" {
		invite = 0
	}
	pl := map[string]any{
		"users":          users,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         invite,
		"events": map[string]any{
			"m.room.name":               50,
			"m.room.power_levels":       100,
			"m.room.history_visibility": 100,
			"m.room.canonical_alias":    50,
			"m.room.avatar":             50,
			"m.room.tombstone":          tombstone,
			"m.room.server_acl":         100,
			"m.room.encryption":         100,
		},
		"notifications": map[string]any{"room": 50},
	}
	for k, v := range r.PowerLevelContentOverride {
		if k == "users" && version.PrivilegedRoomCreators() {
			// Creators must not appear in users in v12.
			if m, ok := v.(map[string]any); ok {
				delete(m, creator)
			}
		}
		pl[k] = v
	}
	return pl
}

func memberContent(membership, displayname, avatar, reason string, direct bool) map[string]any {
	c := map[string]any{"membership": membership}
	if displayname != "" {
		c["displayname"] = displayname
	}
	if avatar != "" {
		c["avatar_url"] = avatar
	}
	if reason != "" {
		c["reason"] = reason
	}
	if direct {
		c["is_direct"] = true
	}
	return c
}

func (e *Engine) profile(ctx context.Context, userID string) (string, string) {
	if e.profiles == nil || !e.isLocal(userID) {
		return "", ""
	}
	return e.profiles.MemberProfile(ctx, userID)
}

func (e *Engine) isLocal(userID string) bool {
	_, server, ok := stringsCut(userID)
	return ok && server == e.cfg.ServerName
}

func stringsCut(userID string) (string, string, bool) {
	for i := 0; i < len(userID); i++ {
		if userID[i] == ':' {
			return userID[:i], userID[i+1:], true
		}
	}
	return "", "", false
}
