package rooms

import (
	"context"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// SendParams describe an event a local user sends.
type SendParams struct {
	RoomID   string
	Sender   string
	DeviceID string
	// TxnID makes the send idempotent for this device and path.
	TxnID    string
	Type     string
	StateKey *string
	Content  json.RawMessage
}

// Limits on identifiers the client chooses.
const (
	maxTypeBytes     = 255
	maxStateKeyBytes = 255
	maxTxnIDBytes    = 255
)

// ValidRoomID reports whether s has the shape of a room ID.
func ValidRoomID(s string) bool {
	return len(s) > 1 && len(s) <= 255 && s[0] == '!' && printable(s)
}

// ValidEventID reports whether s has the shape of an event ID.
func ValidEventID(s string) bool {
	return len(s) > 1 && len(s) <= 255 && s[0] == '$' && printable(s)
}

// printable reports whether s is valid UTF-8 without spaces or control
// characters (NUL among them, which PostgreSQL cannot store in text).
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// noControl reports whether s is valid UTF-8 without control characters.
func noControl(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// ValidUserID reports whether s is a syntactically valid user ID.
func ValidUserID(s string) bool {
	if len(s) < 4 || len(s) > 255 || s[0] != '@' {
		return false
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok || local == "" || server == "" {
		return false
	}
	for _, c := range local {
		if c < 0x21 || c > 0x7e || c == ':' {
			return false
		}
	}
	return printable(server) && !strings.ContainsAny(server, "/\\@")
}

func validateSend(p SendParams) error {
	if !ValidRoomID(p.RoomID) {
		return mxerr.InvalidParam("%q is not a valid room ID", p.RoomID)
	}
	if p.Type == "" || len(p.Type) > maxTypeBytes || !noControl(p.Type) {
		return mxerr.InvalidParam("Event type must be 1–%d bytes without control characters", maxTypeBytes)
	}
	if p.StateKey != nil && (len(*p.StateKey) > maxStateKeyBytes || !noControl(*p.StateKey)) {
		return mxerr.InvalidParam("State key must be at most %d bytes without control characters", maxStateKeyBytes)
	}
	if len(p.TxnID) > maxTxnIDBytes || !noControl(p.TxnID) {
		return mxerr.InvalidParam("Transaction ID must be at most %d bytes without control characters", maxTxnIDBytes)
	}
	if len(p.Content) > MaxEventBytes {
		return mxerr.TooLarge("Event is larger than %d bytes", MaxEventBytes)
	}
	if !gjson.ValidBytes(p.Content) || !gjson.ParseBytes(p.Content).IsObject() {
		return mxerr.BadJSON("Event content must be a JSON object")
	}
	return checkCanonical(p.Content)
}

// Send appends a message or state event from a local user and returns its
// event ID. A repeated (device, path, txn) answers with the first event.
func (e *Engine) Send(ctx context.Context, p SendParams) (string, error) {
	if err := validateSend(p); err != nil {
		return "", err
	}
	content, err := compactJSON(p.Content)
	if err != nil {
		return "", mxerr.BadJSON("Event content is not valid JSON")
	}
	m, err := e.meta(ctx, p.RoomID)
	if err != nil {
		return "", err
	}
	proto := Proto{Type: p.Type, StateKey: p.StateKey, Content: content, Sender: p.Sender}
	req := &request{roomID: m.ID, protos: []Proto{proto}}
	if p.TxnID != "" && p.DeviceID != "" {
		scope := "send/" + p.RoomID + "/" + p.Type
		if p.StateKey != nil {
			scope = "state/" + p.RoomID + "/" + p.Type + "/" + *p.StateKey
		}
		req.txn = &storage.TxnKey{UserID: p.Sender, DeviceID: p.DeviceID, Scope: scope, TxnID: p.TxnID}
	}
	if err := e.checkContent(ctx, m, proto); err != nil {
		return "", err
	}
	if p.StateKey == nil {
		if err := e.checkRelation(ctx, m, p.Sender, content); err != nil {
			return "", err
		}
	}
	if p.Type == "m.room.redaction" {
		target := gjson.GetBytes(content, "redacts").String()
		if !ValidEventID(target) {
			return "", mxerr.BadJSON("m.room.redaction needs content.redacts")
		}
		req.protos[0].Redacts = target
		req.check = e.redactionCheck(target)
	}
	res := e.persister.submit(ctx, req)
	if res.err != nil {
		return "", res.err
	}
	if res.dup != "" {
		return res.dup, nil
	}
	return res.events[0].EventID, nil
}

// Redact redacts an event; reason is optional.
func (e *Engine) Redact(ctx context.Context, sender, deviceID, txnID, roomID, eventID, reason string) (string, error) {
	if !ValidRoomID(roomID) {
		return "", mxerr.InvalidParam("%q is not a valid room ID", roomID)
	}
	if !ValidEventID(eventID) {
		return "", mxerr.InvalidParam("%q is not a valid event ID", eventID)
	}
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return "", err
	}
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	if m.Version.RedactsInContent() {
		content["redacts"] = eventID
	}
	b, _ := json.Marshal(content)
	req := &request{roomID: m.ID, protos: []Proto{{Type: "m.room.redaction", Content: b, Sender: sender, Redacts: eventID}},
		check: e.redactionCheck(eventID)}
	if txnID != "" && deviceID != "" {
		req.txn = &storage.TxnKey{UserID: sender, DeviceID: deviceID, Scope: "redact/" + roomID + "/" + eventID, TxnID: txnID}
	}
	res := e.persister.submit(ctx, req)
	if res.err != nil {
		return "", res.err
	}
	if res.dup != "" {
		return res.dup, nil
	}
	return res.events[0].EventID, nil
}

// redactionCheck refuses redactions of unknown events and of other
// people's events without the power to redact.
func (e *Engine) redactionCheck(target string) func(ctx context.Context, h *head, ev *Event) error {
	return func(ctx context.Context, h *head, ev *Event) error {
		evs, err := e.eventsByID(ctx, e.db.Read(), []string{target})
		if err != nil {
			return err
		}
		t, ok := evs[target]
		if !ok || t.RoomNID != h.meta.NID {
			return mxerr.NotFound("Event to redact not found in this room")
		}
		if t.Sender == ev.Sender {
			return nil
		}
		pl := h.state[storage.StateKey{Type: "m.room.power_levels"}]
		if pl == nil {
			if pl, err = e.currentStateEvent(ctx, e.db.Read(), h.meta.NID, "m.room.power_levels", ""); err != nil {
				return err
			}
		}
		lv := newLevels(pl, h.create)
		if lv.user(ev.Sender) < lv.redact() {
			return mxerr.Forbidden("You may only redact your own events (redact needs power level %d)", lv.redact())
		}
		return nil
	}
}

// checkContent applies the client-server rules for particular state
// events beyond the auth rules.
func (e *Engine) checkContent(ctx context.Context, m *roomMeta, p Proto) error {
	if p.StateKey == nil {
		return nil
	}
	switch p.Type {
	case "m.room.canonical_alias":
		return e.checkCanonicalAlias(ctx, m, p.Content)
	case "m.room.member":
		mem := membershipOf(p.Content)
		switch mem {
		case "join", "leave", "invite", "ban", "knock":
		default:
			return mxerr.BadJSON("Unknown membership %q", mem)
		}
		if !ValidUserID(*p.StateKey) {
			return mxerr.InvalidParam("State key of m.room.member must be a user ID")
		}
	case "m.room.create":
		return mxerr.Forbidden("A room has only one m.room.create event (auth rule 1.1)")
	}
	return nil
}

// checkCanonicalAlias requires that the aliases exist and point here.
func (e *Engine) checkCanonicalAlias(ctx context.Context, m *roomMeta, content []byte) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return mxerr.BadJSON("Invalid m.room.canonical_alias content")
	}
	aliases := c.AltAliases
	if c.Alias != nil && *c.Alias != "" {
		aliases = append(aliases, *c.Alias)
	}
	for _, a := range aliases {
		if !ValidAlias(a) {
			return mxerr.Custom(400, "M_INVALID_PARAM", "%q is not a valid room alias", a)
		}
		if !strings.HasSuffix(a, ":"+e.cfg.ServerName) {
			// Remote aliases cannot be checked without federation.
			continue
		}
		got, err := e.store.AliasGet(ctx, a)
		if err != nil || got.RoomNID != m.NID {
			return mxerr.Custom(400, "M_BAD_ALIAS", "Alias %s does not point to this room", a)
		}
	}
	return nil
}

// ValidAlias reports whether s has the shape of a room alias.
func ValidAlias(s string) bool {
	if len(s) < 4 || len(s) > 255 || s[0] != '#' {
		return false
	}
	local, server, ok := strings.Cut(s[1:], ":")
	return ok && local != "" && server != "" && !strings.ContainsAny(s, " \t\n")
}

func ptr[T any](v T) *T { return &v }

// checkRelation enforces the server-side rules on relations: a thread
// cannot start from an event that is itself a relation (or in a thread),
// and a user may not annotate an event twice with the same key.
func (e *Engine) checkRelation(ctx context.Context, m *roomMeta, sender string, content []byte) error {
	parent, relType := relation(content)
	if parent == "" {
		return nil
	}
	switch relType {
	case "m.thread":
		ev, err := e.eventByID(ctx, parent)
		if err != nil || ev.RoomNID != m.NID {
			return nil
		}
		if ev.RelatesTo != nil {
			return mxerr.Custom(400, "M_UNKNOWN", "Cannot start a thread from an event that has a relation")
		}
	case "m.annotation":
		key := gjson.GetBytes(content, `m\.relates_to.key`).String()
		existing, err := e.store.AnnotationsBySender(ctx, parent, sender)
		if err != nil {
			return err
		}
		for _, raw := range existing {
			if gjson.GetBytes(raw, `content.m\.relates_to.key`).String() == key {
				return mxerr.Custom(400, "M_DUPLICATE_ANNOTATION", "You already annotated this event with %q", key)
			}
		}
	}
	return nil
}
