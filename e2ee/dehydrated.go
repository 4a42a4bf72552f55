package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// DehydratedDeviceUpload is the body of PUT dehydrated_device (MSC3814):
// the device, its data and its keys.
type DehydratedDeviceUpload struct {
	DeviceID                 string          `json:"device_id"`
	DeviceData               json.RawMessage `json:"device_data"`
	InitialDeviceDisplayName *string         `json:"initial_device_display_name"`
	UploadRequest
}

// PutDehydratedDevice creates the user's dehydrated device with its keys,
// replacing (and deleting) any previous one, and returns its ID. The
// device is an ordinary device of the user (it receives to-device
// messages and appears in /keys/query) that nobody can log in as.
func (e *Engine) PutDehydratedDevice(ctx context.Context, userID string, req DehydratedDeviceUpload) (string, error) {
	if req.DeviceID == "" {
		return "", mxerr.MissingParam("device_id is required")
	}
	if !validID(req.DeviceID) {
		return "", mxerr.InvalidParam("Invalid device_id")
	}
	if len(req.DeviceData) > MaxBlobBytes {
		return "", mxerr.TooLarge("device_data is larger than %d bytes", MaxBlobBytes)
	}
	var data struct {
		Algorithm any `json:"algorithm"`
	}
	if !isObject(req.DeviceData) || json.Unmarshal(req.DeviceData, &data) != nil {
		return "", mxerr.BadJSON("device_data must be a JSON object")
	}
	if alg, ok := data.Algorithm.(string); !ok || alg == "" {
		return "", mxerr.MissingParam("device_data.algorithm is required")
	}
	if req.InitialDeviceDisplayName != nil && len(*req.InitialDeviceDisplayName) > 100 {
		return "", mxerr.InvalidParam("initial_device_display_name is longer than 100 bytes")
	}
	if !present(req.DeviceKeys) {
		return "", mxerr.MissingParam("device_keys is required")
	}
	if len(req.OneTimeKeys) > e.cfg.MaxOneTimeKeysPerUpload {
		return "", mxerr.TooLarge("At most %d one-time keys per upload", e.cfg.MaxOneTimeKeysPerUpload)
	}
	dk, err := parseDeviceKeys(req.DeviceKeys, userID, req.DeviceID)
	if err != nil {
		return "", err
	}
	otks, err := parseKeyMap(req.OneTimeKeys, false)
	if err != nil {
		return "", err
	}
	fallbacks, err := parseKeyMap(req.FallbackKeys, true)
	if err != nil {
		return "", err
	}
	if len(fallbacks) > maxFallbackKeys {
		return "", mxerr.TooLarge("At most %d fallback keys per upload", maxFallbackKeys)
	}
	now := e.nowMS()
	err = e.db.Write(ctx, func(tx *storage.Tx) error {
		// Locks in the order every writer takes them: the user's dehydrated
		// device, then the new device, then (later) the device_lists stream.
		if err := e.store.KeysLock(ctx, tx, "dehydrated|"+userID); err != nil {
			return err
		}
		if err := e.store.KeysLock(ctx, tx, "device|"+userID+"|"+req.DeviceID); err != nil {
			return err
		}
		old, err := e.store.DehydratedDeviceGet(ctx, tx, userID)
		hasOld := err == nil
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		taken, err := e.store.DeviceExists(ctx, tx, userID, req.DeviceID)
		if err != nil {
			return err
		}
		if taken && (!hasOld || old.DeviceID != req.DeviceID) {
			return mxerr.InvalidParam("You already have a device %s", req.DeviceID)
		}
		if hasOld {
			if err := e.removeDehydrated(ctx, tx, userID, old.DeviceID); err != nil {
				return err
			}
		}
		if err := e.accounts.DeviceUpsert(ctx, tx, storage.Device{
			UserID: userID, DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName, CreatedTS: now,
		}); err != nil {
			return err
		}
		if err := e.store.DehydratedDevicePut(ctx, tx, storage.DehydratedDevice{
			UserID: userID, DeviceID: req.DeviceID, DeviceData: string(req.DeviceData), CreatedTS: now,
		}); err != nil {
			return err
		}
		if _, err := e.putDeviceKeys(ctx, tx, userID, req.DeviceID, dk); err != nil {
			return err
		}
		return e.putOneTimeKeys(ctx, tx, userID, req.DeviceID, dk.ed25519, otks, fallbacks)
	})
	if err != nil {
		return "", err
	}
	return req.DeviceID, nil
}

// removeDehydrated deletes a dehydrated device and everything of it. Its
// device has no access tokens, so there are none to revoke.
func (e *Engine) removeDehydrated(ctx context.Context, tx *storage.Tx, userID, deviceID string) error {
	if err := e.accounts.DevicesDelete(ctx, tx, userID, []string{deviceID}); err != nil {
		return err
	}
	return e.DevicesDeleted(ctx, tx, userID, []string{deviceID})
}

// DehydratedDevice returns the user's dehydrated device ID and data;
// M_NOT_FOUND if there is none.
func (e *Engine) DehydratedDevice(ctx context.Context, userID string) (string, json.RawMessage, error) {
	d, err := e.store.DehydratedDeviceGet(ctx, e.db.Read(), userID)
	if err != nil {
		return "", nil, notFoundAs(err, mxerr.NotFound("No dehydrated device"))
	}
	return d.DeviceID, json.RawMessage(d.DeviceData), nil
}

// DeleteDehydratedDevice deletes the user's dehydrated device and returns
// its ID; M_NOT_FOUND if there is none.
func (e *Engine) DeleteDehydratedDevice(ctx context.Context, userID string) (string, error) {
	var id string
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.store.KeysLock(ctx, tx, "dehydrated|"+userID); err != nil {
			return err
		}
		d, err := e.store.DehydratedDeviceGet(ctx, tx, userID)
		if err != nil {
			return notFoundAs(err, mxerr.NotFound("No dehydrated device"))
		}
		id = d.DeviceID
		return e.removeDehydrated(ctx, tx, userID, d.DeviceID)
	})
	return id, err
}

// DehydratedDeviceEvents returns the to-device messages of the user's
// dehydrated device after the position nextBatch ("" from the start),
// and the token of the next batch, "" once all are returned. Reading
// deletes nothing: a rehydration that fails can start again.
func (e *Engine) DehydratedDeviceEvents(ctx context.Context, userID, deviceID, nextBatch string) ([]ToDeviceMessage, string, error) {
	d, err := e.store.DehydratedDeviceGet(ctx, e.db.Read(), userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, "", err
	}
	if err != nil || d.DeviceID != deviceID {
		return nil, "", mxerr.Forbidden("%s is not your dehydrated device", deviceID)
	}
	var since int64
	if nextBatch != "" {
		if since, err = parsePos(nextBatch); err != nil {
			return nil, "", err
		}
	}
	msgs, next, err := e.ToDeviceSince(ctx, userID, deviceID, since, DefaultToDeviceLimit)
	if err != nil {
		return nil, "", err
	}
	if len(msgs) < DefaultToDeviceLimit {
		return msgs, "", nil
	}
	return msgs, strconv.FormatInt(next, 10), nil
}
