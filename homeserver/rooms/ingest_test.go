package rooms

import (
	"context"
	jsonv2 "encoding/json/v2"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// remoteRoom is a local room into which a remote server sends events
// crafted by the test.
type remoteRoom struct {
	t      *testing.T
	e      *Engine
	remote *Signer
	roomID string
	ctx    context.Context
}

// event loads a stored event by ID.
func (r *remoteRoom) event(evID string) *Event {
	r.t.Helper()
	ev, err := r.e.eventByID(r.ctx, evID)
	if err != nil {
		r.t.Fatalf("event %s: %v", evID, err)
	}
	return ev
}

// craft builds a remote event with explicit prev and auth events.
func (r *remoteRoom) craft(p Proto, prev, auth []string, depth int64) *Event {
	r.t.Helper()
	var prevs, auths []*Event
	for _, x := range prev {
		if ev, err := r.e.eventByID(r.ctx, x); err == nil {
			prevs = append(prevs, ev)
		} else {
			// An event this server has never seen.
			prevs = append(prevs, &Event{Event: storage.Event{EventID: x}})
		}
	}
	for _, x := range auth {
		auths = append(auths, r.event(x))
	}
	m, err := r.e.meta(r.ctx, r.roomID)
	if err != nil {
		r.t.Fatal(err)
	}
	ev, err := r.remote.build(m.Version, r.roomID, p, prevs, auths, depth, 1_700_000_000_000+depth)
	if err != nil {
		r.t.Fatal(err)
	}
	return ev
}

func (r *remoteRoom) ingest(ev *Event, opts IngestOptions) IngestResult {
	r.t.Helper()
	res, err := r.e.Ingest(r.ctx, r.roomID, ev.JSON, opts)
	if err != nil {
		r.t.Fatalf("ingest %s: %v", ev.Type, err)
	}
	return res
}

// current returns the event ID of a current state entry.
func (r *remoteRoom) current(typ, key string) string {
	m, _ := r.e.meta(r.ctx, r.roomID)
	ev, err := r.e.currentStateEvent(r.ctx, r.e.db.Read(), m.NID, typ, key)
	if err != nil || ev == nil {
		return ""
	}
	return ev.EventID
}

func stateOf(typ, key string) *string { _ = typ; return &key }

// TestIngestThreeAuthPoints crafts remote events that fail each of the
// checks on receipt of a PDU and checks how each is stored.
func TestIngestThreeAuthPoints(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		remote := newSigner(t, "remote.test")
		e := newTestEngine(t, db, remote)
		alice := "@alice:local.test"
		roomID, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		r := &remoteRoom{t: t, e: e, remote: remote, roomID: roomID, ctx: ctx}
		bob := "@bob:remote.test"
		create := r.current("m.room.create", "")
		pl := r.current("m.room.power_levels", "")
		jr := r.current("m.room.join_rules", "")
		head := func() (string, int64) {
			m, _ := e.meta(ctx, roomID)
			ext, _ := e.store.Extremities(ctx, db.Read(), m.NID)
			return ext[0].EventID, ext[0].Depth
		}

		// An accepted remote join.
		h, d := head()
		join := r.craft(Proto{Type: "m.room.member", StateKey: &bob, Sender: bob, Content: content(map[string]string{"membership": "join"})},
			[]string{h}, []string{create, pl, jr}, d+1)
		if res := r.ingest(join, IngestOptions{}); res.Status != storage.EventAccepted {
			t.Fatalf("join: %+v", res)
		}
		if r.current("m.room.member", bob) != join.EventID {
			t.Fatal("accepted join not in current state")
		}
		msgBeforeBan := r.craft(Proto{Type: "m.room.message", Sender: bob, Content: content(map[string]string{"body": "hi"})},
			[]string{join.EventID}, []string{create, pl, join.EventID}, d+2)
		if res := r.ingest(msgBeforeBan, IngestOptions{}); res.Status != storage.EventAccepted {
			t.Fatalf("message: %+v", res)
		}

		// Alice bans Bob locally.
		if err := e.Ban(ctx, MembershipParams{RoomID: roomID, Sender: alice, Target: bob}); err != nil {
			t.Fatal(err)
		}
		ban := r.current("m.room.member", bob)

		t.Run("check 2: its own auth events refuse it", func(t *testing.T) {
			// Bob claims only the create event as auth: he is not a member.
			ev := r.craft(Proto{Type: "m.room.message", Sender: bob, Content: content(map[string]string{"body": "sneaky"})},
				[]string{msgBeforeBan.EventID}, []string{create, pl}, d+3)
			res := r.ingest(ev, IngestOptions{})
			if res.Status != storage.EventRejected {
				t.Fatalf("want rejected, got %+v", res)
			}
			if got := r.event(ev.EventID); got.Status != storage.EventRejected || got.StreamPos != nil || got.RejectReason == nil {
				t.Fatalf("rejected event stored wrongly: %+v", got.Event)
			}
		})
		t.Run("check 3: the state before it refuses it", func(t *testing.T) {
			// Auth events say Bob is joined, but its prev event is the ban.
			ev := r.craft(Proto{Type: "m.room.message", Sender: bob, Content: content(map[string]string{"body": "after ban"})},
				[]string{ban}, []string{create, pl, join.EventID}, d+10)
			if res := r.ingest(ev, IngestOptions{}); res.Status != storage.EventRejected {
				t.Fatalf("want rejected against the state before, got %+v", res)
			}
		})
		t.Run("check 4: the current state soft-fails it", func(t *testing.T) {
			// Built on the state before the ban: valid there, not now.
			ev := r.craft(Proto{Type: "m.room.message", Sender: bob, Content: content(map[string]string{"body": "from the past"})},
				[]string{msgBeforeBan.EventID}, []string{create, pl, join.EventID}, d+3)
			res := r.ingest(ev, IngestOptions{})
			if res.Status != storage.EventSoftFailed {
				t.Fatalf("want soft-failed, got %+v", res)
			}
			got := r.event(ev.EventID)
			if got.StreamPos != nil || got.StateBefore == nil {
				t.Fatalf("soft-failed event must keep its state but stay out of the timeline: %+v", got.Event)
			}
			m, _ := e.meta(ctx, roomID)
			ext, _ := e.store.Extremities(ctx, db.Read(), m.NID)
			for _, x := range ext {
				if x.EventID == ev.EventID {
					t.Fatal("a soft-failed event became a forward extremity")
				}
			}
			// Ingesting it again is a no-op.
			if again := r.ingest(ev, IngestOptions{}); !again.Duplicate || again.Status != storage.EventSoftFailed {
				t.Fatalf("duplicate: %+v", again)
			}
		})
		t.Run("missing auth events are reported", func(t *testing.T) {
			ev := r.craft(Proto{Type: "m.room.message", Sender: bob, Content: content(map[string]string{"body": "x"})},
				[]string{msgBeforeBan.EventID}, []string{create, pl, join.EventID}, d+3)
			var p map[string]any
			_ = jsonv2.Unmarshal(ev.JSON, &p)
			p["auth_events"] = []string{create, "$missing-auth-event"}
			ev.PDU.AuthEvents = []id.EventID{id.EventID(create), "$missing-auth-event"}
			resigned := r.reSign(ev)
			_, err := e.Ingest(ctx, roomID, resigned, IngestOptions{})
			if !mxerr.IsCode(err, "M_MISSING_EVENTS") {
				t.Fatalf("want M_MISSING_EVENTS, got %v", err)
			}
		})
		t.Run("forged signature is refused", func(t *testing.T) {
			forger := newSigner(t, "remote.test")
			m, _ := e.meta(ctx, roomID)
			ev, err := forger.build(m.Version, roomID, Proto{Type: "m.room.message", Sender: bob, Content: content(map[string]string{"body": "forged"})},
				[]*Event{r.event(msgBeforeBan.EventID)}, []*Event{r.event(create), r.event(pl), r.event(join.EventID)}, d+3, 1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.Ingest(ctx, roomID, ev.JSON, IngestOptions{}); !mxerr.IsCode(err, "M_FORBIDDEN") {
				t.Fatalf("forged event: %v", err)
			}
		})
		t.Run("outliers are stored without state", func(t *testing.T) {
			ev := r.craft(Proto{Type: "m.room.topic", StateKey: stateOf("", ""), Sender: alice, Content: content(map[string]string{"topic": "x"})},
				[]string{"$unknown-prev"}, []string{create, pl, r.current("m.room.member", alice)}, d+50)
			// Signed by the remote key but claims a local sender: signatures of
			// local.test do not verify.
			if _, err := e.Ingest(ctx, roomID, ev.JSON, IngestOptions{Outlier: true}); !mxerr.IsCode(err, "M_FORBIDDEN") {
				t.Fatalf("event claiming a local sender: %v", err)
			}
			carol := "@carol:remote.test"
			out := r.craft(Proto{Type: "m.room.member", StateKey: &carol, Sender: carol, Content: content(map[string]string{"membership": "join"})},
				[]string{"$unknown-prev"}, []string{create, pl, jr}, d+50)
			if res := r.ingest(out, IngestOptions{Outlier: true}); res.Status != storage.EventOutlier {
				t.Fatalf("outlier: %+v", res)
			}
			if got := r.event(out.EventID); got.StateAfter != nil || got.StreamPos != nil {
				t.Fatalf("outlier with state: %+v", got.Event)
			}
			if _, err := e.Ingest(ctx, roomID, out.JSON, IngestOptions{}); err != nil {
				t.Fatalf("re-ingest of an outlier: %v", err)
			}
		})
	})
}

// reSign re-signs an event whose fields the test changed.
func (r *remoteRoom) reSign(ev *Event) []byte {
	r.t.Helper()
	p := ev.PDU
	p.Signatures = nil
	p.Hashes = nil
	p.InternalMeta = ev.PDU.InternalMeta
	p.InternalMeta.EventID = ""
	m, _ := r.e.meta(r.ctx, r.roomID)
	if err := p.Sign(m.Version, r.remote.ServerName, r.remote.KeyID, r.remote.Key); err != nil {
		r.t.Fatal(err)
	}
	b, err := jsonv2.Marshal(p)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

// TestIngestForkResolvesState forks the room: a remote topic change built
// on an older event conflicts with a newer local one; state resolution
// decides, and the next local event merges the forks.
func TestIngestForkResolvesState(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		remote := newSigner(t, "remote.test")
		e := newTestEngine(t, db, remote)
		alice, bob := "@alice:local.test", "@bob:remote.test"
		roomID, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat", RoomVersion: "10",
			PowerLevelContentOverride: map[string]any{"users": map[string]any{alice: 100, bob: 50}}})
		if err != nil {
			t.Fatal(err)
		}
		r := &remoteRoom{t: t, e: e, remote: remote, roomID: roomID, ctx: ctx}
		create, pl, jr := r.current("m.room.create", ""), r.current("m.room.power_levels", ""), r.current("m.room.join_rules", "")
		m, _ := e.meta(ctx, roomID)
		ext, _ := e.store.Extremities(ctx, db.Read(), m.NID)
		join := r.craft(Proto{Type: "m.room.member", StateKey: &bob, Sender: bob, Content: content(map[string]string{"membership": "join"})},
			[]string{ext[0].EventID}, []string{create, pl, jr}, ext[0].Depth+1)
		if res := r.ingest(join, IngestOptions{}); res.Status != storage.EventAccepted {
			t.Fatalf("join: %+v", res)
		}
		// Alice changes the topic locally; Bob, not having seen it, too.
		localTopic, err := e.Send(ctx, SendParams{RoomID: roomID, Sender: alice, Type: "m.room.topic", StateKey: ptr(""), Content: content(map[string]string{"topic": "alice's"})})
		if err != nil {
			t.Fatal(err)
		}
		empty := ""
		remoteTopic := r.craft(Proto{Type: "m.room.topic", StateKey: &empty, Sender: bob, Content: content(map[string]string{"topic": "bob's"})},
			[]string{join.EventID}, []string{create, pl, join.EventID}, join.Depth+1)
		if res := r.ingest(remoteTopic, IngestOptions{}); res.Status != storage.EventAccepted {
			t.Fatalf("remote topic: %+v", res)
		}
		ext, _ = e.store.Extremities(ctx, db.Read(), m.NID)
		if len(ext) != 2 {
			t.Fatalf("want two forward extremities after the fork, got %d", len(ext))
		}
		// Same power levels: mainline ties, then origin_server_ts decides —
		// the crafted remote event is older, so Alice's topic stands.
		if got := r.current("m.room.topic", ""); got != localTopic {
			t.Fatalf("resolved topic %s, want Alice's %s", got, localTopic)
		}
		// The next local event names both extremities and merges the fork.
		msg, err := e.Send(ctx, SendParams{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: content(map[string]string{"body": "merge"})})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.event(msg); len(got.PDU.PrevEvents) != 2 {
			t.Fatalf("merge event has prev_events %v", got.PDU.PrevEvents)
		}
		ext, _ = e.store.Extremities(ctx, db.Read(), m.NID)
		if len(ext) != 1 || ext[0].EventID != msg {
			t.Fatalf("extremities after merge: %+v", ext)
		}
	})
}
