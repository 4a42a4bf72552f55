package storage_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

func TestKeys(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		k := db.Keys()
		write := func(fn func(tx *storage.Tx) error) {
			t.Helper()
			if err := db.Write(ctx, fn); err != nil {
				t.Fatal(err)
			}
		}
		const alice, bob = "@alice:x", "@bob:x"

		t.Run("device keys, devices and display names", func(t *testing.T) {
			write(func(tx *storage.Tx) error {
				if err := db.Accounts().DeviceUpsert(ctx, tx, storage.Device{UserID: alice, DeviceID: "A1", DisplayName: keysStrPtr("Phone"), CreatedTS: 1}); err != nil {
					return err
				}
				for _, id := range []string{"A1", "A2"} {
					if err := k.DeviceKeysPut(ctx, tx, storage.DeviceKeys{UserID: alice, DeviceID: id, KeyJSON: `{"d":"` + id + `"}`, Ed25519: "ed-" + id, CreatedTS: 1}); err != nil {
						return err
					}
				}
				return k.DeviceKeysPut(ctx, tx, storage.DeviceKeys{UserID: bob, DeviceID: "B1", KeyJSON: `{}`, Ed25519: "ed-B1", CreatedTS: 1})
			})
			got, err := k.DeviceKeysGet(ctx, db.Read(), alice, "A2")
			if err != nil || got.Ed25519 != "ed-A2" {
				t.Fatalf("%+v %v", got, err)
			}
			if _, err := k.DeviceKeysGet(ctx, db.Read(), alice, "NONE"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("missing keys: %v", err)
			}
			list, err := k.DeviceKeysForUsers(ctx, []string{alice, bob, "@nobody:x"})
			if err != nil || len(list) != 3 || list[0].DisplayName == nil || *list[0].DisplayName != "Phone" || list[1].DisplayName != nil {
				t.Fatalf("%+v %v", list, err)
			}
			if list, _ := k.DeviceKeysForUsers(ctx, nil); len(list) != 0 {
				t.Fatalf("no users: %+v", list)
			}
			ids, _ := k.UserDeviceIDs(ctx, db.Read(), alice)
			if !slices.Equal(ids, []string{"A1"}) {
				t.Fatalf("device IDs %v", ids)
			}
			if ok, _ := k.DeviceExists(ctx, db.Read(), alice, "A1"); !ok {
				t.Fatal("A1 does not exist")
			}
		})

		t.Run("one-time keys are claimed once, oldest first", func(t *testing.T) {
			write(func(tx *storage.Tx) error {
				for _, id := range []string{"k3", "k1", "k2"} {
					if _, added, err := k.OneTimeKeyAdd(ctx, tx, alice, "A1", "signed_curve25519", id, `"`+id+`"`); err != nil || !added {
						return errors.Join(err, errors.New("not added"))
					}
				}
				existing, added, err := k.OneTimeKeyAdd(ctx, tx, alice, "A1", "signed_curve25519", "k1", `"other"`)
				if err != nil || added || existing != `"k1"` {
					t.Errorf("duplicate: %q %v %v", existing, added, err)
				}
				_, _, err = k.OneTimeKeyAdd(ctx, tx, alice, "A1", "curve25519", "c1", `"c1"`)
				return err
			})
			counts, _ := k.OneTimeKeyCounts(ctx, db.Read(), alice, "A1")
			if counts["signed_curve25519"] != 3 || counts["curve25519"] != 1 {
				t.Fatalf("counts %v", counts)
			}
			var order []string
			for range 4 {
				write(func(tx *storage.Tx) error {
					id, _, err := k.OneTimeKeyClaim(ctx, tx, alice, "A1", "signed_curve25519")
					if errors.Is(err, storage.ErrNotFound) {
						order = append(order, "none")
						return nil
					}
					order = append(order, id)
					return err
				})
			}
			if !slices.Equal(order, []string{"k3", "k1", "k2", "none"}) {
				t.Fatalf("claim order %v", order)
			}
		})

		t.Run("a claim skips keys another transaction is claiming", func(t *testing.T) {
			if db.Dialect() != "postgres" {
				t.Skip("SQLite's single writer serialises claims")
			}
			write(func(tx *storage.Tx) error {
				for _, id := range []string{"p1", "p2"} {
					if _, _, err := k.OneTimeKeyAdd(ctx, tx, bob, "B1", "signed_curve25519", id, `"`+id+`"`); err != nil {
						return err
					}
				}
				return nil
			})
			held, release, done := make(chan string), make(chan struct{}), make(chan error)
			go func() {
				done <- db.Write(ctx, func(tx *storage.Tx) error {
					id, _, err := k.OneTimeKeyClaim(ctx, tx, bob, "B1", "signed_curve25519")
					held <- id
					<-release
					return err
				})
			}()
			first := <-held
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var second string
			err := db.Write(tctx, func(tx *storage.Tx) error {
				var err error
				second, _, err = k.OneTimeKeyClaim(tctx, tx, bob, "B1", "signed_curve25519")
				return err
			})
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err != nil || first != "p1" || second != "p2" {
				t.Fatalf("concurrent claims got %q and %q (%v)", first, second, err)
			}
		})

		t.Run("fallback keys", func(t *testing.T) {
			claim := func() (string, error) {
				var id string
				err := db.Write(ctx, func(tx *storage.Tx) error {
					var err error
					id, _, err = k.FallbackKeyClaim(ctx, tx, alice, "A1", "signed_curve25519")
					return err
				})
				return id, err
			}
			if _, err := claim(); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("no fallback: %v", err)
			}
			put := func(id, js string) {
				write(func(tx *storage.Tx) error { return k.FallbackKeyPut(ctx, tx, alice, "A1", "signed_curve25519", id, js) })
			}
			unused := func() []string {
				// The combined read's counts agree with OneTimeKeyCounts.
				c, u, err := k.KeyCounts(ctx, db.Read(), alice, "A1")
				want, _ := k.OneTimeKeyCounts(ctx, db.Read(), alice, "A1")
				if err != nil || !maps.Equal(c, want) {
					t.Fatalf("KeyCounts %v %v; want %v", c, err, want)
				}
				return u
			}
			put("f1", `{"key":"1"}`)
			if !slices.Equal(unused(), []string{"signed_curve25519"}) {
				t.Fatal("new fallback not unused")
			}
			for range 2 {
				if id, err := claim(); err != nil || id != "f1" {
					t.Fatalf("claim %q %v", id, err)
				}
			}
			if len(unused()) != 0 {
				t.Fatal("claimed fallback still unused")
			}
			put("f1", `{"key":"1"}`)
			if len(unused()) != 0 {
				t.Fatal("re-uploading the same fallback key reset it")
			}
			put("f2", `{"key":"2"}`)
			if len(unused()) != 1 {
				t.Fatal("a new fallback key is not unused")
			}
		})

		t.Run("device list changes", func(t *testing.T) {
			var p1, p2, p3 int64
			write(func(tx *storage.Tx) (err error) {
				if p1, err = k.DeviceListChangeAdd(ctx, tx, alice, "", 1); err != nil {
					return err
				}
				if p2, err = k.DeviceListChangeAdd(ctx, tx, alice, "", 1); err != nil {
					return err
				}
				p3, err = k.DeviceListChangeAdd(ctx, tx, bob, alice, 1)
				return err
			})
			if p2 != p1+1 || p3 != p2+1 {
				t.Fatalf("positions %d %d %d", p1, p2, p3)
			}
			if cur, _ := db.StreamPos(ctx, storage.DeviceListsStream); cur != p3 {
				t.Fatalf("stream at %d, want %d", cur, p3)
			}
			for _, tc := range []struct {
				viewer   string
				from, to int64
				want     []storage.DeviceListChange
			}{
				{alice, p1 - 1, p3, []storage.DeviceListChange{{UserID: alice}, {UserID: bob, OnlyFor: alice}}},
				{bob, p1 - 1, p3, []storage.DeviceListChange{{UserID: alice}}},
				{alice, p2, p3, []storage.DeviceListChange{{UserID: bob, OnlyFor: alice}}},
				{alice, p3, p3, nil},
			} {
				got, err := k.DeviceListChangesBetween(ctx, tc.viewer, tc.from, tc.to)
				slices.SortFunc(got, func(a, b storage.DeviceListChange) int { return strings.Compare(a.UserID, b.UserID) })
				if err != nil || !slices.Equal(got, tc.want) {
					t.Fatalf("%s (%d, %d]: %+v %v, want %+v", tc.viewer, tc.from, tc.to, got, err, tc.want)
				}
			}
			// Pruning: nothing is old enough, then everything is; the
			// horizon tells readers what they can no longer see.
			if n, err := k.DeviceListsPrune(ctx, 1); err != nil || n != 0 {
				t.Fatalf("pruned %d %v, want none", n, err)
			}
			if h, err := k.DeviceListsHorizon(ctx); err != nil || h != 0 {
				t.Fatalf("horizon %d %v before pruning", h, err)
			}
			if n, err := k.DeviceListsPrune(ctx, 2); err != nil || n < 3 {
				t.Fatalf("pruned %d %v, want the three", n, err)
			}
			if h, err := k.DeviceListsHorizon(ctx); err != nil || h != p3 {
				t.Fatalf("horizon %d %v, want %d", h, err, p3)
			}
			if got, err := k.DeviceListChangesBetween(ctx, alice, p1-1, p3); err != nil || len(got) != 0 {
				t.Fatalf("after pruning: %+v %v", got, err)
			}
		})

		t.Run("to-device messages and transactions", func(t *testing.T) {
			var queued []storage.ToDeviceMessage
			write(func(tx *storage.Tx) error {
				fresh, err := k.ToDeviceTxnAdd(ctx, tx, alice, "A1", "t1", 100)
				if err != nil || !fresh {
					return errors.Join(err, errors.New("not fresh"))
				}
				if again, _ := k.ToDeviceTxnAdd(ctx, tx, alice, "A1", "t1", 100); again {
					t.Error("transaction applied twice")
				}
				queued, err = k.ToDeviceAdd(ctx, tx, []storage.ToDeviceMessage{
					{UserID: bob, DeviceID: "B1", Sender: alice, Type: "m.t", Content: `{"n":1}`, CreatedTS: 100},
					{UserID: bob, DeviceID: "B2", Sender: alice, Type: "m.t", Content: `{"n":2}`, CreatedTS: 100},
					{UserID: bob, DeviceID: "B1", Sender: alice, Type: "m.t", Content: `{"n":3}`, CreatedTS: 100},
				})
				return err
			})
			if queued[1].Pos != queued[0].Pos+1 || queued[2].Pos != queued[0].Pos+2 {
				t.Fatalf("positions %+v", queued)
			}
			msgs, err := k.ToDeviceSince(ctx, bob, "B1", 0, queued[2].Pos, 10)
			if err != nil || len(msgs) != 2 || msgs[0].Content != `{"n":1}` || msgs[1].Pos != queued[2].Pos {
				t.Fatalf("%+v %v", msgs, err)
			}
			if msgs, _ := k.ToDeviceSince(ctx, bob, "B1", 0, queued[1].Pos, 10); len(msgs) != 1 {
				t.Fatalf("upTo not honoured: %+v", msgs)
			}
			if found, _ := k.ToDeviceAnyUpTo(ctx, bob, "B1", queued[0].Pos-1); found {
				t.Fatal("messages below the first")
			}
			if found, _ := k.ToDeviceAnyUpTo(ctx, bob, "B1", queued[0].Pos); !found {
				t.Fatal("the first message not found")
			}
			if n, _ := k.ToDeviceDeleteUpTo(ctx, bob, "B1", queued[0].Pos); n != 1 {
				t.Fatalf("deleted %d", n)
			}
			if n, _ := k.ToDeviceTxnsPrune(ctx, 101); n != 1 {
				t.Fatalf("pruned %d transactions", n)
			}
			write(func(tx *storage.Tx) error {
				return k.ToDeviceOutboxAdd(ctx, tx, storage.OutboxEntry{Destination: "y", Sender: alice, Type: "m.t", MessageID: "m", Messages: `{}`, CreatedTS: 5})
			})
			out, _ := k.ToDeviceOutboxList(ctx, "y", 0, 10)
			if len(out) != 1 || out[0].MessageID != "m" {
				t.Fatalf("outbox %+v", out)
			}
			if n, _ := k.ToDeviceOutboxPrune(ctx, 6); n != 1 {
				t.Fatalf("outbox pruned %d", n)
			}
		})

		t.Run("backups", func(t *testing.T) {
			var v1, v2 int64
			write(func(tx *storage.Tx) (err error) {
				if v1, err = k.BackupVersionCreate(ctx, tx, alice, "alg", `{"a":1}`, 1); err != nil {
					return err
				}
				v2, err = k.BackupVersionCreate(ctx, tx, alice, "alg", `{"a":2}`, 1)
				return err
			})
			if v1 != 1 || v2 != 2 {
				t.Fatalf("versions %d %d", v1, v2)
			}
			write(func(tx *storage.Tx) error {
				for _, s := range []storage.BackupKey{{RoomID: "!a", SessionID: "s1", SessionData: `{}`}, {RoomID: "!a", SessionID: "s2", SessionData: `{}`},
					{RoomID: "!b", SessionID: "s1", SessionData: `{}`, IsVerified: true, FirstMessageIndex: 3, ForwardedCount: 1}} {
					if err := k.BackupKeyPut(ctx, tx, alice, v2, s); err != nil {
						return err
					}
				}
				return k.BackupVersionSetCounters(ctx, tx, alice, v2, 1, 3)
			})
			if got, _ := k.BackupKeyGet(ctx, db.Read(), alice, v2, "!b", "s1"); !got.IsVerified || got.FirstMessageIndex != 3 || got.ForwardedCount != 1 {
				t.Fatalf("%+v", got)
			}
			for _, tc := range []struct {
				room, session string
				n             int
			}{{"", "", 3}, {"!a", "", 2}, {"!a", "s2", 1}, {"!c", "", 0}} {
				if got, err := k.BackupKeysList(ctx, alice, v2, tc.room, tc.session); err != nil || len(got) != tc.n {
					t.Fatalf("list %q %q: %d %v", tc.room, tc.session, len(got), err)
				}
			}
			latest, _ := k.BackupVersionLatest(ctx, db.Read(), alice)
			if latest.Version != v2 || latest.Count != 3 || latest.ETag != 1 {
				t.Fatalf("latest %+v", latest)
			}
			write(func(tx *storage.Tx) error {
				n, err := k.BackupKeysDelete(ctx, tx, alice, v2, "!a", "s1")
				if n != 1 {
					t.Errorf("deleted %d", n)
				}
				if err != nil {
					return err
				}
				return k.BackupVersionDelete(ctx, tx, alice, v2)
			})
			if latest, _ := k.BackupVersionLatest(ctx, db.Read(), alice); latest.Version != v1 {
				t.Fatalf("latest after delete %+v", latest)
			}
			if b, _ := k.BackupVersionGet(ctx, db.Read(), alice, v2); !b.Deleted || b.Count != 0 {
				t.Fatalf("deleted version %+v", b)
			}
			if got, _ := k.BackupKeysList(ctx, alice, v2, "", ""); len(got) != 0 {
				t.Fatal("keys of a deleted version survive")
			}
		})

		t.Run("forgetting devices and users", func(t *testing.T) {
			write(func(tx *storage.Tx) error {
				if err := k.SignatureAdd(ctx, tx, storage.Signature{TargetUserID: alice, TargetKeyID: "A1", SignerUserID: alice, SignerKeyID: "ed25519:ssk", Signature: "s"}); err != nil {
					return err
				}
				if err := k.SignatureAdd(ctx, tx, storage.Signature{TargetUserID: alice, TargetKeyID: "master", SignerUserID: alice, SignerKeyID: "ed25519:A1", Signature: "s"}); err != nil {
					return err
				}
				if err := k.CrossSigningKeyPut(ctx, tx, storage.CrossSigningKey{UserID: alice, Type: "master", PublicKey: "master", KeyJSON: "{}", UpdatedTS: 1}); err != nil {
					return err
				}
				return k.DehydratedDevicePut(ctx, tx, storage.DehydratedDevice{UserID: alice, DeviceID: "A1", DeviceData: "{}", CreatedTS: 1})
			})
			write(func(tx *storage.Tx) error { return k.DevicesForget(ctx, tx, alice, []string{"A1"}) })
			if _, err := k.DeviceKeysGet(ctx, db.Read(), alice, "A1"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatal("device keys survive")
			}
			if sigs, _ := k.SignaturesForUsers(ctx, []string{alice}); len(sigs) != 0 {
				t.Fatalf("signatures of and by the device survive: %+v", sigs)
			}
			if _, err := k.DehydratedDeviceGet(ctx, db.Read(), alice); !errors.Is(err, storage.ErrNotFound) {
				t.Fatal("dehydrated record survives")
			}
			if c, _ := k.OneTimeKeyCounts(ctx, db.Read(), alice, "A1"); len(c) != 0 {
				t.Fatalf("one-time keys survive: %v", c)
			}
			write(func(tx *storage.Tx) error { return k.UserKeysForget(ctx, tx, alice) })
			if cs, _ := k.CrossSigningKeysGet(ctx, db.Read(), alice); len(cs) != 0 {
				t.Fatal("cross-signing keys survive")
			}
			if _, err := k.BackupVersionLatest(ctx, db.Read(), alice); !errors.Is(err, storage.ErrNotFound) {
				t.Fatal("a backup survives")
			}
		})
	})
}

func keysStrPtr(s string) *string { return &s }
