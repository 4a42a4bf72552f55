package rooms

import (
	"bytes"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/storage"
)

// Event is a stored event with its parsed PDU. For room versions 1 and 2
// the PDU is converted to the v3+ shape (event IDs in auth_events and
// prev_events) so that auth and state resolution treat all versions alike;
// JSON keeps the original bytes for federation.
type Event struct {
	storage.Event
	Version id.RoomVersion
	PDU     *pdu.PDU
	RoomID  string
}

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.StateKey != nil }

// Key returns the event's state key pair (only meaningful for state).
func (e *Event) Key() storage.StateKey {
	if e.StateKey == nil {
		return storage.StateKey{Type: e.Type}
	}
	return storage.StateKey{Type: e.Type, StateKey: *e.StateKey}
}

// Content returns the event's content (redacted if it was redacted).
func (e *Event) Content() json.RawMessage {
	if e.RedactedBy != nil {
		return json.RawMessage(pdu.RedactContent(e.Type, e.PDU.Content, e.Version))
	}
	return json.RawMessage(e.PDU.Content)
}

// parsePDU decodes stored JSON of an event of the given room version.
func parsePDU(raw []byte, version id.RoomVersion, eventID string) (*pdu.PDU, error) {
	if version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(raw, &v1); err != nil {
			return nil, fmt.Errorf("parse v1 event: %w", err)
		}
		p := &pdu.PDU{
			Content: v1.Content, Depth: v1.Depth, Hashes: v1.Hashes, OriginServerTS: v1.OriginServerTS,
			Redacts: v1.Redacts, RoomID: v1.RoomID, Sender: v1.Sender, Signatures: v1.Signatures,
			StateKey: v1.StateKey, Type: v1.Type, Unsigned: v1.Unsigned,
		}
		for _, r := range v1.AuthEvents {
			p.AuthEvents = append(p.AuthEvents, r.ID)
		}
		for _, r := range v1.PrevEvents {
			p.PrevEvents = append(p.PrevEvents, r.ID)
		}
		p.InternalMeta.EventID = v1.EventID
		return p, nil
	}
	var p pdu.PDU
	if err := jsonv2.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("parse event: %w", err)
	}
	p.InternalMeta.EventID = id.EventID(eventID)
	return &p, nil
}

// fromRow builds an Event from a stored row.
func fromRow(row *storage.Event, version id.RoomVersion, roomID string) (*Event, error) {
	p, err := parsePDU(row.JSON, version, row.EventID)
	if err != nil {
		return nil, err
	}
	p.InternalMeta.Rejected = row.Status == storage.EventRejected
	if roomID == "" {
		roomID = string(p.RoomID)
	}
	return &Event{Event: *row, Version: version, PDU: p, RoomID: roomID}, nil
}

// relation extracts m.relates_to's event_id and rel_type.
func relation(content []byte) (eventID, relType string) {
	r := gjson.GetBytes(content, `m\.relates_to`)
	if !r.IsObject() {
		return "", ""
	}
	return r.Get("event_id").String(), r.Get("rel_type").String()
}

// ClientEvent is an event in the client-server format.
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       *Unsigned       `json:"unsigned,omitempty"`
}

// Unsigned is the unsigned data of a client event.
type Unsigned struct {
	Age             *int64          `json:"age,omitempty"`
	PrevContent     json.RawMessage `json:"prev_content,omitempty"`
	PrevSender      string          `json:"prev_sender,omitempty"`
	ReplacesState   string          `json:"replaces_state,omitempty"`
	RedactedBecause *ClientEvent    `json:"redacted_because,omitempty"`
	TransactionID   string          `json:"transaction_id,omitempty"`
	Membership      string          `json:"membership,omitempty"`
	Relations       json.RawMessage `json:"m.relations,omitempty"`
	// InviteRoomState is the stripped state sent with invites and knocks.
	InviteRoomState []json.RawMessage `json:"invite_room_state,omitempty"`
}

func (u *Unsigned) empty() bool {
	return u.Age == nil && u.PrevContent == nil && u.RedactedBecause == nil && u.TransactionID == "" &&
		u.Membership == "" && u.Relations == nil && u.ReplacesState == "" && u.InviteRoomState == nil
}

// StrippedState is a state event in the stripped form used for invites.
type StrippedState struct {
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

// Stripped returns the stripped form of a state event.
func (e *Event) Stripped() StrippedState {
	sk := ""
	if e.StateKey != nil {
		sk = *e.StateKey
	}
	return StrippedState{Content: e.Content(), Sender: e.Sender, StateKey: sk, Type: e.Type}
}

// redactsTarget returns the event a redaction redacts (content.redacts in
// v11+, the top-level field before).
func (e *Event) redactsTarget() string {
	if e.PDU.Redacts != nil && *e.PDU.Redacts != "" {
		return string(*e.PDU.Redacts)
	}
	return gjson.GetBytes(e.PDU.Content, "redacts").String()
}

// compactJSON returns b without insignificant whitespace.
func compactJSON(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
