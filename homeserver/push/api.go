package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// load reads a user's stored changes (none: an empty document).
func (e *Engine) load(ctx context.Context, q storage.Querier, userID string) (*document, error) {
	raw, err := e.store.PushRulesGet(ctx, q, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return &document{}, nil
	}
	if err != nil {
		return nil, err
	}
	d, err := parseDocument(raw)
	if err != nil {
		e.log.Warn("unreadable push rules; starting from the defaults", "user", userID, "err", err)
		return &document{}, nil
	}
	return d, nil
}

// Ruleset returns a user's global push ruleset.
func (e *Engine) Ruleset(ctx context.Context, userID string) (*Ruleset, error) {
	d, err := e.load(ctx, e.db.Read(), userID)
	if err != nil {
		return nil, err
	}
	return d.ruleset(userID), nil
}

// AccountDataContent is the m.push_rules account data content of a user:
// {"global": ruleset}. Users who never changed their rules have no such
// account data stored; /sync can serve this instead.
func (e *Engine) AccountDataContent(ctx context.Context, userID string) (json.RawMessage, error) {
	rs, err := e.Ruleset(ctx, userID)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]*Ruleset{"global": rs})
}

// Rule returns one rule of a user's ruleset.
func (e *Engine) Rule(ctx context.Context, userID, kind, ruleID string) (*Rule, error) {
	if err := validKind(kind); err != nil {
		return nil, err
	}
	rs, err := e.Ruleset(ctx, userID)
	if err != nil {
		return nil, err
	}
	for _, r := range rs.Kind(kind) {
		if r.RuleID == ruleID {
			return &r, nil
		}
	}
	return nil, errNotFound()
}

// PutRule creates or replaces a user-defined rule. A new rule goes first
// among the user's rules of its kind unless before or after (another
// user-defined rule of the kind) places it; before wins when both are
// given. A replaced rule keeps its place and enabled flag unless moved.
func (e *Engine) PutRule(ctx context.Context, userID, kind, ruleID string, body RuleBody, before, after string) error {
	if err := validKind(kind); err != nil {
		return err
	}
	if err := validNewRuleID(kind, ruleID); err != nil {
		return err
	}
	for _, rel := range []string{before, after} {
		if strings.HasPrefix(rel, ".") {
			return mxerr.InvalidParam("Rules cannot be placed relative to server-default rules")
		}
	}
	sr, err := newStoredRule(kind, ruleID, body)
	if err != nil {
		return err
	}
	return e.change(ctx, userID, func(d *document) error {
		rules := d.Rules[kind]
		i := d.find(kind, ruleID)
		if i >= 0 {
			sr.Enabled = rules[i].Enabled
			rules = slices.Delete(slices.Clone(rules), i, i+1)
		} else if d.count() >= MaxUserRules {
			return mxerr.TooLarge("A user has at most %d push rules of their own", MaxUserRules)
		}
		find := func(id string) int {
			return slices.IndexFunc(rules, func(r storedRule) bool { return r.RuleID == id })
		}
		pos := 0
		switch {
		case before != "":
			if pos = find(before); pos < 0 {
				return errRelative(before)
			}
		case after != "":
			if pos = find(after); pos < 0 {
				return errRelative(after)
			}
			pos++
		case i >= 0:
			pos = i
		}
		if d.Rules == nil {
			d.Rules = map[string][]storedRule{}
		}
		d.Rules[kind] = slices.Insert(rules, pos, sr)
		return nil
	})
}

// newStoredRule validates a PUT body for a rule of kind.
func newStoredRule(kind, ruleID string, body RuleBody) (storedRule, error) {
	if body.Actions == nil {
		return storedRule{}, mxerr.MissingParam("actions is required")
	}
	actions, err := validateActions(body.Actions)
	if err != nil {
		return storedRule{}, err
	}
	sr := storedRule{RuleID: ruleID, Enabled: true, Actions: actions}
	switch kind {
	case "override", "underride":
		if sr.Conditions, err = validateConditions(body.Conditions); err != nil {
			return storedRule{}, err
		}
	case "content":
		if body.Pattern == nil {
			return storedRule{}, mxerr.MissingParam("pattern is required for content rules")
		}
		if len(*body.Pattern) > maxStringBytes {
			return storedRule{}, mxerr.InvalidParam("pattern is longer than %d bytes", maxStringBytes)
		}
		p := *body.Pattern
		sr.Pattern = &p
	}
	if b, _ := json.Marshal(sr); len(b) > MaxRuleBytes {
		return storedRule{}, ruleSizeError()
	}
	return sr, nil
}

// DeleteRule deletes a user-defined rule (server-default rules cannot be
// deleted, only disabled).
func (e *Engine) DeleteRule(ctx context.Context, userID, kind, ruleID string) error {
	if err := validKind(kind); err != nil {
		return err
	}
	if defaults.lookup(kind, ruleID) != nil {
		return mxerr.InvalidParam("Server-default rules cannot be deleted; disable them instead")
	}
	return e.change(ctx, userID, func(d *document) error {
		i := d.find(kind, ruleID)
		if i < 0 {
			return errNotFound()
		}
		d.Rules[kind] = slices.Delete(slices.Clone(d.Rules[kind]), i, i+1)
		return nil
	})
}

// SetEnabled enables or disables a rule, server-default or not.
func (e *Engine) SetEnabled(ctx context.Context, userID, kind, ruleID string, enabled bool) error {
	if err := validKind(kind); err != nil {
		return err
	}
	return e.change(ctx, userID, func(d *document) error {
		return d.modify(kind, ruleID, func(ch *defaultChange) { ch.Enabled = &enabled },
			func(r *storedRule) { r.Enabled = enabled })
	})
}

// SetActions replaces a rule's actions, server-default or not.
func (e *Engine) SetActions(ctx context.Context, userID, kind, ruleID string, actions []json.RawMessage) error {
	if err := validKind(kind); err != nil {
		return err
	}
	if actions == nil {
		return mxerr.MissingParam("actions is required")
	}
	actions, err := validateActions(actions)
	if err != nil {
		return err
	}
	return e.change(ctx, userID, func(d *document) error {
		return d.modify(kind, ruleID, func(ch *defaultChange) { ch.Actions = &actions },
			func(r *storedRule) {
				r.Actions = actions
			})
	})
}

// modify changes a server-default rule's overrides or a user rule.
func (d *document) modify(kind, ruleID string, def func(*defaultChange), user func(*storedRule)) error {
	if defaults.lookup(kind, ruleID) != nil {
		if d.Defaults == nil {
			d.Defaults = map[string]defaultChange{}
		}
		ch := d.Defaults[kind+"/"+ruleID]
		def(&ch)
		d.Defaults[kind+"/"+ruleID] = ch
		return nil
	}
	i := d.find(kind, ruleID)
	if i < 0 {
		return errNotFound()
	}
	rules := slices.Clone(d.Rules[kind])
	user(&rules[i])
	if b, _ := json.Marshal(rules[i]); len(b) > MaxRuleBytes {
		return ruleSizeError()
	}
	d.Rules[kind] = rules
	return nil
}

// change applies fn to a user's stored rules in one transaction, then
// makes the change visible: caches here and on other instances, and the
// m.push_rules account data that /sync delivers.
func (e *Engine) change(ctx context.Context, userID string, fn func(d *document) error) error {
	mu := e.lock(userID)
	mu.Lock()
	defer mu.Unlock()
	var content []byte
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.store.PushRulesLock(ctx, tx, userID); err != nil {
			return err
		}
		d, err := e.load(ctx, tx, userID)
		if err != nil {
			return err
		}
		if err := fn(d); err != nil {
			return err
		}
		if content, err = json.Marshal(map[string]*Ruleset{"global": d.ruleset(userID)}); err != nil {
			return err
		}
		if len(content) > MaxRulesetBytes {
			return mxerr.TooLarge("Push rules would be larger than %d bytes", MaxRulesetBytes)
		}
		raw, err := json.Marshal(d)
		if err != nil {
			return err
		}
		return e.store.PushRulesPut(ctx, tx, userID, string(raw), e.now().UnixMilli())
	})
	if err != nil {
		return err
	}
	e.ForgetUser(userID)
	if e.bus != nil {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := e.bus.Publish(pctx, RulesChannel, userID); err != nil {
			e.log.Warn("could not announce a push rule change to other instances", "user", userID, "err", err)
		}
		cancel()
	}
	if err := e.accounts.PutAccountData(ctx, userID, "", "m.push_rules", content); err != nil {
		return fmt.Errorf("write m.push_rules account data: %w", err)
	}
	return nil
}
