package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// localUser parses a user ID path variable that must be on this server.
func (a *API) localUser(r *http.Request) (string, error) {
	u := httpapi.Var(r, "userId")
	if len(u) < 3 || u[0] != '@' || len(u) > 255 {
		return "", mxerr.InvalidParam("%q is not a valid user ID", u)
	}
	if !a.accounts.IsLocal(u) {
		return "", mxerr.NotFound("Profiles of remote users are not available yet")
	}
	return u, nil
}

func (a *API) getProfile(w http.ResponseWriter, r *http.Request) error {
	u, err := a.localUser(r)
	if err != nil {
		return err
	}
	p, err := a.accounts.Profile(r.Context(), u)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, p)
}

func (a *API) getProfileField(w http.ResponseWriter, r *http.Request) error {
	u, err := a.localUser(r)
	if err != nil {
		return err
	}
	field := httpapi.Var(r, "field")
	if err := accounts.ValidateProfileKey(field); err != nil {
		return err
	}
	v, err := a.accounts.ProfileField(r.Context(), u, field)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]json.RawMessage{field: v})
}

func (a *API) ownProfile(r *http.Request, d *deviceT) (string, string, error) {
	u := httpapi.Var(r, "userId")
	if u != d.UserID {
		return "", "", mxerr.Forbidden("You can only change your own profile")
	}
	field := httpapi.Var(r, "field")
	return u, field, accounts.ValidateProfileKey(field)
}

func (a *API) putProfileField(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	u, field, err := a.ownProfile(r, d)
	if err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := httpapi.Decode(r, &body); err != nil {
		return err
	}
	v, ok := body[field]
	if !ok {
		return mxerr.MissingParam("The body must contain the field %q", field)
	}
	if len(body) != 1 {
		return mxerr.BadJSON("The body must contain only the field %q", field)
	}
	if string(v) == "null" {
		v = nil
	}
	if err := a.accounts.SetProfileField(r.Context(), u, field, v); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) deleteProfileField(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	u, field, err := a.ownProfile(r, d)
	if err != nil {
		return err
	}
	if err := a.accounts.SetProfileField(r.Context(), u, field, nil); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) searchUsers(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		SearchTerm string `json:"search_term"`
		Limit      int    `json:"limit"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.Limit < 0 {
		return mxerr.InvalidParam("limit must not be negative")
	}
	results, limited, err := a.accounts.SearchUsers(r.Context(), d.UserID, req.SearchTerm, req.Limit)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"results": results, "limited": limited})
}
