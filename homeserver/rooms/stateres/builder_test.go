package stateres

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/json/jsontext"
	"fmt"
	"maps"
	"os"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

func TestMain(m *testing.M) {
	// As at start-up of the server: event IDs come from InternalMeta, never from hashing.
	pdu.UseInternalMetaForGetEventID = true
	os.Exit(m.Run())
}

// Test users; alice creates every test room.
var (
	alice = id.UserID("@alice:example.org")
	bob   = id.UserID("@bob:example.org")
	carol = id.UserID("@carol:example.org")
	dave  = id.UserID("@dave:example.org")
	eve   = id.UserID("@eve:example.org")
	frank = id.UserID("@frank:example.org")
)

// testRoom is an event graph under construction. Event IDs are "$" + name
// (the v12 create event excepted, whose ID must look like a real hash because
// the room ID is derived from it), stored in InternalMeta.EventID.
type testRoom struct {
	tb       testing.TB
	version  id.RoomVersion
	roomID   id.RoomID
	createID id.EventID
	events   []*pdu.PDU
	byID     map[id.EventID]*pdu.PDU
	clock    int64
}

// branch is one line of history in a testRoom: its forward extremity and the
// state after it.
type branch struct {
	room  *testRoom
	state StateMap
	head  []id.EventID
	depth int64
}

// sendOpts tweaks one event sent by a branch.
type sendOpts struct {
	ts          int64 // origin_server_ts; 0 means the room clock
	unchecked   bool  // skip the authorization check at send time
	mayFail     bool  // drop the event instead of failing the test if unauthorized
	rejected    bool  // store as rejected (and leave it out of the branch state)
	redactAfter bool  // store with content redacted, as after a later redaction
	authEvents  []id.EventID
}

// sendOpt sets one sendOpts field.
type sendOpt func(*sendOpts)

// at sets the event's origin_server_ts.
func at(ts int64) sendOpt { return func(o *sendOpts) { o.ts = ts } }

// unchecked skips the send-time authorization check (for malformed fixtures).
func unchecked() sendOpt { return func(o *sendOpts) { o.unchecked = true } }

// mayFail turns an unauthorized event into a silent no-op.
func mayFail() sendOpt { return func(o *sendOpts) { o.mayFail = true } }

// asRejected stores the event as rejected.
func asRejected() sendOpt { return func(o *sendOpts) { o.rejected = true; o.unchecked = true } }

// redactedLater stores the event with its content redacted.
func redactedLater() sendOpt { return func(o *sendOpts) { o.redactAfter = true } }

// withAuthEvents overrides the auth_events chosen from the branch state.
func withAuthEvents(ids ...id.EventID) sendOpt {
	return func(o *sendOpts) { o.authEvents = ids }
}

// newTestRoom creates a room whose create event is sent by alice, and returns
// the room and its main branch. extra is merged into the create content.
func newTestRoom(tb testing.TB, version id.RoomVersion, extra map[string]any) (*testRoom, *branch) {
	tb.Helper()
	r := &testRoom{tb: tb, version: version, byID: make(map[id.EventID]*pdu.PDU), clock: 1_700_000_000_000}
	content := map[string]any{"room_version": string(version)}
	if version.CreatorInContent() {
		content["creator"] = alice
	}
	maps.Copy(content, extra)
	r.createID = "$create"
	r.roomID = "!room:example.org"
	if version.RoomIDIsCreateEventID() {
		sum := sha256.Sum256([]byte("create " + tb.Name()))
		r.createID = id.EventID("$" + base64.RawURLEncoding.EncodeToString(sum[:]))
		r.roomID = id.RoomID("!" + r.createID[1:])
	}
	main := &branch{room: r, state: make(StateMap)}
	main.sendAs(r.createID, alice, "m.room.create", ptr(""), content, nil)
	return r, main
}

// standardRoom is a public room where alice (creator, 100), bob (50) and carol
// (0) are joined; power levels need 100, other state 50.
func standardRoom(tb testing.TB, version id.RoomVersion) (*testRoom, *branch) {
	tb.Helper()
	r, main := newTestRoom(tb, version, nil)
	main.member("alice-join", alice, alice, "join")
	main.pl("pl0", alice, r.plContent(map[id.UserID]int{alice: 100, bob: 50}, nil))
	main.joinRules("jr-public", alice, "public")
	main.member("bob-join", bob, bob, "join")
	main.member("carol-join", carol, carol, "join")
	return r, main
}

// plContent builds power levels content. Creators are left out of users in
// room versions where they are privileged (the auth rules forbid listing them).
func (r *testRoom) plContent(users map[id.UserID]int, extra map[string]any) map[string]any {
	u := make(map[id.UserID]int, len(users))
	for user, level := range users {
		if user == alice && r.version.PrivilegedRoomCreators() {
			continue
		}
		u[user] = level
	}
	content := map[string]any{
		"users": u, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"events": map[string]int{"m.room.power_levels": 100},
	}
	maps.Copy(content, extra)
	return content
}

// source returns a MemorySource holding every event of the room.
func (r *testRoom) source() *MemorySource { return NewMemorySource(r.events) }

// event returns a stored event by name.
func (r *testRoom) event(name string) *pdu.PDU {
	evt := r.byID[id.EventID("$"+name)]
	if evt == nil {
		r.tb.Fatalf("no event named %q", name)
	}
	return evt
}

// getEvents serves eventauth from the room, aligned with ids as it expects for auth_events.
func (r *testRoom) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, 0, len(ids))
	for _, evtID := range ids {
		out = append(out, r.byID[evtID])
	}
	return out, nil
}

// fork returns a new branch that continues from b's current extremity.
func (b *branch) fork() *branch {
	return &branch{room: b.room, state: maps.Clone(b.state), head: append([]id.EventID(nil), b.head...), depth: b.depth}
}

// member sends an m.room.member event.
func (b *branch) member(name string, sender, target id.UserID, membership string, opts ...sendOpt) *pdu.PDU {
	return b.send(name, sender, "m.room.member", string(target), map[string]any{"membership": membership}, opts...)
}

// pl sends a power levels event.
func (b *branch) pl(name string, sender id.UserID, content map[string]any, opts ...sendOpt) *pdu.PDU {
	return b.send(name, sender, "m.room.power_levels", "", content, opts...)
}

// joinRules sends a join rules event.
func (b *branch) joinRules(name string, sender id.UserID, rule string, opts ...sendOpt) *pdu.PDU {
	return b.send(name, sender, "m.room.join_rules", "", map[string]any{"join_rule": rule}, opts...)
}

// topic sends a topic event.
func (b *branch) topic(name string, sender id.UserID, topic string, opts ...sendOpt) *pdu.PDU {
	return b.send(name, sender, "m.room.topic", "", map[string]any{"topic": topic}, opts...)
}

// send sends a state event named name; see sendAs.
func (b *branch) send(name string, sender id.UserID, evtType, stateKey string, content any, opts ...sendOpt) *pdu.PDU {
	b.room.tb.Helper()
	return b.sendAs(id.EventID("$"+name), sender, evtType, &stateKey, content, opts)
}

// sendAs appends an event to the branch: prev_events is the branch extremity,
// auth_events follow the auth events selection over the branch state, and the
// event must pass authorization against them unless told otherwise. Returns nil
// if a mayFail event was not authorized.
func (b *branch) sendAs(evtID id.EventID, sender id.UserID, evtType string, stateKey *string, content any, opts []sendOpt) *pdu.PDU {
	r := b.room
	r.tb.Helper()
	var o sendOpts
	for _, opt := range opts {
		opt(&o)
	}
	if _, dup := r.byID[evtID]; dup {
		r.tb.Fatalf("duplicate event %s", evtID)
	}
	raw, err := json.Marshal(content)
	if err != nil {
		r.tb.Fatal(err)
	}
	r.clock += 1000
	evt := &pdu.PDU{
		Type: evtType, StateKey: stateKey, Sender: sender, Content: jsontext.Value(raw),
		RoomID: r.roomID, PrevEvents: append([]id.EventID{}, b.head...), AuthEvents: []id.EventID{},
		Depth: b.depth + 1, OriginServerTS: r.clock,
	}
	if evtType == "m.room.create" && r.version.RoomIDIsCreateEventID() {
		evt.RoomID = ""
	}
	if o.ts != 0 {
		evt.OriginServerTS = o.ts
	}
	evt.InternalMeta.EventID = evtID
	if o.authEvents != nil {
		evt.AuthEvents = o.authEvents
	} else {
		for _, key := range evt.AuthEventSelection(r.version) {
			if authID, ok := b.state[key]; ok {
				evt.AuthEvents = append(evt.AuthEvents, authID)
			}
		}
	}
	if !o.unchecked {
		if err := eventauth.Authorize(r.version, evt, nil, r.getEvents, noKeys); err != nil {
			if o.mayFail {
				r.clock -= 1000
				return nil
			}
			r.tb.Fatalf("fixture event %s not authorized: %v", evtID, err)
		}
	}
	if o.redactAfter {
		evt.Content = pdu.RedactContent(evt.Type, evt.Content, r.version)
	}
	evt.InternalMeta.Rejected = o.rejected
	r.events = append(r.events, evt)
	r.byID[evtID] = evt
	if !o.rejected {
		b.head = []id.EventID{evtID}
		b.depth++
		if key, ok := keyOf(evt); ok {
			b.state[key] = evtID
		}
	}
	return evt
}

// noKeys is a getKey for fixtures, which carry no signatures.
func noKeys(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
	return "", time.Time{}, fmt.Errorf("no keys in tests")
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// mustResolve resolves sets against the room's events.
func mustResolve(tb testing.TB, r *testRoom, sets ...StateMap) StateMap {
	tb.Helper()
	got, err := Resolve(context.Background(), r.version, sets, r.source())
	if err != nil {
		tb.Fatalf("Resolve: %v", err)
	}
	return got
}

// with returns a copy of state with the given events placed at their keys.
func with(state StateMap, events ...*pdu.PDU) StateMap {
	out := maps.Clone(state)
	for _, evt := range events {
		key, _ := keyOf(evt)
		out[key] = evt.InternalMeta.EventID
	}
	return out
}

// without returns a copy of state lacking the given keys.
func without(state StateMap, keys ...StateKey) StateMap {
	out := maps.Clone(state)
	for _, key := range keys {
		delete(out, key)
	}
	return out
}

// memberKey is the state key of user's membership.
func memberKey(user id.UserID) StateKey {
	return StateKey{Type: "m.room.member", StateKey: string(user)}
}

// topicKey is the state key of the topic.
var topicKey = StateKey{Type: "m.room.topic"}

// assertState fails unless got equals want, listing every differing key.
func assertState(tb testing.TB, got, want StateMap) {
	tb.Helper()
	for key, wantID := range want {
		if gotID, ok := got[key]; !ok {
			tb.Errorf("missing %s/%q: want %s", key.Type, key.StateKey, wantID)
		} else if gotID != wantID {
			tb.Errorf("%s/%q = %s, want %s", key.Type, key.StateKey, gotID, wantID)
		}
	}
	for key, gotID := range got {
		if _, ok := want[key]; !ok {
			tb.Errorf("unexpected %s/%q = %s", key.Type, key.StateKey, gotID)
		}
	}
}
