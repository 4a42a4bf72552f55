package sytest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestE2EEKeys(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := keysDevice(t, s.Register(t, "e2ee-alice"))
		bob := keysDevice(t, s.Register(t, "e2ee-bob"))

		r := alice.uploadKeys(t, 5)
		if e2eeDig(r.JSON, "one_time_key_counts", "signed_curve25519") != 5.0 {
			t.Fatalf("counts: %s", r)
		}
		// Idempotent: the same keys again.
		Must(t, alice.do(t, "POST", v3+"/keys/upload", map[string]any{"device_keys": alice.signedKeys(t)}), 200)

		forged := e2eeSign(t, alice.keysObject(), newE2EEKey(t), alice.ID, "ed25519:"+alice.id)
		otherUser := alice.keysObject()
		otherUser["user_id"] = bob.ID
		otherDevice := alice.keysObject()
		otherDevice["device_id"] = bob.id
		newIdentity := alice.keysObject()
		newIdentity["keys"] = map[string]any{"ed25519:" + alice.id: alice.sig.pub, "curve25519:" + alice.id: newE2EEKey(t).pub}
		noEd := alice.keysObject()
		noEd["keys"] = map[string]any{"curve25519:" + alice.id: alice.curve.pub}
		for _, tc := range []struct {
			name   string
			body   any
			status int
			code   string
		}{
			{"forged device-key signature", map[string]any{"device_keys": forged}, 400, "M_INVALID_SIGNATURE"},
			{"unsigned device keys", map[string]any{"device_keys": alice.keysObject()}, 400, "M_INVALID_SIGNATURE"},
			{"another user's device keys", map[string]any{"device_keys": e2eeSign(t, otherUser, alice.sig, bob.ID, "ed25519:"+alice.id)}, 400, "M_INVALID_PARAM"},
			{"another device's keys", map[string]any{"device_keys": e2eeSign(t, otherDevice, alice.sig, alice.ID, "ed25519:"+bob.id)}, 400, "M_INVALID_PARAM"},
			{"changed identity keys", map[string]any{"device_keys": e2eeSign(t, newIdentity, alice.sig, alice.ID, "ed25519:"+alice.id)}, 400, "M_INVALID_PARAM"},
			{"no ed25519 key", map[string]any{"device_keys": e2eeSign(t, noEd, alice.sig, alice.ID, "ed25519:"+alice.id)}, 400, "M_INVALID_PARAM"},
			{"device keys not an object", map[string]any{"device_keys": "keys"}, 400, "M_BAD_JSON"},
			{"one-time keys not an object", map[string]any{"one_time_keys": []any{1}}, 400, "M_BAD_JSON"},
			{"one-time key without key ID", map[string]any{"one_time_keys": map[string]any{"signed_curve25519": alice.otks(t, 90, 1)["signed_curve25519:K00090"]}}, 400, "M_INVALID_PARAM"},
			{"forged one-time key", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:F": e2eeSign(t, map[string]any{"key": "x"}, newE2EEKey(t), alice.ID, "ed25519:"+alice.id)}}, 400, "M_INVALID_SIGNATURE"},
			{"a one-time key ID reused for another key", map[string]any{"one_time_keys": alice.otks(t, 0, 1)}, 400, "M_INVALID_PARAM"},
			{"two fallback keys of one algorithm", map[string]any{"fallback_keys": map[string]any{
				"signed_curve25519:A": alice.fallback(t, "A")["signed_curve25519:A"], "signed_curve25519:B": alice.fallback(t, "B")["signed_curve25519:B"]}}, 400, "M_INVALID_PARAM"},
			{"too many one-time keys in one upload", map[string]any{"one_time_keys": alice.otks(t, 1000, 501)}, 413, "M_TOO_LARGE"},
			{"malformed JSON", "{not json", 400, "M_NOT_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				MustErr(t, alice.do(t, "POST", v3+"/keys/upload", tc.body), tc.status, tc.code)
			})
		}
		MustErr(t, s.Do(t, "POST", v3+"/keys/upload", "", map[string]any{}), 401, "M_MISSING_TOKEN")

		t.Run("at most 1000 one-time keys per device", func(t *testing.T) {
			d := newKeysDevice(t, alice.User)
			Must(t, d.do(t, "POST", v3+"/keys/upload", map[string]any{"device_keys": d.signedKeys(t), "one_time_keys": d.otks(t, 0, 500)}), 200)
			r := Must(t, d.do(t, "POST", v3+"/keys/upload", map[string]any{"one_time_keys": d.otks(t, 500, 500)}), 200)
			if e2eeDig(r.JSON, "one_time_key_counts", "signed_curve25519") != 1000.0 {
				t.Fatalf("counts: %s", r)
			}
			MustErr(t, d.do(t, "POST", v3+"/keys/upload", map[string]any{"one_time_keys": d.otks(t, 1000, 1)}), 400, "M_INVALID_PARAM")
			// Claiming one makes room for one.
			Must(t, bob.do(t, "POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{alice.ID: map[string]any{d.id: "signed_curve25519"}}}), 200)
			Must(t, d.do(t, "POST", v3+"/keys/upload", map[string]any{"one_time_keys": d.otks(t, 1000, 1)}), 200)
		})

		t.Run("query", func(t *testing.T) {
			Must(t, alice.do(t, "PUT", v3+"/devices/"+alice.id, map[string]any{"display_name": "Alice's laptop"}), 200)
			q := Must(t, bob.do(t, "POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{
				alice.ID: []any{}, "@carol:elsewhere.example": []any{}, "@nobody-" + randHex(3) + ":" + s.Name: []any{},
			}}), 200)
			dev, _ := e2eeDig(q.JSON, "device_keys", alice.ID, alice.id).(map[string]any)
			if dev == nil || e2eeDig(dev, "keys", "ed25519:"+alice.id) != alice.sig.pub || e2eeDig(dev, "unsigned", "device_display_name") != "Alice's laptop" {
				t.Fatalf("query: %s", q)
			}
			if e2eeDig(q.JSON, "failures", "elsewhere.example") == nil {
				t.Fatalf("remote user not reported as a failure: %s", q)
			}
			one := Must(t, bob.do(t, "POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{alice.ID: []any{"NOSUCHDEVICE"}}}), 200)
			if devs, _ := e2eeDig(one.JSON, "device_keys", alice.ID).(map[string]any); len(devs) != 0 {
				t.Fatalf("asked for one unknown device: %s", one)
			}
			MustErr(t, bob.do(t, "POST", v3+"/keys/query", map[string]any{}), 400, "M_MISSING_PARAM")
			MustErr(t, bob.do(t, "POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{"alice": []any{}}}), 400, "M_INVALID_PARAM")
			MustErr(t, bob.do(t, "POST", v3+"/keys/query", map[string]any{"device_keys": []any{}}), 400, "M_BAD_JSON")
		})

		t.Run("claim", func(t *testing.T) {
			r := Must(t, bob.do(t, "POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{
				alice.ID:                   map[string]any{alice.id: "signed_curve25519", "UNKNOWNDEVICE": "signed_curve25519"},
				"@carol:elsewhere.example": map[string]any{"C": "signed_curve25519"},
			}}), 200)
			keys, _ := e2eeDig(r.JSON, "one_time_keys", alice.ID).(map[string]any)
			if len(keys) != 1 || e2eeDig(keys, alice.id, "signed_curve25519:K00000", "key") == nil {
				t.Fatalf("claim: %s", r)
			}
			if e2eeDig(r.JSON, "failures", "elsewhere.example") == nil {
				t.Fatalf("remote user not reported as a failure: %s", r)
			}
			// A claim for an unknown device alone yields nothing.
			r = Must(t, bob.do(t, "POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{alice.ID: map[string]any{"UNKNOWNDEVICE": "signed_curve25519"}}}), 200)
			if keys, _ := e2eeDig(r.JSON, "one_time_keys").(map[string]any); len(keys) != 0 {
				t.Fatalf("claim for an unknown device: %s", r)
			}
			MustErr(t, bob.do(t, "POST", v3+"/keys/claim", map[string]any{}), 400, "M_MISSING_PARAM")
			MustErr(t, bob.do(t, "POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{alice.ID: "x"}}), 400, "M_BAD_JSON")
			MustErr(t, bob.do(t, "POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{"nobody": map[string]any{"D": "x"}}}), 400, "M_INVALID_PARAM")
			counts := Must(t, alice.do(t, "POST", v3+"/keys/upload", map[string]any{}), 200)
			if e2eeDig(counts.JSON, "one_time_key_counts", "signed_curve25519") != 4.0 {
				t.Fatalf("counts after a claim: %s", counts)
			}
		})

		t.Run("changes", func(t *testing.T) {
			r := Must(t, alice.do(t, "GET", v3+"/keys/changes?from=0", nil), 200)
			changed, _ := r.JSON["changed"].([]any)
			if !slices.Contains(changed, any(alice.ID)) || slices.Contains(changed, any(bob.ID)) {
				t.Fatalf("changes: %s", r)
			}
			MustErr(t, alice.do(t, "GET", v3+"/keys/changes", nil), 400, "M_MISSING_PARAM")
			MustErr(t, alice.do(t, "GET", v3+"/keys/changes?from=not-a-token", nil), 400, "M_INVALID_PARAM")
		})
	})
}

// TestE2EEClaimConcurrency: 50 parallel claims against 10 one-time keys
// hand out each key exactly once, then the fallback key.
func TestE2EEClaimConcurrency(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		bob := keysDevice(t, s.Register(t, "e2ee-claimed"))
		bob.uploadKeys(t, 10)
		claimers := make([]*User, 5)
		for i := range claimers {
			claimers[i] = s.Register(t, "e2ee-claimer")
		}
		var (
			mu   sync.Mutex
			got  = map[string]int{}
			wg   sync.WaitGroup
			errs = make(chan string, 50)
		)
		for i := range 50 {
			wg.Go(func() {
				r := claimers[i%len(claimers)].Do(t, "POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{bob.ID: map[string]any{bob.id: "signed_curve25519"}}})
				keys, _ := e2eeDig(r.JSON, "one_time_keys", bob.ID, bob.id).(map[string]any)
				if r.Status != 200 || len(keys) != 1 {
					errs <- r.String()
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for k := range keys {
					got[k]++
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatalf("claim: %s", e)
		}
		otks := 0
		for k, n := range got {
			switch {
			case k == "signed_curve25519:FB" && n == 40:
			case k != "signed_curve25519:FB" && n == 1:
				otks++
			default:
				t.Fatalf("%s handed out %d times: %v", k, n, got)
			}
		}
		if otks != 10 {
			t.Fatalf("%d one-time keys handed out, want 10: %v", otks, got)
		}
		r := Must(t, bob.do(t, "POST", v3+"/keys/upload", map[string]any{}), 200)
		if e2eeDig(r.JSON, "one_time_key_counts", "signed_curve25519") != 0.0 {
			t.Fatalf("counts: %s", r)
		}
	})
}

func TestE2EECrossSigning(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := keysDevice(t, s.Register(t, "e2ee-xs-alice"))
		bob := keysDevice(t, s.Register(t, "e2ee-xs-bob"))
		alice.uploadKeys(t, 1)
		bob.uploadKeys(t, 1)
		axs, bxs := newE2EECrossSigning(t, alice.ID), newE2EECrossSigning(t, bob.ID)
		mk := "ed25519:" + axs.master.pub
		upload := v3 + "/keys/device_signing/upload"

		// Bad input, before Alice has any keys (so no UIA stands in the way).
		badSSK := map[string]any{"master_key": axs.object("master", axs.master),
			"self_signing_key": e2eeSign(t, axs.object("self_signing", axs.self), axs.self, alice.ID, mk)}
		MustErr(t, alice.do(t, "POST", upload, badSSK), 400, "M_INVALID_SIGNATURE")
		MustErr(t, alice.do(t, "POST", upload, map[string]any{"self_signing_key": axs.body(t)["self_signing_key"]}), 400, "M_MISSING_PARAM")
		MustErr(t, alice.do(t, "POST", upload, map[string]any{"master_key": bxs.object("master", bxs.master)}), 400, "M_INVALID_PARAM")
		MustErr(t, alice.do(t, "POST", upload, map[string]any{"master_key": map[string]any{"user_id": alice.ID, "usage": []any{"master"}, "keys": map[string]any{}}}), 400, "M_INVALID_PARAM")
		MustErr(t, alice.do(t, "POST", upload, map[string]any{"master_key": "x"}), 400, "M_BAD_JSON")
		MustErr(t, alice.do(t, "POST", upload, "{"), 400, "M_NOT_JSON")

		// First upload: no UIA. An identical retry: none either.
		Must(t, alice.do(t, "POST", upload, axs.body(t)), 200)
		Must(t, alice.do(t, "POST", upload, axs.body(t)), 200)
		Must(t, bob.do(t, "POST", upload, bxs.body(t)), 200)

		// Replacing keys needs the password.
		nxs := newE2EECrossSigning(t, alice.ID)
		r := Must(t, alice.do(t, "POST", upload, nxs.body(t)), 401)
		if r.Str("session") == "" || r.JSON["flows"] == nil {
			t.Fatalf("no UIA challenge: %s", r)
		}
		withAuth := nxs.body(t)
		withAuth["auth"] = map[string]any{"type": "m.login.password", "password": "wrong", "session": r.Str("session"),
			"identifier": map[string]any{"type": "m.id.user", "user": alice.ID}}
		MustErr(t, alice.do(t, "POST", upload, withAuth), 401, "M_FORBIDDEN")
		withAuth["auth"] = passwordAuth(alice.User, r.Str("session"))
		Must(t, alice.do(t, "POST", upload, withAuth), 200)
		axs = nxs
		mk = "ed25519:" + axs.master.pub

		sigUpload := v3 + "/keys/signatures/upload"
		devSig := e2eeSign(t, alice.keysObject(), axs.self, alice.ID, "ed25519:"+axs.self.pub)
		forged := e2eeSign(t, alice.keysObject(), newE2EEKey(t), alice.ID, "ed25519:"+axs.self.pub)
		masterByDevice := e2eeSign(t, axs.object("master", axs.master), alice.sig, alice.ID, "ed25519:"+alice.id)
		r = Must(t, alice.do(t, "POST", sigUpload, map[string]any{alice.ID: map[string]any{alice.id: devSig, axs.master.pub: masterByDevice}}), 200)
		if f, _ := r.JSON["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("failures: %s", r)
		}
		r = Must(t, alice.do(t, "POST", sigUpload, map[string]any{
			alice.ID: map[string]any{alice.id: forged, "NOSUCHDEVICE": devSig},
			bob.ID:   map[string]any{bob.id: e2eeSign(t, bob.keysObject(), axs.self, alice.ID, "ed25519:"+axs.self.pub)},
		}), 200)
		for _, tc := range []struct{ user, key, code string }{
			{alice.ID, alice.id, "M_INVALID_SIGNATURE"}, {alice.ID, "NOSUCHDEVICE", "M_NOT_FOUND"}, {bob.ID, bob.id, "M_NOT_FOUND"},
		} {
			if e2eeDig(r.JSON, "failures", tc.user, tc.key, "errcode") != tc.code {
				t.Fatalf("%s %s: want %s in %s", tc.user, tc.key, tc.code, r)
			}
		}
		MustErr(t, alice.do(t, "POST", sigUpload, `{"x": 1}`), 400, "M_BAD_JSON")

		// Bob signs Alice's master key with his user-signing key: he sees
		// it, Alice does not.
		byBob := e2eeSign(t, axs.object("master", axs.master), bxs.userKey, bob.ID, "ed25519:"+bxs.userKey.pub)
		r = Must(t, bob.do(t, "POST", sigUpload, map[string]any{alice.ID: map[string]any{axs.master.pub: byBob}}), 200)
		if f, _ := r.JSON["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("failures: %s", r)
		}
		for _, tc := range []struct {
			viewer  *e2eeDevice
			seesBob bool
		}{{alice, false}, {bob, true}} {
			q := Must(t, tc.viewer.do(t, "POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{alice.ID: []any{}}}), 200)
			if e2eeDig(q.JSON, "master_keys", alice.ID, "keys", mk) != axs.master.pub {
				t.Fatalf("master key: %s", q)
			}
			if (e2eeDig(q.JSON, "master_keys", alice.ID, "signatures", bob.ID) != nil) != tc.seesBob {
				t.Fatalf("%s sees Bob's signature: %v: %s", tc.viewer.ID, !tc.seesBob, q)
			}
			if e2eeDig(q.JSON, "device_keys", alice.ID, alice.id, "signatures", alice.ID, "ed25519:"+axs.self.pub) == nil {
				t.Fatalf("self-signing signature missing: %s", q)
			}
			if e2eeDig(q.JSON, "self_signing_keys", alice.ID, "signatures", alice.ID, mk) == nil {
				t.Fatalf("self-signing key missing: %s", q)
			}
			if (e2eeDig(q.JSON, "user_signing_keys", alice.ID) != nil) != (tc.viewer == alice) {
				t.Fatalf("user-signing key visibility: %s", q)
			}
		}
	})
}

func TestE2EEBackup(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "e2ee-backup")
		other := s.Register(t, "e2ee-backup-other")
		authData := map[string]any{"public_key": newE2EEKey(t).pub, "signatures": map[string]any{}}
		const alg = "m.megolm_backup.v1.curve25519-aes-sha2"

		MustErr(t, u.Do(t, "GET", v3+"/room_keys/version", nil), 404, "M_NOT_FOUND")
		for _, tc := range []struct {
			name   string
			body   any
			status int
			code   string
		}{
			{"no algorithm", map[string]any{"auth_data": authData}, 400, "M_MISSING_PARAM"},
			{"no auth_data", map[string]any{"algorithm": alg}, 400, "M_BAD_JSON"},
			{"auth_data not an object", map[string]any{"algorithm": alg, "auth_data": "x"}, 400, "M_BAD_JSON"},
			{"bad public key", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "abc"}}, 400, "M_INVALID_PARAM"},
			{"malformed JSON", "{", 400, "M_NOT_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				MustErr(t, u.Do(t, "POST", v3+"/room_keys/version", tc.body), tc.status, tc.code)
			})
		}
		version := Must(t, u.Do(t, "POST", v3+"/room_keys/version", map[string]any{"algorithm": alg, "auth_data": authData}), 200).Str("version")
		info := Must(t, u.Do(t, "GET", v3+"/room_keys/version", nil), 200)
		if info.Str("version") != version || info.JSON["count"] != 0.0 || info.Str("etag") == "" || info.Str("algorithm") != alg {
			t.Fatalf("version: %s", info)
		}
		MustErr(t, other.Do(t, "GET", v3+"/room_keys/version/"+version, nil), 404, "M_NOT_FOUND")

		session := func(verified bool, first, fwd int, data string) map[string]any {
			return map[string]any{"first_message_index": first, "forwarded_count": fwd, "is_verified": verified,
				"session_data": map[string]any{"ephemeral": "e", "ciphertext": data, "mac": "m"}}
		}
		room, sid := "!backup:"+s.Name, "sess/ion+id"
		keysPath := v3 + "/room_keys/keys"
		sessPath := keysPath + "/" + url.PathEscape(room) + "/" + url.PathEscape(sid) + "?version=" + version
		r := Must(t, u.Do(t, "PUT", keysPath+"?version="+version, map[string]any{"rooms": map[string]any{
			room: map[string]any{"sessions": map[string]any{sid: session(false, 3, 1, "c1"), "other": session(false, 0, 0, "o")}}}}), 200)
		if r.JSON["count"] != 2.0 {
			t.Fatalf("put: %s", r)
		}
		etag := r.Str("etag")
		for _, step := range []struct {
			name        string
			body        map[string]any
			want        string
			etagChanges bool
		}{
			{"a higher first index loses", session(false, 5, 0, "c2"), "c1", false},
			{"a lower first index wins", session(false, 1, 1, "c3"), "c3", true},
			{"more forwards lose", session(false, 1, 2, "c4"), "c3", false},
			{"a verified key wins", session(true, 9, 9, "c5"), "c5", true},
			{"an unverified key never replaces a verified one", session(false, 0, 0, "c6"), "c5", false},
		} {
			r := Must(t, u.Do(t, "PUT", sessPath, step.body), 200)
			if (r.Str("etag") != etag) != step.etagChanges || r.JSON["count"] != 2.0 {
				t.Fatalf("%s: %s (etag was %s)", step.name, r, etag)
			}
			etag = r.Str("etag")
			got := Must(t, u.Do(t, "GET", sessPath, nil), 200)
			if e2eeDig(got.JSON, "session_data", "ciphertext") != step.want {
				t.Fatalf("%s: stored %s", step.name, got)
			}
		}
		// Room scope.
		Must(t, u.Do(t, "PUT", keysPath+"/"+url.PathEscape(room)+"?version="+version,
			map[string]any{"sessions": map[string]any{"third": session(false, 0, 0, "t")}}), 200)
		rk := Must(t, u.Do(t, "GET", keysPath+"/"+url.PathEscape(room)+"?version="+version, nil), 200)
		if sessions, _ := rk.JSON["sessions"].(map[string]any); len(sessions) != 3 {
			t.Fatalf("room keys: %s", rk)
		}
		empty := Must(t, u.Do(t, "GET", keysPath+"/"+url.PathEscape("!empty:x")+"?version="+version, nil), 200)
		if sessions, ok := empty.JSON["sessions"].(map[string]any); !ok || len(sessions) != 0 {
			t.Fatalf("empty room: %s", empty)
		}
		all := Must(t, u.Do(t, "GET", keysPath+"?version="+version, nil), 200)
		if e2eeDig(all.JSON, "rooms", room, "sessions", sid, "is_verified") != true {
			t.Fatalf("all keys: %s", all)
		}

		// Malformed backups.
		for _, tc := range []struct {
			name   string
			path   string
			body   any
			status int
			code   string
		}{
			{"session without is_verified", sessPath, map[string]any{"first_message_index": 0, "forwarded_count": 0, "session_data": map[string]any{}}, 400, "M_BAD_JSON"},
			{"first_message_index as a string", sessPath, map[string]any{"first_message_index": "0", "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{}}, 400, "M_BAD_JSON"},
			{"negative forwarded_count", sessPath, session(false, 0, -1, "x"), 400, "M_INVALID_PARAM"},
			{"session_data not an object", sessPath, map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": "x"}, 400, "M_BAD_JSON"},
			{"rooms missing", keysPath + "?version=" + version, map[string]any{}, 400, "M_MISSING_PARAM"},
			{"not a room ID", keysPath + "?version=" + version, map[string]any{"rooms": map[string]any{"room": map[string]any{"sessions": map[string]any{}}}}, 400, "M_INVALID_PARAM"},
			{"sessions missing", keysPath + "?version=" + version, map[string]any{"rooms": map[string]any{room: map[string]any{}}}, 400, "M_MISSING_PARAM"},
			{"no version", keysPath, map[string]any{"rooms": map[string]any{}}, 400, "M_MISSING_PARAM"},
			{"an unknown version", keysPath + "?version=42", map[string]any{"rooms": map[string]any{}}, 403, "M_WRONG_ROOM_KEYS_VERSION"},
			{"malformed session JSON", sessPath, "{", 400, "M_NOT_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := MustErr(t, u.Do(t, "PUT", tc.path, tc.body), tc.status, tc.code)
				if tc.code == "M_WRONG_ROOM_KEYS_VERSION" && r.Str("current_version") != version {
					t.Fatalf("current_version: %s", r)
				}
			})
		}
		MustErr(t, u.Do(t, "GET", keysPath+"/"+url.PathEscape(room)+"/nosuch?version="+version, nil), 404, "M_NOT_FOUND")
		MustErr(t, other.Do(t, "GET", sessPath, nil), 404, "M_NOT_FOUND")

		d := Must(t, u.Do(t, "DELETE", sessPath, nil), 200)
		if d.JSON["count"] != 2.0 || d.Str("etag") == etag {
			t.Fatalf("delete: %s", d)
		}
		Must(t, u.Do(t, "PUT", v3+"/room_keys/version/"+version, map[string]any{"algorithm": alg, "auth_data": authData, "version": version}), 200)
		MustErr(t, u.Do(t, "PUT", v3+"/room_keys/version/"+version, map[string]any{"algorithm": "other", "auth_data": authData}), 400, "M_INVALID_PARAM")
		MustErr(t, u.Do(t, "PUT", v3+"/room_keys/version/"+version, map[string]any{"algorithm": alg, "auth_data": authData, "version": "999"}), 400, "M_INVALID_PARAM")
		Must(t, u.Do(t, "DELETE", v3+"/room_keys/version/"+version, nil), 200)
		Must(t, u.Do(t, "DELETE", v3+"/room_keys/version/"+version, nil), 200)
		MustErr(t, u.Do(t, "DELETE", v3+"/room_keys/version/999", nil), 404, "M_NOT_FOUND")
		MustErr(t, u.Do(t, "GET", v3+"/room_keys/version/"+version, nil), 404, "M_NOT_FOUND")
		MustErr(t, u.Do(t, "GET", keysPath+"?version="+version, nil), 404, "M_NOT_FOUND")
		MustErr(t, u.Do(t, "PUT", keysPath+"?version="+version, map[string]any{"rooms": map[string]any{}}), 404, "M_NOT_FOUND")
	})
}

// dehydrate creates d's user's dehydrated device and returns its ID.
func dehydrate(t *testing.T, d *e2eeDevice) (string, *e2eeDevice) {
	t.Helper()
	dd := &e2eeDevice{User: d.User, sig: newE2EEKey(t), curve: newE2EEKey(t)}
	dd.id = dd.curve.pub
	keys := dd.keysObject()
	keys["dehydrated"] = true
	r := Must(t, d.do(t, "PUT", unstable3814+"/dehydrated_device", map[string]any{
		"device_id":   dd.id,
		"device_data": map[string]any{"algorithm": "org.matrix.msc3814.v2", "device_pickle": "opaque", "nonce": "n"},
		"device_keys": e2eeSign(t, keys, dd.sig, d.ID, "ed25519:"+dd.id), "one_time_keys": dd.otks(t, 0, 3),
		"fallback_keys": dd.fallback(t, "FB"), "initial_device_display_name": "Backup device",
	}), 200)
	if r.Str("device_id") != dd.id {
		t.Fatalf("dehydrated device: %s", r)
	}
	return dd.id, dd
}

// dehydratedEvents reads every to-device event of a dehydrated device.
func dehydratedEvents(t *testing.T, d *e2eeDevice, id string) []map[string]any {
	t.Helper()
	var out []map[string]any
	body := map[string]any{}
	for range 100 {
		r := Must(t, d.do(t, "POST", unstable3814+"/dehydrated_device/"+url.PathEscape(id)+"/events", body), 200)
		evs, _ := r.JSON["events"].([]any)
		for _, e := range evs {
			out = append(out, e.(map[string]any))
		}
		next := r.Str("next_batch")
		if next == "" {
			return out
		}
		body = map[string]any{"next_batch": next}
	}
	t.Fatal("dehydrated device events never end")
	return nil
}

func TestE2EEDehydratedDevice(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := keysDevice(t, s.Register(t, "e2ee-dehydrate"))
		v := Must(t, s.Do(t, "GET", "/_matrix/client/versions", "", nil), 200)
		if e2eeDig(v.JSON, "unstable_features", "org.matrix.msc3814") != true {
			t.Fatalf("MSC3814 not advertised: %s", v)
		}
		MustErr(t, u.do(t, "GET", unstable3814+"/dehydrated_device", nil), 404, "M_NOT_FOUND")
		MustErr(t, u.do(t, "DELETE", unstable3814+"/dehydrated_device", nil), 404, "M_NOT_FOUND")
		forgedKeys := e2eeSign(t, u.keysObject(), newE2EEKey(t), u.ID, "ed25519:"+u.id)
		for _, tc := range []struct {
			name   string
			body   any
			status int
			code   string
		}{
			{"no device_id", map[string]any{"device_data": map[string]any{"algorithm": "a"}}, 400, "M_MISSING_PARAM"},
			{"no algorithm", map[string]any{"device_id": "D", "device_data": map[string]any{}, "device_keys": map[string]any{}}, 400, "M_MISSING_PARAM"},
			{"no device keys", map[string]any{"device_id": "D", "device_data": map[string]any{"algorithm": "a"}}, 400, "M_MISSING_PARAM"},
			{"forged device keys", map[string]any{"device_id": u.id, "device_data": map[string]any{"algorithm": "a"}, "device_keys": forgedKeys}, 400, "M_INVALID_SIGNATURE"},
			{"an existing device's ID", map[string]any{"device_id": u.id, "device_data": map[string]any{"algorithm": "a"}, "device_keys": u.signedKeys(t)}, 400, "M_INVALID_PARAM"},
			{"malformed JSON", "{", 400, "M_NOT_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				MustErr(t, u.do(t, "PUT", unstable3814+"/dehydrated_device", tc.body), tc.status, tc.code)
			})
		}
		id, _ := dehydrate(t, u)
		g := Must(t, u.do(t, "GET", unstable3814+"/dehydrated_device", nil), 200)
		if g.Str("device_id") != id || e2eeDig(g.JSON, "device_data", "device_pickle") != "opaque" {
			t.Fatalf("get: %s", g)
		}
		q := Must(t, u.do(t, "POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{u.ID: []any{}}}), 200)
		if e2eeDig(q.JSON, "device_keys", u.ID, id, "dehydrated") != true {
			t.Fatalf("query: %s", q)
		}
		devs := Must(t, u.do(t, "GET", v3+"/devices", nil), 200)
		if !strings.Contains(string(devs.Body), "Backup device") {
			t.Fatalf("dehydrated device not listed: %s", devs)
		}
		// Messages to "*" reach it; reading them deletes nothing.
		sender := s.Register(t, "e2ee-dehydrate-sender")
		for i := range 120 {
			Must(t, sender.Do(t, "PUT", v3+"/sendToDevice/m.room_key/t"+fmt.Sprint(i), map[string]any{"messages": map[string]any{
				u.ID: map[string]any{"*": map[string]any{"i": i}}}}), 200)
		}
		for range 2 {
			if evs := dehydratedEvents(t, u, id); len(evs) != 120 || evs[0]["sender"] != sender.ID || evs[0]["type"] != "m.room_key" {
				t.Fatalf("%d events: %v", len(evs), evs[:min(1, len(evs))])
			}
		}
		MustErr(t, u.do(t, "POST", unstable3814+"/dehydrated_device/"+u.id+"/events", map[string]any{}), 403, "M_FORBIDDEN")
		MustErr(t, u.do(t, "POST", unstable3814+"/dehydrated_device/"+url.PathEscape(id)+"/events", map[string]any{"next_batch": "x"}), 400, "M_INVALID_PARAM")
		// A replacement deletes the old device.
		id2, _ := dehydrate(t, u)
		MustErr(t, u.do(t, "POST", unstable3814+"/dehydrated_device/"+url.PathEscape(id)+"/events", map[string]any{}), 403, "M_FORBIDDEN")
		q = Must(t, u.do(t, "POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{u.ID: []any{}}}), 200)
		if e2eeDig(q.JSON, "device_keys", u.ID, id) != nil || e2eeDig(q.JSON, "device_keys", u.ID, id2) == nil {
			t.Fatalf("after replacement: %s", q)
		}
		d := Must(t, u.do(t, "DELETE", unstable3814+"/dehydrated_device", nil), 200)
		if d.Str("device_id") != id2 {
			t.Fatalf("delete: %s", d)
		}
		MustErr(t, u.do(t, "GET", unstable3814+"/dehydrated_device", nil), 404, "M_NOT_FOUND")
		if devs := Must(t, u.do(t, "GET", v3+"/devices", nil), 200); strings.Contains(string(devs.Body), "Backup device") {
			t.Fatalf("deleted dehydrated device still listed: %s", devs)
		}
	})
}

// TestE2EEToDevice checks delivery, "*" and idempotency through a
// dehydrated device, the one device whose messages can be read without
// /sync; the transaction survives a restart.
func TestE2EEToDevice(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := StartServer(t, Options{Dialect: dialect})
		bob := keysDevice(t, s.Register(t, "e2ee-td-bob"))
		alice := s.Register(t, "e2ee-td-alice")
		id, _ := dehydrate(t, bob)
		send := func(txn string, messages any) *Response {
			return alice.Do(t, "PUT", v3+"/sendToDevice/m.test/"+url.PathEscape(txn), map[string]any{"messages": messages})
		}
		Must(t, send("t1", map[string]any{bob.ID: map[string]any{id: map[string]any{"n": 1}, "NOSUCHDEVICE": map[string]any{"n": 0}},
			"@carol:elsewhere.example": map[string]any{"*": map[string]any{"n": 9}}}), 200)
		Must(t, send("t1", map[string]any{bob.ID: map[string]any{id: map[string]any{"n": 1}}}), 200)
		Must(t, send("t/2", map[string]any{bob.ID: map[string]any{"*": map[string]any{"n": 2}}}), 200)
		// Another device of Alice's may use the same transaction ID.
		Must(t, s.Do(t, "PUT", v3+"/sendToDevice/m.test/t1", alice.login(t), map[string]any{"messages": map[string]any{bob.ID: map[string]any{id: map[string]any{"n": 3}}}}), 200)
		evs := dehydratedEvents(t, bob, id)
		var ns []float64
		for _, e := range evs {
			n, _ := e2eeDig(e, "content", "n").(float64)
			ns = append(ns, n)
		}
		if !slices.Equal(ns, []float64{1, 2, 3}) {
			t.Fatalf("delivered %v", evs)
		}
		s.Restart(t)
		Must(t, send("t1", map[string]any{bob.ID: map[string]any{id: map[string]any{"n": 1}}}), 200)
		if evs := dehydratedEvents(t, bob, id); len(evs) != 3 {
			t.Fatalf("a retry after restart was delivered again: %v", evs)
		}

		for _, tc := range []struct {
			name string
			body any
			code string
		}{
			{"no messages", map[string]any{}, "M_MISSING_PARAM"},
			{"not a user ID", map[string]any{"messages": map[string]any{"bob": map[string]any{"*": map[string]any{}}}}, "M_INVALID_PARAM"},
			{"content not an object", map[string]any{"messages": map[string]any{bob.ID: map[string]any{"*": 1}}}, "M_BAD_JSON"},
			{"devices not an object", map[string]any{"messages": map[string]any{bob.ID: "x"}}, "M_BAD_JSON"},
			{"malformed JSON", "{", "M_NOT_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				MustErr(t, alice.Do(t, "PUT", v3+"/sendToDevice/m.test/bad-"+randHex(3), tc.body), 400, tc.code)
			})
		}
		MustErr(t, s.Do(t, "PUT", v3+"/sendToDevice/m.test/x", "", map[string]any{"messages": map[string]any{}}), 401, "M_MISSING_TOKEN")
	})
}

func TestE2EEDeviceDeletion(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "e2ee-delete")
		d := newKeysDevice(t, u)
		d.uploadKeys(t, 2)
		watcher := s.Register(t, "e2ee-delete-watcher")
		r := Must(t, u.Do(t, "DELETE", v3+"/devices/"+d.id, map[string]any{}), 401)
		Must(t, u.Do(t, "DELETE", v3+"/devices/"+d.id, map[string]any{"auth": passwordAuth(u, r.Str("session"))}), 200)
		q := Must(t, watcher.Do(t, "POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{u.ID: []any{}}}), 200)
		if devs, _ := e2eeDig(q.JSON, "device_keys", u.ID).(map[string]any); len(devs) != 0 {
			t.Fatalf("deleted device still has keys: %s", q)
		}
		c := Must(t, watcher.Do(t, "POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{u.ID: map[string]any{d.id: "signed_curve25519"}}}), 200)
		if keys, _ := c.JSON["one_time_keys"].(map[string]any); len(keys) != 0 {
			t.Fatalf("claimed a deleted device's key: %s", c)
		}
	})
}

// TestE2EESecretStorageAccountData: secret storage and cross-signing
// secrets are ordinary account data, stored and returned unchanged.
func TestE2EESecretStorageAccountData(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		u := s.Register(t, "e2ee-ssss")
		other := s.Register(t, "e2ee-ssss-other")
		enc := map[string]any{"encrypted": map[string]any{"keyid": map[string]any{"iv": "aXY", "ciphertext": "Y2lwaGVy", "mac": "bWFj"}}}
		for typ, content := range map[string]map[string]any{
			"m.secret_storage.default_key": {"key": "keyid"},
			"m.secret_storage.key.keyid": {"algorithm": "m.secret_storage.v1.aes-hmac-sha2", "iv": "aXY", "mac": "bWFj",
				"passphrase": map[string]any{"algorithm": "m.pbkdf2", "salt": "c2FsdA", "iterations": 500000}},
			"m.cross_signing.master":       enc,
			"m.cross_signing.self_signing": enc,
			"m.cross_signing.user_signing": enc,
			"m.megolm_backup.v1":           enc,
			"org.matrix.msc3814":           enc,
		} {
			path := v3 + "/user/" + url.PathEscape(u.ID) + "/account_data/" + typ
			Must(t, u.Do(t, "PUT", path, content), 200)
			got := Must(t, u.Do(t, "GET", path, nil), 200)
			if fmt.Sprint(got.JSON) != fmt.Sprint(jsonRoundTrip(t, content)) {
				t.Fatalf("%s: stored %s", typ, got)
			}
			MustErr(t, other.Do(t, "GET", v3+"/user/"+url.PathEscape(u.ID)+"/account_data/"+typ, nil), 403, "M_FORBIDDEN")
		}
	})
}

// jsonRoundTrip is v as a client decodes it after a JSON round trip.
func jsonRoundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestE2EEDeviceListChanges: /keys/changes lists users who share a room
// with the caller, and no one else.
func TestE2EEDeviceListChanges(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "e2ee-dl-alice")
		bob := keysDevice(t, s.Register(t, "e2ee-dl-bob"))
		carol := keysDevice(t, s.Register(t, "e2ee-dl-carol"))
		r := alice.Do(t, "POST", v3+"/createRoom", map[string]any{"preset": "public_chat"})
		if r.Errcode() == "M_UNRECOGNIZED" {
			t.Skip("needs rooms: enabled when POST /createRoom exists")
		}
		room := Must(t, r, 200).Str("room_id")
		bob.join(t, room)
		bob.uploadKeys(t, 1)
		carol.uploadKeys(t, 1)
		c := Must(t, alice.Do(t, "GET", v3+"/keys/changes?from=0", nil), 200)
		changed, _ := c.JSON["changed"].([]any)
		if !slices.Contains(changed, any(bob.ID)) || slices.Contains(changed, any(carol.ID)) {
			t.Fatalf("changes: %s", c)
		}
		if left, ok := c.JSON["left"].([]any); !ok || len(left) != 0 {
			t.Fatalf("left: %s", c)
		}
	})
}
