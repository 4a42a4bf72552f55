package rooms

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// Room upgrades (POST /rooms/{roomId}/upgrade):
//
//	check: joined, with the power to send m.room.tombstone
//	new room, one transaction: create (predecessor, type, m.federate,
//	  additional_creators) → upgrader's join → power levels, the upgrader
//	  raised if needed to copy the rest → join rules, history visibility,
//	  guest access, name, topic, avatar, encryption, server ACL, space
//	  children → bans; published if the old room was
//	aliases moved to the new room
//	new room, one request: join rules allowing the old room now allow the
//	  new one → m.room.canonical_alias with the moved aliases → the power
//	  levels as they were (the raise undone)
//	old room: m.room.tombstone → canonical alias without local aliases →
//	  events_default and invite raised to max(50, users_default+1) →
//	  unpublished
//
// Steps after the tombstone may fail (the upgrader may lack the power)
// without failing the upgrade, as in Synapse.

// UpgradeRequest is POST /upgrade's body.
type UpgradeRequest struct {
	NewVersion string `json:"new_version"`
	// AdditionalCreators are the new room's other creators (room v12+).
	AdditionalCreators []string `json:"additional_creators"`
}

// maxAdditionalCreators bounds additional_creators.
const maxAdditionalCreators = 100

// upgradeCopied are the state events copied to the new room, besides
// power levels, in the order they are sent.
var upgradeCopied = []string{
	"m.room.join_rules", "m.room.history_visibility", "m.room.guest_access", "m.room.name", "m.room.topic",
	"m.room.avatar", "m.room.encryption", "m.room.server_acl",
}

// UpgradeRoom replaces a room with a new one of another version and
// returns the new room's ID.
func (e *Engine) UpgradeRoom(ctx context.Context, user, roomID string, r UpgradeRequest) (string, error) {
	if r.NewVersion == "" {
		return "", mxerr.MissingParam("new_version is required")
	}
	version := id.RoomVersion(r.NewVersion)
	if !slices.Contains(SupportedVersions, version) {
		return "", mxerr.Custom(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "Room version %q is not supported", r.NewVersion)
	}
	extra, err := additionalCreators(user, version, r.AdditionalCreators)
	if err != nil {
		return "", err
	}
	old, err := e.meta(ctx, roomID)
	if err != nil {
		return "", notMemberIfUnknown(err)
	}
	if _, busy := e.x.upgrading.LoadOrStore(old.ID, true); busy {
		return "", mxerr.Custom(http.StatusConflict, "M_UNKNOWN", "This room is already being upgraded")
	}
	defer e.x.upgrading.Delete(old.ID)

	st, err := e.upgradeState(ctx, old)
	if err != nil {
		return "", err
	}
	oldLv := newLevels(st.get("m.room.power_levels"), st.get("m.room.create"))
	if _, mem, err := e.membershipNow(ctx, old, user); err != nil {
		return "", err
	} else if mem != "join" {
		return "", mxerr.Forbidden("You are not a member of this room")
	}
	if need := oldLv.event("m.room.tombstone", true); oldLv.user(user) < need {
		return "", mxerr.Forbidden("Upgrading the room needs the power to send m.room.tombstone (%d)", need)
	}
	plan, err := e.planUpgrade(ctx, user, old, version, extra, st, oldLv)
	if err != nil {
		return "", err
	}
	room, err := e.store.RoomByNID(ctx, e.db.Read(), old.NID)
	if err != nil {
		return "", err
	}
	req := &request{create: version, protos: plan.creation, publish: room.Published}
	if !version.RoomIDIsCreateEventID() {
		req.roomID = "!" + randomLocal(18) + ":" + e.cfg.ServerName
	}
	res := e.persister.submit(ctx, req)
	if res.err != nil {
		if me, ok := mxerr.As(res.err); ok {
			return "", mxerr.Custom(me.Status, me.Code, "Could not create the replacement room: %s", me.Msg).Wrap(res.err)
		}
		return "", res.err
	}
	newID := res.events[0].RoomID
	nm, err := e.meta(ctx, newID)
	if err != nil {
		return "", err
	}
	moved, err := e.store.AliasesMove(ctx, old.NID, nm.NID)
	if err != nil {
		return "", err
	}
	if follow := plan.followUp(user, old.ID, newID, moved, st.get("m.room.canonical_alias")); len(follow) > 0 {
		if res := e.persister.submit(ctx, &request{roomID: newID, protos: follow}); res.err != nil {
			return "", fmt.Errorf("upgrade of %s: finishing the replacement room %s: %w", old.ID, newID, res.err)
		}
	}
	tomb := Proto{Type: "m.room.tombstone", StateKey: ptr(""), Sender: user,
		Content: mustJSON(map[string]string{"body": "This room has been replaced", "replacement_room": newID})}
	if res := e.persister.submit(ctx, &request{roomID: old.ID, protos: []Proto{tomb}}); res.err != nil {
		e.log.Error("room upgrade: the replacement room exists but the tombstone failed", "room", old.ID, "new", newID, "err", res.err)
		return "", res.err
	}
	e.retireRoom(ctx, user, old, room.Published, st.get("m.room.power_levels"))
	return newID, nil
}

// additionalCreators checks additional_creators; they matter only in
// versions with privileged creators.
func additionalCreators(user string, version id.RoomVersion, list []string) ([]string, error) {
	if !version.PrivilegedRoomCreators() {
		return nil, nil
	}
	if len(list) > maxAdditionalCreators {
		return nil, mxerr.InvalidParam("At most %d additional_creators", maxAdditionalCreators)
	}
	var out []string
	for _, u := range list {
		if !ValidUserID(u) {
			return nil, mxerr.InvalidParam("%q is not a valid user ID", u)
		}
		if u != user && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// upgradeSource is the part of the old room's current state an upgrade
// reads.
type upgradeSource struct {
	events map[storage.StateKey]*Event
	bans   []*Event
	kids   []*Event // m.space.child events
}

func (s *upgradeSource) get(typ string) *Event { return s.events[storage.StateKey{Type: typ}] }

func (e *Engine) upgradeState(ctx context.Context, m *roomMeta) (*upgradeSource, error) {
	entries, err := e.store.CurrentState(ctx, e.db.Read(), m.NID, "")
	if err != nil {
		return nil, err
	}
	wanted := map[string]bool{"m.room.create": true, "m.room.power_levels": true, "m.room.canonical_alias": true}
	for _, t := range upgradeCopied {
		wanted[t] = true
	}
	var nids []int64
	for _, en := range entries {
		ban := en.Type == "m.room.member" && en.Membership != nil && *en.Membership == "ban"
		if ban || en.Type == "m.space.child" || (wanted[en.Type] && en.StateKey == "") {
			nids = append(nids, en.EventNID)
		}
	}
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, nids)
	if err != nil {
		return nil, err
	}
	s := &upgradeSource{events: map[storage.StateKey]*Event{}}
	for _, n := range nids {
		ev, ok := evs[n]
		if !ok {
			continue
		}
		switch ev.Type {
		case "m.room.member":
			s.bans = append(s.bans, ev)
		case "m.space.child":
			s.kids = append(s.kids, ev)
		default:
			s.events[ev.Key()] = ev
		}
	}
	byKey := func(a, b *Event) int { return strings.Compare(deref2(a.StateKey), deref2(b.StateKey)) }
	slices.SortFunc(s.bans, byKey)
	slices.SortFunc(s.kids, byKey)
	if s.get("m.room.create") == nil {
		return nil, ErrUnknownRoom
	}
	return s, nil
}

// upgradePlan is what the new room receives.
type upgradePlan struct {
	creation []Proto
	// initialPL and finalPL are the new room's power levels while copying
	// and after (equal when no raise was needed).
	initialPL, finalPL json.RawMessage
	// joinRules is the copied m.room.join_rules content, if any.
	joinRules json.RawMessage
}

func (e *Engine) planUpgrade(ctx context.Context, user string, old *roomMeta, version id.RoomVersion, extra []string,
	st *upgradeSource, oldLv levels) (*upgradePlan, error) {
	state := func(typ, key string, content json.RawMessage) Proto {
		return Proto{Type: typ, StateKey: ptr(key), Content: content, Sender: user}
	}
	cc, err := e.upgradeCreateContent(ctx, user, old, version, extra, st.get("m.room.create"))
	if err != nil {
		return nil, err
	}
	creators := append([]string{user}, extra...)
	initial, final := upgradePowerLevels(e, st.get("m.room.power_levels"), user, version, creators, oldLv)
	plan := &upgradePlan{initialPL: initial, finalPL: final}
	dn, av := e.profile(ctx, user)
	plan.creation = []Proto{
		state("m.room.create", "", mustJSON(cc)),
		state("m.room.member", user, mustJSON(memberContent("join", dn, av, "", false))),
		state("m.room.power_levels", "", initial),
	}
	for _, t := range upgradeCopied {
		if ev := st.get(t); ev != nil {
			plan.creation = append(plan.creation, state(t, "", ev.Content()))
			if t == "m.room.join_rules" {
				plan.joinRules = ev.Content()
			}
		}
	}
	if gjson.GetBytes(st.get("m.room.create").Content(), "type").String() == "m.space" {
		for _, k := range st.kids {
			if c := ev2obj(k.Content()); len(c) > 0 {
				plan.creation = append(plan.creation, state(k.Type, deref2(k.StateKey), k.Content()))
			}
		}
	}
	lv := contentLevels(initial, version, creators)
	for _, b := range st.bans {
		target := deref2(b.StateKey)
		// A ban the auth rules would refuse (the target outranks or equals
		// the upgrader) is left out rather than failing the upgrade.
		if lv.user(target) >= lv.user(user) || lv.user(user) < lv.ban() {
			continue
		}
		c := map[string]any{"membership": "ban"}
		if reason := gjson.GetBytes(b.Content(), "reason"); reason.Type == gjson.String {
			c["reason"] = reason.Str
		}
		plan.creation = append(plan.creation, state("m.room.member", target, mustJSON(c)))
	}
	return plan, nil
}

func ev2obj(content json.RawMessage) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(content, &m)
	return m
}

// upgradeCreateContent builds the new room's m.room.create content.
func (e *Engine) upgradeCreateContent(ctx context.Context, user string, old *roomMeta, version id.RoomVersion, extra []string,
	create *Event) (map[string]any, error) {
	pred := map[string]any{"room_id": old.ID}
	room, err := e.store.RoomByNID(ctx, e.db.Read(), old.NID)
	if err != nil {
		return nil, err
	}
	if last, err := e.eventByNID(ctx, e.db.Read(), nil, room.LastEvent); err == nil {
		pred["event_id"] = last.EventID
	}
	cc := map[string]any{"room_version": string(version), "predecessor": pred}
	if t := gjson.GetBytes(create.Content(), "type"); t.Type == gjson.String {
		cc["type"] = t.Str
	}
	if gjson.GetBytes(create.Content(), `m\.federate`).Type == gjson.False {
		cc["m.federate"] = false
	}
	if version.CreatorInContent() {
		cc["creator"] = user
	}
	if len(extra) > 0 {
		cc["additional_creators"] = extra
	}
	return cc, nil
}

// upgradePowerLevels returns the new room's power levels while copying
// state and after. The old levels are copied with every level made an
// integer. With privileged creators (v12+) the creators leave users (the
// auth rules forbid listing them) and need no raise; before, the upgrader
// is raised for the copy to the highest level any copied event needs, and
// an upgrader who was a privileged creator of the old room keeps at least
// 100.
func upgradePowerLevels(e *Engine, old *Event, user string, version id.RoomVersion, creators []string, oldLv levels) (initial, final json.RawMessage) {
	// Normalising also makes every level an int64, which the code below
	// relies on.
	var pl map[string]any
	if old == nil {
		pl = normalizePowerLevels(mustJSON(e.defaultPowerLevels(user, version, "private_chat", CreateRoomRequest{})))
	} else {
		pl = normalizePowerLevels(old.Content())
	}
	users, _ := pl["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
		pl["users"] = users
	}
	if version.PrivilegedRoomCreators() {
		for _, c := range creators {
			delete(users, c)
		}
		b := mustJSON(pl)
		return b, b
	}
	level := func(key string, def int64) int64 {
		if v, ok := pl[key].(int64); ok {
			return v
		}
		return def
	}
	own := level("users_default", 0)
	if v, ok := users[user].(int64); ok {
		own = v
	}
	if oldLv.creators[user] {
		own = max(own, 100)
		users[user] = own
	}
	final = mustJSON(pl)
	needed := max(level("state_default", 50), level("ban", 50))
	if events, ok := pl["events"].(map[string]any); ok {
		for _, v := range events {
			if n, ok := v.(int64); ok {
				needed = max(needed, n)
			}
		}
	}
	if own >= needed {
		return final, final
	}
	users[user] = needed
	return mustJSON(pl), final
}

// powerLevelInts are the power level keys whose values are integers.
var powerLevelInts = []string{"users_default", "events_default", "state_default", "ban", "kick", "redact", "invite"}

// normalizePowerLevels copies m.room.power_levels content with every level
// an integer (older room versions allowed strings and floats; v10+ do
// not). Levels that cannot be read are dropped, so they take their
// defaults.
func normalizePowerLevels(content []byte) map[string]any {
	var raw map[string]any
	d := json.NewDecoder(bytes.NewReader(content))
	d.UseNumber()
	if d.Decode(&raw) != nil || raw == nil {
		return map[string]any{}
	}
	out := make(map[string]any, len(raw))
	for k, v := range raw {
		switch {
		case k == "users" || k == "events" || k == "notifications":
			obj, ok := v.(map[string]any)
			if !ok {
				continue
			}
			m := make(map[string]any, len(obj))
			for kk, vv := range obj {
				if n, ok := powerInt(vv); ok && (k != "users" || ValidUserID(kk)) {
					m[kk] = n
				}
			}
			out[k] = m
		case slices.Contains(powerLevelInts, k):
			if n, ok := powerInt(v); ok {
				out[k] = n
			}
		default:
			out[k] = v
		}
	}
	return out
}

// maxSafeInt is the largest integer canonical JSON allows.
const maxSafeInt = 1<<53 - 1

// powerInt reads a power level: an integer, an integral float or a
// numeric string, within canonical JSON's range.
func powerInt(v any) (int64, bool) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = strings.TrimSpace(x)
	default:
		return 0, false
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < -maxSafeInt || n > maxSafeInt {
			return 0, false
		}
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > maxSafeInt {
		return 0, false
	}
	return int64(f), true
}

// contentLevels answers power questions about power levels content.
func contentLevels(content []byte, version id.RoomVersion, creators []string) levels {
	l := levels{creators: map[string]bool{}}
	var pl powerLevels
	if json.Unmarshal(content, &pl) == nil {
		l.pl = &pl
	}
	if version.PrivilegedRoomCreators() {
		for _, c := range creators {
			l.creators[c] = true
		}
	}
	return l
}

func (l levels) ban() int64 {
	if l.pl == nil {
		return 50
	}
	return num(l.pl.Ban, 50)
}

// followUp is what the new room receives once it exists and the aliases
// point at it: join rules naming the old room name the new one, the
// canonical alias moves with its local aliases, and the raise is undone.
func (p *upgradePlan) followUp(user, oldID, newID string, moved []string, canonical *Event) []Proto {
	state := func(typ string, content json.RawMessage) Proto {
		return Proto{Type: typ, StateKey: ptr(""), Content: content, Sender: user}
	}
	var out []Proto
	if jr := retargetAllow(p.joinRules, oldID, newID); jr != nil {
		out = append(out, state("m.room.join_rules", jr))
	}
	if canonical != nil {
		if c := movedCanonicalAlias(canonical.Content(), moved); c != nil {
			out = append(out, state("m.room.canonical_alias", c))
		}
	}
	if !bytes.Equal(p.initialPL, p.finalPL) {
		out = append(out, state("m.room.power_levels", p.finalPL))
	}
	return out
}

// retargetAllow rewrites a restricted join rule's allow entries naming
// the old room; nil when none does.
func retargetAllow(joinRules json.RawMessage, oldID, newID string) json.RawMessage {
	if joinRules == nil {
		return nil
	}
	var c map[string]any
	if json.Unmarshal(joinRules, &c) != nil {
		return nil
	}
	allow, _ := c["allow"].([]any)
	changed := false
	for _, a := range allow {
		if entry, ok := a.(map[string]any); ok && entry["room_id"] == oldID {
			entry["room_id"] = newID
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return mustJSON(c)
}

// movedCanonicalAlias is the new room's m.room.canonical_alias: the old
// one's aliases that moved (remote aliases stay with the old room); nil if
// none did.
func movedCanonicalAlias(content json.RawMessage, moved []string) json.RawMessage {
	c := map[string]any{}
	if a := gjson.GetBytes(content, "alias"); a.Type == gjson.String && slices.Contains(moved, a.Str) {
		c["alias"] = a.Str
	}
	var alts []string
	for _, a := range gjson.GetBytes(content, "alt_aliases").Array() {
		if a.Type == gjson.String && slices.Contains(moved, a.Str) && !slices.Contains(alts, a.Str) {
			alts = append(alts, a.Str)
		}
	}
	if len(alts) > 0 {
		c["alt_aliases"] = alts
	}
	if len(c) == 0 {
		return nil
	}
	return mustJSON(c)
}

// retireRoom finishes an upgrade in the old room: its canonical alias
// loses the local aliases (they moved), ordinary members lose the power to
// speak and invite, and it leaves the directory. Failures are logged: the
// upgrade has happened.
func (e *Engine) retireRoom(ctx context.Context, user string, old *roomMeta, published bool, pl *Event) {
	local := func(a string) bool { return ValidAlias(a) && aliasServer(a) == e.cfg.ServerName }
	if err := e.dropCanonicalAlias(ctx, old, user, local); err != nil {
		e.log.Info("room upgrade: could not update the old room's canonical alias", "room", old.ID, "err", err)
	}
	if pl != nil {
		c := normalizePowerLevels(pl.Content())
		def, _ := c["users_default"].(int64)
		restricted := max(def+1, 50)
		changed := false
		for _, k := range []string{"events_default", "invite"} {
			if cur, _ := c[k].(int64); cur < restricted {
				c[k] = restricted
				changed = true
			}
		}
		if changed {
			res := e.persister.submit(ctx, &request{roomID: old.ID, protos: []Proto{{Type: "m.room.power_levels",
				StateKey: ptr(""), Content: mustJSON(c), Sender: user}}})
			if res.err != nil {
				e.log.Info("room upgrade: could not restrict the old room's power levels", "room", old.ID, "err", res.err)
			}
		}
	}
	if published {
		if err := e.store.RoomSetPublished(ctx, old.NID, false); err != nil {
			e.log.Warn("room upgrade: could not unpublish the old room", "room", old.ID, "err", err)
		}
		e.invalidateDirectory()
	}
}
