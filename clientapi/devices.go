package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  *string `json:"last_seen_ip,omitempty"`
	LastSeenTS  *int64  `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d storage.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	devs, err := a.accounts.Devices(r.Context(), d.UserID)
	if err != nil {
		return err
	}
	out := make([]deviceJSON, len(devs))
	for i, dev := range devs {
		out[i] = toDeviceJSON(dev)
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"devices": out})
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	dev, err := a.accounts.GetDevice(r.Context(), d.UserID, httpapi.Var(r, "deviceId"))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, toDeviceJSON(dev))
}

func (a *API) putDevice(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	id := httpapi.Var(r, "deviceId")
	if req.DisplayName == nil {
		// Nothing to change, but the device must exist.
		if _, err := a.accounts.GetDevice(r.Context(), d.UserID, id); err != nil {
			return err
		}
		return httpapi.OK(w)
	}
	if err := a.accounts.RenameDevice(r.Context(), d.UserID, id, *req.DisplayName); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	id := httpapi.Var(r, "deviceId")
	if _, err := a.accounts.GetDevice(r.Context(), d.UserID, id); err != nil {
		return err
	}
	res, err := a.uia(r, d, req.Auth)
	if err != nil {
		return err
	}
	if err := a.accounts.DeleteDevices(r.Context(), d.UserID, []string{id}); err != nil {
		return err
	}
	a.accounts.UIADone(r.Context(), res.SessionID)
	return httpapi.OK(w)
}

// maxDeleteDevices bounds one delete_devices request.
const maxDeleteDevices = 1000

func (a *API) deleteDevices(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		Auth    json.RawMessage `json:"auth"`
		Devices []string        `json:"devices"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.Devices == nil {
		return mxerr.MissingParam("devices is required")
	}
	if len(req.Devices) > maxDeleteDevices {
		return mxerr.InvalidParam("At most %d devices per request", maxDeleteDevices)
	}
	res, err := a.uia(r, d, req.Auth)
	if err != nil {
		return err
	}
	if len(req.Devices) > 0 {
		if err := a.accounts.DeleteDevices(r.Context(), d.UserID, req.Devices); err != nil {
			return err
		}
	}
	a.accounts.UIADone(r.Context(), res.SessionID)
	return httpapi.OK(w)
}
