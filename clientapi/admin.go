package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// admin wraps a handler that only server admins may use.
func (a *API) admin(h authed) http.Handler {
	return a.auth(func(w http.ResponseWriter, r *http.Request, d *deviceT) error {
		if !d.IsAdmin {
			return mxerr.Forbidden("You are not a server admin")
		}
		return h(w, r, d)
	})
}

func (a *API) adminNonce(w http.ResponseWriter, r *http.Request) error {
	n, err := a.accounts.NewNonce(r.Context())
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"nonce": n})
}

func (a *API) adminRegister(w http.ResponseWriter, r *http.Request) error {
	var req accounts.SharedSecretRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	sess, err := a.accounts.RegisterWithSharedSecret(r.Context(), req, accounts.NewSessionParams{
		IP: httpapi.ClientIP(r.Context()), Agent: r.UserAgent(),
	})
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{
		"access_token": sess.AccessToken, "user_id": sess.UserID, "home_server": a.cfg.ServerName, "device_id": sess.DeviceID,
	})
}

func (a *API) listRegTokens(w http.ResponseWriter, r *http.Request, _ *deviceT) error {
	var valid *bool
	if v := r.URL.Query().Get("valid"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return mxerr.InvalidParam("valid must be true or false")
		}
		valid = &b
	}
	toks, err := a.accounts.RegTokens(r.Context(), valid)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"registration_tokens": toks})
}

// regTokenBody is the admin API's body; a present-but-null field clears
// a limit, so presence is tracked separately from value.
type regTokenBody struct {
	Token       *string         `json:"token"`
	Length      *int            `json:"length"`
	UsesAllowed json.RawMessage `json:"uses_allowed"`
	ExpiryTime  json.RawMessage `json:"expiry_time"`
}

func optInt(name string, raw json.RawMessage) (*int64, bool, error) {
	if raw == nil {
		return nil, false, nil
	}
	if string(raw) == "null" {
		return nil, true, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, true, mxerr.InvalidParam("%s must be an integer or null", name)
	}
	return &n, true, nil
}

func (b regTokenBody) spec() (accounts.RegTokenSpec, error) {
	s := accounts.RegTokenSpec{Token: b.Token, Length: b.Length}
	var err error
	if s.UsesAllowed, s.SetUses, err = optInt("uses_allowed", b.UsesAllowed); err != nil {
		return s, err
	}
	if s.ExpiryTime, s.SetExpiry, err = optInt("expiry_time", b.ExpiryTime); err != nil {
		return s, err
	}
	return s, nil
}

func (a *API) newRegToken(w http.ResponseWriter, r *http.Request, _ *deviceT) error {
	var b regTokenBody
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	s, err := b.spec()
	if err != nil {
		return err
	}
	t, err := a.accounts.CreateRegToken(r.Context(), s)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, t)
}

func (a *API) getRegToken(w http.ResponseWriter, r *http.Request, _ *deviceT) error {
	t, err := a.accounts.RegToken(r.Context(), httpapi.Var(r, "token"))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, t)
}

func (a *API) updateRegToken(w http.ResponseWriter, r *http.Request, _ *deviceT) error {
	var b regTokenBody
	if err := httpapi.Decode(r, &b); err != nil {
		return err
	}
	s, err := b.spec()
	if err != nil {
		return err
	}
	t, err := a.accounts.UpdateRegToken(r.Context(), httpapi.Var(r, "token"), s)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, t)
}

func (a *API) deleteRegToken(w http.ResponseWriter, r *http.Request, _ *deviceT) error {
	if err := a.accounts.DeleteRegToken(r.Context(), httpapi.Var(r, "token")); err != nil {
		return err
	}
	return httpapi.OK(w)
}
