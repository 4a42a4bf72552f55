package stateres

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// allVersions covers every state resolution algorithm.
var allVersions = []id.RoomVersion{id.RoomV0, id.RoomV1, id.RoomV2, id.RoomV5, id.RoomV10, id.RoomV11, id.RoomV12}

func TestEmptyAndTrivialInput(t *testing.T) {
	ctx := context.Background()
	for _, version := range allVersions {
		t.Run("v"+string(version), func(t *testing.T) {
			got, err := Resolve(ctx, version, nil, NewMemorySource(nil))
			if err != nil || got == nil || len(got) != 0 {
				t.Fatalf("Resolve(no sets) = %v, %v; want empty map", got, err)
			}
			got, err = Resolve(ctx, version, []StateMap{nil, {}}, NewMemorySource(nil))
			if err != nil || len(got) != 0 {
				t.Fatalf("Resolve(empty sets) = %v, %v; want empty map", got, err)
			}
		})
	}
	if _, err := Resolve(ctx, "13-unknown", nil, NewMemorySource(nil)); !errors.Is(err, id.ErrUnknownRoomVersion) {
		t.Errorf("unknown version: err = %v", err)
	}
	if _, err := Resolve(ctx, id.RoomV11, nil, nil); err == nil {
		t.Error("nil source: no error")
	}
}

func TestResultDoesNotAliasInput(t *testing.T) {
	set := StateMap{createKey: "$create"}
	got, err := Resolve(context.Background(), id.RoomV11, []StateMap{set}, NewMemorySource(nil))
	if err != nil {
		t.Fatal(err)
	}
	got[topicKey] = "$x"
	if _, ok := set[topicKey]; ok {
		t.Fatal("result aliases the input set")
	}
}

// sourceWithout returns the room's events minus the named ones.
func sourceWithout(r *testRoom, names ...string) *MemorySource {
	drop := make(map[id.EventID]bool)
	for _, name := range names {
		drop[id.EventID("$"+name)] = true
	}
	var kept []*pdu.PDU
	for _, evt := range r.events {
		if !drop[evt.InternalMeta.EventID] {
			kept = append(kept, evt)
		}
	}
	return NewMemorySource(kept)
}

func TestMissingEvents(t *testing.T) {
	for _, version := range allVersions {
		t.Run("v"+string(version), func(t *testing.T) {
			r, main := standardRoom(t, version)
			a, b := main.fork(), main.fork()
			a.member("ban-bob", alice, bob, "ban")
			rename := b.send("bob-rename", bob, "m.room.member", string(bob), map[string]any{"membership": "join", "displayname": "B"})
			ctx := context.Background()
			for _, tc := range []struct {
				name    string
				missing []string
				want    StateMap
			}{
				// A conflicted event that cannot be loaded cannot win.
				{"conflicted event", []string{"ban-bob"}, with(a.state, rename)},
				// Unconflicted entries stay whether or not they can be loaded.
				{"unconflicted event", []string{"carol-join"}, a.state},
				// Without any power levels event the creator has 100 (infinite in
				// v12), so alice's ban still passes and wins.
				{"shared auth event", []string{"pl0"}, a.state},
			} {
				t.Run(tc.name, func(t *testing.T) {
					got, err := Resolve(ctx, version, []StateMap{a.state, b.state}, sourceWithout(r, tc.missing...))
					if err != nil {
						t.Fatal(err)
					}
					assertState(t, got, tc.want)
				})
			}
			// Nothing loadable at all: no panic, and the unconflicted state survives.
			got, err := Resolve(ctx, version, []StateMap{a.state, b.state}, NewMemorySource(nil))
			if err != nil {
				t.Fatal(err)
			}
			assertState(t, got, without(a.state, memberKey(bob)))
		})
	}
}

func TestMalformedStateEntries(t *testing.T) {
	for _, version := range allVersions {
		t.Run("v"+string(version), func(t *testing.T) {
			r, main := standardRoom(t, version)
			a, b := main.fork(), main.fork()
			a.topic("topic-a", alice, "a")
			message := a.send("msg", alice, "m.room.message", "", map[string]any{"body": "hi"})
			message.StateKey = nil // now a message event
			b.topic("topic-b", alice, "b")
			// One set points the power levels key at a message event, another
			// points the join rules key at a member event.
			broken := with(a.state)
			broken[powerLevelsKey] = "$msg"
			broken[joinRulesKey] = "$bob-join"
			if _, err := Resolve(context.Background(), version, []StateMap{broken, b.state}, r.source()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPowerLevelValueTypes(t *testing.T) {
	// Per room version: v1–9 parse levels like Python's int() (numeric
	// strings, booleans, floats truncated), v10+ accept only JSON numbers.
	for _, tc := range []struct {
		version id.RoomVersion
		bobPL   any
		want    int64
	}{
		{id.RoomV1, " 75 ", 75},
		{id.RoomV5, 75.9, 75},
		{id.RoomV5, "75", 75},
		{id.RoomV5, "75.5", 0},
		{id.RoomV9, true, 1},
		{id.RoomV10, "75", 0},
		{id.RoomV10, 75, 75},
		{id.RoomV12, 75, 75},
		{id.RoomV11, map[string]any{}, 0},
		{id.RoomV11, []int{75}, 0},
	} {
		r, main := newTestRoom(t, tc.version, nil)
		main.member("alice-join", alice, alice, "join")
		content := map[string]any{"users": map[string]any{string(alice): 100, string(bob): tc.bobPL}, "state_default": 0}
		if tc.version.PrivilegedRoomCreators() {
			content["users"] = map[string]any{string(bob): tc.bobPL}
		}
		main.pl("pl0", alice, content, unchecked())
		// v10+ rejects events needing unparsable levels, so skip send-time checks.
		main.joinRules("jr-public", alice, "public", unchecked())
		main.member("bob-join", bob, bob, "join", unchecked())
		a, b := main.fork(), main.fork()
		a.topic("topic-bob", bob, "bob's", unchecked())
		b.topic("topic-alice", alice, "alice's", unchecked())
		res := newResolver(context.Background(), tc.version, r.source())
		if got, err := res.senderPower(r.event("jr-public")); err != nil || got != infiniteOr(tc.version, 100) {
			t.Errorf("v%s: alice's power = %d, %v", tc.version, got, err)
		}
		probe := &pdu.PDU{Type: "m.room.topic", StateKey: ptr(""), Sender: bob, RoomID: r.roomID, AuthEvents: []id.EventID{"$pl0"}}
		if got, err := res.senderPower(probe); err != nil || got != tc.want {
			t.Errorf("v%s: bob's power with users entry %#v = %d, %v; want %d", tc.version, tc.bobPL, got, err, tc.want)
		}
		sets := []StateMap{a.state, b.state}
		if _, err := Resolve(context.Background(), tc.version, sets, r.source()); err != nil {
			t.Errorf("v%s: %v", tc.version, err)
		}
	}
}

// infiniteOr is the creator's power: infinite with privileged creators, else level.
func infiniteOr(version id.RoomVersion, level int64) int64 {
	if version.PrivilegedRoomCreators() {
		return infinitePower
	}
	return level
}

func TestAuthCycle(t *testing.T) {
	r, main := standardRoom(t, id.RoomV11)
	a, b := main.fork(), main.fork()
	content := r.plContent(map[id.UserID]int{alice: 100}, nil)
	a.pl("pl-x", alice, content, unchecked(), withAuthEvents("$create", "$pl-y", "$alice-join"))
	b.pl("pl-y", alice, content, unchecked(), withAuthEvents("$create", "$pl-x", "$alice-join"))
	_, err := Resolve(context.Background(), r.version, []StateMap{a.state, b.state}, r.source())
	if !errors.Is(err, ErrAuthCycle) {
		t.Fatalf("err = %v, want ErrAuthCycle", err)
	}
	// A self-reference is a cycle too.
	c := main.fork()
	c.pl("pl-self", alice, content, unchecked(), withAuthEvents("$create", "$pl-self", "$alice-join"))
	if _, err = Resolve(context.Background(), r.version, []StateMap{a.state, c.state}, r.source()); !errors.Is(err, ErrAuthCycle) {
		t.Fatalf("self-reference: err = %v, want ErrAuthCycle", err)
	}
}

// failingSource fails every call.
type failingSource struct{ err error }

func (f failingSource) Events(context.Context, []id.EventID) (map[id.EventID]*pdu.PDU, error) {
	return nil, f.err
}

func (f failingSource) AuthChain(context.Context, []id.EventID) (map[id.EventID]struct{}, error) {
	return nil, f.err
}

// nilEventsSource returns nil PDUs for every requested ID.
type nilEventsSource struct{ *MemorySource }

func (n nilEventsSource) Events(_ context.Context, ids []id.EventID) (map[id.EventID]*pdu.PDU, error) {
	out := make(map[id.EventID]*pdu.PDU, len(ids))
	for _, evtID := range ids {
		out[evtID] = nil
	}
	return out, nil
}

func TestSourceFailures(t *testing.T) {
	r, main := standardRoom(t, id.RoomV11)
	a, b := main.fork(), main.fork()
	a.topic("topic-a", alice, "a")
	b.topic("topic-b", alice, "b")
	sets := []StateMap{a.state, b.state}
	boom := errors.New("boom")
	for _, version := range allVersions {
		if _, err := Resolve(context.Background(), version, sets, failingSource{boom}); !errors.Is(err, boom) {
			t.Errorf("v%s: err = %v, want the source's error", version, err)
		}
		if _, err := Resolve(context.Background(), version, sets, nilEventsSource{r.source()}); err != nil {
			t.Errorf("v%s: nil events: %v", version, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Resolve(ctx, id.RoomV11, sets, r.source()); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: err = %v", err)
	}
}
