package push

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/mxerr"
)

// kinds are the kinds of push rules, in the order they are checked.
var kinds = []string{"override", "content", "room", "sender", "underride"}

// Limits on what users store.
const (
	// MaxUserRules bounds a user's own rules, all kinds together.
	MaxUserRules = 200
	// MaxConditions bounds one rule's conditions.
	MaxConditions = 20
	// MaxActions bounds one rule's actions.
	MaxActions = 20
	// MaxRuleBytes bounds one rule as JSON.
	MaxRuleBytes = 8192
	// MaxRulesetBytes bounds a user's whole ruleset as JSON (it is also
	// their m.push_rules account data, bounded like any account data).
	MaxRulesetBytes = 65536
	// maxRuleIDBytes bounds rule IDs (room and user IDs fit).
	maxRuleIDBytes = 255
	// maxStringBytes bounds each string inside a rule.
	maxStringBytes = 1024
)

// Rule is a push rule as clients see it.
type Rule struct {
	RuleID  string            `json:"rule_id"`
	Default bool              `json:"default"`
	Enabled bool              `json:"enabled"`
	Actions []json.RawMessage `json:"actions"`
	// Conditions are set (possibly empty) on override and underride rules.
	Conditions []json.RawMessage `json:"conditions,omitempty"`
	// Pattern is set on content rules.
	Pattern *string `json:"pattern,omitempty"`
}

// MarshalJSON writes conditions as [] rather than leaving them out on
// override and underride rules that have none; kind is not known here, so
// a non-nil empty slice is what asks for it.
func (r Rule) MarshalJSON() ([]byte, error) {
	type plain Rule
	if r.Actions == nil {
		r.Actions = []json.RawMessage{}
	}
	if r.Conditions != nil && len(r.Conditions) == 0 {
		return json.Marshal(struct {
			plain
			Conditions []json.RawMessage `json:"conditions"`
		}{plain(r), []json.RawMessage{}})
	}
	return json.Marshal(plain(r))
}

// Ruleset is the global push ruleset of a user.
type Ruleset struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

// Kind returns the rules of one kind.
func (rs *Ruleset) Kind(kind string) []Rule {
	switch kind {
	case "override":
		return rs.Override
	case "content":
		return rs.Content
	case "room":
		return rs.Room
	case "sender":
		return rs.Sender
	case "underride":
		return rs.Underride
	}
	return nil
}

func (rs *Ruleset) set(kind string, rules []Rule) {
	if rules == nil {
		rules = []Rule{}
	}
	switch kind {
	case "override":
		rs.Override = rules
	case "content":
		rs.Content = rules
	case "room":
		rs.Room = rules
	case "sender":
		rs.Sender = rules
	case "underride":
		rs.Underride = rules
	}
}

// RuleBody is the body of PUT /pushrules/global/{kind}/{ruleId}.
type RuleBody struct {
	Actions    []json.RawMessage `json:"actions"`
	Conditions []json.RawMessage `json:"conditions"`
	Pattern    *string           `json:"pattern"`
}

// document is what the server stores of a user's push rules: only what
// the user changed.
type document struct {
	// Rules are the user's own rules by kind, most important first.
	Rules map[string][]storedRule `json:"rules,omitempty"`
	// Defaults are the user's changes to server-default rules, keyed by
	// "kind/rule_id".
	Defaults map[string]defaultChange `json:"defaults,omitempty"`
}

type storedRule struct {
	RuleID     string            `json:"rule_id"`
	Enabled    bool              `json:"enabled"`
	Actions    []json.RawMessage `json:"actions"`
	Conditions []json.RawMessage `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
}

type defaultChange struct {
	Enabled *bool              `json:"enabled,omitempty"`
	Actions *[]json.RawMessage `json:"actions,omitempty"`
}

func (d *document) count() int {
	n := 0
	for _, rs := range d.Rules {
		n += len(rs)
	}
	return n
}

func (d *document) find(kind, ruleID string) int {
	for i, r := range d.Rules[kind] {
		if r.RuleID == ruleID {
			return i
		}
	}
	return -1
}

// ruleset assembles the effective ruleset of a user from the defaults
// and their changes: .m.rule.master first, then the user's rules of each
// kind, then the other server-default rules of that kind.
func (d *document) ruleset(userID string) *Ruleset {
	rs := &Ruleset{}
	for _, kind := range kinds {
		var out []Rule
		defs := defaults.byKind[kind]
		for _, dr := range defs {
			if dr.RuleID == masterRule {
				out = append(out, d.applyDefault(kind, dr, userID))
			}
		}
		for _, r := range d.Rules[kind] {
			out = append(out, r.rule(kind))
		}
		for _, dr := range defs {
			if dr.RuleID != masterRule {
				out = append(out, d.applyDefault(kind, dr, userID))
			}
		}
		rs.set(kind, out)
	}
	return rs
}

func (d *document) applyDefault(kind string, dr *defaultRule, userID string) Rule {
	r := dr.Rule
	r.Default = true
	if ch, ok := d.Defaults[kind+"/"+dr.RuleID]; ok {
		if ch.Enabled != nil {
			r.Enabled = *ch.Enabled
		}
		if ch.Actions != nil {
			r.Actions = *ch.Actions
		}
	}
	if r.Conditions != nil {
		conds := make([]json.RawMessage, len(r.Conditions))
		quoted, _ := json.Marshal(userID)
		for i, c := range r.Conditions {
			conds[i] = bytes.ReplaceAll(c, []byte(`"`+self+`"`), quoted)
		}
		r.Conditions = conds
	}
	return r
}

func (s storedRule) rule(kind string) Rule {
	r := Rule{RuleID: s.RuleID, Enabled: s.Enabled, Actions: s.Actions}
	switch kind {
	case "override", "underride":
		r.Conditions = s.Conditions
		if r.Conditions == nil {
			r.Conditions = []json.RawMessage{}
		}
	case "content":
		r.Pattern = s.Pattern
	}
	return r
}

// parseDocument reads a stored document; "" is a user without changes.
func parseDocument(raw string) (*document, error) {
	d := &document{}
	if raw == "" {
		return d, nil
	}
	if err := json.Unmarshal([]byte(raw), d); err != nil {
		return nil, err
	}
	return d, nil
}

// validKind checks a kind from the path.
func validKind(kind string) error {
	for _, k := range kinds {
		if k == kind {
			return nil
		}
	}
	return mxerr.InvalidParam("Unknown push rule kind %q: use override, content, room, sender or underride", kind)
}

// validNewRuleID checks the ID of a rule a user creates or replaces.
func validNewRuleID(kind, ruleID string) error {
	switch {
	case ruleID == "":
		return mxerr.InvalidParam("The rule ID is empty")
	case len(ruleID) > maxRuleIDBytes:
		return mxerr.InvalidParam("The rule ID is longer than %d bytes", maxRuleIDBytes)
	case !utf8.ValidString(ruleID):
		return mxerr.InvalidParam("The rule ID is not valid UTF-8")
	case strings.HasPrefix(ruleID, "."):
		return mxerr.InvalidParam("Rule IDs starting with '.' are reserved for server-default rules")
	case strings.ContainsAny(ruleID, `/\`):
		return mxerr.InvalidParam("Rule IDs may not contain slashes or backslashes")
	case kind == "room" && !rooms.ValidRoomID(ruleID):
		return mxerr.InvalidParam("The ID of a room rule must be the room's ID")
	case kind == "sender" && !rooms.ValidUserID(ruleID):
		return mxerr.InvalidParam("The ID of a sender rule must be the sender's user ID")
	}
	return nil
}

// validateActions checks actions and returns them compacted, without the
// historical dont_notify and coalesce (which the spec says to strip).
func validateActions(actions []json.RawMessage) ([]json.RawMessage, error) {
	if len(actions) > MaxActions {
		return nil, mxerr.TooLarge("A rule has at most %d actions", MaxActions)
	}
	out := make([]json.RawMessage, 0, len(actions))
	for _, a := range actions {
		a = bytes.TrimSpace(a)
		switch {
		case len(a) > 0 && a[0] == '"':
			var s string
			if err := json.Unmarshal(a, &s); err != nil {
				return nil, mxerr.BadJSON("Invalid action")
			}
			switch s {
			case "notify":
				out = append(out, json.RawMessage(`"notify"`))
			case "dont_notify", "coalesce":
			default:
				return nil, mxerr.InvalidParam("Unknown action %q", s)
			}
		case len(a) > 0 && a[0] == '{':
			var t struct {
				SetTweak *string `json:"set_tweak"`
			}
			if err := json.Unmarshal(a, &t); err != nil || t.SetTweak == nil || *t.SetTweak == "" {
				return nil, mxerr.InvalidParam("An action object must set a tweak with set_tweak")
			}
			if len(*t.SetTweak) > maxStringBytes {
				return nil, mxerr.InvalidParam("Tweak name is too long")
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, a); err != nil {
				return nil, mxerr.BadJSON("Invalid action")
			}
			out = append(out, buf.Bytes())
		default:
			return nil, mxerr.InvalidParam("An action is a string or an object")
		}
	}
	return out, nil
}

// memberCountRE is the syntax of room_member_count's "is".
var memberCountRE = regexp.MustCompile(`^(==|<|>|<=|>=)?([0-9]{1,9})$`)

// condition is a push condition's fields.
type condition struct {
	Kind    *string         `json:"kind"`
	Key     *string         `json:"key"`
	Pattern *string         `json:"pattern"`
	Is      *string         `json:"is"`
	Value   json.RawMessage `json:"value"`
}

// validateConditions checks conditions and returns them compacted.
// Conditions of unknown kinds are kept: they never match (the spec's
// rule for conditions a server does not recognise).
func validateConditions(conds []json.RawMessage) ([]json.RawMessage, error) {
	if len(conds) > MaxConditions {
		return nil, mxerr.TooLarge("A rule has at most %d conditions", MaxConditions)
	}
	out := make([]json.RawMessage, 0, len(conds))
	for i, raw := range conds {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || raw[0] != '{' {
			return nil, mxerr.InvalidParam("Condition %d is not an object", i)
		}
		var c condition
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, mxerr.InvalidParam("Condition %d has a field of the wrong type", i)
		}
		if err := c.validate(); err != nil {
			return nil, mxerr.InvalidParam("Condition %d: %s", i, err.Error())
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return nil, mxerr.BadJSON("Invalid condition")
		}
		out = append(out, buf.Bytes())
	}
	return out, nil
}

type condError string

func (e condError) Error() string { return string(e) }

func (c *condition) validate() error {
	if c.Kind == nil || *c.Kind == "" {
		return condError("kind is required")
	}
	for _, s := range []*string{c.Kind, c.Key, c.Pattern, c.Is} {
		if s != nil && len(*s) > maxStringBytes {
			return condError("a field is longer than " + strconv.Itoa(maxStringBytes) + " bytes")
		}
	}
	needKey := func() error {
		if c.Key == nil || *c.Key == "" {
			return condError("key is required")
		}
		return nil
	}
	switch *c.Kind {
	case "event_match":
		if err := needKey(); err != nil {
			return err
		}
		if c.Pattern == nil {
			return condError("pattern is required")
		}
	case "event_property_is", "event_property_contains":
		if err := needKey(); err != nil {
			return err
		}
		if c.Value == nil {
			return condError("value is required")
		}
		if _, ok := parseScalar(c.Value); !ok {
			return condError("value must be a string, an integer within ±(2^53-1), a boolean or null")
		}
		if len(c.Value) > maxStringBytes+2 {
			return condError("value is too long")
		}
	case "room_member_count":
		if c.Is == nil || !memberCountRE.MatchString(*c.Is) {
			return condError("is must be a number optionally prefixed by ==, <, >, <= or >=")
		}
	case "sender_notification_permission":
		return needKey()
	}
	return nil
}

// ruleSizeError is the error for a rule larger than MaxRuleBytes.
func ruleSizeError() error {
	return mxerr.TooLarge("A push rule is at most %d bytes of JSON", MaxRuleBytes)
}

// errNotFound is the answer for rules that do not exist.
func errNotFound() error { return mxerr.NotFound("The push rule was not found.") }

// errRelative is the spec's error for a before/after rule that does not exist.
func errRelative(ruleID string) error {
	return mxerr.Custom(http.StatusBadRequest, "M_UNKNOWN", "before/after rule not found: %s", ruleID)
}
