package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// ErrAuthRequired is returned by UploadCrossSigningKeys when the upload
// replaces existing keys and the caller has not run user-interactive
// authentication.
var ErrAuthRequired = errors.New("e2ee: user-interactive authentication required")

// CrossSigningUpload is the body of /keys/device_signing/upload.
type CrossSigningUpload struct {
	MasterKey      json.RawMessage `json:"master_key"`
	SelfSigningKey json.RawMessage `json:"self_signing_key"`
	UserSigningKey json.RawMessage `json:"user_signing_key"`
}

// Cross-signing key types, as the spec names their usage.
const (
	usageMaster      = "master"
	usageSelfSigning = "self_signing"
	usageUserSigning = "user_signing"
)

// crossSigningKey is a validated cross-signing key object.
type crossSigningKey struct {
	usage string
	pub   string
	obj   *signedObject
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// parseCrossSigningKey checks a cross-signing key's owner, usage and its
// one ed25519 key.
func parseCrossSigningKey(raw json.RawMessage, userID, usage string) (*crossSigningKey, error) {
	if len(raw) > MaxKeyObjectBytes {
		return nil, mxerr.TooLarge("%s key is larger than %d bytes", usage, MaxKeyObjectBytes)
	}
	o, err := parseSigned(raw)
	if err != nil {
		return nil, mxerr.BadJSON("%s key must be a JSON object of canonical JSON: %v", usage, err)
	}
	if o.str("user_id") != userID {
		return nil, mxerr.InvalidParam("%s key: user_id must be %s", usage, userID)
	}
	usages, ok := o.stringList("usage")
	if !ok || !slices.Contains(usages, usage) {
		return nil, mxerr.InvalidParam("%s key: usage must include %q", usage, usage)
	}
	keys, ok := o.stringMap("keys")
	if !ok || len(keys) != 1 {
		return nil, mxerr.InvalidParam("%s key: keys must hold exactly one key", usage)
	}
	for name, pub := range keys {
		if name != "ed25519:"+pub || !validEd25519Key(pub) {
			return nil, mxerr.InvalidParam("%s key: keys must be {\"ed25519:<public key>\": \"<public key>\"}", usage)
		}
		return &crossSigningKey{usage: usage, pub: pub, obj: o}, nil
	}
	return nil, mxerr.InvalidParam("%s key: no key", usage)
}

// UploadCrossSigningKeys stores a user's cross-signing keys. The
// self-signing and user-signing keys must be signed by the master key
// sent with them or, failing that, the stored one. Replacing keys needs
// user-interactive authentication: without it (authenticated false) the
// call returns ErrAuthRequired unless the user has no master key yet or
// every key sent is already stored.
func (e *Engine) UploadCrossSigningKeys(ctx context.Context, userID string, req CrossSigningUpload, authenticated bool) error {
	var keys []*crossSigningKey
	for _, k := range []struct {
		raw   json.RawMessage
		usage string
	}{{req.MasterKey, usageMaster}, {req.SelfSigningKey, usageSelfSigning}, {req.UserSigningKey, usageUserSigning}} {
		if !present(k.raw) {
			continue
		}
		c, err := parseCrossSigningKey(k.raw, userID, k.usage)
		if err != nil {
			return err
		}
		keys = append(keys, c)
	}
	if len(keys) == 0 {
		return nil
	}
	return e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.store.KeysLock(ctx, tx, "cross-signing|"+userID); err != nil {
			return err
		}
		stored, err := e.store.CrossSigningKeysGet(ctx, tx, userID)
		if err != nil {
			return err
		}
		master := stored[usageMaster].PublicKey
		sent := map[string]*crossSigningKey{}
		for _, k := range keys {
			sent[k.usage] = k
			if k.usage == usageMaster {
				master = k.pub
			}
		}
		devices, err := e.store.UserDeviceIDs(ctx, tx, userID)
		if err != nil {
			return err
		}
		// Check every key, and work out the form it would be stored in:
		// a key is new unless exactly that is stored already.
		var fresh []*crossSigningKey
		forms := map[*crossSigningKey]string{}
		for _, k := range keys {
			if slices.Contains(devices, k.pub) {
				return mxerr.Forbidden("The public key of the %s key is one of your device IDs", k.usage)
			}
			if k.usage != usageMaster {
				if master == "" {
					return mxerr.MissingParam("No master key is available to check the %s key", k.usage)
				}
				if !k.obj.verify(userID, "ed25519:"+master, master) {
					return mxerr.Custom(http.StatusBadRequest, "M_INVALID_SIGNATURE", "The %s key is not signed by the master key", k.usage)
				}
			}
			form, err := e.crossSigningForm(ctx, tx, userID, master, k)
			if err != nil {
				return err
			}
			if old, ok := stored[k.usage]; !ok || old.KeyJSON != form {
				fresh = append(fresh, k)
				forms[k] = form
			}
		}
		if len(fresh) == 0 {
			return nil
		}
		if _, hasMaster := stored[usageMaster]; hasMaster && !authenticated {
			return ErrAuthRequired
		}
		for _, k := range fresh {
			if err := e.putCrossSigningKey(ctx, tx, userID, k, forms[k], stored[k.usage]); err != nil {
				return err
			}
		}
		// A new master key leaves the old self-signing and user-signing
		// keys unverifiable: they go unless replaced in the same upload.
		if old, ok := stored[usageMaster]; ok && old.PublicKey != master {
			for _, usage := range []string{usageSelfSigning, usageUserSigning} {
				prev, ok := stored[usage]
				if !ok || sent[usage] != nil {
					continue
				}
				if err := e.store.CrossSigningKeyDelete(ctx, tx, userID, usage); err != nil {
					return err
				}
				if err := e.store.SignaturesDeleteBySigner(ctx, tx, userID, "ed25519:"+prev.PublicKey); err != nil {
					return err
				}
			}
		}
		return e.deviceListChanged(ctx, tx, userID, "")
	})
}

// crossSigningForm is a key as it is stored: canonical JSON keeping only
// the signatures that verify (on the master key, its own and its devices';
// on the others, the master key's).
func (e *Engine) crossSigningForm(ctx context.Context, tx *storage.Tx, userID, master string, k *crossSigningKey) (string, error) {
	keep := map[string]map[string]string{}
	for kid, sig := range k.obj.signatures[userID] {
		signer, ok := strings.CutPrefix(kid, "ed25519:")
		if !ok {
			continue
		}
		pub := master
		if k.usage == usageMaster && signer != k.pub {
			dev, err := e.store.DeviceKeysGet(ctx, tx, userID, signer)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return "", err
			}
			pub = dev.Ed25519
		} else if k.usage != usageMaster && signer != master {
			continue
		}
		if k.obj.verify(userID, kid, pub) {
			mergeSignatures(keep, map[string]map[string]string{userID: {kid: sig}})
		}
	}
	return k.obj.withSignatures(keep)
}

// putCrossSigningKey stores a key in its stored form and forgets the
// signatures made by or of the key it replaces.
func (e *Engine) putCrossSigningKey(ctx context.Context, tx *storage.Tx, userID string, k *crossSigningKey, form string, old storage.CrossSigningKey) error {
	if old.PublicKey != "" && old.PublicKey != k.pub {
		if err := e.store.SignaturesDeleteBySigner(ctx, tx, userID, "ed25519:"+old.PublicKey); err != nil {
			return err
		}
		if err := e.store.SignaturesDeleteForTarget(ctx, tx, userID, old.PublicKey); err != nil {
			return err
		}
	}
	return e.store.CrossSigningKeyPut(ctx, tx, storage.CrossSigningKey{
		UserID: userID, Type: k.usage, PublicKey: k.pub, KeyJSON: form, UpdatedTS: e.nowMS(),
	})
}

// maxSignatureUploads bounds the keys of one /keys/signatures/upload.
const maxSignatureUploads = 1000

// UploadSignatures stores signatures of the requester's own devices (by
// their self-signing key), of their own master key (by their devices) and
// of other users' master keys (by their user-signing key). Every signature
// is checked; what fails is reported per user and key ID as a Matrix
// error body.
func (e *Engine) UploadSignatures(ctx context.Context, userID string, body map[string]map[string]json.RawMessage) (map[string]map[string]any, error) {
	n := 0
	for u, keys := range body {
		if !validUserID(u) {
			return nil, mxerr.InvalidParam("%q is not a user ID", u)
		}
		n += len(keys)
	}
	if n > maxSignatureUploads {
		return nil, mxerr.TooLarge("At most %d signed keys per upload", maxSignatureUploads)
	}
	failures := map[string]map[string]any{}
	fail := func(user, key string, err *mxerr.Error) {
		if failures[user] == nil {
			failures[user] = map[string]any{}
		}
		failures[user][key] = map[string]string{"errcode": err.Code, "error": err.Msg}
	}
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.store.KeysLock(ctx, tx, "cross-signing|"+userID); err != nil {
			return err
		}
		own, err := e.store.CrossSigningKeysGet(ctx, tx, userID)
		if err != nil {
			return err
		}
		ownChanged := false
		for _, target := range sortedKeys(body) {
			for _, keyID := range sortedKeys(body[target]) {
				sigs, me, err := e.checkSignedKey(ctx, tx, userID, own, target, keyID, body[target][keyID])
				if err != nil {
					return err
				}
				if me != nil {
					fail(target, keyID, me)
					continue
				}
				for _, s := range sigs {
					if err := e.store.SignatureAdd(ctx, tx, s); err != nil {
						return err
					}
				}
				if target == userID {
					ownChanged = true
				} else if err := e.deviceListChanged(ctx, tx, target, userID); err != nil {
					return err
				}
			}
		}
		if ownChanged {
			return e.deviceListChanged(ctx, tx, userID, "")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return failures, nil
}

func invalidSignature(format string, args ...any) *mxerr.Error {
	return mxerr.Custom(http.StatusBadRequest, "M_INVALID_SIGNATURE", format, args...)
}

// checkSignedKey validates one entry of /keys/signatures/upload and
// returns the signatures to store, or the failure to report.
func (e *Engine) checkSignedKey(ctx context.Context, tx *storage.Tx, userID string, own map[string]storage.CrossSigningKey,
	target, keyID string, raw json.RawMessage) ([]storage.Signature, *mxerr.Error, error) {
	if len(raw) > MaxKeyObjectBytes {
		return nil, mxerr.TooLarge("Signed key is larger than %d bytes", MaxKeyObjectBytes), nil
	}
	o, err := parseSigned(raw)
	if err != nil {
		return nil, mxerr.BadJSON("Signed key is not a JSON object of canonical JSON"), nil
	}
	if o.str("user_id") != target {
		return nil, mxerr.InvalidParam("user_id does not match %s", target), nil
	}
	if !e.isLocal(target) {
		return nil, mxerr.Custom(http.StatusServiceUnavailable, "M_UNKNOWN", "Federation is not available on this server"), nil
	}
	// stored is the key as the server has it; signers maps the key IDs
	// allowed to sign it to their public keys.
	var stored string
	signers := map[string]string{}
	targetCS, err := e.store.CrossSigningKeysGet(ctx, tx, target)
	if err != nil {
		return nil, nil, err
	}
	master, hasMaster := targetCS[usageMaster]
	switch {
	case target != userID:
		if !hasMaster || keyID != master.PublicKey {
			return nil, mxerr.NotFound("%s is not the master key of %s", keyID, target), nil
		}
		usk, ok := own[usageUserSigning]
		if !ok {
			return nil, mxerr.Forbidden("You have no user-signing key"), nil
		}
		stored, signers["ed25519:"+usk.PublicKey] = master.KeyJSON, usk.PublicKey
	case hasMaster && keyID == master.PublicKey:
		stored = master.KeyJSON
		devs, err := e.store.DeviceKeysForUsers(ctx, []string{userID})
		if err != nil {
			return nil, nil, err
		}
		for _, d := range devs {
			signers["ed25519:"+d.DeviceID] = d.Ed25519
		}
	default:
		dev, err := e.store.DeviceKeysGet(ctx, tx, userID, keyID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, mxerr.NotFound("No device or key %s", keyID), nil
		}
		if err != nil {
			return nil, nil, err
		}
		ssk, ok := own[usageSelfSigning]
		if !ok {
			return nil, mxerr.Forbidden("You have no self-signing key"), nil
		}
		stored, signers["ed25519:"+ssk.PublicKey] = dev.KeyJSON, ssk.PublicKey
	}
	prev, err := parseSigned([]byte(stored))
	if err != nil {
		return nil, nil, err
	}
	if !prev.samePayload(o) {
		return nil, mxerr.InvalidParam("The signed object does not match the stored key %s", keyID), nil
	}
	var out []storage.Signature
	for kid, sig := range o.signatures[userID] {
		pub, ok := signers[kid]
		if !ok {
			continue
		}
		if !o.verify(userID, kid, pub) {
			return nil, invalidSignature("Invalid signature by %s", kid), nil
		}
		out = append(out, storage.Signature{TargetUserID: target, TargetKeyID: keyID, SignerUserID: userID, SignerKeyID: kid, Signature: sig})
	}
	if len(out) == 0 {
		return nil, invalidSignature("No signature by a key allowed to sign %s", keyID), nil
	}
	return out, nil, nil
}
