// Package filter is the Matrix event filter (POST /user/{userId}/filter,
// /sync?filter=): its shape, validation and matching.
package filter

import (
	"bytes"
	"encoding/json"
	"path"

	"github.com/tidwall/gjson"
	"slices"

	"github.com/parley-chat/parley/internal/mxerr"
)

// Filter is a stored or inline sync filter.
type Filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter selects events by type and sender.
type EventFilter struct {
	Limit      *int     `json:"limit,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	Types      []string `json:"types,omitempty"`
}

// RoomEventFilter selects room events.
type RoomEventFilter struct {
	EventFilter
	UnreadThreadNotifications bool     `json:"unread_thread_notifications,omitempty"`
	LazyLoadMembers           bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool     `json:"include_redundant_members,omitempty"`
	NotRooms                  []string `json:"not_rooms,omitempty"`
	Rooms                     []string `json:"rooms,omitempty"`
	ContainsURL               *bool    `json:"contains_url,omitempty"`
}

// RoomFilter selects what /sync returns about rooms.
type RoomFilter struct {
	NotRooms     []string         `json:"not_rooms,omitempty"`
	Rooms        []string         `json:"rooms,omitempty"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

// Parse decodes and validates a filter definition.
func Parse(b []byte) (*Filter, error) {
	var f Filter
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&f); err != nil {
		return nil, mxerr.BadJSON("Invalid filter: %v", err)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Validate checks the values the JSON shape cannot.
func (f *Filter) Validate() error {
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return mxerr.BadJSON("event_format must be client or federation")
	}
	check := func(name string, e *EventFilter) error {
		if e != nil && e.Limit != nil && *e.Limit < 0 {
			return mxerr.BadJSON("%s.limit must not be negative", name)
		}
		return nil
	}
	for name, e := range map[string]*EventFilter{"presence": f.Presence, "account_data": f.AccountData} {
		if err := check(name, e); err != nil {
			return err
		}
	}
	if r := f.Room; r != nil {
		for name, e := range map[string]*RoomEventFilter{"room.ephemeral": r.Ephemeral, "room.state": r.State,
			"room.timeline": r.Timeline, "room.account_data": r.AccountData} {
			if e != nil {
				if err := check(name, &e.EventFilter); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// globMatch matches Matrix filter patterns, where * is a wildcard.
func globMatch(pattern, s string) bool {
	if pattern == s {
		return true
	}
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

func anyGlob(patterns []string, s string) bool {
	for _, p := range patterns {
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

// AllowsNone reports whether the filter lets nothing through: an empty
// types or senders list, or a limit of 0.
func (e *EventFilter) AllowsNone() bool {
	return e != nil && (e.Types != nil && len(e.Types) == 0 || e.Senders != nil && len(e.Senders) == 0 ||
		e.Limit != nil && *e.Limit == 0)
}

// Allows reports whether an event of type typ from sender passes.
func (e *EventFilter) Allows(typ, sender string) bool {
	if e == nil {
		return true
	}
	if anyGlob(e.NotTypes, typ) || slices.Contains(e.NotSenders, sender) {
		return false
	}
	if e.Types != nil && !anyGlob(e.Types, typ) {
		return false
	}
	if e.Senders != nil && !slices.Contains(e.Senders, sender) {
		return false
	}
	return true
}

// AllowsRoom reports whether a room passes a room event filter.
func (e *RoomEventFilter) AllowsRoom(roomID string) bool {
	if e == nil {
		return true
	}
	if slices.Contains(e.NotRooms, roomID) {
		return false
	}
	return e.Rooms == nil || slices.Contains(e.Rooms, roomID)
}

// AllowsRoom reports whether a room passes the room filter.
func (r *RoomFilter) AllowsRoom(roomID string) bool {
	if r == nil {
		return true
	}
	if slices.Contains(r.NotRooms, roomID) {
		return false
	}
	return r.Rooms == nil || slices.Contains(r.Rooms, roomID)
}

// LimitOr returns the filter's limit, or def when unset, capped at max.
func (e *EventFilter) LimitOr(def, max int) int {
	if e == nil || e.Limit == nil {
		return def
	}
	return min(*e.Limit, max)
}

// AllowsEvent applies a room event filter to one event (type, sender and
// contains_url; rooms are checked by the caller).
func (e *RoomEventFilter) AllowsEvent(typ, sender string, content []byte) bool {
	if e == nil {
		return true
	}
	if !e.EventFilter.Allows(typ, sender) {
		return false
	}
	if e.ContainsURL != nil {
		has := gjson.GetBytes(content, "url").Exists()
		if has != *e.ContainsURL {
			return false
		}
	}
	return true
}
