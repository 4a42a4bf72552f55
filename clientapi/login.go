package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/ratelimit"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

type deviceT = accounts.Device

func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) error {
	return httpapi.JSON(w, http.StatusOK, map[string]any{"flows": []map[string]any{
		{"type": "m.login.password"},
		{"type": "m.login.token", "get_login_token": true},
	}})
}

type identifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

type loginRequest struct {
	Type                     string      `json:"type"`
	Identifier               *identifier `json:"identifier"`
	User                     string      `json:"user"`
	Password                 string      `json:"password"`
	Token                    string      `json:"token"`
	DeviceID                 string      `json:"device_id"`
	InitialDeviceDisplayName string      `json:"initial_device_display_name"`
	RefreshToken             bool        `json:"refresh_token"`
}

func (a *API) login(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var req loginRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	ip := httpapi.ClientIP(ctx)
	if err := a.limits.Allow(ctx, ratelimit.LoginPerIP, ip); err != nil {
		return err
	}
	sp := accounts.NewSessionParams{DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
		Refresh: req.RefreshToken, IP: ip, Agent: r.UserAgent()}
	var (
		sess accounts.Session
		err  error
	)
	switch req.Type {
	case "m.login.password":
		user := req.User
		if req.Identifier != nil {
			if req.Identifier.Type != "m.id.user" {
				return mxerr.Unknown("Only the m.id.user identifier is supported")
			}
			user = req.Identifier.User
		}
		if user == "" {
			return mxerr.MissingParam("Missing user identifier")
		}
		if req.Password == "" {
			return mxerr.MissingParam("Missing password")
		}
		userID, perr := a.accounts.ParseLocalUser(user)
		if perr != nil {
			if mxerr.IsCode(perr, "M_FORBIDDEN") {
				return mxerr.Forbidden("Invalid username or password")
			}
			return perr
		}
		if err := a.limits.Allow(ctx, ratelimit.LoginPerAccount, userID); err != nil {
			return err
		}
		if err := a.limits.Peek(ratelimit.LoginFailures, userID); err != nil {
			return err
		}
		sess, err = a.accounts.LoginPassword(ctx, userID, req.Password, sp)
		if mxerr.IsCode(err, "M_FORBIDDEN") {
			// Count the failure; the account is limited after a few.
			_ = a.limits.Allow(ctx, ratelimit.LoginFailures, userID)
		}
	case "m.login.token":
		if req.Token == "" {
			return mxerr.MissingParam("Missing token")
		}
		sess, err = a.accounts.LoginToken(ctx, req.Token, sp)
	case "":
		return mxerr.MissingParam("Missing login type")
	default:
		return mxerr.Unknown("Unknown login type %q", req.Type)
	}
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, sessionJSON(sess, a.cfg.PublicBaseURL))
}

func sessionJSON(s accounts.Session, baseURL string) map[string]any {
	out := map[string]any{"user_id": s.UserID, "device_id": s.DeviceID, "access_token": s.AccessToken, "home_server": s.HomeServer}
	if s.RefreshToken != "" {
		out["refresh_token"] = s.RefreshToken
		out["expires_in_ms"] = s.ExpiresInMS
	}
	if baseURL != "" {
		out["well_known"] = map[string]any{"m.homeserver": map[string]string{"base_url": trimSlash(baseURL)}}
	}
	return out
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

func (a *API) refresh(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return mxerr.MissingParam("Missing refresh_token")
	}
	s, err := a.accounts.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{
		"access_token": s.AccessToken, "refresh_token": s.RefreshToken, "expires_in_ms": s.ExpiresInMS,
	})
}

func (a *API) logout(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := a.accounts.Logout(r.Context(), d); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) logoutAll(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := a.accounts.LogoutAll(r.Context(), d.UserID); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	return httpapi.JSON(w, http.StatusOK, map[string]any{"user_id": d.UserID, "device_id": d.DeviceID, "is_guest": d.IsGuest})
}

// passwordFlows is the UIA flow for operations that re-check the password.
var passwordFlows = []accounts.Flow{{Stages: []string{accounts.StagePassword}}}

// uia runs user-interactive authentication for an authenticated user and
// returns the session to close once the operation succeeds.
func (a *API) uia(r *http.Request, d *deviceT, auth json.RawMessage) (*accounts.UIAResult, error) {
	if err := a.limits.Peek(ratelimit.UIAPasswordFails, d.UserID); err != nil {
		return nil, err
	}
	res, err := a.accounts.UserInteractive(r.Context(), accounts.UIARequest{
		Auth: auth, Fingerprint: r.Method + " " + r.URL.Path, UserID: d.UserID, Flows: passwordFlows,
	})
	if me, ok := mxerr.As(err); ok && me.Code == "M_FORBIDDEN" && me.Status == http.StatusUnauthorized {
		_ = a.limits.Allow(r.Context(), ratelimit.UIAPasswordFails, d.UserID)
	}
	return res, err
}

func (a *API) getLoginToken(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	res, err := a.uia(r, d, req.Auth)
	if err != nil {
		return err
	}
	tok, ttl, err := a.accounts.CreateLoginToken(r.Context(), d.UserID)
	if err != nil {
		return err
	}
	a.accounts.UIADone(r.Context(), res.SessionID)
	return httpapi.JSON(w, http.StatusOK, map[string]any{"login_token": tok, "expires_in_ms": ttl.Milliseconds()})
}
