package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/parley-chat/parley/e2ee"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// keysRoutes registers the end-to-end encryption endpoints.
func (a *API) keysRoutes(s *httpapi.Group) {
	if a.deps.Keys == nil {
		return
	}
	s.Handle(http.MethodPost, "/keys/upload", a.auth(a.uploadKeys))
	s.Handle(http.MethodPost, "/keys/query", a.auth(a.queryKeys))
	s.Handle(http.MethodPost, "/keys/claim", a.auth(a.claimKeys))
	s.Handle(http.MethodGet, "/keys/changes", a.auth(a.keyChanges))
	s.Handle(http.MethodPost, "/keys/device_signing/upload", a.noGuests(a.uploadCrossSigning))
	s.Handle(http.MethodPost, "/keys/signatures/upload", a.noGuests(a.uploadSignatures))
	// Transaction IDs, and the session IDs below (base64), may hold "/".
	s.Handle(http.MethodPut, "/sendToDevice/{eventType}/{txnId:.+}", a.auth(a.sendToDevice))

	s.Handle(http.MethodPost, "/room_keys/version", a.noGuests(a.createBackup))
	s.Handle(http.MethodGet, "/room_keys/version", a.noGuests(a.getBackup))
	s.Handle(http.MethodGet, "/room_keys/version/{version}", a.noGuests(a.getBackup))
	s.Handle(http.MethodPut, "/room_keys/version/{version}", a.noGuests(a.updateBackup))
	s.Handle(http.MethodDelete, "/room_keys/version/{version}", a.noGuests(a.deleteBackup))
	for _, p := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId:.+}"} {
		s.Handle(http.MethodPut, p, a.noGuests(a.putBackupKeys))
		s.Handle(http.MethodGet, p, a.noGuests(a.getBackupKeys))
		s.Handle(http.MethodDelete, p, a.noGuests(a.deleteBackupKeys))
	}
}

// keysUnstableRoutes registers the dehydrated device endpoints (MSC3814)
// under the unstable prefix clients use.
func (a *API) keysUnstableRoutes(r *mux.Router) {
	if a.deps.Keys == nil {
		return
	}
	s := httpapi.NewGroup(r, "/_matrix/client/unstable/org.matrix.msc3814.v1")
	s.Handle(http.MethodPut, "/dehydrated_device", a.noGuests(a.putDehydratedDevice))
	s.Handle(http.MethodGet, "/dehydrated_device", a.noGuests(a.getDehydratedDevice))
	s.Handle(http.MethodDelete, "/dehydrated_device", a.noGuests(a.deleteDehydratedDevice))
	// The device ID is a base64 key and may hold "/".
	s.Handle(http.MethodPost, "/dehydrated_device/{deviceId:.+}/events", a.noGuests(a.dehydratedDeviceEvents))
	s.Handle(http.MethodGet, "/dehydrated_device/{deviceId:.+}/events", a.noGuests(a.dehydratedDeviceEvents))
}

func (a *API) uploadKeys(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req e2ee.UploadRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	counts, err := a.deps.Keys.UploadKeys(r.Context(), d.UserID, d.DeviceID, req)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts})
}

func (a *API) queryKeys(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.DeviceKeys == nil {
		return mxerr.MissingParam("device_keys is required")
	}
	res, err := a.deps.Keys.QueryKeys(r.Context(), d.UserID, req.DeviceKeys)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) claimKeys(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.OneTimeKeys == nil {
		return mxerr.MissingParam("one_time_keys is required")
	}
	res, err := a.deps.Keys.ClaimKeys(r.Context(), req.OneTimeKeys)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) keyChanges(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	q := r.URL.Query()
	if q.Get("from") == "" {
		return mxerr.MissingParam("from is required")
	}
	changed, left, err := a.deps.Keys.KeyChanges(r.Context(), d.UserID, q.Get("from"), q.Get("to"))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"changed": changed, "left": left})
}

func (a *API) uploadCrossSigning(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		e2ee.CrossSigningUpload
		Auth json.RawMessage `json:"auth"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	err := a.deps.Keys.UploadCrossSigningKeys(r.Context(), d.UserID, req.CrossSigningUpload, false)
	if !errors.Is(err, e2ee.ErrAuthRequired) {
		if err != nil {
			return err
		}
		return httpapi.OK(w)
	}
	// Replacing keys needs the password (spec: UIA unless first upload or
	// an identical retry).
	res, err := a.uia(r, d, req.Auth)
	if err != nil {
		return err
	}
	if err := a.deps.Keys.UploadCrossSigningKeys(r.Context(), d.UserID, req.CrossSigningUpload, true); err != nil {
		return err
	}
	a.accounts.UIADone(r.Context(), res.SessionID)
	return httpapi.OK(w)
}

func (a *API) uploadSignatures(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req map[string]map[string]json.RawMessage
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	failures, err := a.deps.Keys.UploadSignatures(r.Context(), d.UserID, req)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"failures": failures})
}

func (a *API) sendToDevice(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if err := a.deps.Keys.SendToDevice(r.Context(), d.UserID, d.DeviceID, httpapi.Var(r, "eventType"), httpapi.Var(r, "txnId"), req.Messages); err != nil {
		return err
	}
	return httpapi.OK(w)
}

type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   string          `json:"version"`
}

func (a *API) createBackup(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req backupVersionBody
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	v, err := a.deps.Keys.CreateBackupVersion(r.Context(), d.UserID, req.Algorithm, req.AuthData)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"version": v})
}

func (a *API) getBackup(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	info, err := a.deps.Keys.BackupVersion(r.Context(), d.UserID, httpapi.Var(r, "version"))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, info)
}

func (a *API) updateBackup(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req backupVersionBody
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if err := a.deps.Keys.UpdateBackupVersion(r.Context(), d.UserID, httpapi.Var(r, "version"), req.Algorithm, req.AuthData, req.Version); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) deleteBackup(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := a.deps.Keys.DeleteBackupVersion(r.Context(), d.UserID, httpapi.Var(r, "version")); err != nil {
		return err
	}
	return httpapi.OK(w)
}

// backupVersionParam is the version query parameter every room_keys/keys
// request needs.
func backupVersionParam(r *http.Request) (string, error) {
	v := r.URL.Query().Get("version")
	if v == "" {
		return "", mxerr.MissingParam("The version query parameter is required")
	}
	return v, nil
}

func (a *API) putBackupKeys(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	version, err := backupVersionParam(r)
	if err != nil {
		return err
	}
	room, session := httpapi.Var(r, "roomId"), httpapi.Var(r, "sessionId")
	var rooms map[string]e2ee.RoomBackupUpload
	switch {
	case room == "":
		var req struct {
			Rooms map[string]e2ee.RoomBackupUpload `json:"rooms"`
		}
		if err := httpapi.Decode(r, &req); err != nil {
			return err
		}
		if req.Rooms == nil {
			return mxerr.MissingParam("rooms is required")
		}
		rooms = req.Rooms
	case session == "":
		var req e2ee.RoomBackupUpload
		if err := httpapi.Decode(r, &req); err != nil {
			return err
		}
		rooms = map[string]e2ee.RoomBackupUpload{room: req}
	default:
		var req e2ee.BackupSessionUpload
		if err := httpapi.Decode(r, &req); err != nil {
			return err
		}
		rooms = map[string]e2ee.RoomBackupUpload{room: {Sessions: map[string]e2ee.BackupSessionUpload{session: req}}}
	}
	res, err := a.deps.Keys.PutBackupKeys(r.Context(), d.UserID, version, rooms)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) getBackupKeys(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	version, err := backupVersionParam(r)
	if err != nil {
		return err
	}
	room, session := httpapi.Var(r, "roomId"), httpapi.Var(r, "sessionId")
	keys, err := a.deps.Keys.BackupKeys(r.Context(), d.UserID, version, room, session)
	if err != nil {
		return err
	}
	switch {
	case room == "":
		rooms := map[string]any{}
		for id, sessions := range keys {
			rooms[id] = map[string]any{"sessions": sessions}
		}
		return httpapi.JSON(w, http.StatusOK, map[string]any{"rooms": rooms})
	case session == "":
		sessions := keys[room]
		if sessions == nil {
			sessions = map[string]e2ee.BackupSession{}
		}
		return httpapi.JSON(w, http.StatusOK, map[string]any{"sessions": sessions})
	default:
		return httpapi.JSON(w, http.StatusOK, keys[room][session])
	}
}

func (a *API) deleteBackupKeys(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	version, err := backupVersionParam(r)
	if err != nil {
		return err
	}
	res, err := a.deps.Keys.DeleteBackupKeys(r.Context(), d.UserID, version, httpapi.Var(r, "roomId"), httpapi.Var(r, "sessionId"))
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, res)
}

func (a *API) putDehydratedDevice(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	var req e2ee.DehydratedDeviceUpload
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	id, err := a.deps.Keys.PutDehydratedDevice(r.Context(), d.UserID, req)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"device_id": id})
}

func (a *API) getDehydratedDevice(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, data, err := a.deps.Keys.DehydratedDevice(r.Context(), d.UserID)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"device_id": id, "device_data": data})
}

func (a *API) deleteDehydratedDevice(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	id, err := a.deps.Keys.DeleteDehydratedDevice(r.Context(), d.UserID)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"device_id": id})
}

func (a *API) dehydratedDeviceEvents(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	from := r.URL.Query().Get("from")
	if r.Method == http.MethodPost {
		var req struct {
			NextBatch string `json:"next_batch"`
		}
		if err := httpapi.Decode(r, &req); err != nil {
			return err
		}
		from = req.NextBatch
	}
	events, next, err := a.deps.Keys.DehydratedDeviceEvents(r.Context(), d.UserID, httpapi.Var(r, "deviceId"), from)
	if err != nil {
		return err
	}
	if events == nil {
		events = []e2ee.ToDeviceMessage{}
	}
	res := map[string]any{"events": events}
	if next != "" {
		res["next_batch"] = next
	}
	return httpapi.JSON(w, http.StatusOK, res)
}
