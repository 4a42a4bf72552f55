package e2ee_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/e2ee"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

func TestUploadKeys(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newEngine(t, db, e2ee.Config{MaxOneTimeKeysPerDevice: 20, MaxOneTimeKeysPerUpload: 10})
		rec := newRecorder()
		e.SetNotifier(rec)
		alice := newDevice(t, db, "@alice:"+server, "ALICE")
		bob := newDevice(t, db, "@bob:"+server, "BOB")

		counts, err := e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{DeviceKeys: alice.signedKeys(t), OneTimeKeys: alice.otks(t, 0, 5)})
		if err != nil || counts["signed_curve25519"] != 5 {
			t.Fatalf("upload: %v %v", counts, err)
		}
		changed, _, _ := e.DeviceListChanges(ctx, alice.user, 0, 1<<40, e2ee.MembershipDelta{})
		if !slices.Equal(changed, []string{alice.user}) || rec.lists[alice.user] == 0 || rec.keys[alice.user+"|"+alice.id] != 1 {
			t.Fatalf("changes %v, notified %v %v", changed, rec.lists, rec.keys)
		}
		before := rec.lists[alice.user]
		// The same keys again change nothing.
		if _, err := e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{DeviceKeys: alice.signedKeys(t)}); err != nil {
			t.Fatal(err)
		}
		if rec.lists[alice.user] != before {
			t.Fatal("identical re-upload counted as a device list change")
		}

		forged := sign(t, alice.keysObject(), newKeyPair(t), alice.user, "ed25519:"+alice.id)
		otherUser := alice.keysObject()
		otherUser["user_id"] = bob.user
		otherDevice := alice.keysObject()
		otherDevice["device_id"] = "OTHER"
		changedKeys := alice.keysObject()
		changedKeys["keys"] = map[string]string{"ed25519:" + alice.id: alice.sig.pub, "curve25519:" + alice.id: newKeyPair(t).pub}
		unsigned := alice.keysObject()
		for _, tc := range []struct {
			name string
			keys any
			code string
		}{
			{"forged self-signature", forged, "M_INVALID_SIGNATURE"},
			{"no signature", unsigned, "M_INVALID_SIGNATURE"},
			{"another user's keys", sign(t, otherUser, alice.sig, bob.user, "ed25519:"+alice.id), "M_INVALID_PARAM"},
			{"another device's keys", sign(t, otherDevice, alice.sig, alice.user, "ed25519:OTHER"), "M_INVALID_PARAM"},
			{"changed identity keys", sign(t, changedKeys, alice.sig, alice.user, "ed25519:"+alice.id), "M_INVALID_PARAM"},
			{"not an object", []string{"x"}, "M_BAD_JSON"},
			{"float", map[string]any{"user_id": alice.user, "x": 1.5}, "M_BAD_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{DeviceKeys: raw(t, tc.keys)})
				wantCode(t, err, tc.code)
			})
		}
		// Bob's keys were never stored under Alice's device.
		q, err := e.QueryKeys(ctx, bob.user, map[string][]string{alice.user: nil})
		if err != nil || len(q.DeviceKeys[alice.user]) != 1 {
			t.Fatalf("query: %+v %v", q, err)
		}

		t.Run("one-time keys", func(t *testing.T) {
			keys := alice.otks(t, 0, 5)
			// Uploading the same keys is idempotent; the same ID with
			// another key is refused.
			_, err := e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{OneTimeKeys: alice.otks(t, 0, 1)})
			wantCode(t, err, "M_INVALID_PARAM")
			forgedOTK := map[string]json.RawMessage{"signed_curve25519:FORGED": raw(t, sign(t, map[string]any{"key": newKeyPair(t).pub}, newKeyPair(t), alice.user, "ed25519:"+alice.id))}
			_, err = e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{OneTimeKeys: forgedOTK})
			wantCode(t, err, "M_INVALID_SIGNATURE")
			bad := map[string]json.RawMessage{"signed_curve25519:BAD": json.RawMessage(`12`)}
			_, err = e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{OneTimeKeys: bad})
			wantCode(t, err, "M_BAD_JSON")
			noID := map[string]json.RawMessage{"signed_curve25519": keys["signed_curve25519:K00000"]}
			_, err = e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{OneTimeKeys: noID})
			wantCode(t, err, "M_INVALID_PARAM")
			// Bounds: per upload, then per device (5 stored, max 20).
			_, err = e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{OneTimeKeys: alice.otks(t, 100, 11)})
			wantCode(t, err, "M_TOO_LARGE")
			if c, err := e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{OneTimeKeys: alice.otks(t, 100, 10)}); err != nil || c["signed_curve25519"] != 15 {
				t.Fatalf("%v %v", c, err)
			}
			_, err = e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{OneTimeKeys: alice.otks(t, 200, 6)})
			wantCode(t, err, "M_INVALID_PARAM")
			if c, _, _ := e.KeyCounts(ctx, alice.user, alice.id); c["signed_curve25519"] != 15 {
				t.Fatalf("refused upload kept keys: %v", c)
			}
			two := alice.fallback(t, "A")
			for k, v := range alice.fallback(t, "B") {
				two[k] = v
			}
			_, err = e.UploadKeys(ctx, alice.user, alice.id, e2ee.UploadRequest{FallbackKeys: two})
			wantCode(t, err, "M_INVALID_PARAM")
		})
	})
}

// TestClaimConcurrency: 50 parallel claims against 10 one-time keys hand
// out each key exactly once, then the fallback key.
func TestClaimConcurrency(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newEngine(t, db, e2ee.Config{})
		bob := newDevice(t, db, "@bob:"+server, "BOB")
		bob.upload(t, e, 10)
		if _, types, _ := e.KeyCounts(ctx, bob.user, bob.id); !slices.Equal(types, []string{"signed_curve25519"}) {
			t.Fatalf("unused fallback types: %v", types)
		}
		var (
			mu    sync.Mutex
			got   = map[string]int{}
			wg    sync.WaitGroup
			errs  = make(chan error, 50)
			start = make(chan struct{})
		)
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, err := e.ClaimKeys(ctx, map[string]map[string]string{bob.user: {bob.id: "signed_curve25519"}})
				if err != nil {
					errs <- err
					return
				}
				keys := res.OneTimeKeys[bob.user][bob.id]
				if len(keys) != 1 {
					errs <- fmt.Errorf("claim returned %v", keys)
					return
				}
				mu.Lock()
				for k := range keys {
					got[k]++
				}
				mu.Unlock()
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		otks := 0
		for k, n := range got {
			if k == "signed_curve25519:FB" {
				if n != 40 {
					t.Fatalf("fallback handed out %d times, want 40", n)
				}
				continue
			}
			otks++
			if n != 1 {
				t.Fatalf("one-time key %s handed out %d times", k, n)
			}
		}
		if otks != 10 {
			t.Fatalf("%d distinct one-time keys handed out, want 10: %v", otks, got)
		}
		if c, _, _ := e.KeyCounts(ctx, bob.user, bob.id); c["signed_curve25519"] != 0 {
			t.Fatalf("counts after: %v", c)
		}
		if _, types, _ := e.KeyCounts(ctx, bob.user, bob.id); len(types) != 0 {
			t.Fatalf("fallback still unused: %v", types)
		}
		// A new fallback key is unused again; the same one stays used.
		if _, err := e.UploadKeys(ctx, bob.user, bob.id, e2ee.UploadRequest{FallbackKeys: bob.fallback(t, "FB2")}); err != nil {
			t.Fatal(err)
		}
		if _, types, _ := e.KeyCounts(ctx, bob.user, bob.id); len(types) != 1 {
			t.Fatalf("new fallback not unused: %v", types)
		}
	})
}

func TestClaimAndQuery(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newEngine(t, db, e2ee.Config{})
		alice := newDevice(t, db, "@alice:"+server, "ALICE")
		bob := newDevice(t, db, "@bob:"+server, "BOB")
		bob2 := newDevice(t, db, bob.user, "BOB2")
		bob.upload(t, e, 3)
		bob2.upload(t, e, 0)
		alice.upload(t, e, 1)
		if err := db.Accounts().DeviceSetName(ctx, bob.user, bob.id, "Bob's phone"); err != nil {
			t.Fatal(err)
		}
		res, err := e.ClaimKeys(ctx, map[string]map[string]string{
			bob.user:            {bob.id: "signed_curve25519", "NOSUCHDEVICE": "signed_curve25519", bob2.id: "signed_curve25519"},
			"@nobody:" + server: {"X": "signed_curve25519"},
			"@carol:elsewhere":  {"C": "signed_curve25519"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := res.OneTimeKeys[bob.user][bob.id]["signed_curve25519:K00000"]; !ok {
			t.Fatalf("oldest key not handed out first: %v", res.OneTimeKeys)
		}
		if _, ok := res.OneTimeKeys[bob.user][bob2.id]["signed_curve25519:FB"]; !ok {
			t.Fatalf("fallback not handed out: %v", res.OneTimeKeys)
		}
		if len(res.OneTimeKeys[bob.user]) != 2 || res.OneTimeKeys["@nobody:"+server] != nil || res.Failures["elsewhere"] == nil {
			t.Fatalf("claim: %+v", res)
		}
		_, err = e.ClaimKeys(ctx, map[string]map[string]string{"not-a-user": {"X": "signed_curve25519"}})
		wantCode(t, err, "M_INVALID_PARAM")

		q, err := e.QueryKeys(ctx, alice.user, map[string][]string{bob.user: {bob.id}, "@carol:elsewhere": nil, "@nobody:" + server: nil})
		if err != nil {
			t.Fatal(err)
		}
		if len(q.DeviceKeys[bob.user]) != 1 || q.Failures["elsewhere"] == nil || len(q.DeviceKeys["@nobody:"+server]) != 0 {
			t.Fatalf("query: %+v", q)
		}
		var dk struct {
			Keys     map[string]string `json:"keys"`
			Unsigned struct {
				Name string `json:"device_display_name"`
			} `json:"unsigned"`
		}
		if err := json.Unmarshal(q.DeviceKeys[bob.user][bob.id], &dk); err != nil || dk.Keys["ed25519:"+bob.id] != bob.sig.pub || dk.Unsigned.Name != "Bob's phone" {
			t.Fatalf("device keys %s: %v", q.DeviceKeys[bob.user][bob.id], err)
		}
		_, err = e.QueryKeys(ctx, alice.user, map[string][]string{"@x": nil})
		wantCode(t, err, "M_INVALID_PARAM")
	})
}

func TestCrossSigning(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newEngine(t, db, e2ee.Config{})
		alice := newDevice(t, db, "@alice:"+server, "ALICE")
		bob := newDevice(t, db, "@bob:"+server, "BOB")
		carol := newDevice(t, db, "@carol:"+server, "CAROL")
		alice.upload(t, e, 0)
		bob.upload(t, e, 0)
		axs, bxs := newCrossSigning(t, alice.user), newCrossSigning(t, bob.user)
		mk := "ed25519:" + axs.master.pub

		t.Run("bad uploads", func(t *testing.T) {
			for _, tc := range []struct {
				name string
				req  e2ee.CrossSigningUpload
				code string
			}{
				{"self-signing key without a master key", e2ee.CrossSigningUpload{SelfSigningKey: axs.upload(t).SelfSigningKey}, "M_MISSING_PARAM"},
				{"self-signing key not signed by the master key", e2ee.CrossSigningUpload{MasterKey: axs.upload(t).MasterKey,
					SelfSigningKey: raw(t, sign(t, axs.object("self_signing", axs.self), axs.self, alice.user, mk))}, "M_INVALID_SIGNATURE"},
				{"wrong usage", e2ee.CrossSigningUpload{MasterKey: raw(t, axs.object("self_signing", axs.master))}, "M_INVALID_PARAM"},
				{"another user's key", e2ee.CrossSigningUpload{MasterKey: bxs.upload(t).MasterKey}, "M_INVALID_PARAM"},
				{"key name not its key", e2ee.CrossSigningUpload{MasterKey: raw(t, map[string]any{"user_id": alice.user, "usage": []string{"master"},
					"keys": map[string]string{"ed25519:abc": axs.master.pub}})}, "M_INVALID_PARAM"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					wantCode(t, e.UploadCrossSigningKeys(ctx, alice.user, tc.req, false), tc.code)
				})
			}
			// A device whose ID is a valid key blocks that key.
			k := newKeyPair(t)
			newDevice(t, db, alice.user, k.pub)
			wantCode(t, e.UploadCrossSigningKeys(ctx, alice.user, e2ee.CrossSigningUpload{MasterKey: raw(t, axs.object("master", k))}, false), "M_FORBIDDEN")
		})

		// The first upload needs no authentication, nor does a retry.
		if err := e.UploadCrossSigningKeys(ctx, alice.user, axs.upload(t), false); err != nil {
			t.Fatal(err)
		}
		if err := e.UploadCrossSigningKeys(ctx, alice.user, axs.upload(t), false); err != nil {
			t.Fatalf("identical retry: %v", err)
		}
		if err := e.UploadCrossSigningKeys(ctx, bob.user, bxs.upload(t), false); err != nil {
			t.Fatal(err)
		}

		t.Run("signatures", func(t *testing.T) {
			aliceDev := sign(t, alice.keysObject(), axs.self, alice.user, "ed25519:"+axs.self.pub)
			forgedDev := sign(t, alice.keysObject(), newKeyPair(t), alice.user, "ed25519:"+axs.self.pub)
			otherObj := alice.keysObject()
			otherObj["algorithms"] = []string{"x"}
			mismatch := sign(t, otherObj, axs.self, alice.user, "ed25519:"+axs.self.pub)
			masterByDevice := sign(t, axs.object("master", axs.master), alice.sig, alice.user, "ed25519:"+alice.id)
			failures, err := e.UploadSignatures(ctx, alice.user, map[string]map[string]json.RawMessage{
				alice.user: {alice.id: raw(t, aliceDev), axs.master.pub: raw(t, masterByDevice), "NOSUCH": raw(t, aliceDev)},
			})
			if err != nil || len(failures[alice.user]) != 1 || failures[alice.user]["NOSUCH"] == nil {
				t.Fatalf("failures %v %v", failures, err)
			}
			failures, err = e.UploadSignatures(ctx, alice.user, map[string]map[string]json.RawMessage{
				alice.user: {alice.id: raw(t, forgedDev)},
				bob.user:   {bob.id: raw(t, sign(t, bob.keysObject(), axs.self, alice.user, "ed25519:"+axs.self.pub))},
			})
			if err != nil || code(failures, alice.user, alice.id) != "M_INVALID_SIGNATURE" || code(failures, bob.user, bob.id) != "M_NOT_FOUND" {
				t.Fatalf("failures %v %v", failures, err)
			}
			failures, _ = e.UploadSignatures(ctx, alice.user, map[string]map[string]json.RawMessage{alice.user: {alice.id: raw(t, mismatch)}})
			if code(failures, alice.user, alice.id) != "M_INVALID_PARAM" {
				t.Fatalf("mismatched object: %v", failures)
			}

			// Bob signs Alice's master key with his user-signing key: only
			// Bob sees that signature, and only Bob is told.
			before, _ := e.CurrentPositions(ctx)
			byBob := sign(t, axs.object("master", axs.master), bxs.userKey, bob.user, "ed25519:"+bxs.userKey.pub)
			failures, err = e.UploadSignatures(ctx, bob.user, map[string]map[string]json.RawMessage{alice.user: {axs.master.pub: raw(t, byBob)}})
			if err != nil || len(failures) != 0 {
				t.Fatalf("failures %v %v", failures, err)
			}
			after, _ := e.CurrentPositions(ctx)
			for _, tc := range []struct {
				viewer string
				want   []string
			}{{bob.user, []string{alice.user}}, {carol.user, []string{}}} {
				changed, _, _ := e.DeviceListChanges(ctx, tc.viewer, before["device_lists"], after["device_lists"], e2ee.MembershipDelta{})
				if !slices.Equal(changed, tc.want) {
					t.Fatalf("%s told %v, want %v", tc.viewer, changed, tc.want)
				}
			}
			for _, tc := range []struct {
				viewer  string
				signers []string
				usk     bool
			}{
				{alice.user, []string{"ed25519:" + alice.id}, true},
				{bob.user, []string{"ed25519:" + alice.id, "ed25519:" + bxs.userKey.pub}, false},
				{carol.user, []string{"ed25519:" + alice.id}, false},
			} {
				q, err := e.QueryKeys(ctx, tc.viewer, map[string][]string{alice.user: nil})
				if err != nil {
					t.Fatal(err)
				}
				if got := signerIDs(t, q.MasterKeys[alice.user]); !slices.Equal(got, slices.Sorted(slices.Values(tc.signers))) {
					t.Fatalf("%s sees master signatures %v, want %v", tc.viewer, got, tc.signers)
				}
				if _, ok := q.UserSigningKeys[alice.user]; ok != tc.usk {
					t.Fatalf("%s sees user-signing key: %v", tc.viewer, ok)
				}
				if got := signerIDs(t, q.DeviceKeys[alice.user][alice.id]); !slices.Equal(got, slices.Sorted(slices.Values([]string{"ed25519:" + alice.id, "ed25519:" + axs.self.pub}))) {
					t.Fatalf("device signatures %v", got)
				}
				if got := signerIDs(t, q.SelfSigningKeys[alice.user]); !slices.Equal(got, []string{mk}) {
					t.Fatalf("self-signing signatures %v", got)
				}
			}
		})

		t.Run("replacement needs authentication", func(t *testing.T) {
			nxs := newCrossSigning(t, alice.user)
			if err := e.UploadCrossSigningKeys(ctx, alice.user, nxs.upload(t), false); !errors.Is(err, e2ee.ErrAuthRequired) {
				t.Fatalf("got %v, want ErrAuthRequired", err)
			}
			partial := axs.upload(t)
			partial.SelfSigningKey = raw(t, sign(t, axs.object("self_signing", nxs.self), axs.master, alice.user, mk))
			if err := e.UploadCrossSigningKeys(ctx, alice.user, partial, false); !errors.Is(err, e2ee.ErrAuthRequired) {
				t.Fatalf("new self-signing key: got %v, want ErrAuthRequired", err)
			}
			if err := e.UploadCrossSigningKeys(ctx, alice.user, nxs.upload(t), true); err != nil {
				t.Fatal(err)
			}
			q, _ := e.QueryKeys(ctx, bob.user, map[string][]string{alice.user: nil})
			if got := signerIDs(t, q.MasterKeys[alice.user]); len(got) != 0 {
				t.Fatalf("signatures of the old master key survive: %v", got)
			}
			if got := signerIDs(t, q.DeviceKeys[alice.user][alice.id]); !slices.Equal(got, []string{"ed25519:" + alice.id}) {
				t.Fatalf("signatures by the old self-signing key survive: %v", got)
			}

			// The same self-signing key re-signed by a new master key is a
			// change: it is stored with the new signature.
			m2 := newKeyPair(t)
			resigned := e2ee.CrossSigningUpload{MasterKey: raw(t, nxs.object("master", m2)),
				SelfSigningKey: raw(t, sign(t, nxs.object("self_signing", nxs.self), m2, alice.user, "ed25519:"+m2.pub))}
			if err := e.UploadCrossSigningKeys(ctx, alice.user, resigned, false); !errors.Is(err, e2ee.ErrAuthRequired) {
				t.Fatalf("got %v, want ErrAuthRequired", err)
			}
			if err := e.UploadCrossSigningKeys(ctx, alice.user, resigned, true); err != nil {
				t.Fatal(err)
			}
			q, _ = e.QueryKeys(ctx, alice.user, map[string][]string{alice.user: nil})
			if got := signerIDs(t, q.SelfSigningKeys[alice.user]); !slices.Equal(got, []string{"ed25519:" + m2.pub}) {
				t.Fatalf("re-signed self-signing key: %v", got)
			}
			// The user-signing key, signed by an older master key, is gone.
			if _, ok := q.UserSigningKeys[alice.user]; ok {
				t.Fatal("a user-signing key of an old master key survives")
			}
			// Retrying the upload needs no authentication.
			if err := e.UploadCrossSigningKeys(ctx, alice.user, resigned, false); err != nil {
				t.Fatalf("identical retry: %v", err)
			}
		})
	})
}

func code(failures map[string]map[string]any, user, key string) string {
	f, _ := failures[user][key].(map[string]string)
	return f["errcode"]
}

// signerIDs lists the key IDs that signed a key object, sorted.
func signerIDs(t *testing.T, obj json.RawMessage) []string {
	t.Helper()
	var o struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if len(obj) > 0 {
		if err := json.Unmarshal(obj, &o); err != nil {
			t.Fatal(err)
		}
	}
	out := []string{}
	for _, sigs := range o.Signatures {
		for k := range sigs {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func TestToDevice(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newEngine(t, db, e2ee.Config{})
		rec := newRecorder()
		e.SetNotifier(rec)
		alice := newDevice(t, db, "@alice:"+server, "ALICE")
		bob := newDevice(t, db, "@bob:"+server, "BOB")
		bob2 := newDevice(t, db, bob.user, "BOB2")
		msg := func(s string) json.RawMessage { return json.RawMessage(`{"n":"` + s + `"}`) }

		send := func(txn string, m map[string]map[string]json.RawMessage) error {
			return e.SendToDevice(ctx, alice.user, alice.id, "m.test", txn, m)
		}
		if err := send("t1", map[string]map[string]json.RawMessage{bob.user: {"*": msg("all"), bob2.id: msg("two"), "GONE": msg("x")},
			"@carol:elsewhere": {"C": msg("remote")}}); err != nil {
			t.Fatal(err)
		}
		// A retried transaction is applied once.
		if err := send("t1", map[string]map[string]json.RawMessage{bob.user: {"*": msg("again")}}); err != nil {
			t.Fatal(err)
		}
		// Another device of the sender may reuse the ID.
		if err := e.SendToDevice(ctx, alice.user, "OTHERDEV", "m.test", "t1", map[string]map[string]json.RawMessage{bob.user: {bob.id: msg("other")}}); err != nil {
			t.Fatal(err)
		}
		msgs, next, err := e.ToDeviceSince(ctx, bob.user, bob.id, 0, 0)
		if err != nil || len(msgs) != 2 || string(msgs[0].Content) != `{"n":"all"}` || string(msgs[1].Content) != `{"n":"other"}` ||
			msgs[0].Sender != alice.user || msgs[0].Type != "m.test" {
			t.Fatalf("bob: %+v %v", msgs, err)
		}
		if pos, _ := e.CurrentPositions(ctx); next != pos["to_device"] || rec.toDevice[bob.user+"|"+bob.id] != msgs[1].Pos {
			t.Fatalf("next %d, positions %v, notified %v", next, pos, rec.toDevice)
		}
		msgs2, _, _ := e.ToDeviceSince(ctx, bob.user, bob2.id, 0, 0)
		if len(msgs2) != 1 || string(msgs2[0].Content) != `{"n":"two"}` {
			t.Fatalf("bob2: %+v", msgs2)
		}
		out, _ := e.RemoteToDevicePending(ctx, "elsewhere", 0, 10)
		if len(out) != 1 || !strings.Contains(string(out[0].Messages), "remote") {
			t.Fatalf("outbox: %+v", out)
		}
		if err := e.RemoteToDeviceSent(ctx, "elsewhere", out[0].ID); err != nil {
			t.Fatal(err)
		}
		if out, _ := e.RemoteToDevicePending(ctx, "elsewhere", 0, 10); len(out) != 0 {
			t.Fatal("outbox not emptied")
		}

		// Batches: a full batch ends at its last message.
		for i := range 5 {
			if err := send(fmt.Sprint("b", i), map[string]map[string]json.RawMessage{bob.user: {bob.id: msg(fmt.Sprint(i))}}); err != nil {
				t.Fatal(err)
			}
		}
		batch, next, _ := e.ToDeviceSince(ctx, bob.user, bob.id, 0, 3)
		if len(batch) != 3 || next != batch[2].Pos {
			t.Fatalf("batch %+v next %d", batch, next)
		}
		// Nothing is deleted until acknowledged, and a repeat read gets it all.
		if again, _, _ := e.ToDeviceSince(ctx, bob.user, bob.id, 0, 100); len(again) != 7 {
			t.Fatalf("before ack: %d", len(again))
		}
		if err := e.AckToDevice(ctx, bob.user, bob.id, next); err != nil {
			t.Fatal(err)
		}
		rest, _, _ := e.ToDeviceSince(ctx, bob.user, bob.id, 0, 100)
		if len(rest) != 4 || rest[0].Pos <= next {
			t.Fatalf("after ack: %+v", rest)
		}
		// An acknowledgement beyond the stream is clamped, not trusted.
		if err := e.AckToDevice(ctx, bob.user, bob.id, 1<<50); err != nil {
			t.Fatal(err)
		}
		if left, _, _ := e.ToDeviceSince(ctx, bob.user, bob.id, 0, 100); len(left) != 0 {
			t.Fatalf("left: %+v", left)
		}

		for _, tc := range []struct {
			name string
			err  error
			code string
		}{
			{"missing messages", send("x1", nil), "M_MISSING_PARAM"},
			{"bad user", send("x2", map[string]map[string]json.RawMessage{"bob": {"*": msg("x")}}), "M_INVALID_PARAM"},
			{"content not an object", send("x3", map[string]map[string]json.RawMessage{bob.user: {"*": json.RawMessage(`"x"`)}}), "M_BAD_JSON"},
			{"empty event type", e.SendToDevice(ctx, alice.user, alice.id, "", "x4", map[string]map[string]json.RawMessage{}), "M_INVALID_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.err, tc.code) })
		}
	})
}

func TestDeviceListChanges(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newEngine(t, db, e2ee.Config{})
		alice := newDevice(t, db, "@alice:"+server, "ALICE")
		bob := newDevice(t, db, "@bob:"+server, "BOB")
		carol := newDevice(t, db, "@carol:"+server, "CAROL")
		start, _ := e.CurrentPositions(ctx)
		for _, d := range []*device{alice, bob, carol} {
			d.upload(t, e, 0)
		}
		end, _ := e.CurrentPositions(ctx)
		from, to := start["device_lists"], end["device_lists"]
		check := func(name string, delta e2ee.MembershipDelta, wantChanged, wantLeft []string) {
			t.Helper()
			changed, left, err := e.DeviceListChanges(ctx, alice.user, from, to, delta)
			if err != nil || !slices.Equal(changed, wantChanged) || !slices.Equal(left, wantLeft) {
				t.Fatalf("%s: changed %v left %v (%v), want %v %v", name, changed, left, err, wantChanged, wantLeft)
			}
		}
		// Without room membership only Alice's own changes are known.
		check("no membership", e2ee.MembershipDelta{}, []string{alice.user}, []string{})
		e.SetMembership(rooms{groups: [][]string{{alice.user, bob.user}}})
		check("sharing a room", e2ee.MembershipDelta{}, []string{alice.user, bob.user}, []string{})
		check("carol joined, bob left but still shares a room",
			e2ee.MembershipDelta{Joined: []string{carol.user}, Left: []string{bob.user}}, []string{alice.user, bob.user, carol.user}, []string{})
		e.SetMembership(rooms{groups: [][]string{{alice.user}}})
		check("bob left every room", e2ee.MembershipDelta{Left: []string{bob.user}}, []string{alice.user}, []string{bob.user})
		if changed, _, _ := e.DeviceListChanges(ctx, alice.user, to, to, e2ee.MembershipDelta{}); len(changed) != 0 {
			t.Fatalf("empty window: %v", changed)
		}

		// /keys/changes reads device_lists positions until sync installs
		// its token decoder.
		changed, _, err := e.KeyChanges(ctx, alice.user, fmt.Sprint(from), "")
		if err != nil || !slices.Equal(changed, []string{alice.user}) {
			t.Fatalf("key changes: %v %v", changed, err)
		}
		_, _, err = e.KeyChanges(ctx, alice.user, "s72594_4483_1934", "")
		wantCode(t, err, "M_INVALID_PARAM")

		// Deleting a device forgets its keys and is a change.
		err = db.Write(ctx, func(tx *storage.Tx) error {
			if err := db.Accounts().DevicesDelete(ctx, tx, carol.user, []string{carol.id}); err != nil {
				return err
			}
			return e.DevicesDeleted(ctx, tx, carol.user, []string{carol.id})
		})
		if err != nil {
			t.Fatal(err)
		}
		q, _ := e.QueryKeys(ctx, alice.user, map[string][]string{carol.user: nil})
		if len(q.DeviceKeys[carol.user]) != 0 {
			t.Fatalf("deleted device still has keys: %v", q.DeviceKeys)
		}
		after, _ := e.CurrentPositions(ctx)
		changed, _, _ = e.DeviceListChanges(ctx, carol.user, to, after["device_lists"], e2ee.MembershipDelta{})
		if !slices.Equal(changed, []string{carol.user}) {
			t.Fatalf("deletion not a change: %v", changed)
		}

		// Once old changes are pruned, a window from before the horizon
		// reports everyone sharing a room as changed; later ones as usual.
		e.SetMembership(rooms{groups: [][]string{{alice.user, bob.user}}})
		if _, err := db.Keys().DeviceListsPrune(ctx, time.Now().Add(time.Hour).UnixMilli()); err != nil {
			t.Fatal(err)
		}
		changed, _, err = e.DeviceListChanges(ctx, alice.user, from, after["device_lists"], e2ee.MembershipDelta{})
		if err != nil || !slices.Equal(changed, []string{alice.user, bob.user}) {
			t.Fatalf("from before the horizon: %v %v", changed, err)
		}
		changed, _, err = e.DeviceListChanges(ctx, alice.user, after["device_lists"], after["device_lists"], e2ee.MembershipDelta{})
		if err != nil || len(changed) != 0 {
			t.Fatalf("after the horizon: %v %v", changed, err)
		}
	})
}

func TestBackup(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newEngine(t, db, e2ee.Config{MaxBackupKeys: 3})
		user := "@alice:" + server
		authData := raw(t, map[string]any{"public_key": newKeyPair(t).pub})
		if _, err := e.BackupVersion(ctx, user, ""); err == nil {
			t.Fatal("a backup exists before any was made")
		}
		v1, err := e.CreateBackupVersion(ctx, user, e2ee.MegolmBackupV1, authData)
		if err != nil || v1 != "1" {
			t.Fatalf("create: %q %v", v1, err)
		}
		key := func(verified bool, first, fwd int64, data string) e2ee.BackupSessionUpload {
			return e2ee.BackupSessionUpload{FirstMessageIndex: &first, ForwardedCount: &fwd, IsVerified: &verified,
				SessionData: json.RawMessage(`{"ciphertext":"` + data + `"}`)}
		}
		put := func(version string, room, session string, k e2ee.BackupSessionUpload) (e2ee.BackupCounters, error) {
			return e.PutBackupKeys(ctx, user, version, map[string]e2ee.RoomBackupUpload{room: {Sessions: map[string]e2ee.BackupSessionUpload{session: k}}})
		}
		stored := func(room, session string) string {
			k, err := e.BackupKeys(ctx, user, v1, room, session)
			if err != nil {
				t.Fatal(err)
			}
			return string(k[room][session].SessionData)
		}
		c, err := put(v1, "!r:x", "s1", key(false, 5, 1, "first"))
		if err != nil || c.Count != 1 || c.ETag != "1" {
			t.Fatalf("%+v %v", c, err)
		}
		for _, step := range []struct {
			k        e2ee.BackupSessionUpload
			want     string
			wantETag string
		}{
			{key(false, 6, 0, "worse index"), "first", "1"},
			{key(false, 5, 1, "tie"), "first", "1"},
			{key(false, 5, 0, "fewer forwards"), "fewer forwards", "2"},
			{key(true, 9, 9, "verified"), "verified", "3"},
			{key(false, 0, 0, "unverified"), "verified", "3"},
		} {
			c, err := put(v1, "!r:x", "s1", step.k)
			if err != nil || c.Count != 1 || c.ETag != step.wantETag || stored("!r:x", "s1") != `{"ciphertext":"`+step.want+`"}` {
				t.Fatalf("after %s: %+v %v %s", step.k.SessionData, c, err, stored("!r:x", "s1"))
			}
		}
		if _, err := put(v1, "!r:x", "s2", key(false, 0, 0, "b")); err != nil {
			t.Fatal(err)
		}
		if _, err := put(v1, "!q:x", "s3", key(false, 0, 0, "c")); err != nil {
			t.Fatal(err)
		}
		_, err = put(v1, "!q:x", "s4", key(false, 0, 0, "d"))
		wantCode(t, err, "M_TOO_LARGE")
		info, err := e.BackupVersion(ctx, user, "")
		if err != nil || info.Count != 3 || info.Version != v1 || info.ETag != "5" {
			t.Fatalf("info %+v %v", info, err)
		}
		all, _ := e.BackupKeys(ctx, user, v1, "", "")
		if len(all) != 2 || len(all["!r:x"]) != 2 {
			t.Fatalf("all keys: %v", all)
		}
		_, err = e.BackupKeys(ctx, user, v1, "!r:x", "nosuch")
		wantCode(t, err, "M_NOT_FOUND")

		bad := key(false, -1, 0, "x")
		_, err = put(v1, "!r:x", "s9", bad)
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = put(v1, "!r:x", "s9", e2ee.BackupSessionUpload{SessionData: json.RawMessage(`{}`)})
		wantCode(t, err, "M_BAD_JSON")
		notObj := key(false, 0, 0, "x")
		notObj.SessionData = json.RawMessage(`"x"`)
		_, err = put(v1, "!r:x", "s9", notObj)
		wantCode(t, err, "M_BAD_JSON")
		_, err = put(v1, "room-without-bang", "s9", key(false, 0, 0, "x"))
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = e.CreateBackupVersion(ctx, user, e2ee.MegolmBackupV1, json.RawMessage(`{"public_key":"short"}`))
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = e.CreateBackupVersion(ctx, user, e2ee.MegolmBackupV1, json.RawMessage(`[]`))
		wantCode(t, err, "M_BAD_JSON")
		wantCode(t, e.UpdateBackupVersion(ctx, user, v1, "other.algorithm", authData, ""), "M_INVALID_PARAM")
		wantCode(t, e.UpdateBackupVersion(ctx, user, v1, e2ee.MegolmBackupV1, authData, "7"), "M_INVALID_PARAM")
		if err := e.UpdateBackupVersion(ctx, user, v1, e2ee.MegolmBackupV1, authData, v1); err != nil {
			t.Fatal(err)
		}

		// A new version becomes current; the old one takes no more keys.
		v2, _ := e.CreateBackupVersion(ctx, user, e2ee.MegolmBackupV1, authData)
		_, err = put(v1, "!r:x", "s5", key(false, 0, 0, "x"))
		wantCode(t, err, "M_WRONG_ROOM_KEYS_VERSION")
		c, err = e.DeleteBackupKeys(ctx, user, v1, "!r:x", "")
		if err != nil || c.Count != 1 || c.ETag != "6" {
			t.Fatalf("delete room keys: %+v %v", c, err)
		}
		if err := e.DeleteBackupVersion(ctx, user, v2); err != nil {
			t.Fatal(err)
		}
		if err := e.DeleteBackupVersion(ctx, user, v2); err != nil {
			t.Fatalf("deleting twice: %v", err)
		}
		wantCode(t, e.DeleteBackupVersion(ctx, user, "99"), "M_NOT_FOUND")
		_, err = e.BackupVersion(ctx, user, v2)
		wantCode(t, err, "M_NOT_FOUND")
		if info, _ := e.BackupVersion(ctx, user, ""); info == nil || info.Version != v1 {
			t.Fatalf("current after deleting v2: %+v", info)
		}
		if v3, _ := e.CreateBackupVersion(ctx, user, e2ee.MegolmBackupV1, authData); v3 != "3" {
			t.Fatalf("versions are reused: %s", v3)
		}
	})
}

func TestDehydratedDevice(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newEngine(t, db, e2ee.Config{})
		alice := newDevice(t, db, "@alice:"+server, "ALICE")
		_, _, err := e.DehydratedDevice(ctx, alice.user)
		wantCode(t, err, "M_NOT_FOUND")
		dehydrate := func() *device {
			d := &device{user: alice.user, sig: newKeyPair(t), curve: newKeyPair(t)}
			d.id = d.curve.pub
			obj := d.keysObject()
			obj["dehydrated"] = true
			id, err := e.PutDehydratedDevice(ctx, alice.user, e2ee.DehydratedDeviceUpload{
				DeviceID: d.id, DeviceData: json.RawMessage(`{"algorithm":"org.matrix.msc3814.v2","device_pickle":"x","nonce":"y"}`),
				UploadRequest: e2ee.UploadRequest{DeviceKeys: raw(t, sign(t, obj, d.sig, d.user, "ed25519:"+d.id)),
					OneTimeKeys: d.otks(t, 0, 2), FallbackKeys: d.fallback(t, "FB")},
			})
			if err != nil || id != d.id {
				t.Fatalf("put: %q %v", id, err)
			}
			return d
		}
		first := dehydrate()
		id, data, err := e.DehydratedDevice(ctx, alice.user)
		if err != nil || id != first.id || !strings.Contains(string(data), "device_pickle") {
			t.Fatalf("get: %s %s %v", id, data, err)
		}
		// It is a device: "*" reaches it and its events can be read in
		// batches, without being deleted.
		for i := range 150 {
			if err := e.SendToDevice(ctx, alice.user, alice.id, "m.room_key", fmt.Sprint(i),
				map[string]map[string]json.RawMessage{alice.user: {"*": json.RawMessage(`{"i":1}`)}}); err != nil {
				t.Fatal(err)
			}
		}
		var total int
		next := ""
		for range 5 {
			evs, nb, err := e.DehydratedDeviceEvents(ctx, alice.user, first.id, next)
			if err != nil {
				t.Fatal(err)
			}
			total += len(evs)
			if nb == "" {
				break
			}
			next = nb
		}
		if total != 150 {
			t.Fatalf("read %d events, want 150", total)
		}
		if evs, _, _ := e.DehydratedDeviceEvents(ctx, alice.user, first.id, ""); len(evs) != 100 {
			t.Fatalf("reading deleted events: %d left", len(evs))
		}
		_, _, err = e.DehydratedDeviceEvents(ctx, alice.user, alice.id, "")
		wantCode(t, err, "M_FORBIDDEN")
		claim, _ := e.ClaimKeys(ctx, map[string]map[string]string{alice.user: {first.id: "signed_curve25519"}})
		if len(claim.OneTimeKeys[alice.user][first.id]) != 1 {
			t.Fatalf("claim from the dehydrated device: %+v", claim)
		}

		// Replacing deletes the old device and what it held.
		second := dehydrate()
		if ok, _ := db.Keys().DeviceExists(ctx, db.Read(), alice.user, first.id); ok {
			t.Fatal("old dehydrated device survives")
		}
		if msgs, _, _ := e.ToDeviceSince(ctx, alice.user, first.id, 0, 10); len(msgs) != 0 {
			t.Fatal("old dehydrated device's messages survive")
		}
		_, err = e.PutDehydratedDevice(ctx, alice.user, e2ee.DehydratedDeviceUpload{DeviceID: alice.id,
			DeviceData: json.RawMessage(`{"algorithm":"a"}`), UploadRequest: e2ee.UploadRequest{DeviceKeys: alice.signedKeys(t)}})
		wantCode(t, err, "M_INVALID_PARAM")
		_, err = e.PutDehydratedDevice(ctx, alice.user, e2ee.DehydratedDeviceUpload{DeviceID: "X", DeviceData: json.RawMessage(`{}`)})
		wantCode(t, err, "M_MISSING_PARAM")
		if id, err := e.DeleteDehydratedDevice(ctx, alice.user); err != nil || id != second.id {
			t.Fatalf("delete: %s %v", id, err)
		}
		_, err = e.DeleteDehydratedDevice(ctx, alice.user)
		wantCode(t, err, "M_NOT_FOUND")
	})
}
