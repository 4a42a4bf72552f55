package slidingsync

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/mxerr"
)

// Request is one sliding sync request: the body of POST /sync, with the
// query parameters the handler folds in.
type Request struct {
	ConnID string `json:"conn_id"`
	Pos    string `json:"pos"`
	// Timeout is in milliseconds; it applies only with a pos.
	Timeout       *int64                 `json:"timeout"`
	SetPresence   string                 `json:"set_presence"`
	TxnID         string                 `json:"txn_id"`
	Lists         map[string]*List       `json:"lists"`
	Subscriptions map[string]*RoomConfig `json:"room_subscriptions"`
	// Unsubscribe is accepted from clients of the earlier drafts and
	// ignored: subscriptions last one request.
	Unsubscribe []string   `json:"unsubscribe_rooms"`
	Extensions  Extensions `json:"extensions"`

	UserID   string `json:"-"`
	DeviceID string `json:"-"`
	// Compat is set when the request uses the shapes of Synapse's earlier
	// implementation that Element X speaks (ranges, required_state as
	// pairs with $LAZY, pos in the query string): the response then names
	// invite_state and unstable_expanded_timeline as that implementation
	// did.
	Compat bool `json:"-"`
}

// RoomConfig is what a list or a subscription returns of each room.
type RoomConfig struct {
	TimelineLimit *int64         `json:"timeline_limit"`
	RequiredState *RequiredState `json:"required_state"`
	// IncludeHeroes is sent by some clients and ignored: heroes come
	// whenever a room has no name.
	IncludeHeroes *bool `json:"include_heroes"`
}

// List is a sliding window over the user's rooms.
type List struct {
	RoomConfig
	// Range is [start, end], inclusive; absent means every room.
	Range []int64 `json:"range"`
	// Ranges is the earlier drafts' list of ranges (their union).
	Ranges  [][]int64 `json:"ranges"`
	Filters *Filters  `json:"filters"`
}

// Filters narrow a list.
type Filters struct {
	IsDM        *bool    `json:"is_dm"`
	Spaces      []string `json:"spaces"`
	IsEncrypted *bool    `json:"is_encrypted"`
	IsInvited   *bool    `json:"is_invited"`
	// IsInvite is the earlier spelling of IsInvited.
	IsInvite *bool `json:"is_invite"`
	// RoomTypes and NotRoomTypes hold null for rooms without a type.
	RoomTypes    []*string `json:"room_types"`
	NotRoomTypes []*string `json:"not_room_types"`
	Tags         []string  `json:"tags"`
	NotTags      []string  `json:"not_tags"`
}

// RequiredState selects state events: every event some include element
// matches and no exclude element does, with member events lazily loaded
// when LazyMembers is set.
type RequiredState struct {
	Include     []StateElement `json:"include"`
	Exclude     []StateElement `json:"exclude"`
	LazyMembers bool           `json:"lazy_members"`
	// compat: it came as the earlier drafts' pairs.
	compat bool
}

// StateElement matches state events; an absent field matches anything.
type StateElement struct {
	Type     *string `json:"type"`
	StateKey *string `json:"state_key"`
}

// Special state keys of required_state.
const (
	stateKeyMe   = "$ME"
	stateKeyLazy = "$LAZY"
	wildcard     = "*"
)

// UnmarshalJSON reads the object of MSC4186 or the earlier drafts' list
// of [type, state_key] pairs, where "*" is a wildcard, "$ME" the user and
// ["m.room.member", "$LAZY"] asks for lazy members.
func (r *RequiredState) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '[' {
		type plain RequiredState
		var p plain
		if err := json.Unmarshal(b, &p); err != nil {
			return err
		}
		*r = RequiredState(p)
		return nil
	}
	var pairs [][]string
	if err := json.Unmarshal(b, &pairs); err != nil {
		return err
	}
	*r = RequiredState{compat: true}
	for _, p := range pairs {
		if len(p) != 2 {
			return mxerr.BadJSON("required_state entries must be [type, state_key] pairs")
		}
		typ, key := p[0], p[1]
		if typ == "m.room.member" && key == stateKeyLazy {
			r.LazyMembers = true
			continue
		}
		var el StateElement
		if typ != wildcard {
			el.Type = &typ
		}
		if key != wildcard {
			el.StateKey = &key
		}
		r.Include = append(r.Include, el)
	}
	// In the earlier drafts a wildcard over members beats $LAZY.
	if r.LazyMembers {
		for _, el := range r.Include {
			if el.StateKey == nil && (el.Type == nil || *el.Type == "m.room.member") {
				r.LazyMembers = false
			}
		}
	}
	return nil
}

// ExtensionConfig enables an extension and chooses the rooms it covers:
// those of the named lists (all when absent, or "*") and the named
// subscriptions (all when absent, or "*").
type ExtensionConfig struct {
	Enabled *bool    `json:"enabled"`
	Lists   []string `json:"lists"`
	Rooms   []string `json:"rooms"`
}

func (c *ExtensionConfig) on() bool { return c != nil && c.Enabled != nil && *c.Enabled }

// ToDeviceConfig configures the to-device extension (MSC3885).
type ToDeviceConfig struct {
	ExtensionConfig
	Limit *int64 `json:"limit"`
	// Since is the next_batch of the previous to_device result.
	Since string `json:"since"`
}

// Extensions are the extension configs of a request.
type Extensions struct {
	ToDevice    *ToDeviceConfig  `json:"to_device"`
	E2EE        *ExtensionConfig `json:"e2ee"`
	AccountData *ExtensionConfig `json:"account_data"`
	Receipts    *ExtensionConfig `json:"receipts"`
	Typing      *ExtensionConfig `json:"typing"`
}

// Limits of a request. Counts beyond them are refused with
// M_INVALID_PARAM; timeline_limit and timeout are capped instead.
const (
	MaxLists           = 100
	MaxSubscriptions   = 100
	MaxRangesPerList   = 10
	MaxTimelineLimit   = 100
	MaxRequiredState   = 100
	MaxFilterEntries   = 100
	MaxExtensionRooms  = 200
	maxIdentifierBytes = 255
)

// opaqueID reports whether s is an opaque identifier: 1 to 255 of
// [0-9A-Za-z._~-].
func opaqueID(s string) bool {
	if s == "" || len(s) > maxIdentifierBytes {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '.', c == '_', c == '~', c == '-':
		default:
			return false
		}
	}
	return true
}

// validString reports whether s is short UTF-8 without NUL (which
// PostgreSQL cannot store).
func validString(s string) bool {
	return len(s) <= maxIdentifierBytes && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func validRoomID(s string) bool { return rooms.ValidRoomID(s) && validString(s) }

// Validate checks a request's shape and bounds.
func (r *Request) Validate() error {
	if !validString(r.ConnID) {
		return mxerr.InvalidParam("conn_id must be at most %d bytes of UTF-8 without NUL", maxIdentifierBytes)
	}
	if len(r.Pos) > 200 {
		return unknownPos()
	}
	if r.Timeout != nil && *r.Timeout < 0 {
		return mxerr.InvalidParam("timeout must not be negative")
	}
	switch r.SetPresence {
	case "", "online", "offline", "unavailable":
	default:
		return mxerr.InvalidParam("set_presence must be online, offline or unavailable")
	}
	if !validString(r.TxnID) {
		return mxerr.InvalidParam("txn_id is too long")
	}
	if len(r.Lists) > MaxLists {
		return mxerr.InvalidParam("At most %d lists", MaxLists)
	}
	spaces := map[string]bool{}
	for name, l := range r.Lists {
		if l != nil && l.Filters != nil {
			for _, s := range l.Filters.Spaces {
				spaces[s] = true
			}
		}
		if !opaqueID(name) {
			return mxerr.InvalidParam("List name %q is not an opaque identifier", name)
		}
		if l == nil {
			return mxerr.BadJSON("List %q must be an object", name)
		}
		if err := l.validate(name); err != nil {
			return err
		}
	}
	if len(spaces) > MaxFilterEntries {
		return mxerr.InvalidParam("At most %d spaces across the lists' filters", MaxFilterEntries)
	}
	if len(r.Subscriptions) > MaxSubscriptions {
		return mxerr.InvalidParam("At most %d room subscriptions", MaxSubscriptions)
	}
	for room, c := range r.Subscriptions {
		if !validRoomID(room) {
			return mxerr.InvalidParam("%q is not a room ID", room)
		}
		if c == nil {
			return mxerr.BadJSON("The subscription to %s must be an object", room)
		}
		if err := c.validate("room_subscriptions." + room); err != nil {
			return err
		}
	}
	if len(r.Unsubscribe) > MaxSubscriptions {
		return mxerr.InvalidParam("At most %d rooms to unsubscribe", MaxSubscriptions)
	}
	return r.Extensions.validate()
}

func (c *RoomConfig) validate(where string) error {
	if c.TimelineLimit != nil && *c.TimelineLimit < 0 {
		return mxerr.InvalidParam("%s: timeline_limit must not be negative", where)
	}
	if rs := c.RequiredState; rs != nil {
		if len(rs.Include) > MaxRequiredState || len(rs.Exclude) > MaxRequiredState {
			return mxerr.InvalidParam("%s: at most %d required_state entries", where, MaxRequiredState)
		}
		for _, el := range append(append([]StateElement(nil), rs.Include...), rs.Exclude...) {
			if (el.Type != nil && !validString(*el.Type)) || (el.StateKey != nil && !validString(*el.StateKey)) {
				return mxerr.InvalidParam("%s: required_state entries must be at most %d bytes", where, maxIdentifierBytes)
			}
		}
	}
	return nil
}

func (l *List) validate(name string) error {
	if err := l.RoomConfig.validate("lists." + name); err != nil {
		return err
	}
	if len(l.Ranges) > MaxRangesPerList {
		return mxerr.InvalidParam("List %q: at most %d ranges", name, MaxRangesPerList)
	}
	ranges := l.Ranges
	if l.Range != nil {
		ranges = append([][]int64{l.Range}, ranges...)
	}
	for _, rg := range ranges {
		if len(rg) != 2 || rg[0] < 0 || rg[1] < rg[0] {
			return mxerr.InvalidParam("List %q: a range is [start, end] with 0 <= start <= end", name)
		}
	}
	if f := l.Filters; f != nil {
		for _, n := range []int{len(f.Spaces), len(f.RoomTypes), len(f.NotRoomTypes), len(f.Tags), len(f.NotTags)} {
			if n > MaxFilterEntries {
				return mxerr.InvalidParam("List %q: at most %d entries per filter", name, MaxFilterEntries)
			}
		}
		for _, s := range f.Spaces {
			if !validRoomID(s) {
				return mxerr.InvalidParam("List %q: %q is not a room ID", name, s)
			}
		}
	}
	return nil
}

func (x *Extensions) validate() error {
	for _, c := range []*ExtensionConfig{x.E2EE, x.AccountData, x.Receipts, x.Typing, x.toDeviceBase()} {
		if c != nil && (len(c.Lists) > MaxLists || len(c.Rooms) > MaxExtensionRooms) {
			return mxerr.InvalidParam("An extension names at most %d lists and %d rooms", MaxLists, MaxExtensionRooms)
		}
	}
	if td := x.ToDevice; td != nil {
		if td.Limit != nil && *td.Limit < 0 {
			return mxerr.InvalidParam("to_device.limit must not be negative")
		}
		if td.Since != "" {
			if _, err := parseSince(td.Since); err != nil {
				return err
			}
		}
	}
	return nil
}

func (x *Extensions) toDeviceBase() *ExtensionConfig {
	if x.ToDevice == nil {
		return nil
	}
	return &x.ToDevice.ExtensionConfig
}

// parseSince reads a to-device since token.
func parseSince(s string) (int64, error) {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || v < 0 {
		return 0, mxerr.InvalidParam("to_device.since is not a token this server issued")
	}
	return v, nil
}

// timelineLimit is a config's timeline limit, capped.
func (c *RoomConfig) timelineLimit() int {
	if c.TimelineLimit == nil {
		return 0
	}
	return int(min(*c.TimelineLimit, MaxTimelineLimit))
}

// ranges returns the list's ranges (nil: the whole list).
func (l *List) ranges() [][2]int64 {
	if l.Range == nil && l.Ranges == nil {
		return nil
	}
	out := [][2]int64{}
	if l.Range != nil {
		out = append(out, [2]int64{l.Range[0], l.Range[1]})
	}
	for _, r := range l.Ranges {
		out = append(out, [2]int64{r[0], r[1]})
	}
	return out
}

// usesCompat reports whether the request speaks the earlier drafts.
func (r *Request) usesCompat() bool {
	for _, l := range r.Lists {
		if l.Ranges != nil || (l.RequiredState != nil && l.RequiredState.compat) ||
			(l.Filters != nil && l.Filters.IsInvite != nil) {
			return true
		}
	}
	for _, c := range r.Subscriptions {
		if c.RequiredState != nil && c.RequiredState.compat {
			return true
		}
	}
	return false
}
