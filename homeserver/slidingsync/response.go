package slidingsync

import (
	"encoding/json"

	"github.com/parley-chat/parley/homeserver/rooms"
)

// Response is a sliding sync response.
type Response struct {
	Pos        string                `json:"pos"`
	TxnID      string                `json:"txn_id,omitempty"`
	Lists      map[string]ListResult `json:"lists"`
	Rooms      map[string]*Room      `json:"rooms,omitempty"`
	Extensions ExtensionResults      `json:"extensions"`
}

// ListResult is a list's size, ignoring its range.
type ListResult struct {
	Count int `json:"count"`
}

// Nullable is a string field that can be absent, null or a string.
type Nullable struct {
	Set   bool
	Value *string
}

// IsZero reports an absent field.
func (n Nullable) IsZero() bool { return !n.Set }

// MarshalJSON writes null or the string.
func (n Nullable) MarshalJSON() ([]byte, error) { return json.Marshal(n.Value) }

// StateStub stands for state that was removed.
type StateStub struct {
	Type     string `json:"type"`
	StateKey string `json:"state_key"`
}

// Room is one room of a response. Fields left out have not changed since
// the room was last sent, unless Initial is set.
type Room struct {
	BumpStamp  *int64   `json:"bump_stamp,omitempty"`
	Membership string   `json:"membership,omitempty"`
	Lists      []string `json:"lists,omitempty"`
	Initial    bool     `json:"initial,omitempty"`
	IsDM       *bool    `json:"is_dm,omitempty"`

	Name          Nullable     `json:"name,omitzero"`
	Avatar        Nullable     `json:"avatar,omitzero"`
	Heroes        []rooms.Hero `json:"heroes,omitempty"`
	JoinedCount   *int         `json:"joined_count,omitempty"`
	InvitedCount  *int         `json:"invited_count,omitempty"`
	RequiredState []any        `json:"required_state,omitempty"`

	Timeline                 []*rooms.ClientEvent `json:"timeline,omitempty"`
	PrevBatch                string               `json:"prev_batch,omitempty"`
	Limited                  bool                 `json:"limited,omitempty"`
	NumLive                  *int                 `json:"num_live,omitempty"`
	ExpandedTimeline         bool                 `json:"expanded_timeline,omitempty"`
	ExpandedTimelineUnstable bool                 `json:"unstable_expanded_timeline,omitempty"`

	StrippedState *[]json.RawMessage `json:"stripped_state,omitempty"`
	// InviteState is StrippedState under the earlier drafts' name.
	InviteState *[]json.RawMessage `json:"invite_state,omitempty"`
}

// ExtensionResults are the extensions' parts of a response.
type ExtensionResults struct {
	ToDevice    *ToDeviceResult    `json:"to_device,omitempty"`
	E2EE        *E2EEResult        `json:"e2ee,omitempty"`
	AccountData *AccountDataResult `json:"account_data,omitempty"`
	Receipts    *RoomEvents        `json:"receipts,omitempty"`
	Typing      *RoomEvents        `json:"typing,omitempty"`
}

// ToDeviceResult is the to-device extension's part (MSC3885).
type ToDeviceResult struct {
	NextBatch string            `json:"next_batch"`
	Events    []json.RawMessage `json:"events"`
}

// DeviceLists are device list changes.
type DeviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// E2EEResult is the end-to-end encryption extension's part (MSC3884).
type E2EEResult struct {
	DeviceLists  *DeviceLists   `json:"device_lists,omitempty"`
	OTKCounts    map[string]int `json:"device_one_time_keys_count"`
	Fallback     []string       `json:"device_unused_fallback_key_types"`
	FallbackMSC2 []string       `json:"org.matrix.msc2732.device_unused_fallback_key_types"`
}

// AccountDataResult is the account data extension's part (MSC3959).
type AccountDataResult struct {
	Global []json.RawMessage            `json:"global,omitempty"`
	Rooms  map[string][]json.RawMessage `json:"rooms,omitempty"`
}

// RoomEvents is one ephemeral event per room: the receipts (MSC3960) and
// typing (MSC3961) extensions' parts.
type RoomEvents struct {
	Rooms map[string]json.RawMessage `json:"rooms"`
}

// empty reports whether nothing in the extensions is news.
func (x *ExtensionResults) empty() bool {
	if x.ToDevice != nil && len(x.ToDevice.Events) > 0 {
		return false
	}
	if x.E2EE != nil && x.E2EE.DeviceLists != nil {
		return false
	}
	if x.AccountData != nil && (len(x.AccountData.Global) > 0 || len(x.AccountData.Rooms) > 0) {
		return false
	}
	if x.Receipts != nil && len(x.Receipts.Rooms) > 0 {
		return false
	}
	return x.Typing == nil || len(x.Typing.Rooms) == 0
}
