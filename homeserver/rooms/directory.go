package rooms

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// Aliases and the published room directory.

// AliasRoom is what an alias resolves to.
type AliasRoom struct {
	RoomID  string   `json:"room_id"`
	Servers []string `json:"servers"`
}

// aliasServer returns the server part of a well-formed alias.
func aliasServer(alias string) string {
	_, server, _ := strings.Cut(alias[1:], ":")
	return server
}

func checkAlias(alias string) error {
	if !ValidAlias(alias) {
		return mxerr.InvalidParam("%q is not a valid room alias", alias)
	}
	return nil
}

// ResolveAlias resolves a room alias of this server.
func (e *Engine) ResolveAlias(ctx context.Context, alias string) (*AliasRoom, error) {
	if err := checkAlias(alias); err != nil {
		return nil, err
	}
	if aliasServer(alias) != e.cfg.ServerName {
		return nil, mxerr.NotFound("Room alias %s is on another server, which this server cannot ask without federation", alias)
	}
	a, err := e.store.AliasGet(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxerr.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	servers, err := e.residentServers(ctx, a.RoomNID)
	if err != nil {
		return nil, err
	}
	return &AliasRoom{RoomID: a.RoomID, Servers: servers}, nil
}

// residentServers lists the servers with joined members in a room, this
// server first (it holds the alias) and the others sorted.
func (e *Engine) residentServers(ctx context.Context, roomNID int64) ([]string, error) {
	members, err := e.store.CurrentState(ctx, e.db.Read(), roomNID, "m.room.member")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{e.cfg.ServerName: true}
	var others []string
	for _, m := range members {
		if m.Membership == nil || *m.Membership != "join" {
			continue
		}
		if _, server, ok := strings.Cut(m.StateKey, ":"); ok && !seen[server] {
			seen[server] = true
			others = append(others, server)
		}
	}
	slices.Sort(others)
	return append([]string{e.cfg.ServerName}, others...), nil
}

// CreateAlias maps a local alias to a room. Any joined member may (server
// admins need not be in the room); 409 M_UNKNOWN if the alias is taken.
func (e *Engine) CreateAlias(ctx context.Context, user string, admin bool, alias, roomID string) error {
	if err := checkAlias(alias); err != nil {
		return err
	}
	if aliasServer(alias) != e.cfg.ServerName {
		return mxerr.InvalidParam("Room alias must be on this server (%s)", e.cfg.ServerName)
	}
	if !ValidRoomID(roomID) {
		return mxerr.InvalidParam("%q is not a valid room ID", roomID)
	}
	notMember := mxerr.Forbidden("You must be joined to the room to create an alias for it")
	m, err := e.meta(ctx, roomID)
	if errors.Is(err, ErrUnknownRoom) && !admin {
		return notMember
	}
	if err != nil {
		return err
	}
	if !admin {
		if _, mem, err := e.membershipNow(ctx, m, user); err != nil {
			return err
		} else if mem != "join" {
			return notMember
		}
	}
	err = e.store.AliasCreate(ctx, alias, m.NID, user, e.now().UnixMilli())
	if errors.Is(err, storage.ErrConflict) {
		return mxerr.Custom(http.StatusConflict, "M_UNKNOWN", "Room alias %s already exists", alias)
	}
	return err
}

// DeleteAlias removes a local alias. Its creator, a server admin, or a
// member with the power to set m.room.canonical_alias may; the alias is
// then also dropped from the room's m.room.canonical_alias, in the
// deleter's name when they have the power (the deletion stands either way).
func (e *Engine) DeleteAlias(ctx context.Context, user string, admin bool, alias string) error {
	if err := checkAlias(alias); err != nil {
		return err
	}
	notFound := mxerr.NotFound("Room alias %s not found", alias)
	if aliasServer(alias) != e.cfg.ServerName {
		return notFound
	}
	a, err := e.store.AliasGet(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return notFound
	}
	if err != nil {
		return err
	}
	m, err := e.meta(ctx, a.RoomID)
	if err != nil {
		return err
	}
	if a.Creator != user && !admin {
		ok, err := e.canEditDirectory(ctx, m, user)
		if err != nil {
			return err
		}
		if !ok {
			return mxerr.Forbidden("Only the alias's creator, a server admin or a room moderator may delete it")
		}
	}
	if err := e.store.AliasDeleteFrom(ctx, alias, m.NID); errors.Is(err, storage.ErrNotFound) {
		return notFound
	} else if err != nil {
		return err
	}
	if err := e.dropCanonicalAlias(ctx, m, user, func(a string) bool { return a == alias }); err != nil {
		e.log.Info("alias deleted but m.room.canonical_alias not updated", "alias", alias, "room", m.ID, "err", err)
	}
	return nil
}

// dropCanonicalAlias sends m.room.canonical_alias without the aliases
// drop selects, if it names any.
func (e *Engine) dropCanonicalAlias(ctx context.Context, m *roomMeta, sender string, drop func(alias string) bool) error {
	ev, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.canonical_alias", "")
	if err != nil || ev == nil {
		return err
	}
	var c map[string]any
	if err := json.Unmarshal(ev.Content(), &c); err != nil || c == nil {
		return err
	}
	changed := false
	if a, ok := c["alias"].(string); ok && drop(a) {
		delete(c, "alias")
		changed = true
	}
	if alts, ok := c["alt_aliases"].([]any); ok {
		kept := make([]any, 0, len(alts))
		for _, x := range alts {
			if s, ok := x.(string); ok && drop(s) {
				changed = true
				continue
			}
			kept = append(kept, x)
		}
		if len(kept) == 0 {
			delete(c, "alt_aliases")
		} else {
			c["alt_aliases"] = kept
		}
	}
	if !changed {
		return nil
	}
	_, err = e.Send(ctx, SendParams{RoomID: m.ID, Sender: sender, Type: "m.room.canonical_alias", StateKey: ptr(""), Content: mustJSON(c)})
	return err
}

// RoomAliases lists a room's local aliases, for its joined members (and
// server admins), or anyone when the room is world-readable.
func (e *Engine) RoomAliases(ctx context.Context, user string, admin bool, roomID string) ([]string, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		if admin {
			return nil, err
		}
		return nil, notMemberIfUnknown(err)
	}
	if !admin {
		_, mem, err := e.membershipNow(ctx, m, user)
		if err != nil {
			return nil, err
		}
		if mem != "join" {
			if wr, err := e.worldReadable(ctx, m); err != nil {
				return nil, err
			} else if !wr {
				return nil, mxerr.Forbidden("You are not a member of this room")
			}
		}
	}
	aliases, err := e.store.RoomAliases(ctx, m.NID)
	if aliases == nil {
		aliases = []string{}
	}
	return aliases, err
}

// canEditDirectory reports whether a user may manage a room's aliases and
// directory listing: joined, with the power to send m.room.canonical_alias.
func (e *Engine) canEditDirectory(ctx context.Context, m *roomMeta, user string) (bool, error) {
	if _, mem, err := e.membershipNow(ctx, m, user); err != nil || mem != "join" {
		return false, err
	}
	pl, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.power_levels", "")
	if err != nil {
		return false, err
	}
	create, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.create", "")
	if err != nil {
		return false, err
	}
	lv := newLevels(pl, create)
	return lv.user(user) >= lv.event("m.room.canonical_alias", true), nil
}

// DirectoryVisibility returns "public" or "private".
func (e *Engine) DirectoryVisibility(ctx context.Context, roomID string) (string, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return "", err
	}
	r, err := e.store.RoomByNID(ctx, e.db.Read(), m.NID)
	if err != nil {
		return "", err
	}
	if r.Published {
		return "public", nil
	}
	return "private", nil
}

// SetDirectoryVisibility publishes ("public", the default) or hides
// ("private") a room in the directory. A server admin, or a joined member
// with the power to send m.room.canonical_alias, may.
func (e *Engine) SetDirectoryVisibility(ctx context.Context, user string, admin bool, roomID, visibility string) error {
	switch visibility {
	case "":
		visibility = "public"
	case "public", "private":
	default:
		return mxerr.InvalidParam("visibility must be public or private")
	}
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return err
	}
	if !admin {
		ok, err := e.canEditDirectory(ctx, m, user)
		if err != nil {
			return err
		}
		if !ok {
			return mxerr.Forbidden("Only a room moderator or a server admin may change the room's directory listing")
		}
	}
	if err := e.store.RoomSetPublished(ctx, m.NID, visibility == "public"); err != nil {
		return err
	}
	e.invalidateDirectory()
	return nil
}

// PublicRoom is an entry of the published room directory.
type PublicRoom struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// PublicRoomsQuery is /publicRooms's parameters.
type PublicRoomsQuery struct {
	// Limit is the page size (0: the default).
	Limit int
	Since string
	// Server is the directory's server; empty means this one.
	Server     string
	SearchTerm string
	// RoomTypes, when non-nil, keeps rooms of these types; "" stands for
	// rooms without a type.
	RoomTypes            []string
	IncludeAllNetworks   bool
	ThirdPartyInstanceID string
}

// PublicRoomsPage is /publicRooms's answer.
type PublicRoomsPage struct {
	Chunk     []PublicRoom `json:"chunk"`
	NextBatch string       `json:"next_batch,omitempty"`
	PrevBatch string       `json:"prev_batch,omitempty"`
	Total     int          `json:"total_room_count_estimate"`
}

// Limits of /publicRooms.
const (
	DefaultPublicRoomsLimit = 100
	MaxPublicRoomsLimit     = 500
	MaxSearchTermBytes      = 512
	MaxRoomTypesFilter      = 50
	// directoryMaxAge bounds how long a listing is reused while no event
	// has been persisted (by any instance) and nothing was published or
	// hidden on this instance: a change made on another instance without
	// an event shows within this time.
	directoryMaxAge = 30 * time.Second
)

// directoryStateTypes are the state events a directory entry shows.
var directoryStateTypes = []string{
	"m.room.name", "m.room.topic", "m.room.canonical_alias", "m.room.avatar", "m.room.join_rules",
	"m.room.history_visibility", "m.room.guest_access", "m.room.create",
}

// directorySnapshot is the whole directory, sorted, as of an events
// stream position.
type directorySnapshot struct {
	at     time.Time
	stream int64
	rooms  []PublicRoom
}

func (e *Engine) invalidateDirectory() {
	e.x.dirMu.Lock()
	e.x.dir = nil
	e.x.dirMu.Unlock()
}

// PublicRooms pages through the published room directory, ordered by
// joined members (most first), then room ID.
func (e *Engine) PublicRooms(ctx context.Context, q PublicRoomsQuery) (*PublicRoomsPage, error) {
	if q.Server != "" && q.Server != e.cfg.ServerName {
		if !ValidServerName(q.Server) {
			return nil, mxerr.InvalidParam("%q is not a valid server name", q.Server)
		}
		return nil, mxerr.NotFound("This server cannot fetch the room directory of %s without federation", q.Server)
	}
	if q.IncludeAllNetworks && q.ThirdPartyInstanceID != "" {
		return nil, mxerr.InvalidParam("third_party_instance_id cannot be used with include_all_networks")
	}
	if len(q.SearchTerm) > MaxSearchTermBytes {
		return nil, mxerr.InvalidParam("generic_search_term is longer than %d bytes", MaxSearchTermBytes)
	}
	if len(q.RoomTypes) > MaxRoomTypesFilter {
		return nil, mxerr.InvalidParam("room_types lists more than %d types", MaxRoomTypesFilter)
	}
	limit, err := pageLimit(q.Limit, DefaultPublicRoomsLimit, MaxPublicRoomsLimit)
	if err != nil {
		return nil, err
	}
	var since *dirToken
	if q.Since != "" {
		t, err := parseDirToken(q.Since)
		if err != nil {
			return nil, err
		}
		since = &t
	}
	all, err := e.directory(ctx)
	if err != nil {
		return nil, err
	}
	var rooms []PublicRoom
	// No application services bridge other networks here, so a particular
	// third-party network has no rooms.
	if q.ThirdPartyInstanceID == "" || q.IncludeAllNetworks {
		rooms = filterDirectory(all, strings.ToLower(strings.TrimSpace(q.SearchTerm)), q.RoomTypes)
	}
	return pageDirectory(rooms, since, limit), nil
}

// filterDirectory keeps the rooms matching a (lower-case) search term
// and room types.
func filterDirectory(all []PublicRoom, term string, types []string) []PublicRoom {
	out := make([]PublicRoom, 0, len(all))
	for _, r := range all {
		if types != nil && !slices.Contains(types, r.RoomType) {
			continue
		}
		if term != "" && !strings.Contains(strings.ToLower(r.Name), term) && !strings.Contains(strings.ToLower(r.Topic), term) &&
			!strings.Contains(strings.ToLower(r.CanonicalAlias), term) && !strings.Contains(strings.ToLower(r.RoomID), term) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// pageDirectory cuts one page out of a sorted listing.
func pageDirectory(rooms []PublicRoom, since *dirToken, limit int) *PublicRoomsPage {
	start, end := 0, min(limit, len(rooms))
	if since != nil {
		// The first room after (next) or at (previous) the token's room.
		i, _ := slices.BinarySearchFunc(rooms, since.key, func(r PublicRoom, k dirKey) int { return compareDirKeys(keyOf(r), k) })
		if since.next {
			for i < len(rooms) && compareDirKeys(keyOf(rooms[i]), since.key) <= 0 {
				i++
			}
			start, end = i, min(i+limit, len(rooms))
		} else {
			start, end = max(i-limit, 0), i
		}
	}
	page := &PublicRoomsPage{Chunk: append([]PublicRoom{}, rooms[start:end]...), Total: len(rooms)}
	if start > 0 && start < len(rooms) {
		page.PrevBatch = dirToken{next: false, key: keyOf(rooms[start])}.String()
	}
	if end < len(rooms) && end > 0 {
		page.NextBatch = dirToken{next: true, key: keyOf(rooms[end-1])}.String()
	}
	return page
}

// directory returns the sorted listing. It is rebuilt when an event has
// been persisted since (names, topics and member counts change only with
// events), so a quiet server answers repeated listings from memory.
func (e *Engine) directory(ctx context.Context) ([]PublicRoom, error) {
	e.x.dirMu.Lock()
	defer e.x.dirMu.Unlock()
	pos, err := e.db.StreamPos(ctx, storage.EventsStream)
	if err != nil {
		return nil, err
	}
	if d := e.x.dir; d != nil && d.stream == pos && e.now().Sub(d.at) < directoryMaxAge {
		return d.rooms, nil
	}
	rows, err := e.store.DirectoryRooms(ctx, directoryStateTypes)
	if err != nil {
		return nil, err
	}
	var nids []int64
	for _, r := range rows {
		for _, n := range r.State {
			nids = append(nids, n)
		}
	}
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, nids)
	if err != nil {
		return nil, err
	}
	rooms := make([]PublicRoom, 0, len(rows))
	for _, r := range rows {
		content := func(typ string) []byte {
			if ev, ok := evs[r.State[typ]]; ok {
				return ev.Content()
			}
			return nil
		}
		rooms = append(rooms, directoryEntry(r.RoomID, r.Joined, content))
	}
	slices.SortFunc(rooms, func(a, b PublicRoom) int { return compareDirKeys(keyOf(a), keyOf(b)) })
	e.x.dir = &directorySnapshot{at: e.now(), stream: pos, rooms: rooms}
	return rooms, nil
}

// directoryEntry builds a room's entry from its state contents.
func directoryEntry(roomID string, joined int, content func(typ string) []byte) PublicRoom {
	str := func(typ, path string) string {
		v := gjson.GetBytes(content(typ), path)
		if v.Type != gjson.String {
			return ""
		}
		return v.Str
	}
	r := PublicRoom{
		RoomID: roomID, NumJoinedMembers: joined,
		Name:           str("m.room.name", "name"),
		CanonicalAlias: str("m.room.canonical_alias", "alias"),
		AvatarURL:      str("m.room.avatar", "url"),
		JoinRule:       str("m.room.join_rules", "join_rule"),
		RoomType:       str("m.room.create", "type"),
		WorldReadable:  str("m.room.history_visibility", "history_visibility") == "world_readable",
		GuestCanJoin:   str("m.room.guest_access", "guest_access") == "can_join",
		Topic:          plainTopic(content("m.room.topic")),
	}
	if r.CanonicalAlias != "" && !ValidAlias(r.CanonicalAlias) {
		r.CanonicalAlias = ""
	}
	if !strings.HasPrefix(r.AvatarURL, "mxc://") {
		r.AvatarURL = ""
	}
	return r
}

// plainTopic returns the text/plain topic of m.room.topic: the m.topic
// entry with that mimetype (or none), else the topic field.
func plainTopic(content []byte) string {
	for _, t := range gjson.GetBytes(content, `m\.topic.m\.text`).Array() {
		mime := t.Get("mimetype")
		if (!mime.Exists() || mime.Str == "text/plain") && t.Get("body").Type == gjson.String {
			return t.Get("body").Str
		}
	}
	if v := gjson.GetBytes(content, "topic"); v.Type == gjson.String {
		return v.Str
	}
	return ""
}

// dirKey is a room's place in the directory order.
type dirKey struct {
	joined int
	roomID string
}

func keyOf(r PublicRoom) dirKey { return dirKey{joined: r.NumJoinedMembers, roomID: r.RoomID} }

// compareDirKeys orders by joined members, most first, then room ID.
func compareDirKeys(a, b dirKey) int {
	if c := cmp.Compare(b.joined, a.joined); c != 0 {
		return c
	}
	return strings.Compare(a.roomID, b.roomID)
}

// dirToken is a /publicRooms pagination token: the rooms after (next) or
// before (previous) a place in the order.
type dirToken struct {
	next bool
	key  dirKey
}

// String encodes the token opaquely ("n" or "p", members, room ID).
func (t dirToken) String() string {
	dir := "p"
	if t.next {
		dir = "n"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(dir + strconv.Itoa(t.key.joined) + "|" + t.key.roomID))
}

func parseDirToken(s string) (dirToken, error) {
	bad := mxerr.InvalidParam("Invalid pagination token %q", s)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 3 || (b[0] != 'n' && b[0] != 'p') {
		return dirToken{}, bad
	}
	num, roomID, ok := strings.Cut(string(b[1:]), "|")
	joined, err := strconv.Atoi(num)
	if !ok || err != nil || joined < 0 || !ValidRoomID(roomID) {
		return dirToken{}, bad
	}
	return dirToken{next: b[0] == 'n', key: dirKey{joined: joined, roomID: roomID}}, nil
}

// ValidServerName reports whether s is a server name: a DNS name, an IPv4
// address or a bracketed IPv6 address, with an optional port.
func ValidServerName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	host := s
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		if a, err := netip.ParseAddr(s[1:end]); err != nil || !a.Is6() {
			return false
		}
		host, s = "", s[end+1:]
		if s == "" {
			return true
		}
		if s[0] != ':' {
			return false
		}
		return validPort(s[1:])
	}
	if h, port, ok := strings.Cut(s, ":"); ok {
		if !validPort(port) {
			return false
		}
		host = h
	}
	if host == "" {
		return false
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536 && len(p) <= 5
}
