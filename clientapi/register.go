package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/ratelimit"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

type registerRequest struct {
	Auth                     json.RawMessage `json:"auth"`
	Username                 string          `json:"username"`
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
}

func (a *API) registrationFlows() []accounts.Flow {
	switch a.accounts.RegistrationMode() {
	case "open":
		return []accounts.Flow{{Stages: []string{accounts.StageDummy}}}
	case "token":
		return []accounts.Flow{{Stages: []string{accounts.StageRegistrationToken}}}
	}
	return nil
}

func (a *API) register(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	kind := r.URL.Query().Get("kind")
	if kind == "" {
		kind = "user"
	}
	var req registerRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	ip := httpapi.ClientIP(ctx)
	sp := accounts.NewSessionParams{DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
		Refresh: req.RefreshToken, IP: ip, Agent: r.UserAgent()}
	switch kind {
	case "guest":
		if !a.accounts.GuestsAllowed() {
			return mxerr.GuestAccessForbidden("Guest access is disabled")
		}
		if err := a.limits.Allow(ctx, ratelimit.RegisterPerIP, ip); err != nil {
			return err
		}
		// Guests get a fresh device whatever they ask for.
		sp.DeviceID = ""
		sess, err := a.accounts.Register(ctx, accounts.RegisterParams{Guest: true, InhibitLogin: req.InhibitLogin, Session: sp})
		if err != nil {
			return err
		}
		return a.registered(w, sess, req.InhibitLogin)
	case "user":
	default:
		return mxerr.InvalidParam("kind must be user or guest")
	}
	flows := a.registrationFlows()
	if flows == nil {
		return mxerr.Forbidden("Registration is disabled")
	}
	// Check what can be checked before asking the client to authenticate,
	// so that a taken name does not cost a registration token.
	if req.Username != "" {
		if err := a.checkAvailable(r, req.Username); err != nil {
			return err
		}
	}
	if req.Password != "" {
		if err := a.accounts.CheckPasswordStrength(req.Password); err != nil {
			return err
		}
	}
	res, err := a.accounts.UserInteractive(ctx, accounts.UIARequest{
		Auth: req.Auth, Fingerprint: "POST /register", Flows: flows,
	})
	if err != nil {
		return err
	}
	if err := a.limits.Allow(ctx, ratelimit.RegisterPerIP, ip); err != nil {
		return err
	}
	if req.Username == "" {
		return mxerr.MissingParam("username is required")
	}
	if req.Password == "" {
		return mxerr.MissingParam("password is required")
	}
	sess, err := a.accounts.Register(ctx, accounts.RegisterParams{
		Localpart: req.Username, Password: req.Password, InhibitLogin: req.InhibitLogin,
		RegistrationToken: res.RegistrationToken, Session: sp,
	})
	if err != nil {
		return err
	}
	a.accounts.UIADone(ctx, res.SessionID)
	return a.registered(w, sess, req.InhibitLogin)
}

func (a *API) registered(w http.ResponseWriter, s accounts.Session, inhibit bool) error {
	if inhibit {
		return httpapi.JSON(w, http.StatusOK, map[string]any{"user_id": s.UserID, "home_server": a.cfg.ServerName})
	}
	out := sessionJSON(s, "")
	return httpapi.JSON(w, http.StatusOK, out)
}

func (a *API) checkAvailable(r *http.Request, username string) error {
	if err := a.accounts.ValidateLocalpart(username); err != nil {
		return err
	}
	exists, err := a.accounts.UserExists(r.Context(), a.accounts.UserID(username))
	if err != nil {
		return err
	}
	if exists {
		return mxerr.UserInUse("User ID already taken")
	}
	return nil
}

func (a *API) registerAvailable(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := a.limits.Allow(ctx, ratelimit.RegisterPerIP, httpapi.ClientIP(ctx)); err != nil {
		return err
	}
	username := r.URL.Query().Get("username")
	if username == "" {
		return mxerr.MissingParam("username is required")
	}
	if err := a.checkAvailable(r, username); err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]bool{"available": true})
}

func (a *API) regTokenValidity(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if a.accounts.RegistrationMode() != "token" {
		return mxerr.Forbidden("Registration tokens are not in use on this server")
	}
	if err := a.limits.Allow(ctx, ratelimit.RegisterPerIP, httpapi.ClientIP(ctx)); err != nil {
		return err
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		return mxerr.MissingParam("token is required")
	}
	ok, err := a.accounts.RegTokenValid(ctx, token)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]bool{"valid": ok})
}
