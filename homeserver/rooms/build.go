package rooms

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"
	"strings"

	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// MaxEventBytes is the largest event the spec allows, as JSON.
const MaxEventBytes = 65536

// Proto is what a local user asks to send: the server fills in the rest.
type Proto struct {
	Type     string
	StateKey *string
	Content  json.RawMessage
	Sender   string
	// Redacts names the event an m.room.redaction removes.
	Redacts string
}

// Signer signs events as this server.
type Signer struct {
	ServerName string
	KeyID      id.KeyID
	Key        ed25519.PrivateKey
}

// build creates, hashes and signs an event.
func (s *Signer) build(version id.RoomVersion, roomID string, p Proto, prev, auth []*Event, depth, ts int64) (*Event, error) {
	content := p.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	if err := checkCanonical(content); err != nil {
		return nil, err
	}
	var redacts *id.EventID
	if p.Type == "m.room.redaction" && p.Redacts != "" {
		if version.RedactsInContent() {
			c, err := sjson.SetBytes(content, "redacts", p.Redacts)
			if err != nil {
				return nil, mxerr.BadJSON("Content must be a JSON object")
			}
			content = c
		} else {
			r := id.EventID(p.Redacts)
			redacts = &r
		}
	}
	if version.EventIDFormat() == id.EventIDFormatCustom {
		return s.buildV1(version, roomID, p, content, redacts, prev, auth, depth, ts)
	}
	ev := &pdu.PDU{
		Content: content, Depth: depth, OriginServerTS: ts, Redacts: redacts,
		RoomID: id.RoomID(roomID), Sender: id.UserID(p.Sender), StateKey: p.StateKey, Type: p.Type,
		AuthEvents: make([]id.EventID, 0, len(auth)), PrevEvents: make([]id.EventID, 0, len(prev)),
	}
	if p.Type == "m.room.create" && version.RoomIDIsCreateEventID() {
		ev.RoomID = ""
	}
	for _, a := range auth {
		ev.AuthEvents = append(ev.AuthEvents, id.EventID(a.EventID))
	}
	for _, pr := range prev {
		ev.PrevEvents = append(ev.PrevEvents, id.EventID(pr.EventID))
	}
	if err := ev.Sign(version, s.ServerName, s.KeyID, s.Key); err != nil {
		return nil, fmt.Errorf("sign event: %w", err)
	}
	eventID, err := ev.GetEventID(version)
	if err != nil {
		return nil, fmt.Errorf("event ID: %w", err)
	}
	raw, err := jsonv2.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	ev.InternalMeta.EventID = eventID
	if ev.RoomID == "" {
		// A v12 create event has no room_id (auth rule 1.2); its room ID
		// is its event ID with the other sigil.
		roomID = "!" + strings.TrimPrefix(string(eventID), "$")
	}
	return s.finish(version, roomID, ev, raw)
}

func (s *Signer) buildV1(version id.RoomVersion, roomID string, p Proto, content []byte, redacts *id.EventID, prev, auth []*Event, depth, ts int64) (*Event, error) {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	eventID := id.EventID("$" + base64.RawURLEncoding.EncodeToString(b) + ":" + s.ServerName)
	ev := &pdu.RoomV1PDU{
		Content: content, Depth: depth, EventID: eventID, OriginServerTS: ts, Redacts: redacts,
		RoomID: id.RoomID(roomID), Sender: id.UserID(p.Sender), StateKey: p.StateKey, Type: p.Type,
		AuthEvents: []pdu.V1EventReference{}, PrevEvents: []pdu.V1EventReference{},
	}
	ref := func(e *Event) pdu.V1EventReference {
		r := pdu.V1EventReference{ID: id.EventID(e.EventID)}
		if e.PDU.Hashes != nil {
			r.Hashes = *e.PDU.Hashes
		}
		return r
	}
	for _, a := range auth {
		ev.AuthEvents = append(ev.AuthEvents, ref(a))
	}
	for _, pr := range prev {
		ev.PrevEvents = append(ev.PrevEvents, ref(pr))
	}
	if err := ev.Sign(version, s.ServerName, s.KeyID, s.Key); err != nil {
		return nil, fmt.Errorf("sign event: %w", err)
	}
	raw, err := jsonv2.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	p2, err := parsePDU(raw, version, string(eventID))
	if err != nil {
		return nil, err
	}
	return s.finish(version, roomID, p2, raw)
}

// finish checks the size limit and wraps the PDU.
func (s *Signer) finish(version id.RoomVersion, roomID string, ev *pdu.PDU, raw []byte) (*Event, error) {
	if len(raw) > MaxEventBytes {
		return nil, mxerr.TooLarge("Event is larger than %d bytes", MaxEventBytes)
	}
	row := storage.Event{
		EventID: string(ev.InternalMeta.EventID), Type: ev.Type, StateKey: ev.StateKey, Sender: string(ev.Sender),
		Depth: ev.Depth, OriginTS: ev.OriginServerTS, JSON: raw,
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil {
		m := membershipOf(ev.Content)
		row.Membership = &m
	}
	if rel, typ := relation(ev.Content); rel != "" {
		row.RelatesTo = &rel
		if typ != "" {
			row.RelType = &typ
		}
	}
	return &Event{Event: row, Version: version, PDU: ev, RoomID: roomID}, nil
}
