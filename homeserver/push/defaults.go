package push

import (
	"encoding/json"
	"fmt"
)

// self stands for the user's own Matrix ID in server-default rules; it is
// replaced when a ruleset is shown and matched as "the member being
// evaluated" when rules are checked, so that every user without changes
// shares one compiled default ruleset.
const self = "[the user's Matrix ID]"

// defaultRulesJSON are the server-default rules of the Matrix spec v1.19
// (client-server API, push module, "Predefined Rules"), in priority order
// within each kind. The legacy body-matching mention rules
// (.m.rule.contains_display_name, .m.rule.contains_user_name,
// .m.rule.roomnotif) were removed in v1.17 and are not served.
// .m.rule.master is placed before user rules when a ruleset is assembled.
const defaultRulesJSON = `{
"override": [
	{"rule_id": ".m.rule.master", "default": true, "enabled": false, "conditions": [], "actions": []},
	{"rule_id": ".m.rule.suppress_notices", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}],
	 "actions": []},
	{"rule_id": ".m.rule.invite_for_me", "default": true, "enabled": true,
	 "conditions": [
		{"key": "type", "kind": "event_match", "pattern": "m.room.member"},
		{"key": "content.membership", "kind": "event_match", "pattern": "invite"},
		{"key": "state_key", "kind": "event_match", "pattern": "[the user's Matrix ID]"}],
	 "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.member_event", "default": true, "enabled": true,
	 "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.room.member"}],
	 "actions": []},
	{"rule_id": ".m.rule.is_user_mention", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": "[the user's Matrix ID]"}],
	 "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.is_room_mention", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true},
		{"kind": "sender_notification_permission", "key": "room"}],
	 "actions": ["notify", {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.tombstone", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "event_match", "key": "type", "pattern": "m.room.tombstone"},
		{"kind": "event_match", "key": "state_key", "pattern": ""}],
	 "actions": ["notify", {"set_tweak": "highlight"}]},
	{"rule_id": ".m.rule.reaction", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.reaction"}],
	 "actions": []},
	{"rule_id": ".m.rule.room.server_acl", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "event_match", "key": "type", "pattern": "m.room.server_acl"},
		{"kind": "event_match", "key": "state_key", "pattern": ""}],
	 "actions": []},
	{"rule_id": ".m.rule.suppress_edits", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
	 "actions": []}
],
"content": [],
"room": [],
"sender": [],
"underride": [
	{"rule_id": ".m.rule.call", "default": true, "enabled": true,
	 "conditions": [{"key": "type", "kind": "event_match", "pattern": "m.call.invite"}],
	 "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]},
	{"rule_id": ".m.rule.encrypted_room_one_to_one", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "room_member_count", "is": "2"},
		{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}],
	 "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.room_one_to_one", "default": true, "enabled": true,
	 "conditions": [
		{"kind": "room_member_count", "is": "2"},
		{"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
	 "actions": ["notify", {"set_tweak": "sound", "value": "default"}]},
	{"rule_id": ".m.rule.message", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}],
	 "actions": ["notify"]},
	{"rule_id": ".m.rule.encrypted", "default": true, "enabled": true,
	 "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.encrypted"}],
	 "actions": ["notify"]}
]
}`

// masterRule is the server-default rule that outranks user rules.
const masterRule = ".m.rule.master"

// defaultRule is one server-default rule, compiled once.
type defaultRule struct {
	Rule
	compiled *crule
}

// defaultSet holds the server-default rules by kind.
type defaultSet struct {
	byKind map[string][]*defaultRule
	byID   map[string]*defaultRule // "kind/rule_id"
}

// defaults are the server-default rules; built once, never modified.
var defaults = mustDefaults()

func mustDefaults() *defaultSet {
	var raw map[string][]Rule
	if err := json.Unmarshal([]byte(defaultRulesJSON), &raw); err != nil {
		panic(fmt.Sprintf("push: default rules: %v", err))
	}
	d := &defaultSet{byKind: map[string][]*defaultRule{}, byID: map[string]*defaultRule{}}
	for _, kind := range kinds {
		for _, r := range raw[kind] {
			c, err := compileRule(kind, r.RuleID, r.Enabled, r.Actions, r.Conditions, r.Pattern)
			if err != nil {
				panic(fmt.Sprintf("push: default rule %s: %v", r.RuleID, err))
			}
			dr := &defaultRule{Rule: r, compiled: c}
			d.byKind[kind] = append(d.byKind[kind], dr)
			d.byID[kind+"/"+r.RuleID] = dr
		}
	}
	return d
}

// lookup returns a server-default rule (nil if there is none).
func (d *defaultSet) lookup(kind, ruleID string) *defaultRule { return d.byID[kind+"/"+ruleID] }
