package push

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

// fakeReceipts is a receipts engine: positions set by the test, and
// stored as m.read receipts too for the counts that read them from the
// database.
type fakeReceipts struct {
	db  *storage.DB
	mu  sync.Mutex
	pos map[[3]string]int64
}

func (f *fakeReceipts) ReadUpTo(_ context.Context, user, roomID, threadID string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pos[[3]string{user, roomID, threadID}], nil
}

func (f *fakeReceipts) set(t testing.TB, user, roomID, threadID string, pos int64) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pos[[3]string{user, roomID, threadID}] = pos
	r := storage.Receipt{RoomID: roomID, UserID: user, Type: "m.read", ThreadID: threadID,
		EventID: "$at" + strconv.FormatInt(pos, 10), EventPos: pos, TS: pos}
	err := f.db.Write(context.Background(), func(tx *storage.Tx) error {
		_, _, err := f.db.Receipts().ReceiptPut(context.Background(), tx, r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// env is a room engine wired to a push engine, as the server wires them.
type env struct {
	rooms    *rooms.Engine
	push     *Engine
	receipts *fakeReceipts
	ad       *fakeAccountData

	mu     sync.Mutex
	pos    map[string]int64 // event ID → stream position
	events map[string]*rooms.Event
}

const server = "local.test"

func newEnv(t testing.TB, db *storage.DB) *env { return newEnvHooked(t, db, true) }

// newEnvHooked builds an env, with push evaluation hooked in or not (a
// benchmark's baseline).
func newEnvHooked(t testing.TB, db *storage.DB, push bool) *env {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	re := rooms.New(rooms.Config{ServerName: server, Signer: &rooms.Signer{ServerName: server, KeyID: "ed25519:test", Key: priv}}, db, quietLog())
	en := &env{rooms: re, receipts: &fakeReceipts{db: db, pos: map[[3]string]int64{}}, ad: &fakeAccountData{}, pos: map[string]int64{},
		events: map[string]*rooms.Event{}}
	en.push = New(Config{}, db, re, en.ad, quietLog())
	en.push.SetReceipts(en.receipts)
	var inTx func(context.Context, *storage.Tx, *storage.Batch, rooms.Span, []*rooms.Event) error
	if push {
		inTx = en.push.OnEvents
	}
	re.SetHooks(rooms.Hooks{
		InTx: inTx,
		Persisted: func(evs []*rooms.Event) {
			en.mu.Lock()
			defer en.mu.Unlock()
			for _, ev := range evs {
				if ev.StreamPos != nil {
					en.pos[ev.EventID] = *ev.StreamPos
				}
				en.events[ev.EventID] = ev
			}
		},
	})
	if err := re.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(re.Stop)
	return en
}

func (en *env) streamPos(t testing.TB, eventID string) int64 {
	t.Helper()
	en.mu.Lock()
	defer en.mu.Unlock()
	p, ok := en.pos[eventID]
	if !ok {
		t.Fatalf("no position for %s", eventID)
	}
	return p
}

func (en *env) send(t testing.TB, room, sender, typ string, content any) string {
	t.Helper()
	b, _ := json.Marshal(content)
	id, err := en.rooms.Send(context.Background(), rooms.SendParams{RoomID: room, Sender: sender, Type: typ, Content: b})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// publicRoom creates a public room of creator's that the others join.
func (en *env) publicRoom(t testing.TB, creator string, others ...string) string {
	t.Helper()
	ctx := context.Background()
	room, err := en.rooms.CreateRoom(ctx, creator, rooms.CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range others {
		if _, err := en.rooms.Join(ctx, rooms.MembershipParams{RoomID: room, Sender: u}); err != nil {
			t.Fatal(err)
		}
	}
	return room
}

func (en *env) counts(t testing.TB, user, room string, threads bool) RoomCounts {
	t.Helper()
	c, err := en.push.Counts(context.Background(), user, []string{room}, threads)
	if err != nil {
		t.Fatal(err)
	}
	return c[room]
}

// TestFlow runs the contract the sync engine relies on, through real
// event persistence.
func TestFlow(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		en := newEnv(t, db)
		alice, bob, carol := "@alice:"+server, "@bob:"+server, "@carol:"+server
		check := func(name string, got, want RoomCounts) {
			t.Helper()
			if got.Notification != want.Notification || got.Highlight != want.Highlight || len(got.Threads) != len(want.Threads) {
				t.Fatalf("%s: %+v, want %+v", name, got, want)
			}
			for k, v := range want.Threads {
				if got.Threads[k] != v {
					t.Fatalf("%s: thread %s %+v, want %+v", name, k, got.Threads[k], v)
				}
			}
		}

		// A 1:1 room: the invite notifies bob; joining reads it.
		dm, err := en.rooms.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "trusted_private_chat", Invite: []string{bob}, IsDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		check("invited", en.counts(t, bob, dm, false), RoomCounts{Notification: 1})
		if _, err := en.rooms.Join(ctx, rooms.MembershipParams{RoomID: dm, Sender: bob}); err != nil {
			t.Fatal(err)
		}
		check("joined", en.counts(t, bob, dm, false), RoomCounts{})

		en.send(t, dm, alice, "m.room.message", msg("hello", nil))
		check("plain message in a 1:1 room notifies", en.counts(t, bob, dm, false), RoomCounts{Notification: 1})
		en.send(t, dm, alice, "m.room.message", map[string]any{"msgtype": "m.notice", "body": "bot"})
		check("a notice does not", en.counts(t, bob, dm, false), RoomCounts{Notification: 1})
		mention := en.send(t, dm, alice, "m.room.message", msg("bob!", map[string]any{"m.mentions": map[string]any{"user_ids": []string{bob}}}))
		check("a mention highlights", en.counts(t, bob, dm, false), RoomCounts{Notification: 2, Highlight: 1})
		en.send(t, dm, alice, "m.room.message", msg("* bob!!", map[string]any{
			"m.new_content": msg("bob!!", nil), "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": mention}}))
		check("an edit does not count", en.counts(t, bob, dm, false), RoomCounts{Notification: 2, Highlight: 1})
		if c := en.counts(t, alice, dm, false); c.Notification != 0 {
			t.Fatalf("own events never notify: %+v", c)
		}

		en.receipts.set(t, bob, dm, "", en.streamPos(t, mention))
		check("an unthreaded receipt resets", en.counts(t, bob, dm, false), RoomCounts{})

		// Threads: counts per thread; the main timeline is the room's own.
		root := en.send(t, dm, alice, "m.room.message", msg("thread root", nil))
		reply := en.send(t, dm, alice, "m.room.message", msg("in thread", map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}))
		reply2 := en.send(t, dm, alice, "m.room.message", msg("in thread again", map[string]any{
			"m.mentions":   map[string]any{"user_ids": []string{bob}},
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}))
		check("threads separate", en.counts(t, bob, dm, true), RoomCounts{Notification: 1,
			Threads: map[string]ThreadCounts{root: {Notification: 2, Highlight: 1}}})
		check("threads folded", en.counts(t, bob, dm, false), RoomCounts{Notification: 3, Highlight: 1})

		en.receipts.set(t, bob, dm, root, en.streamPos(t, reply))
		check("a threaded receipt resets its thread", en.counts(t, bob, dm, true), RoomCounts{Notification: 1,
			Threads: map[string]ThreadCounts{root: {Notification: 1, Highlight: 1}}})
		en.receipts.set(t, bob, dm, "main", en.streamPos(t, reply2))
		check("a main receipt resets the main timeline only", en.counts(t, bob, dm, true), RoomCounts{
			Threads: map[string]ThreadCounts{root: {Notification: 1, Highlight: 1}}})

		// A reaction to a thread reply belongs to the thread (found by
		// following the relation); reactions notify under a user rule.
		if err := en.push.PutRule(ctx, bob, "override", "reactions", RuleBody{Actions: raws(`"notify"`),
			Conditions: raws(`{"kind":"event_match","key":"type","pattern":"m.reaction"}`)}, "", ""); err != nil {
			t.Fatal(err)
		}
		en.send(t, dm, alice, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": reply2, "key": "👍"}})
		check("a reaction in a thread", en.counts(t, bob, dm, true), RoomCounts{
			Threads: map[string]ThreadCounts{root: {Notification: 2, Highlight: 1}}})

		// Bob replying in the thread reads it.
		en.send(t, dm, bob, "m.room.message", msg("ok", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}}))
		check("own event reads its thread", en.counts(t, bob, dm, true), RoomCounts{})

		// A group room: plain messages notify through .m.rule.message,
		// @room from the creator highlights, ignored senders do not count.
		group, err := en.rooms.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{bob, carol} {
			if _, err := en.rooms.Join(ctx, rooms.MembershipParams{RoomID: group, Sender: u}); err != nil {
				t.Fatal(err)
			}
		}
		en.send(t, group, alice, "m.room.message", msg("hi all", nil))
		en.send(t, group, alice, "m.room.message", msg("@room", map[string]any{"m.mentions": map[string]any{"room": true}}))
		en.send(t, group, carol, "m.room.message", msg("@room too", map[string]any{"m.mentions": map[string]any{"room": true}}))
		check("group", en.counts(t, bob, group, false), RoomCounts{Notification: 3, Highlight: 1})
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			_, err := db.Accounts().AccountDataSet(ctx, tx, bob, "", "m.ignored_user_list", `{"ignored_users":{"`+carol+`":{}}}`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		en.push.ForgetUser(bob)
		en.send(t, group, carol, "m.room.message", msg("ignored", nil))
		check("ignored sender", en.counts(t, bob, group, false), RoomCounts{Notification: 3, Highlight: 1})

		// Several rooms at once; rooms with nothing unread are left out.
		all, err := en.push.Counts(ctx, bob, []string{dm, group, group, "!unknown:x"}, false)
		if err != nil || len(all) != 1 || all[group].Notification != 3 {
			t.Fatalf("counts of several rooms %+v %v", all, err)
		}

		// GET /notifications: newest first, read flags, highlight filter.
		page, err := en.push.Notifications(ctx, rooms.Requester{UserID: bob}, NotificationsQuery{Limit: 2})
		if err != nil || len(page.Notifications) != 2 || page.NextToken == "" {
			t.Fatalf("page %+v %v", page, err)
		}
		n := page.Notifications[0]
		if n.RoomID != group || n.Event == nil || n.Event.Sender != carol || n.Read || n.Event.RoomID != "" || string(n.Actions) != `["notify"]` {
			t.Fatalf("newest %+v %s", n, n.Event.Content)
		}
		var seen, read int
		for from := ""; ; {
			p, err := en.push.Notifications(ctx, rooms.Requester{UserID: bob}, NotificationsQuery{From: from, Limit: 3})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range p.Notifications {
				seen++
				if n.Read {
					read++
				}
			}
			if p.NextToken == "" {
				break
			}
			from = p.NextToken
		}
		// invite, hello, mention, root, reply, reply2, reaction (dm: 7, of
		// which all but none after bob's reply are read) + 3 in the group.
		if seen != 10 || read != 7 {
			t.Fatalf("seen %d read %d", seen, read)
		}
		hl, err := en.push.Notifications(ctx, rooms.Requester{UserID: bob}, NotificationsQuery{Only: "highlight"})
		if err != nil || len(hl.Notifications) != 3 || hl.NextToken != "" {
			t.Fatalf("highlights %+v %v", hl, err)
		}
		if _, err := en.push.Notifications(ctx, rooms.Requester{UserID: bob}, NotificationsQuery{From: "x"}); errcode(err) != "M_INVALID_PARAM" {
			t.Fatalf("bad from: %v", err)
		}

		// Pruning keeps unread notifications and drops old read ones; a
		// member who left loses all old ones.
		if err := en.rooms.Leave(ctx, rooms.MembershipParams{RoomID: group, Sender: carol}); err != nil {
			t.Fatal(err)
		}
		en.push.now = func() time.Time { return time.Now().Add(31 * 24 * time.Hour) }
		pruned, err := en.push.Prune(ctx)
		// bob's 7 read ones in the 1:1 room, carol's 2 in the group.
		if err != nil || pruned != 9 {
			t.Fatalf("pruned %d %v", pruned, err)
		}
		check("pruning keeps unread", en.counts(t, bob, group, false), RoomCounts{Notification: 3, Highlight: 1})
	})
}

// TestContextAcrossInstances checks that a room context kept between
// batches is not used once another instance changed the room's state.
func TestContextAcrossInstances(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		one, two := newEnv(t, db), newEnv(t, db)
		alice, bob, carol := "@alice:"+server, "@bob:"+server, "@carol:"+server
		room, err := one.rooms.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := one.rooms.Join(ctx, rooms.MembershipParams{RoomID: room, Sender: bob}); err != nil {
			t.Fatal(err)
		}
		one.send(t, room, alice, "m.room.message", msg("one", nil)) // instance one keeps the context
		if _, err := two.rooms.Join(ctx, rooms.MembershipParams{RoomID: room, Sender: carol}); err != nil {
			t.Fatal(err)
		}
		one.send(t, room, alice, "m.room.message", msg("two", nil))
		if c := one.counts(t, carol, room, false); c.Notification != 1 {
			t.Fatalf("carol joined through the other instance: %+v", c)
		}
		if c := one.counts(t, bob, room, false); c.Notification != 2 {
			t.Fatalf("bob: %+v", c)
		}
	})
}

// TestCountCacheTopsUp checks that counts kept between calls and topped
// up with newer rows agree with counting from scratch at every step,
// across receipts that move and events in threads.
func TestCountCacheTopsUp(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		en := newEnv(t, db)
		alice, bob := "@alice:"+server, "@bob:"+server
		room := en.publicRoom(t, alice, bob)
		root := en.send(t, room, alice, "m.room.message", msg("root", nil))
		for i := range 12 {
			content := msg("m", nil)
			if i%3 == 1 {
				content = msg("in thread", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
			}
			if i%4 == 2 {
				content["m.mentions"] = map[string]any{"user_ids": []string{bob}}
			}
			id := en.send(t, room, alice, "m.room.message", content)
			if i == 6 {
				en.receipts.set(t, bob, room, "", en.streamPos(t, id))
			}
			got := en.counts(t, bob, room, false)
			after, _ := en.receipts.ReadUpTo(ctx, bob, room, "")
			fresh, err := db.Push().PushCountsBetween(ctx, bob, []storage.PushAfter{{RoomID: room, After: after}}, false, 0)
			if err != nil {
				t.Fatal(err)
			}
			var want RoomCounts
			for _, c := range fresh {
				want.Notification += c.Notifications
				want.Highlight += c.Highlight
			}
			if got.Notification != want.Notification || got.Highlight != want.Highlight || (want.Notification == 0) != (i == 6) {
				t.Fatalf("step %d: cached %+v, from scratch %+v", i, got, want)
			}
		}
	})
}

// TestQuietInputs: for a room the caller calls quiet since a committed
// position, the inputs read for a count up to that position are used
// again; otherwise, and after a count up to no committed position, they
// are read.
func TestQuietInputs(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		en := newEnv(t, db)
		alice, bob := "@alice:"+server, "@bob:"+server
		room := en.publicRoom(t, alice, bob)
		mention := func() string {
			return en.send(t, room, alice, "m.room.message", msg("bob", map[string]any{"m.mentions": map[string]any{"user_ids": []string{bob}}}))
		}
		mention()
		last := mention()
		count := func(upTo int64, quiet Quiet) int {
			t.Helper()
			c, err := en.push.CountsAt(ctx, bob, []string{room}, false, upTo, quiet)
			if err != nil {
				t.Fatal(err)
			}
			return c[room].Notification
		}
		at := en.streamPos(t, last)
		if n := count(at, Quiet{}); n != 2 {
			t.Fatalf("before the receipt: %d, want 2", n)
		}
		// The receipt changes the inputs; a caller that wrongly calls the
		// room quiet shows that the ones read up to at are reused.
		en.receipts.set(t, bob, room, "", at)
		quiet := Quiet{Since: at, Rooms: map[string]bool{room: true}}
		for _, c := range []struct {
			name  string
			upTo  int64
			quiet Quiet
			want  int
		}{
			{"quiet: remembered inputs", at, quiet, 2},
			{"quiet elsewhere: read", at, Quiet{Since: at, Rooms: map[string]bool{"!other:x": true}}, 0},
			{"quiet since another position: read", at, Quiet{Since: at - 1, Rooms: quiet.Rooms}, 0},
			{"not quiet: read, and remembered at at", at, Quiet{}, 0},
			{"quiet again: the new inputs", at, quiet, 0},
		} {
			if n := count(c.upTo, c.quiet); n != c.want {
				t.Errorf("%s: %d, want %d", c.name, n, c.want)
			}
		}
		// Counts up to no committed position remember nothing.
		before := en.push.inputs.Len()
		if _, err := en.push.Counts(ctx, bob, []string{room}, false); err != nil {
			t.Fatal(err)
		}
		if n := en.push.inputs.Len(); n != before {
			t.Fatalf("a count up to now remembered inputs: %d entries, %d before", n, before)
		}
	})
}

// TestSharedActions runs a room big enough for shared rows: one row for
// the members who get the same actions, a row each for the others, and
// counts bounded by when each member joined.
func TestSharedActions(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		en := newEnv(t, db)
		u := func(n string) string { return "@" + n + ":" + server }
		alice, bob, carol, dave, erin, gina := u("alice"), u("bob"), u("carol"), u("dave"), u("erin"), u("gina")
		room, err := en.rooms.CreateRoom(ctx, alice, rooms.CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		join := func(who string) {
			t.Helper()
			if _, err := en.rooms.Join(ctx, rooms.MembershipParams{RoomID: room, Sender: who}); err != nil {
				t.Fatal(err)
			}
		}
		for _, who := range []string{bob, carol, dave, erin} {
			join(who)
		}
		rowsOf := func() (shared, own int) {
			t.Helper()
			if err := db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM push_shared_actions`).Scan(&shared); err != nil {
				t.Fatal(err)
			}
			if err := db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM push_actions`).Scan(&own); err != nil {
				t.Fatal(err)
			}
			return shared, own
		}
		check := func(name string, want map[string]RoomCounts) {
			t.Helper()
			for who, w := range want {
				got := en.counts(t, who, room, false)
				if got.Notification != w.Notification || got.Highlight != w.Highlight {
					t.Fatalf("%s: %s has %+v, want %+v", name, who, got, w)
				}
			}
		}

		hello := en.send(t, room, alice, "m.room.message", msg("hello", nil))
		if shared, own := rowsOf(); shared != 1 || own != 0 {
			t.Fatalf("a plain message: %d shared rows, %d own rows; want 1 and 0", shared, own)
		}
		check("plain", map[string]RoomCounts{alice: {}, bob: {Notification: 1}, carol: {Notification: 1}, dave: {Notification: 1}, erin: {Notification: 1}})

		// A mention: bob's own highlighting row, the others shared.
		en.send(t, room, alice, "m.room.message", msg("bob!", map[string]any{"m.mentions": map[string]any{"user_ids": []string{bob}}}))
		if shared, own := rowsOf(); shared != 2 || own != 1 {
			t.Fatalf("a mention: %d shared rows, %d own rows; want 2 and 1", shared, own)
		}
		check("mention", map[string]RoomCounts{bob: {Notification: 2, Highlight: 1}, carol: {Notification: 2}})

		// dave ignores alice: skipped, and counts nothing more.
		if err := db.Write(ctx, func(tx *storage.Tx) error {
			_, err := db.Accounts().AccountDataSet(ctx, tx, dave, "", "m.ignored_user_list", `{"ignored_users":{"`+alice+`":{}}}`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		en.push.ForgetUser(dave)
		en.send(t, room, alice, "m.room.message", msg("again", nil))
		check("ignored", map[string]RoomCounts{dave: {Notification: 2}, erin: {Notification: 3}})

		// gina joins late: nothing from before, in a thread either; erin
		// leaves and comes back: only what came after her return.
		en.send(t, room, alice, "m.room.message", msg("in a thread", map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": hello}}))
		join(gina)
		if err := en.rooms.Leave(ctx, rooms.MembershipParams{RoomID: room, Sender: erin}); err != nil {
			t.Fatal(err)
		}
		check("before the news", map[string]RoomCounts{gina: {}})
		en.send(t, room, alice, "m.room.message", msg("while erin was away", nil))
		join(erin)
		last := en.send(t, room, alice, "m.room.message", msg("welcome back", nil))
		check("joined later", map[string]RoomCounts{gina: {Notification: 2}, erin: {Notification: 1}, carol: {Notification: 6}})

		// A receipt reads shared rows as it reads own ones.
		en.receipts.set(t, carol, room, "", en.streamPos(t, last))
		check("read", map[string]RoomCounts{carol: {}})

		// GET /notifications lists shared rows after the join only.
		page, err := en.push.Notifications(ctx, rooms.Requester{UserID: gina}, NotificationsQuery{})
		if err != nil || len(page.Notifications) != 2 || page.Notifications[0].Event.EventID != last {
			t.Fatalf("gina's notifications %+v %v", page, err)
		}
		page, err = en.push.Notifications(ctx, rooms.Requester{UserID: bob}, NotificationsQuery{Only: "highlight"})
		if err != nil || len(page.Notifications) != 1 {
			t.Fatalf("bob's highlights %+v %v", page, err)
		}
		page, err = en.push.Notifications(ctx, rooms.Requester{UserID: bob}, NotificationsQuery{})
		if err != nil || len(page.Notifications) != 6 {
			t.Fatalf("bob's notifications %+v %v", page, err)
		}

		// Pruning drops old shared rows only once every member read them.
		en.push.now = func() time.Time { return time.Now().Add(31 * 24 * time.Hour) }
		if _, err := en.push.Prune(ctx); err != nil {
			t.Fatal(err)
		}
		if shared, _ := rowsOf(); shared != 6 {
			t.Fatalf("pruned unread shared rows: %d left", shared)
		}
		for _, who := range []string{alice, bob, dave, erin, gina} {
			en.receipts.set(t, who, room, "", en.streamPos(t, last))
		}
		if _, err := en.push.Prune(ctx); err != nil {
			t.Fatal(err)
		}
		if shared, _ := rowsOf(); shared != 0 {
			t.Fatalf("read shared rows kept: %d", shared)
		}
		var skips int
		if err := db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM push_shared_skips`).Scan(&skips); err != nil || skips != 0 {
			t.Fatalf("skips kept: %d %v", skips, err)
		}
	})
}
