package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/parley-chat/parley/homeserver/push"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// pushRoutes registers the push rules API and GET /notifications. Guests
// have no push rules (the spec's guest endpoints do not include them).
func (a *API) pushRoutes(s *httpapi.Group) {
	if a.deps.Push == nil {
		return
	}
	s.Handle(http.MethodGet, "/pushrules/", a.noGuests(a.getPushRules))
	s.Handle(http.MethodGet, "/pushrules/global/", a.noGuests(a.getGlobalPushRules))
	s.Handle(http.MethodGet, "/pushrules/global/{kind}/{ruleId}", a.noGuests(a.getPushRule))
	s.Handle(http.MethodPut, "/pushrules/global/{kind}/{ruleId}", a.noGuests(a.putPushRule))
	s.Handle(http.MethodDelete, "/pushrules/global/{kind}/{ruleId}", a.noGuests(a.deletePushRule))
	s.Handle(http.MethodGet, "/pushrules/global/{kind}/{ruleId}/enabled", a.noGuests(a.getPushRuleEnabled))
	s.Handle(http.MethodPut, "/pushrules/global/{kind}/{ruleId}/enabled", a.noGuests(a.putPushRuleEnabled))
	s.Handle(http.MethodGet, "/pushrules/global/{kind}/{ruleId}/actions", a.noGuests(a.getPushRuleActions))
	s.Handle(http.MethodPut, "/pushrules/global/{kind}/{ruleId}/actions", a.noGuests(a.putPushRuleActions))
	s.Handle(http.MethodGet, "/notifications", a.noGuests(a.getNotifications))
}

func (a *API) getPushRules(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	rs, err := a.deps.Push.Ruleset(r.Context(), d.UserID)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]*push.Ruleset{"global": rs})
}

func (a *API) getGlobalPushRules(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	rs, err := a.deps.Push.Ruleset(r.Context(), d.UserID)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, rs)
}

func (a *API) getPushRule(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	rule, err := a.deps.Push.Rule(r.Context(), d.UserID, httpapi.Var(r, "kind"), httpapi.Var(r, "ruleId"))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, rule)
}

func (a *API) putPushRule(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var body push.RuleBody
	if err := httpapi.Decode(r, &body); err != nil {
		return err
	}
	q := r.URL.Query()
	err := a.deps.Push.PutRule(r.Context(), d.UserID, httpapi.Var(r, "kind"), httpapi.Var(r, "ruleId"), body,
		q.Get("before"), q.Get("after"))
	if err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) deletePushRule(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := a.deps.Push.DeleteRule(r.Context(), d.UserID, httpapi.Var(r, "kind"), httpapi.Var(r, "ruleId")); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) getPushRuleEnabled(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	rule, err := a.deps.Push.Rule(r.Context(), d.UserID, httpapi.Var(r, "kind"), httpapi.Var(r, "ruleId"))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
}

func (a *API) putPushRuleEnabled(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := httpapi.Decode(r, &body); err != nil {
		return err
	}
	if body.Enabled == nil {
		return mxerr.MissingParam("enabled is required")
	}
	err := a.deps.Push.SetEnabled(r.Context(), d.UserID, httpapi.Var(r, "kind"), httpapi.Var(r, "ruleId"), *body.Enabled)
	if err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) getPushRuleActions(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	rule, err := a.deps.Push.Rule(r.Context(), d.UserID, httpapi.Var(r, "kind"), httpapi.Var(r, "ruleId"))
	if err != nil {
		return err
	}
	actions := rule.Actions
	if actions == nil {
		actions = []json.RawMessage{}
	}
	return httpapi.JSON(w, http.StatusOK, map[string][]json.RawMessage{"actions": actions})
}

func (a *API) putPushRuleActions(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var body struct {
		Actions []json.RawMessage `json:"actions"`
	}
	if err := httpapi.Decode(r, &body); err != nil {
		return err
	}
	err := a.deps.Push.SetActions(r.Context(), d.UserID, httpapi.Var(r, "kind"), httpapi.Var(r, "ruleId"), body.Actions)
	if err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) getNotifications(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	limit, err := intParam(r, "limit", push.DefaultNotificationsLimit)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	page, err := a.deps.Push.Notifications(r.Context(), rooms.Requester{UserID: d.UserID, DeviceID: d.DeviceID},
		push.NotificationsQuery{From: q.Get("from"), Limit: limit, Only: q.Get("only")})
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, page)
}
