package sytest

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
)

const pushRules = v3 + "/pushrules/global"

// ruleIDs lists the rule IDs of one kind in a ruleset answer.
func ruleIDs(set map[string]any, kind string) []string {
	var out []string
	rules, _ := set[kind].([]any)
	for _, r := range rules {
		if m, ok := r.(map[string]any); ok {
			out = append(out, fmt.Sprint(m["rule_id"]))
		}
	}
	return out
}

func userRuleIDs(set map[string]any, kind string) []string {
	var out []string
	for _, id := range ruleIDs(set, kind) {
		if !strings.HasPrefix(id, ".") {
			out = append(out, id)
		}
	}
	return out
}

func TestPushRulesDefaults(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "pushdef")
		r := Must(t, u.Do(t, "GET", v3+"/pushrules/", nil), 200)
		global, _ := r.JSON["global"].(map[string]any)
		if global == nil {
			t.Fatalf("no global ruleset: %s", r)
		}
		want := map[string][]string{
			"override": {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
				".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction",
				".m.rule.room.server_acl", ".m.rule.suppress_edits"},
			"content":   nil,
			"room":      nil,
			"sender":    nil,
			"underride": {".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"},
		}
		for kind, ids := range want {
			if _, ok := global[kind].([]any); !ok {
				t.Fatalf("%s is not an array: %s", kind, r)
			}
			if got := ruleIDs(global, kind); !slices.Equal(got, ids) {
				t.Errorf("%s: %v", kind, got)
			}
		}
		// The user's ID is filled into the templated rules.
		if !strings.Contains(string(r.Body), `"value":"`+u.ID+`"`) || !strings.Contains(string(r.Body), `"pattern":"`+u.ID+`"`) {
			t.Fatalf("user ID not filled in: %s", r)
		}
		g := Must(t, u.Do(t, "GET", pushRules+"/", nil), 200)
		if got := ruleIDs(g.JSON, "override"); !slices.Equal(got, want["override"]) {
			t.Fatalf("GET /pushrules/global/: %s", g)
		}
		m := Must(t, u.Do(t, "GET", pushRules+"/override/.m.rule.master", nil), 200)
		if m.JSON["enabled"] != false || m.JSON["default"] != true || m.Str("rule_id") != ".m.rule.master" {
			t.Fatalf("master: %s", m)
		}
		if c, ok := m.JSON["conditions"].([]any); !ok || len(c) != 0 {
			t.Fatalf("master conditions: %s", m)
		}
		// A real client library reads the ruleset.
		rs, err := u.Client(t).GetPushRules(context.Background())
		if err != nil || len(rs.Override) != len(want["override"]) || len(rs.Underride) != len(want["underride"]) ||
			rs.Override[0].RuleID != ".m.rule.master" || rs.Override[0].Enabled {
			t.Fatalf("mautrix GetPushRules: %+v %v", rs, err)
		}
		e := Must(t, u.Do(t, "GET", pushRules+"/underride/.m.rule.message/enabled", nil), 200)
		if e.JSON["enabled"] != true {
			t.Fatalf("enabled: %s", e)
		}
		a := Must(t, u.Do(t, "GET", pushRules+"/underride/.m.rule.message/actions", nil), 200)
		if acts, _ := a.JSON["actions"].([]any); len(acts) != 1 || acts[0] != "notify" {
			t.Fatalf("actions: %s", a)
		}
	})
}

func TestPushRulesChanges(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "pushchg")
		// A content rule, as in the spec's example.
		Must(t, u.Do(t, "PUT", pushRules+"/content/SSByZWFsbHkgbGlrZSBjYWtl", map[string]any{
			"pattern": "cake", "actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "cakealarm.wav"}}}), 200)
		c := Must(t, u.Do(t, "GET", pushRules+"/content/SSByZWFsbHkgbGlrZSBjYWtl", nil), 200)
		if c.Str("pattern") != "cake" || c.JSON["enabled"] != true || c.JSON["default"] != false {
			t.Fatalf("content rule: %s", c)
		}
		// Ordering with before and after.
		put := func(id, query string) {
			t.Helper()
			Must(t, u.Do(t, "PUT", pushRules+"/override/"+id+query, map[string]any{
				"conditions": []any{map[string]any{"kind": "event_match", "key": "content.body", "pattern": id}},
				"actions":    []any{"notify"}}), 200)
		}
		put("a", "")
		put("b", "")
		put("c", "?after=a")
		put("d", "?before=b")
		put("e", "?before=a&after=d")
		g := Must(t, u.Do(t, "GET", pushRules+"/", nil), 200)
		if got := userRuleIDs(g.JSON, "override"); !slices.Equal(got, []string{"d", "b", "e", "a", "c"}) {
			t.Fatalf("order: %v", got)
		}
		if got := ruleIDs(g.JSON, "override"); got[0] != ".m.rule.master" || got[6] != ".m.rule.suppress_notices" {
			t.Fatalf("user rules sit between the master rule and the other defaults: %v", got)
		}
		// Room and sender rules, named by the room or user.
		room := "!dj234r78wl45Gh4D:matrix.org"
		Must(t, u.Do(t, "PUT", pushRules+"/room/"+url.PathEscape(room), map[string]any{"actions": []any{}}), 200)
		Must(t, u.Do(t, "PUT", pushRules+"/sender/"+url.PathEscape("@spambot:matrix.org"), map[string]any{"actions": []any{"dont_notify"}}), 200)
		sr := Must(t, u.Do(t, "GET", pushRules+"/sender/"+url.PathEscape("@spambot:matrix.org"), nil), 200)
		if acts, ok := sr.JSON["actions"].([]any); !ok || len(acts) != 0 {
			t.Fatalf("dont_notify is stripped: %s", sr)
		}
		// Enabled and actions, on user and default rules.
		Must(t, u.Do(t, "PUT", pushRules+"/override/a/enabled", map[string]any{"enabled": false}), 200)
		if r := Must(t, u.Do(t, "GET", pushRules+"/override/a/enabled", nil), 200); r.JSON["enabled"] != false {
			t.Fatalf("disabled: %s", r)
		}
		Must(t, u.Do(t, "PUT", pushRules+"/override/.m.rule.master/enabled", map[string]any{"enabled": true}), 200)
		Must(t, u.Do(t, "PUT", pushRules+"/underride/.m.rule.message/actions", map[string]any{
			"actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}}), 200)
		a := Must(t, u.Do(t, "GET", pushRules+"/underride/.m.rule.message/actions", nil), 200)
		if acts, _ := a.JSON["actions"].([]any); len(acts) != 2 {
			t.Fatalf("actions: %s", a)
		}
		// Replacing a rule keeps its place and its enabled flag.
		put("a", "")
		g = Must(t, u.Do(t, "GET", pushRules+"/", nil), 200)
		if got := userRuleIDs(g.JSON, "override"); !slices.Equal(got, []string{"d", "b", "e", "a", "c"}) {
			t.Fatalf("order after replacing: %v", got)
		}
		if r := Must(t, u.Do(t, "GET", pushRules+"/override/a", nil), 200); r.JSON["enabled"] != false {
			t.Fatalf("replaced rule: %s", r)
		}
		// The ruleset reaches clients as m.push_rules account data.
		ad := Must(t, u.Do(t, "GET", v3+"/user/"+url.PathEscape(u.ID)+"/account_data/m.push_rules", nil), 200)
		global, _ := ad.JSON["global"].(map[string]any)
		if got := userRuleIDs(global, "override"); !slices.Equal(got, []string{"d", "b", "e", "a", "c"}) || !strings.Contains(string(ad.Body), "cakealarm.wav") {
			t.Fatalf("account data: %s", ad)
		}
		MustErr(t, u.Do(t, "PUT", v3+"/user/"+url.PathEscape(u.ID)+"/account_data/m.push_rules", map[string]any{"global": map[string]any{}}), 405, "M_BAD_JSON")
		// Deleting.
		Must(t, u.Do(t, "DELETE", pushRules+"/override/c", nil), 200)
		MustErr(t, u.Do(t, "GET", pushRules+"/override/c", nil), 404, "M_NOT_FOUND")
		MustErr(t, u.Do(t, "DELETE", pushRules+"/override/c", nil), 404, "M_NOT_FOUND")
		// Rules are per user.
		other := s.Register(t, "pushother")
		MustErr(t, other.Do(t, "GET", pushRules+"/override/a", nil), 404, "M_NOT_FOUND")
	})
}

func TestPushRulesBadInput(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "pushbad")
		Must(t, u.Do(t, "PUT", pushRules+"/override/mine", map[string]any{"actions": []any{"notify"}}), 200)
		notify := map[string]any{"actions": []any{"notify"}}
		cond := func(c any) map[string]any { return map[string]any{"actions": []any{"notify"}, "conditions": []any{c}} }
		tests := []struct {
			name, method, path string
			body               any
			status             int
			code               string
		}{
			{"no token", "GET", v3 + "/pushrules/", nil, 401, "M_MISSING_TOKEN"},
			{"unknown kind", "PUT", pushRules + "/global/x", notify, 400, "M_INVALID_PARAM"},
			{"unknown kind read", "GET", pushRules + "/nope/x", nil, 400, "M_INVALID_PARAM"},
			{"unknown rule", "GET", pushRules + "/override/nope", nil, 404, "M_NOT_FOUND"},
			{"unknown default rule", "GET", pushRules + "/override/.m.rule.nope", nil, 404, "M_NOT_FOUND"},
			{"unknown rule enabled", "GET", pushRules + "/override/nope/enabled", nil, 404, "M_NOT_FOUND"},
			{"unknown rule set enabled", "PUT", pushRules + "/override/nope/enabled", map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
			{"unknown rule actions", "PUT", pushRules + "/override/nope/actions", notify, 404, "M_NOT_FOUND"},
			{"reserved ID", "PUT", pushRules + "/override/.m.rule.mine", notify, 400, "M_INVALID_PARAM"},
			{"replace a default rule", "PUT", pushRules + "/override/.m.rule.master", notify, 400, "M_INVALID_PARAM"},
			{"delete a default rule", "DELETE", pushRules + "/override/.m.rule.master", nil, 400, "M_INVALID_PARAM"},
			{"slash in ID", "PUT", pushRules + "/override/a%2Fb", notify, 400, "M_INVALID_PARAM"},
			{"backslash in ID", "PUT", pushRules + "/override/a%5Cb", notify, 400, "M_INVALID_PARAM"},
			{"room rule named otherwise", "PUT", pushRules + "/room/notaroom", notify, 400, "M_INVALID_PARAM"},
			{"not JSON", "PUT", pushRules + "/override/x", "{nope", 400, "M_NOT_JSON"},
			{"actions not an array", "PUT", pushRules + "/override/x", map[string]any{"actions": "notify"}, 400, "M_BAD_JSON"},
			{"no actions", "PUT", pushRules + "/override/x", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"unknown action", "PUT", pushRules + "/override/x", map[string]any{"actions": []any{"explode"}}, 400, "M_INVALID_PARAM"},
			{"content rule without pattern", "PUT", pushRules + "/content/x", notify, 400, "M_MISSING_PARAM"},
			{"condition without kind", "PUT", pushRules + "/override/x", cond(map[string]any{"key": "type"}), 400, "M_INVALID_PARAM"},
			{"event_match without pattern", "PUT", pushRules + "/override/x", cond(map[string]any{"kind": "event_match", "key": "type"}), 400, "M_INVALID_PARAM"},
			{"compound value", "PUT", pushRules + "/override/x", cond(map[string]any{"kind": "event_property_is", "key": "type", "value": map[string]any{}}), 400, "M_INVALID_PARAM"},
			{"bad member count", "PUT", pushRules + "/override/x", cond(map[string]any{"kind": "room_member_count", "is": "lots"}), 400, "M_INVALID_PARAM"},
			{"unknown before", "PUT", pushRules + "/override/x?before=nope", notify, 400, "M_UNKNOWN"},
			{"after a default rule", "PUT", pushRules + "/override/x?after=.m.rule.master", notify, 400, "M_INVALID_PARAM"},
			{"enabled missing", "PUT", pushRules + "/override/mine/enabled", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"enabled not a boolean", "PUT", pushRules + "/override/mine/enabled", map[string]any{"enabled": "yes"}, 400, "M_BAD_JSON"},
			{"actions missing", "PUT", pushRules + "/override/mine/actions", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"too many conditions", "PUT", pushRules + "/override/x", map[string]any{"actions": []any{"notify"},
				"conditions": slices.Repeat([]any{map[string]any{"kind": "contains_display_name"}}, 21)}, 413, "M_TOO_LARGE"},
			{"too many actions", "PUT", pushRules + "/override/x", map[string]any{"actions": slices.Repeat([]any{"notify"}, 21)}, 413, "M_TOO_LARGE"},
			{"long pattern", "PUT", pushRules + "/content/x", map[string]any{"actions": []any{"notify"}, "pattern": strings.Repeat("p", 1025)}, 400, "M_INVALID_PARAM"},
			{"wrong method", "POST", pushRules + "/override/mine", notify, 405, "M_UNRECOGNIZED"},
		}
		for _, tc := range tests {
			token := u.Token
			if tc.code == "M_MISSING_TOKEN" {
				token = ""
			}
			r := s.Do(t, tc.method, tc.path, token, tc.body)
			if r.Status != tc.status || r.Errcode() != tc.code {
				t.Errorf("%s: %s, want %d %s", tc.name, r, tc.status, tc.code)
			}
		}
		// Unknown condition kinds are stored (they never match).
		Must(t, u.Do(t, "PUT", pushRules+"/override/future", cond(map[string]any{"kind": "org.example.future", "x": 1})), 200)
		if r := Must(t, u.Do(t, "GET", pushRules+"/override/future", nil), 200); !strings.Contains(string(r.Body), "org.example.future") {
			t.Fatalf("unknown condition: %s", r)
		}
	})
}

func TestPushRulesLimit(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "pushlimit")
		// 200 rules of one's own, in parallel (each change is serialised
		// per user on the server).
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i := range 200 {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				r := u.Do(t, "PUT", pushRules+"/sender/"+url.PathEscape(fmt.Sprintf("@s%d:example.org", i)), map[string]any{"actions": []any{}})
				if r.Status != 200 {
					t.Errorf("rule %d: %s", i, r)
				}
			}()
		}
		wg.Wait()
		MustErr(t, u.Do(t, "PUT", pushRules+"/override/one-too-many", map[string]any{"actions": []any{}}), 413, "M_TOO_LARGE")
		g := Must(t, u.Do(t, "GET", pushRules+"/", nil), 200)
		if n := len(ruleIDs(g.JSON, "sender")); n != 200 {
			t.Fatalf("%d sender rules", n)
		}
		// Deleting one makes room again.
		Must(t, u.Do(t, "DELETE", pushRules+"/sender/"+url.PathEscape("@s0:example.org"), nil), 200)
		Must(t, u.Do(t, "PUT", pushRules+"/override/fits", map[string]any{"actions": []any{}}), 200)
	})
}
