//go:build goolm

package sytest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// e2eeRooms is the crypto state store of the test clients: every room is
// encrypted with the default settings.
type e2eeRooms struct{ room id.RoomID }

func (e2eeRooms) IsEncrypted(context.Context, id.RoomID) (bool, error) { return true, nil }
func (e2eeRooms) GetEncryptionEvent(context.Context, id.RoomID) (*event.EncryptionEventContent, error) {
	return &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}, nil
}
func (e2eeRooms) GetHistoryVisibility(context.Context, id.RoomID) (*event.HistoryVisibilityEventContent, error) {
	return &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}, nil
}
func (r e2eeRooms) FindSharedRooms(context.Context, id.UserID) ([]id.RoomID, error) {
	return []id.RoomID{r.room}, nil
}

// cryptoClient is an encrypting client: a device and its OlmMachine.
type cryptoClient struct {
	user   *User
	token  string
	device id.DeviceID
	cli    *mautrix.Client
	mach   *crypto.OlmMachine
	since  string
}

func newCryptoClient(t *testing.T, u *User, token string, rooms e2eeRooms) *cryptoClient {
	t.Helper()
	ctx := context.Background()
	device := Must(t, u.Server.Do(t, "GET", v3+"/account/whoami", token, nil), 200).Str("device_id")
	cli, err := mautrix.NewClient(u.Server.URL, id.UserID(u.ID), token)
	if err != nil {
		t.Fatal(err)
	}
	cli.DeviceID = id.DeviceID(device)
	log := zerolog.Nop()
	mach := crypto.NewOlmMachine(cli, &log, crypto.NewMemoryStore(func() error { return nil }), rooms)
	if err := mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	// Upload device keys and one-time keys, as a client does at login.
	if err := mach.ShareKeys(ctx, 0); err != nil {
		t.Fatalf("share keys: %v", err)
	}
	return &cryptoClient{user: u, token: token, device: cli.DeviceID, cli: cli, mach: mach}
}

func (c *cryptoClient) otkCount(t *testing.T) int {
	t.Helper()
	r := Must(t, c.user.Server.Do(t, "POST", v3+"/keys/upload", c.token, map[string]any{}), 200)
	n, _ := e2eeDig(r.JSON, "one_time_key_counts", "signed_curve25519").(float64)
	return int(n)
}

// receiveToDevice hands the device's pending to-device messages, read
// from /sync as clients do, to its machine.
func (c *cryptoClient) receiveToDevice(t *testing.T) int {
	t.Helper()
	ctx := context.Background()
	s := c.user.Server
	path := v3 + "/sync?timeout=0"
	if c.since != "" {
		path += "&since=" + url.QueryEscape(c.since)
	}
	var raw []json.RawMessage
	r := Must(t, s.Do(t, "GET", path, c.token, nil), 200)
	c.since = r.Str("next_batch")
	var body struct {
		ToDevice struct {
			Events []json.RawMessage `json:"events"`
		} `json:"to_device"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	raw = body.ToDevice.Events
	for _, r := range raw {
		var evt event.Event
		if err := json.Unmarshal(r, &evt); err != nil {
			t.Fatal(err)
		}
		evt.Type.Class = event.ToDeviceEventType
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			t.Fatalf("to-device %s: %v", r, err)
		}
		c.mach.HandleToDeviceEvent(ctx, &evt)
	}
	return len(raw)
}

// TestE2EEEncryptedChat runs two real encrypting clients (mautrix-go's
// OlmMachine with pure-Go olm): Alice claims one of Bob's one-time keys,
// opens an Olm session, shares a Megolm session over to-device, sends an
// encrypted message and Bob decrypts it. Bob then cross-signs a second
// device, backs the session up and restores it on a third. The database
// never holds the message's plaintext.
func TestE2EEEncryptedChat(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		ctx := context.Background()
		s := StartServer(t, Options{Dialect: dialect})
		aliceUser, bobUser := s.Register(t, "e2ee-chat-alice"), s.Register(t, "e2ee-chat-bob")
		secret := "the eagle lands at midnight " + randHex(8)

		// A room when the server has rooms; otherwise a room ID that only
		// the clients know (encryption does not need the server's room).
		room := id.RoomID("!e2ee-" + randHex(4) + ":" + s.Name)
		haveRooms := false
		if r := aliceUser.Do(t, "POST", v3+"/createRoom", map[string]any{
			"preset": "private_chat", "invite": []string{bobUser.ID},
			"initial_state": []any{map[string]any{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}},
		}); r.Status == 200 {
			room, haveRooms = id.RoomID(r.Str("room_id")), true
			Must(t, bobUser.Do(t, "POST", v3+"/rooms/"+url.PathEscape(string(room))+"/join", map[string]any{}), 200)
		} else if r.Errcode() != "M_UNRECOGNIZED" {
			t.Fatalf("createRoom: %s", r)
		}
		rooms := e2eeRooms{room: room}
		alice := newCryptoClient(t, aliceUser, aliceUser.Token, rooms)
		bob := newCryptoClient(t, bobUser, bobUser.Token, rooms)
		bobKeys := bob.otkCount(t)
		if bobKeys == 0 {
			t.Fatal("Bob uploaded no one-time keys")
		}

		// Alice shares a Megolm session: /keys/query, /keys/claim (one of
		// Bob's one-time keys), an Olm session, and m.room.encrypted over
		// sendToDevice.
		if err := alice.mach.ShareGroupSession(ctx, room, []id.UserID{id.UserID(bobUser.ID)}); err != nil {
			t.Fatalf("share group session: %v", err)
		}
		if n := bob.otkCount(t); n != bobKeys-1 {
			t.Fatalf("Bob has %d one-time keys after the claim, want %d", n, bobKeys-1)
		}
		if n := bob.receiveToDevice(t); n != 1 {
			t.Fatalf("Bob received %d to-device messages, want 1", n)
		}

		content, err := alice.mach.EncryptMegolmEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: secret})
		if err != nil {
			t.Fatal(err)
		}
		evt := &event.Event{Sender: id.UserID(aliceUser.ID), Type: event.EventEncrypted, RoomID: room,
			ID: id.EventID("$local-" + randHex(6)), Timestamp: time.Now().UnixMilli(), Content: event.Content{Parsed: content}}
		if haveRooms {
			r := Must(t, aliceUser.Do(t, "PUT", v3+"/rooms/"+url.PathEscape(string(room))+"/send/m.room.encrypted/t"+randHex(4), content), 200)
			evt = bobFetchEvent(t, bobUser, room, r.Str("event_id"))
		}
		decrypted, err := bob.mach.DecryptMegolmEvent(ctx, evt)
		if err != nil {
			t.Fatalf("Bob cannot decrypt: %v", err)
		}
		if got := decrypted.Content.AsMessage(); got == nil || got.Body != secret {
			t.Fatalf("Bob decrypted %+v", decrypted.Content.Raw)
		}

		// Bob cross-signs: keys first (no UIA on a first upload), then a
		// second device signed by his self-signing key, which Alice sees
		// as cross-signed.
		xs, err := bob.mach.GenerateCrossSigningKeys()
		if err != nil {
			t.Fatal(err)
		}
		uia := func(*mautrix.RespUserInteractive) any {
			t.Fatal("a first cross-signing upload asked for UIA")
			return nil
		}
		if err := bob.mach.PublishCrossSigningKeys(ctx, xs, uia); err != nil {
			t.Fatalf("publish cross-signing keys: %v", err)
		}
		bob2 := newCryptoClient(t, bobUser, bobUser.login(t), rooms)
		devs, err := bob.mach.FetchKeys(ctx, []id.UserID{id.UserID(bobUser.ID)}, true)
		if err != nil {
			t.Fatal(err)
		}
		second := devs[id.UserID(bobUser.ID)][bob2.device]
		if second == nil {
			t.Fatalf("Bob's first device does not see the second: %v", devs)
		}
		if err := bob.mach.SignOwnDevice(ctx, second); err != nil {
			t.Fatalf("sign own device: %v", err)
		}
		seen, err := alice.mach.FetchKeys(ctx, []id.UserID{id.UserID(bobUser.ID)}, true)
		if err != nil {
			t.Fatal(err)
		}
		if d := seen[id.UserID(bobUser.ID)][bob2.device]; d == nil {
			t.Fatalf("Alice does not see Bob's second device")
		} else if trust, err := alice.mach.ResolveTrustContext(ctx, d); err != nil || trust != id.TrustStateCrossSignedTOFU {
			t.Fatalf("Alice's trust in Bob's second device: %s (%v), want cross-signed", trust, err)
		}

		// Key backup: Bob stores the session, a third device restores it.
		backupKey, err := backup.NewMegolmBackupKey()
		if err != nil {
			t.Fatal(err)
		}
		version, err := bob.cli.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
			AuthData:  backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(backupKey.PublicKey().Bytes()))},
		})
		if err != nil {
			t.Fatal(err)
		}
		igs, err := bob.mach.CryptoStore.GetGroupSession(ctx, room, content.SessionID)
		if err != nil || igs == nil {
			t.Fatalf("Bob's inbound session: %v", err)
		}
		first := igs.Internal.FirstKnownIndex()
		exported, err := igs.Internal.Export(first)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := backup.EncryptSessionData(backupKey, backup.MegolmSessionData{
			Algorithm: id.AlgorithmMegolmV1, SenderKey: igs.SenderKey, SessionKey: string(exported),
			SenderClaimedKeys: backup.SenderClaimedKeys{Ed25519: igs.SigningKey}, ForwardingKeyChain: []string{},
		})
		if err != nil {
			t.Fatal(err)
		}
		encJSON, _ := json.Marshal(enc)
		up, err := bob.cli.PutKeysInBackup(ctx, version.Version, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
			room: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{content.SessionID: {FirstMessageIndex: int(first), IsVerified: true, SessionData: encJSON}}},
		}})
		if err != nil || up.Count != 1 {
			t.Fatalf("backup: %+v %v", up, err)
		}
		bob3 := newCryptoClient(t, bobUser, bobUser.login(t), rooms)
		if _, err := bob3.mach.DecryptMegolmEvent(ctx, evt); err == nil {
			t.Fatal("a new device decrypted without the key")
		}
		if v, err := bob3.mach.DownloadAndStoreLatestKeyBackup(ctx, backupKey); err != nil || v != version.Version {
			t.Fatalf("restore: %q %v", v, err)
		}
		restored, err := bob3.mach.DecryptMegolmEvent(ctx, evt)
		if err != nil || restored.Content.AsMessage().Body != secret {
			t.Fatalf("restored device cannot decrypt: %v", err)
		}

		// The server never saw the plaintext, only ciphertext.
		dump := dbText(t, s)
		if strings.Contains(dump, secret) || strings.Contains(dump, "eagle lands") {
			t.Fatal("the database holds the message's plaintext")
		}
		if !strings.Contains(dump, string(content.SessionID)) {
			t.Fatal("the database dump holds no trace of the session: the check looked at nothing")
		}
		if !haveRooms {
			t.Log("no rooms on this server: the encrypted event went from Alice's client to Bob's directly")
		}
	})
}

// bobFetchEvent reads an event of a room through /messages, as a client
// without /sync does.
func bobFetchEvent(t *testing.T, u *User, room id.RoomID, eventID string) *event.Event {
	t.Helper()
	r := Must(t, u.Do(t, "GET", v3+"/rooms/"+url.PathEscape(string(room))+"/messages?dir=b&limit=20", nil), 200)
	var body struct {
		Chunk []json.RawMessage `json:"chunk"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	for _, raw := range body.Chunk {
		var evt event.Event
		if err := json.Unmarshal(raw, &evt); err != nil {
			t.Fatal(err)
		}
		if string(evt.ID) == eventID {
			if err := evt.Content.ParseRaw(evt.Type); err != nil {
				t.Fatal(err)
			}
			return &evt
		}
	}
	t.Fatalf("event %s not in /messages: %s", eventID, r)
	return nil
}
