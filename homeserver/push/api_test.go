package push

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// fakeAccountData records m.push_rules writes.
type fakeAccountData struct {
	mu     sync.Mutex
	writes map[string][]json.RawMessage
}

func (f *fakeAccountData) PutAccountData(_ context.Context, userID, roomID, typ string, content json.RawMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writes == nil {
		f.writes = map[string][]json.RawMessage{}
	}
	f.writes[userID+"|"+roomID+"|"+typ] = append(f.writes[userID+"|"+roomID+"|"+typ], content)
	return nil
}

func (f *fakeAccountData) last(userID string) json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.writes[userID+"||m.push_rules"]
	if len(w) == 0 {
		return nil
	}
	return w[len(w)-1]
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func body(actions string, extra map[string]string) RuleBody {
	var b RuleBody
	js := `{"actions":` + actions
	for k, v := range extra {
		js += `,"` + k + `":` + v
	}
	if err := json.Unmarshal([]byte(js+"}"), &b); err != nil {
		panic(err)
	}
	return b
}

func ids(rules []Rule, userOnly bool) []string {
	var out []string
	for _, r := range rules {
		if !userOnly || !r.Default {
			out = append(out, r.RuleID)
		}
	}
	return out
}

func errcode(err error) string {
	if e, ok := mxerr.As(err); ok {
		return e.Code
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

func TestRulesAPI(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		ad := &fakeAccountData{}
		e := New(Config{}, db, nil, ad, quietLog())
		const u = "@alice:local.test"
		notify := `["notify"]`

		t.Run("validation", func(t *testing.T) {
			tests := []struct {
				name, kind, id string
				body           RuleBody
				before, after  string
				code           string
			}{
				{"unknown kind", "global", "x", body(notify, nil), "", "", "M_INVALID_PARAM"},
				{"reserved dot", "override", ".m.rule.mine", body(notify, nil), "", "", "M_INVALID_PARAM"},
				{"default rule", "override", ".m.rule.master", body(notify, nil), "", "", "M_INVALID_PARAM"},
				{"slash", "override", "a/b", body(notify, nil), "", "", "M_INVALID_PARAM"},
				{"backslash", "override", `a\b`, body(notify, nil), "", "", "M_INVALID_PARAM"},
				{"long ID", "override", strings.Repeat("a", 256), body(notify, nil), "", "", "M_INVALID_PARAM"},
				{"room rule needs a room ID", "room", "notaroom", body(notify, nil), "", "", "M_INVALID_PARAM"},
				{"sender rule needs a user ID", "sender", "nobody", body(notify, nil), "", "", "M_INVALID_PARAM"},
				{"missing actions", "override", "a", RuleBody{}, "", "", "M_MISSING_PARAM"},
				{"unknown action", "override", "a", body(`["shout"]`, nil), "", "", "M_INVALID_PARAM"},
				{"number action", "override", "a", body(`[1]`, nil), "", "", "M_INVALID_PARAM"},
				{"tweak without name", "override", "a", body(`[{"value":1}]`, nil), "", "", "M_INVALID_PARAM"},
				{"too many actions", "override", "a", body("["+strings.Repeat(`"notify",`, MaxActions)+`"notify"]`, nil), "", "", "M_TOO_LARGE"},
				{"content rule needs a pattern", "content", "a", body(notify, nil), "", "", "M_MISSING_PARAM"},
				{"long pattern", "content", "a", body(notify, map[string]string{"pattern": `"` + strings.Repeat("a", maxStringBytes+1) + `"`}), "", "", "M_INVALID_PARAM"},
				{"condition not an object", "override", "a", body(notify, map[string]string{"conditions": `["x"]`}), "", "", "M_INVALID_PARAM"},
				{"condition without kind", "override", "a", body(notify, map[string]string{"conditions": `[{"key":"type"}]`}), "", "", "M_INVALID_PARAM"},
				{"event_match without pattern", "override", "a", body(notify, map[string]string{"conditions": `[{"kind":"event_match","key":"type"}]`}), "", "", "M_INVALID_PARAM"},
				{"event_match without key", "override", "a", body(notify, map[string]string{"conditions": `[{"kind":"event_match","pattern":"x"}]`}), "", "", "M_INVALID_PARAM"},
				{"property_is with a compound value", "override", "a", body(notify, map[string]string{"conditions": `[{"kind":"event_property_is","key":"type","value":[1]}]`}), "", "", "M_INVALID_PARAM"},
				{"property_is with a float", "override", "a", body(notify, map[string]string{"conditions": `[{"kind":"event_property_is","key":"type","value":1.5}]`}), "", "", "M_INVALID_PARAM"},
				{"property_is out of range", "override", "a", body(notify, map[string]string{"conditions": `[{"kind":"event_property_is","key":"type","value":9007199254740992}]`}), "", "", "M_INVALID_PARAM"},
				{"property_contains without value", "override", "a", body(notify, map[string]string{"conditions": `[{"kind":"event_property_contains","key":"type"}]`}), "", "", "M_INVALID_PARAM"},
				{"bad member count", "override", "a", body(notify, map[string]string{"conditions": `[{"kind":"room_member_count","is":"~2"}]`}), "", "", "M_INVALID_PARAM"},
				{"permission without key", "override", "a", body(notify, map[string]string{"conditions": `[{"kind":"sender_notification_permission"}]`}), "", "", "M_INVALID_PARAM"},
				{"key of the wrong type", "override", "a", body(notify, map[string]string{"conditions": `[{"kind":"event_match","key":1,"pattern":"x"}]`}), "", "", "M_INVALID_PARAM"},
				{"too many conditions", "override", "a", body(notify, map[string]string{"conditions": "[" + strings.Repeat(`{"kind":"contains_display_name"},`, MaxConditions) + `{"kind":"contains_display_name"}]`}), "", "", "M_TOO_LARGE"},
				{"rule too large", "override", "a", body(notify, map[string]string{"conditions": "[" + strings.Repeat(`{"kind":"event_match","key":"content.body","pattern":"`+strings.Repeat("x", 900)+`"},`, 9) + `{"kind":"contains_display_name"}]`}), "", "", "M_TOO_LARGE"},
				{"before a default rule", "override", "a", body(notify, nil), ".m.rule.master", "", "M_INVALID_PARAM"},
				{"after an unknown rule", "override", "a", body(notify, nil), "", "nope", "M_UNKNOWN"},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					err := e.PutRule(ctx, u, tc.kind, tc.id, tc.body, tc.before, tc.after)
					if got := errcode(err); got != tc.code {
						t.Fatalf("errcode %q, want %q (%v)", got, tc.code, err)
					}
				})
			}
			if ad.last(u) != nil {
				t.Fatal("a refused change wrote account data")
			}
		})

		t.Run("ordering", func(t *testing.T) {
			put := func(id, before, after string) {
				t.Helper()
				if err := e.PutRule(ctx, u, "override", id, body(notify, map[string]string{"conditions": `[]`}), before, after); err != nil {
					t.Fatal(err)
				}
			}
			put("a", "", "")
			put("b", "", "")   // new rules go first
			put("c", "", "a")  // after a
			put("d", "b", "")  // before b
			put("e", "a", "d") // before wins over after
			put("b", "", "")   // replacing keeps the place
			rs, err := e.Ruleset(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(rs.Override, true); !slices.Equal(got, []string{"d", "b", "e", "a", "c"}) {
				t.Fatalf("order %v", got)
			}
			if rs.Override[0].RuleID != ".m.rule.master" || !rs.Override[6].Default {
				t.Fatalf("master first, then user rules, then defaults: %v", ids(rs.Override, false))
			}
			// Account data mirrors the ruleset.
			var content map[string]*Ruleset
			if err := json.Unmarshal(ad.last(u), &content); err != nil || !slices.Equal(ids(content["global"].Override, true), []string{"d", "b", "e", "a", "c"}) {
				t.Fatalf("account data %s %v", ad.last(u), err)
			}
		})

		t.Run("enabled and actions", func(t *testing.T) {
			if err := e.SetEnabled(ctx, u, "override", "a", false); err != nil {
				t.Fatal(err)
			}
			if err := e.PutRule(ctx, u, "override", "a", body(`["notify","dont_notify"]`, nil), "", ""); err != nil {
				t.Fatal(err)
			}
			r, err := e.Rule(ctx, u, "override", "a")
			if err != nil || r.Enabled || len(r.Actions) != 1 {
				t.Fatalf("a replaced rule keeps its enabled flag, dont_notify is stripped: %+v %v", r, err)
			}
			if err := e.SetEnabled(ctx, u, "override", ".m.rule.master", true); err != nil {
				t.Fatal(err)
			}
			if err := e.SetActions(ctx, u, "underride", ".m.rule.message", raws(`"notify"`, `{"set_tweak":"sound","value":"bing"}`)); err != nil {
				t.Fatal(err)
			}
			r, _ = e.Rule(ctx, u, "override", ".m.rule.master")
			if !r.Enabled || !r.Default {
				t.Fatalf("master %+v", r)
			}
			r, _ = e.Rule(ctx, u, "underride", ".m.rule.message")
			if len(r.Actions) != 2 || !strings.Contains(string(r.Actions[1]), "bing") {
				t.Fatalf("message %+v", r)
			}
			// The compiled rules follow.
			states := map[string]userEntry{}
			if err := e.userStates(ctx, []string{u}, states); err != nil {
				t.Fatal(err)
			}
			if rs := states[u].rules; !rs.override[0].enabled || rs.underride[len(rs.underride)-2].actions != `["notify",{"set_tweak":"sound","value":"bing"}]` {
				t.Fatalf("compiled %+v", rs.underride[len(rs.underride)-2])
			}
			for _, tc := range []struct {
				name string
				err  error
				code string
			}{
				{"enable unknown", e.SetEnabled(ctx, u, "override", "zzz", true), "M_NOT_FOUND"},
				{"actions unknown", e.SetActions(ctx, u, "room", "!x:y", raws(`"notify"`)), "M_NOT_FOUND"},
				{"actions missing", e.SetActions(ctx, u, "override", "a", nil), "M_MISSING_PARAM"},
				{"actions invalid", e.SetActions(ctx, u, "override", "a", raws(`"loud"`)), "M_INVALID_PARAM"},
				{"enable bad kind", e.SetEnabled(ctx, u, "other", "a", true), "M_INVALID_PARAM"},
				{"get unknown", func() error { _, err := e.Rule(ctx, u, "content", "a"); return err }(), "M_NOT_FOUND"},
				{"delete default", e.DeleteRule(ctx, u, "override", ".m.rule.master"), "M_INVALID_PARAM"},
				{"delete unknown", e.DeleteRule(ctx, u, "override", "zzz"), "M_NOT_FOUND"},
				{"delete bad kind", e.DeleteRule(ctx, u, "nope", "a"), "M_INVALID_PARAM"},
			} {
				if got := errcode(tc.err); got != tc.code {
					t.Errorf("%s: %q, want %q", tc.name, got, tc.code)
				}
			}
			if err := e.DeleteRule(ctx, u, "override", "a"); err != nil {
				t.Fatal(err)
			}
			if _, err := e.Rule(ctx, u, "override", "a"); errcode(err) != "M_NOT_FOUND" {
				t.Fatalf("deleted rule: %v", err)
			}
		})

		t.Run("limits", func(t *testing.T) {
			const v = "@limits:local.test"
			for i := range MaxUserRules {
				if err := e.PutRule(ctx, v, "sender", "@u"+strconv.Itoa(i)+":x", body(`[]`, nil), "", ""); err != nil {
					t.Fatalf("rule %d: %v", i, err)
				}
			}
			if err := e.PutRule(ctx, v, "room", "!one:x", body(`[]`, nil), "", ""); errcode(err) != "M_TOO_LARGE" {
				t.Fatalf("rule %d: %v", MaxUserRules+1, err)
			}
			// Replacing an existing rule is still allowed at the limit.
			if err := e.PutRule(ctx, v, "sender", "@u0:x", body(notify, nil), "", ""); err != nil {
				t.Fatal(err)
			}
			// The whole ruleset is bounded too.
			const w = "@big:local.test"
			big := map[string]string{"pattern": `"` + strings.Repeat("p", maxStringBytes) + `"`}
			var err error
			for i := 0; i < MaxUserRules && err == nil; i++ {
				err = e.PutRule(ctx, w, "content", "r"+strconv.Itoa(i), body(notify, big), "", "")
			}
			if errcode(err) != "M_TOO_LARGE" || len(ad.last(w)) > MaxRulesetBytes {
				t.Fatalf("ruleset size: %v (%d bytes)", err, len(ad.last(w)))
			}
		})
	})
}
