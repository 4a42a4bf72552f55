package e2ee

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// UploadRequest is the body of /keys/upload (and the key part of a
// dehydrated device).
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// maxFallbackKeys bounds the fallback keys of one upload (one per
// algorithm; clients use one).
const maxFallbackKeys = 16

// deviceKeys is a validated device keys object.
type deviceKeys struct {
	obj     *signedObject
	ed25519 string
	// stored is key_json: the object with the device's signature only.
	stored string
	// extra are the other signatures it carried (checked later).
	extra map[string]map[string]string
}

// parseDeviceKeys checks a device keys object for userID's deviceID:
// owner, shape, and the device's self-signature.
func parseDeviceKeys(raw json.RawMessage, userID, deviceID string) (*deviceKeys, error) {
	if len(raw) > MaxKeyObjectBytes {
		return nil, mxerr.TooLarge("device_keys is larger than %d bytes", MaxKeyObjectBytes)
	}
	o, err := parseSigned(raw)
	if err != nil {
		return nil, mxerr.BadJSON("device_keys must be a JSON object of canonical JSON: %v", err)
	}
	if o.str("user_id") != userID {
		return nil, mxerr.InvalidParam("device_keys.user_id must be %s", userID)
	}
	if o.str("device_id") != deviceID {
		return nil, mxerr.InvalidParam("device_keys.device_id must be %s", deviceID)
	}
	if _, ok := o.stringList("algorithms"); !ok {
		return nil, mxerr.BadJSON("device_keys.algorithms must be a list of strings")
	}
	keys, ok := o.stringMap("keys")
	if !ok {
		return nil, mxerr.BadJSON("device_keys.keys must map key IDs to keys")
	}
	ed := keys["ed25519:"+deviceID]
	if !validEd25519Key(ed) {
		return nil, mxerr.InvalidParam("device_keys.keys must hold the device's ed25519 key (ed25519:%s)", deviceID)
	}
	self := "ed25519:" + deviceID
	if !o.verify(userID, self, ed) {
		return nil, mxerr.Custom(http.StatusBadRequest, "M_INVALID_SIGNATURE", "device_keys is not signed by the device's ed25519 key")
	}
	stored, err := o.withSignatures(map[string]map[string]string{userID: {self: o.signatures[userID][self]}})
	if err != nil {
		return nil, mxerr.BadJSON("device_keys: %v", err)
	}
	extra := map[string]map[string]string{}
	for entity, sigs := range o.signatures {
		for kid, sig := range sigs {
			if entity != userID || kid != self {
				mergeSignatures(extra, map[string]map[string]string{entity: {kid: sig}})
			}
		}
	}
	return &deviceKeys{obj: o, ed25519: ed, stored: stored, extra: extra}, nil
}

// oneTimeKey is a validated one-time or fallback key.
type oneTimeKey struct {
	algorithm, keyID string
	json             string
	// obj is nil for a key given as a plain string.
	obj *signedObject
}

func parseOneTimeKey(name string, raw json.RawMessage, fallback bool) (oneTimeKey, error) {
	field := "one_time_keys"
	if fallback {
		field = "fallback_keys"
	}
	alg, kid, ok := strings.Cut(name, ":")
	if !ok || alg == "" || !validID(kid) || len(name) > MaxIDBytes {
		return oneTimeKey{}, mxerr.InvalidParam("%s: %q is not <algorithm>:<key_id>", field, name)
	}
	if len(raw) > MaxOneTimeKeyBytes {
		return oneTimeKey{}, mxerr.TooLarge("%s: %s is larger than %d bytes", field, name, MaxOneTimeKeyBytes)
	}
	k := oneTimeKey{algorithm: alg, keyID: kid}
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if json.Unmarshal(raw, &s) != nil || s == "" {
			return k, mxerr.BadJSON("%s: %s must be a key", field, name)
		}
		b, _ := json.Marshal(s)
		k.json = string(b)
	case len(raw) > 0 && raw[0] == '{':
		o, err := parseSigned(raw)
		if err != nil {
			return k, mxerr.BadJSON("%s: %s: %v", field, name, err)
		}
		if o.str("key") == "" {
			return k, mxerr.BadJSON("%s: %s must have a key", field, name)
		}
		k.obj = o
		k.json = string(o.canonical)
	default:
		return k, mxerr.BadJSON("%s: %s must be a string or a key object", field, name)
	}
	return k, nil
}

// checkSigned verifies a signed key object against the device's ed25519
// key. Objects of signed_* algorithms must carry that signature.
func (k oneTimeKey) checkSigned(userID, deviceID, ed string) error {
	if k.obj == nil {
		if strings.HasPrefix(k.algorithm, "signed_") {
			return mxerr.BadJSON("%s:%s must be a signed key object", k.algorithm, k.keyID)
		}
		return nil
	}
	if _, signed := k.obj.signatures[userID]["ed25519:"+deviceID]; !signed && !strings.HasPrefix(k.algorithm, "signed_") {
		return nil
	}
	if ed == "" || !k.obj.verify(userID, "ed25519:"+deviceID, ed) {
		return mxerr.Custom(http.StatusBadRequest, "M_INVALID_SIGNATURE", "%s:%s is not signed by the device's ed25519 key", k.algorithm, k.keyID)
	}
	return nil
}

// UploadKeys stores a device's identity, one-time and fallback keys and
// returns its unclaimed one-time key counts. Identity keys must be signed
// by the device and may not change once uploaded; one-time keys are
// bounded per upload and per device.
func (e *Engine) UploadKeys(ctx context.Context, userID, deviceID string, req UploadRequest) (map[string]int, error) {
	if len(req.OneTimeKeys) > e.cfg.MaxOneTimeKeysPerUpload {
		return nil, mxerr.TooLarge("At most %d one-time keys per upload", e.cfg.MaxOneTimeKeysPerUpload)
	}
	if len(req.FallbackKeys) > maxFallbackKeys {
		return nil, mxerr.TooLarge("At most %d fallback keys per upload", maxFallbackKeys)
	}
	var dk *deviceKeys
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		var err error
		if dk, err = parseDeviceKeys(req.DeviceKeys, userID, deviceID); err != nil {
			return nil, err
		}
	}
	otks, err := parseKeyMap(req.OneTimeKeys, false)
	if err != nil {
		return nil, err
	}
	fallbacks, err := parseKeyMap(req.FallbackKeys, true)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, f := range fallbacks {
		if seen[f.algorithm] {
			return nil, mxerr.InvalidParam("fallback_keys: at most one key per algorithm")
		}
		seen[f.algorithm] = true
	}
	var counts map[string]int
	err = e.db.Write(ctx, func(tx *storage.Tx) error {
		if err := e.store.KeysLock(ctx, tx, "device|"+userID+"|"+deviceID); err != nil {
			return err
		}
		ed, err := e.putDeviceKeys(ctx, tx, userID, deviceID, dk)
		if err != nil {
			return err
		}
		if err := e.putOneTimeKeys(ctx, tx, userID, deviceID, ed, otks, fallbacks); err != nil {
			return err
		}
		counts, err = e.store.OneTimeKeyCounts(ctx, tx, userID, deviceID)
		return err
	})
	e.keyCountsChanged()
	if err != nil {
		return nil, err
	}
	if len(otks)+len(fallbacks) > 0 {
		e.notifyKeys(userID, deviceID)
	}
	return withDefaultCount(counts), nil
}

func parseKeyMap(m map[string]json.RawMessage, fallback bool) ([]oneTimeKey, error) {
	out := make([]oneTimeKey, 0, len(m))
	for _, name := range sortedKeys(m) {
		k, err := parseOneTimeKey(name, m[name], fallback)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// withDefaultCount always reports signed_curve25519, which clients read
// to decide whether to upload more keys.
func withDefaultCount(c map[string]int) map[string]int {
	if c == nil {
		c = map[string]int{}
	}
	if _, ok := c["signed_curve25519"]; !ok {
		c["signed_curve25519"] = 0
	}
	return c
}

// putDeviceKeys stores new device keys (if dk is set) and returns the
// device's ed25519 key ("" if it has none yet).
func (e *Engine) putDeviceKeys(ctx context.Context, tx *storage.Tx, userID, deviceID string, dk *deviceKeys) (string, error) {
	old, err := e.store.DeviceKeysGet(ctx, tx, userID, deviceID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	exists := err == nil
	if dk == nil {
		return old.Ed25519, nil
	}
	cs, err := e.store.CrossSigningKeysGet(ctx, tx, userID)
	if err != nil {
		return "", err
	}
	for _, k := range cs {
		if k.PublicKey == deviceID {
			return "", mxerr.Forbidden("The device ID is the public key of a cross-signing key")
		}
	}
	changed := !exists
	if exists {
		prev, err := parseSigned([]byte(old.KeyJSON))
		if err != nil {
			return "", err
		}
		prevKeys, _ := prev.stringMap("keys")
		newKeys, _ := dk.obj.stringMap("keys")
		if !sameStrings(prevKeys, newKeys) {
			return "", mxerr.InvalidParam("This device already has different identity keys; log in as a new device to use new keys")
		}
		changed = old.KeyJSON != dk.stored
	}
	if changed {
		if err := e.store.DeviceKeysPut(ctx, tx, storage.DeviceKeys{
			UserID: userID, DeviceID: deviceID, KeyJSON: dk.stored, Ed25519: dk.ed25519, CreatedTS: e.nowMS(),
		}); err != nil {
			return "", err
		}
	}
	// A signature by the user's self-signing key may come with the keys
	// (a dehydrated device, a cross-signing reset): kept if it verifies.
	if ssk, ok := cs["self_signing"]; ok {
		kid := "ed25519:" + ssk.PublicKey
		if sig, ok := dk.extra[userID][kid]; ok && dk.obj.verify(userID, kid, ssk.PublicKey) {
			if err := e.store.SignatureAdd(ctx, tx, storage.Signature{
				TargetUserID: userID, TargetKeyID: deviceID, SignerUserID: userID, SignerKeyID: kid, Signature: sig,
			}); err != nil {
				return "", err
			}
			changed = true
		}
	}
	if changed {
		if err := e.deviceListChanged(ctx, tx, userID, ""); err != nil {
			return "", err
		}
	}
	return dk.ed25519, nil
}

func sameStrings(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// putOneTimeKeys stores one-time and fallback keys after checking their
// signatures and the per-device bound.
func (e *Engine) putOneTimeKeys(ctx context.Context, tx *storage.Tx, userID, deviceID, ed string, otks, fallbacks []oneTimeKey) error {
	for _, k := range append(append([]oneTimeKey(nil), otks...), fallbacks...) {
		if err := k.checkSigned(userID, deviceID, ed); err != nil {
			return err
		}
	}
	added := 0
	for _, k := range otks {
		existing, ok, err := e.store.OneTimeKeyAdd(ctx, tx, userID, deviceID, k.algorithm, k.keyID, k.json)
		if err != nil {
			return err
		}
		if ok {
			added++
		} else if existing != k.json {
			return mxerr.InvalidParam("One-time key %s:%s already exists with a different value", k.algorithm, k.keyID)
		}
	}
	if added > 0 {
		counts, err := e.store.OneTimeKeyCounts(ctx, tx, userID, deviceID)
		if err != nil {
			return err
		}
		total := 0
		for _, n := range counts {
			total += n
		}
		if total > e.cfg.MaxOneTimeKeysPerDevice {
			return mxerr.InvalidParam("A device may hold at most %d unclaimed one-time keys (this upload would make %d)",
				e.cfg.MaxOneTimeKeysPerDevice, total)
		}
	}
	for _, k := range fallbacks {
		if err := e.store.FallbackKeyPut(ctx, tx, userID, deviceID, k.algorithm, k.keyID, k.json); err != nil {
			return err
		}
	}
	return nil
}

// QueryResult is the answer to /keys/query.
type QueryResult struct {
	Failures        map[string]any                        `json:"failures"`
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
}

// QueryKeys returns the device and cross-signing keys of the users asked
// for (every device when a user's list is empty), with the signatures the
// requester may see. Users of other servers are reported under failures.
func (e *Engine) QueryKeys(ctx context.Context, requester string, want map[string][]string) (*QueryResult, error) {
	if len(want) > MaxQueryUsers {
		return nil, mxerr.TooLarge("At most %d users per query", MaxQueryUsers)
	}
	res := &QueryResult{
		Failures:        map[string]any{},
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
	var local []string
	for _, u := range sortedKeys(want) {
		if !validUserID(u) {
			return nil, mxerr.InvalidParam("%q is not a user ID", u)
		}
		if !e.isLocal(u) {
			res.Failures[serverOf(u)] = remoteFailure()
			continue
		}
		local = append(local, u)
		res.DeviceKeys[u] = map[string]json.RawMessage{}
	}
	if len(local) == 0 {
		return res, nil
	}
	sigs, err := e.store.SignaturesForUsers(ctx, local)
	if err != nil {
		return nil, err
	}
	// visible[user][keyID] are the stored signatures of a key the
	// requester may see (see "Key and signature security" in the spec).
	visible := map[string]map[string]map[string]map[string]string{}
	for _, s := range sigs {
		if s.SignerUserID != s.TargetUserID && s.SignerUserID != requester {
			continue
		}
		byKey := visible[s.TargetUserID]
		if byKey == nil {
			byKey = map[string]map[string]map[string]string{}
			visible[s.TargetUserID] = byKey
		}
		if byKey[s.TargetKeyID] == nil {
			byKey[s.TargetKeyID] = map[string]map[string]string{}
		}
		mergeSignatures(byKey[s.TargetKeyID], map[string]map[string]string{s.SignerUserID: {s.SignerKeyID: s.Signature}})
	}
	devs, err := e.store.DeviceKeysForUsers(ctx, local)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		if ids := want[d.UserID]; len(ids) > 0 && !containsString(ids, d.DeviceID) {
			continue
		}
		out, err := withStoredSignatures(d.KeyJSON, visible[d.UserID][d.DeviceID], d.DisplayName)
		if err != nil {
			return nil, err
		}
		res.DeviceKeys[d.UserID][d.DeviceID] = out
	}
	cs, err := e.store.CrossSigningKeysForUsers(ctx, local)
	if err != nil {
		return nil, err
	}
	for _, k := range cs {
		out, err := withStoredSignatures(k.KeyJSON, visible[k.UserID][k.PublicKey], nil)
		if err != nil {
			return nil, err
		}
		switch k.Type {
		case "master":
			res.MasterKeys[k.UserID] = out
		case "self_signing":
			res.SelfSigningKeys[k.UserID] = out
		case "user_signing":
			if k.UserID == requester {
				res.UserSigningKeys[k.UserID] = out
			}
		}
	}
	return res, nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// withStoredSignatures merges signatures into a stored key object and adds
// the device's display name under unsigned.
func withStoredSignatures(keyJSON string, sigs map[string]map[string]string, displayName *string) (json.RawMessage, error) {
	if len(sigs) == 0 && displayName == nil {
		return json.RawMessage(keyJSON), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(keyJSON), &obj); err != nil {
		return nil, err
	}
	if len(sigs) > 0 {
		all := map[string]map[string]string{}
		if raw, ok := obj["signatures"]; ok {
			if err := json.Unmarshal(raw, &all); err != nil {
				return nil, err
			}
		}
		mergeSignatures(all, sigs)
		b, err := json.Marshal(all)
		if err != nil {
			return nil, err
		}
		obj["signatures"] = b
	}
	if displayName != nil {
		b, err := json.Marshal(map[string]string{"device_display_name": *displayName})
		if err != nil {
			return nil, err
		}
		obj["unsigned"] = b
	}
	b, err := json.Marshal(obj)
	return b, err
}

// ClaimResult is the answer to /keys/claim.
type ClaimResult struct {
	Failures    map[string]any                                   `json:"failures"`
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// ClaimKeys hands out one key per device asked for: its oldest one-time
// key of the algorithm, or its fallback key when none is left. Each
// one-time key is handed out once, even to concurrent claims. Unknown
// users and devices, and devices without keys, are left out; users of
// other servers are reported under failures.
func (e *Engine) ClaimKeys(ctx context.Context, want map[string]map[string]string) (*ClaimResult, error) {
	if len(want) > MaxQueryUsers {
		return nil, mxerr.TooLarge("At most %d users per claim", MaxQueryUsers)
	}
	res := &ClaimResult{Failures: map[string]any{}, OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}}
	total := 0
	for _, u := range sortedKeys(want) {
		if !validUserID(u) {
			return nil, mxerr.InvalidParam("%q is not a user ID", u)
		}
		for dev, alg := range want[u] {
			if !validID(dev) || !validID(alg) {
				return nil, mxerr.InvalidParam("Invalid device ID or algorithm for %s", u)
			}
		}
		total += len(want[u])
	}
	if total > MaxClaimDevices {
		return nil, mxerr.TooLarge("At most %d devices per claim", MaxClaimDevices)
	}
	type claimed struct{ user, device string }
	var touched []claimed
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		for _, u := range sortedKeys(want) {
			if !e.isLocal(u) {
				res.Failures[serverOf(u)] = remoteFailure()
				continue
			}
			for _, dev := range sortedKeys(want[u]) {
				alg := want[u][dev]
				kid, kjson, err := e.store.OneTimeKeyClaim(ctx, tx, u, dev, alg)
				if errors.Is(err, storage.ErrNotFound) {
					kid, kjson, err = e.store.FallbackKeyClaim(ctx, tx, u, dev, alg)
				}
				if errors.Is(err, storage.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if res.OneTimeKeys[u] == nil {
					res.OneTimeKeys[u] = map[string]map[string]json.RawMessage{}
				}
				res.OneTimeKeys[u][dev] = map[string]json.RawMessage{alg + ":" + kid: json.RawMessage(kjson)}
				touched = append(touched, claimed{u, dev})
			}
		}
		return nil
	})
	if len(touched) > 0 {
		e.keyCountsChanged()
	}
	if err != nil {
		return nil, err
	}
	for _, c := range touched {
		e.notifyKeys(c.user, c.device)
	}
	return res, nil
}

// KeyCounts returns a device's unclaimed one-time keys per algorithm,
// signed_curve25519 always included (sync's device_one_time_keys_count),
// and the algorithms of its fallback keys no claim has handed out, never
// nil (device_unused_fallback_key_types), in one read.
//
// The answer is shared: callers must not modify it.
func (e *Engine) KeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
	key := [2]string{userID, deviceID}
	gen, now := e.countsGen.Load(), e.now()
	if c, ok := e.keyCounts.Get(key); ok && c.gen == gen && now.Sub(c.at) < keyCountsTTL {
		return c.counts, c.fallback, nil
	}
	c, fb, err := e.store.KeyCounts(ctx, e.db.Read(), userID, deviceID)
	if err != nil {
		return nil, nil, err
	}
	c = withDefaultCount(c)
	// Read under gen: a change committed meanwhile moved countsGen, and
	// the entry is never served.
	e.keyCounts.Put(key, keyCountsAt{counts: c, fallback: fb, gen: gen, at: now})
	return c, fb, nil
}

// keyCountsTTL bounds how stale a remembered key count may be when
// another instance changed it (this one's changes drop it at once).
// Clients ask again with every sync and tolerate counts that move
// meanwhile: claims can happen between any read and its delivery.
const keyCountsTTL = time.Second

// keyCountsAt is a device's key counts as read under a countsGen.
type keyCountsAt struct {
	counts   map[string]int
	fallback []string
	gen      uint64
	at       time.Time
}

// keyCountsChanged drops the remembered key counts: one-time or fallback
// keys were stored, claimed or deleted.
func (e *Engine) keyCountsChanged() { e.countsGen.Add(1) }
