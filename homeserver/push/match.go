package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/lru"
)

// Matching is ours rather than mautrix's pushrules package, which was
// checked for this: it treats a wildcard-free event_match pattern as a
// substring match (the spec matches the whole value, so "m.notice" would
// also match "xm.noticey", and the tombstone rule's empty state_key
// pattern would match any state key), stringifies non-string values for
// event_match (the spec says they never match), uses \b around content
// patterns (wrong for patterns that begin or end with a non-word
// character such as "@room"), and compiles globs and regular expressions
// on every evaluation. Here rules are compiled once per ruleset, and the
// server-default rules once per process.

// crule is a compiled push rule.
type crule struct {
	kind, id string
	enabled  bool
	// never is set when a condition is of a kind this server does not
	// recognise: the rule then matches nothing.
	never bool
	conds []*cond
	// body is a content rule's pattern, matched against content.body.
	body *regexp.Regexp
	// actions is the actions array as JSON; notify and highlight are
	// what it says.
	actions           string
	notify, highlight bool
}

type condKind int

const (
	condEventMatch condKind = iota
	condPropertyIs
	condPropertyContains
	condDisplayName
	condMemberCount
	condSenderPermission
)

// cond is a compiled condition.
type cond struct {
	kind condKind
	path []string
	// event_match: a literal (compared case-insensitively) or a regexp.
	literal *string
	re      *regexp.Regexp
	// value is event_property_is/contains' value.
	value scalar
	// self: the pattern or value is the evaluated user's own ID.
	self bool
	// room_member_count.
	op string
	n  int
	// sender_notification_permission.
	key string
}

// perMember reports whether the condition's outcome depends on the user
// being evaluated; the others are worked out once per event.
func (c *cond) perMember() bool { return c.self || c.kind == condDisplayName }

// ruleset is a user's compiled rules, in priority order.
type ruleset struct {
	override, content, underride []*crule
	room, sender                 map[string]*crule
}

// roomInfo is what conditions need to know about the room at the
// event (rooms.PushRoom in the server).
type roomInfo interface {
	MemberCount() int
	UserLevel(userID string) int64
	NotificationLevel(key string) int64
	DisplayName(ctx context.Context, userID string) string
}

// view is one event as push rules see it, with what was worked out about
// it while evaluating earlier members.
type view struct {
	ctx   context.Context
	ev    *rooms.Event
	room  roomInfo
	names *lru.Cache[string, *regexp.Regexp]

	content       map[string]any
	contentParsed bool
	memo          map[*cond]bool
}

func newView(ctx context.Context, ev *rooms.Event, room roomInfo, names *lru.Cache[string, *regexp.Regexp]) *view {
	return &view{ctx: ctx, ev: ev, room: room, names: names, memo: map[*cond]bool{}}
}

// match returns the rule that decides the event for user (nil: none).
func (rs *ruleset) match(v *view, user string) *crule {
	for _, r := range rs.override {
		if r.match(v, user) {
			return r
		}
	}
	for _, r := range rs.content {
		if r.match(v, user) {
			return r
		}
	}
	if r := rs.room[v.ev.RoomID]; r != nil && r.match(v, user) {
		return r
	}
	if r := rs.sender[v.ev.Sender]; r != nil && r.match(v, user) {
		return r
	}
	for _, r := range rs.underride {
		if r.match(v, user) {
			return r
		}
	}
	return nil
}

func (r *crule) match(v *view, user string) bool {
	if !r.enabled || r.never {
		return false
	}
	switch r.kind {
	case "override", "underride":
		for _, c := range r.conds {
			if !c.match(v, user) {
				return false
			}
		}
		return true
	case "content":
		body, ok := v.lookup([]string{"content", "body"})
		s, isStr := body.(string)
		return ok && isStr && r.body != nil && r.body.MatchString(s)
	case "room":
		return r.id == v.ev.RoomID
	case "sender":
		return r.id == v.ev.Sender
	}
	return false
}

func (c *cond) match(v *view, user string) bool {
	if c.perMember() {
		return c.eval(v, user)
	}
	if res, ok := v.memo[c]; ok {
		return res
	}
	res := c.eval(v, user)
	v.memo[c] = res
	return res
}

func (c *cond) eval(v *view, user string) bool {
	switch c.kind {
	case condEventMatch:
		val, ok := v.lookup(c.path)
		s, isStr := val.(string)
		if !ok || !isStr {
			return false
		}
		switch {
		case c.self:
			return strings.EqualFold(s, user)
		case c.literal != nil:
			return strings.EqualFold(s, *c.literal)
		default:
			return c.re.MatchString(s)
		}
	case condPropertyIs:
		val, ok := v.lookup(c.path)
		if !ok {
			return false
		}
		sv, ok := scalarOf(val)
		return ok && sv == c.want(user)
	case condPropertyContains:
		val, ok := v.lookup(c.path)
		arr, isArr := val.([]any)
		if !ok || !isArr {
			return false
		}
		want := c.want(user)
		for _, x := range arr {
			if sv, ok := scalarOf(x); ok && sv == want {
				return true
			}
		}
		return false
	case condDisplayName:
		body, ok := v.lookup([]string{"content", "body"})
		s, isStr := body.(string)
		if !ok || !isStr {
			return false
		}
		name := v.room.DisplayName(v.ctx, user)
		if name == "" {
			return false
		}
		re, ok := v.names.Get(name)
		if !ok {
			re = regexp.MustCompile(bodyRegexp(regexp.QuoteMeta(name)))
			v.names.Put(name, re)
		}
		return re.MatchString(s)
	case condMemberCount:
		n := v.room.MemberCount()
		switch c.op {
		case "<":
			return n < c.n
		case ">":
			return n > c.n
		case "<=":
			return n <= c.n
		case ">=":
			return n >= c.n
		default:
			return n == c.n
		}
	case condSenderPermission:
		return v.room.UserLevel(v.ev.Sender) >= v.room.NotificationLevel(c.key)
	}
	return false
}

func (c *cond) want(user string) scalar {
	if c.self {
		return scalar{t: 's', s: user}
	}
	return c.value
}

// lookup resolves a dot-separated property path on the event.
func (v *view) lookup(path []string) (any, bool) {
	if len(path) == 0 {
		return nil, false
	}
	ev := v.ev
	if path[0] != "content" {
		if len(path) != 1 {
			return nil, false
		}
		switch path[0] {
		case "type":
			return ev.Type, true
		case "sender":
			return ev.Sender, true
		case "room_id":
			return ev.RoomID, true
		case "event_id":
			return ev.EventID, true
		case "state_key":
			if ev.StateKey == nil {
				return nil, false
			}
			return *ev.StateKey, true
		case "origin_server_ts":
			return json.Number(strconv.FormatInt(ev.OriginTS, 10)), true
		}
		return nil, false
	}
	if !v.contentParsed {
		v.contentParsed = true
		dec := json.NewDecoder(bytes.NewReader(ev.Content()))
		dec.UseNumber()
		_ = dec.Decode(&v.content)
	}
	if v.content == nil {
		return nil, false
	}
	var cur any = v.content
	for _, p := range path[1:] {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// splitPath splits a dot-separated property path: "\." is a literal dot,
// "\\" a literal backslash, any other escape is kept as written.
func splitPath(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String())
}

// scalar is a non-compound JSON value: a string, an integer, a boolean or
// null (the values event_property_is and _contains compare).
type scalar struct {
	t byte // 's', 'i', 'b' or 'n'
	s string
	i int64
	b bool
}

// maxSafeInt is the canonical JSON integer range's bound.
const maxSafeInt = 1<<53 - 1

// parseScalar reads a condition's value.
func parseScalar(raw json.RawMessage) (scalar, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return scalar{}, false
	}
	return scalarOf(v)
}

// scalarOf converts a decoded value (numbers as json.Number).
func scalarOf(v any) (scalar, bool) {
	switch x := v.(type) {
	case string:
		return scalar{t: 's', s: x}, true
	case bool:
		return scalar{t: 'b', b: x}, true
	case nil:
		return scalar{t: 'n'}, true
	case json.Number:
		i, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil || i > maxSafeInt || i < -maxSafeInt {
			return scalar{}, false
		}
		return scalar{t: 'i', i: i}, true
	}
	return scalar{}, false
}

// globRegexp turns a glob (* any run of characters, ? one character)
// into a regular expression body.
func globRegexp(pattern string) string {
	var b strings.Builder
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	return b.String()
}

// bodyRegexp wraps an expression so that it matches, case-insensitively,
// a substring that starts and ends at a word boundary: the start or end
// of the value, or a character outside [A-Za-z0-9_].
func bodyRegexp(expr string) string {
	return `(?is)(?:^|(?-i:[^A-Za-z0-9_]))(?:` + expr + `)(?:(?-i:[^A-Za-z0-9_])|$)`
}

var errBadRule = errors.New("invalid push rule")

// compileRule compiles one rule. Conditions of unknown kinds make a rule
// that never matches; invalid known ones are an error (stored rules were
// validated, so this only guards against corrupt data).
func compileRule(kind, id string, enabled bool, actions, conditions []json.RawMessage, pattern *string) (*crule, error) {
	r := &crule{kind: kind, id: id, enabled: enabled}
	if actions == nil {
		actions = []json.RawMessage{}
	}
	b, err := json.Marshal(actions)
	if err != nil {
		return nil, err
	}
	r.actions = string(b)
	r.notify, r.highlight = actionFlags(actions)
	switch kind {
	case "override", "underride":
		for _, raw := range conditions {
			c, known, err := compileCond(raw)
			if err != nil {
				return nil, err
			}
			if !known {
				r.never = true
				continue
			}
			r.conds = append(r.conds, c)
		}
	case "content":
		if pattern == nil {
			r.never = true
			break
		}
		if r.body, err = regexp.Compile(bodyRegexp(globRegexp(*pattern))); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// actionFlags reads whether actions notify and highlight. A highlight
// tweak without a value (or with null, which some clients send for "no
// value") highlights; with false, or anything but true, it does not.
func actionFlags(actions []json.RawMessage) (notify, highlight bool) {
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			if s == "notify" {
				notify = true
			}
			continue
		}
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) == nil && t.SetTweak == "highlight" {
			v := bytes.TrimSpace(t.Value)
			highlight = t.Value == nil || bytes.Equal(v, []byte("null")) || bytes.Equal(v, []byte("true"))
		}
	}
	return notify, highlight
}

func compileCond(raw json.RawMessage) (*cond, bool, error) {
	var c condition
	if err := json.Unmarshal(raw, &c); err != nil || c.Kind == nil {
		return nil, false, errBadRule
	}
	if err := c.validate(); err != nil {
		return nil, false, err
	}
	out := &cond{}
	if c.Key != nil {
		out.path = splitPath(*c.Key)
		out.key = *c.Key
	}
	switch *c.Kind {
	case "event_match":
		out.kind = condEventMatch
		p := *c.Pattern
		switch {
		case p == self:
			out.self = true
		case *c.Key == "content.body":
			re, err := regexp.Compile(bodyRegexp(globRegexp(p)))
			if err != nil {
				return nil, false, err
			}
			out.re = re
		case !strings.ContainsAny(p, "*?"):
			out.literal = &p
		default:
			re, err := regexp.Compile(`(?is)^(?:` + globRegexp(p) + `)$`)
			if err != nil {
				return nil, false, err
			}
			out.re = re
		}
	case "event_property_is", "event_property_contains":
		out.kind = condPropertyIs
		if *c.Kind == "event_property_contains" {
			out.kind = condPropertyContains
		}
		out.value, _ = parseScalar(c.Value)
		if out.value.t == 's' && out.value.s == self {
			out.self = true
		}
	case "contains_display_name":
		out.kind = condDisplayName
	case "room_member_count":
		out.kind = condMemberCount
		m := memberCountRE.FindStringSubmatch(*c.Is)
		out.op = m[1]
		out.n, _ = strconv.Atoi(m[2])
	case "sender_notification_permission":
		out.kind = condSenderPermission
	default:
		return nil, false, nil
	}
	return out, true, nil
}

// defaultRuleset is the compiled ruleset of every user who changed nothing.
var defaultRuleset = compileRuleset(&document{})

// compileRuleset compiles a user's effective rules. Server-default rules
// the user did not change are shared by every user, so their conditions'
// per-event results are shared too.
func compileRuleset(d *document) *ruleset {
	rs := &ruleset{room: map[string]*crule{}, sender: map[string]*crule{}}
	add := func(kind string, r *crule) {
		switch kind {
		case "override":
			rs.override = append(rs.override, r)
		case "content":
			rs.content = append(rs.content, r)
		case "room":
			rs.room[r.id] = r
		case "sender":
			rs.sender[r.id] = r
		case "underride":
			rs.underride = append(rs.underride, r)
		}
	}
	def := func(kind string, dr *defaultRule) *crule {
		ch, ok := d.Defaults[kind+"/"+dr.RuleID]
		if !ok {
			return dr.compiled
		}
		c := *dr.compiled
		if ch.Enabled != nil {
			c.enabled = *ch.Enabled
		}
		if ch.Actions != nil {
			b, _ := json.Marshal(*ch.Actions)
			c.actions = string(b)
			c.notify, c.highlight = actionFlags(*ch.Actions)
		}
		return &c
	}
	for _, kind := range kinds {
		defs := defaults.byKind[kind]
		for _, dr := range defs {
			if dr.RuleID == masterRule {
				add(kind, def(kind, dr))
			}
		}
		for _, s := range d.Rules[kind] {
			if (kind == "room" && rs.room[s.RuleID] != nil) || (kind == "sender" && rs.sender[s.RuleID] != nil) {
				continue
			}
			c, err := compileRule(kind, s.RuleID, s.Enabled, s.Actions, s.Conditions, s.Pattern)
			if err != nil {
				continue
			}
			add(kind, c)
		}
		for _, dr := range defs {
			if dr.RuleID != masterRule {
				add(kind, def(kind, dr))
			}
		}
	}
	return rs
}
