package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

func (a *API) changePassword(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		Auth          json.RawMessage `json:"auth"`
		NewPassword   string          `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.NewPassword == "" {
		return mxerr.MissingParam("new_password is required")
	}
	if err := a.accounts.CheckPasswordStrength(req.NewPassword); err != nil {
		return err
	}
	res, err := a.uia(r, d, req.Auth)
	if err != nil {
		return err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := a.accounts.ChangePassword(r.Context(), d.UserID, req.NewPassword, logout, d.DeviceID); err != nil {
		return err
	}
	a.accounts.UIADone(r.Context(), res.SessionID)
	return httpapi.OK(w)
}

func (a *API) deactivate(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		Auth  json.RawMessage `json:"auth"`
		Erase bool            `json:"erase"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	res, err := a.uia(r, d, req.Auth)
	if err != nil {
		return err
	}
	if err := a.accounts.Deactivate(r.Context(), d.UserID, req.Erase); err != nil {
		return err
	}
	a.accounts.UIADone(r.Context(), res.SessionID)
	return httpapi.JSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}
