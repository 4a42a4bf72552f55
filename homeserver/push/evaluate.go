package push

import (
	"context"

	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/storage"
)

// mainThread is the thread ID of events outside threads.
const mainThread = "main"

// maxThreadHops bounds how far relations are followed to find an event's
// thread (the spec recommends 3).
const maxThreadHops = 3

// pending is a push action whose thread is not worked out yet.
type pending struct {
	ev   *rooms.Event
	user string
	rule *crule
}

// sharedPending is one event's actions shared by the room's local members
// but skips.
type sharedPending struct {
	ev    *rooms.Event
	rule  *crule
	skips []string
}

// minShared is the smallest group of members with the same actions for an
// event that is written as one shared row rather than a row each.
const minShared = 3

// OnEvents evaluates the push rules of every local member of each
// event's room, except the sender, for the accepted timeline events of a
// batch being persisted, and queues a push action row into b for each
// that notifies. It also records each local sender's newest event per
// thread, which marks what came before it as read. A room whose rules
// cannot be evaluated (a failed read) is logged and skipped rather than
// failing the batch: the events matter more. It reads only
// committed data (the batch's own rows are not written yet): membership
// and power level changes earlier in the batch are replayed from the
// events themselves. What it caches for later batches it keeps only once
// tx commits (tx nil, outside a transaction, keeps it at once); the rows
// of a transaction that reserved span go to the push log then.
func (e *Engine) OnEvents(ctx context.Context, tx *storage.Tx, b *storage.Batch, span rooms.Span, events []*rooms.Event) error {
	var rows []storage.PushAction
	var srows []storage.SharedPushAction
	if span.End > 0 {
		roomIDs := map[int64]string{}
		for _, ev := range events {
			roomIDs[ev.RoomNID] = ev.RoomID
		}
		// Every batch is logged, even one without rows: the log keeps
		// only windows it saw every commit of.
		keep := func() { e.recent.commit(span.First, span.End, rows, srows, roomIDs) }
		defer func() {
			if tx != nil {
				tx.AfterCommit(keep)
			} else {
				keep()
			}
		}()
	}
	var order []string
	byRoom := map[string][]*rooms.Event{}
	byID := map[string]*rooms.Event{}
	for _, ev := range events {
		if ev.StreamPos == nil {
			continue
		}
		if _, ok := byRoom[ev.RoomID]; !ok {
			order = append(order, ev.RoomID)
		}
		byRoom[ev.RoomID] = append(byRoom[ev.RoomID], ev)
		byID[ev.EventID] = ev
	}
	if len(order) == 0 {
		return nil
	}
	var acts []pending
	var shared []sharedPending
	var own []*rooms.Event
	states := map[string]userEntry{}
	for _, roomID := range order {
		a, sh, o, err := e.evaluateRoom(ctx, tx, roomID, byRoom[roomID], states)
		if err != nil {
			// Notifications are not worth losing the events over.
			e.log.Error("push rules could not be evaluated; the events' notifications are lost",
				"room", roomID, "events", len(byRoom[roomID]), "err", err)
			continue
		}
		acts = append(acts, a...)
		shared = append(shared, sh...)
		own = append(own, o...)
	}
	if len(acts) == 0 && len(shared) == 0 && len(own) == 0 {
		return nil
	}
	need := make([]*rooms.Event, 0, len(own)+8)
	need = append(need, own...)
	seen := map[string]bool{}
	for _, p := range acts {
		if !seen[p.ev.EventID] {
			seen[p.ev.EventID] = true
			need = append(need, p.ev)
		}
	}
	for _, p := range shared {
		if !seen[p.ev.EventID] {
			seen[p.ev.EventID] = true
			need = append(need, p.ev)
		}
	}
	threads, err := e.threadsOf(ctx, need, byID)
	if err != nil {
		e.log.Warn("threads of events could not be worked out; counting them in the main timeline", "err", err)
		threads = map[string]string{}
	}
	ts := e.now().UnixMilli()
	rows = make([]storage.PushAction, len(acts))
	for i, p := range acts {
		rows[i] = storage.PushAction{UserID: p.user, RoomNID: p.ev.RoomNID, StreamPos: *p.ev.StreamPos,
			ThreadID: threadOr(threads, p.ev.EventID), Highlight: p.rule.highlight, Actions: p.rule.actions, TS: ts}
	}
	e.store.AddPushActions(b, rows)
	srows = make([]storage.SharedPushAction, len(shared))
	for i, p := range shared {
		srows[i] = storage.SharedPushAction{RoomNID: p.ev.RoomNID, StreamPos: *p.ev.StreamPos, ThreadID: threadOr(threads, p.ev.EventID),
			Highlight: p.rule.highlight, Actions: p.rule.actions, TS: ts, Skips: p.skips}
	}
	e.store.AddSharedPushActions(b, srows)
	reads := make([]storage.OwnRead, 0, len(own))
	for _, ev := range own {
		reads = append(reads, storage.OwnRead{UserID: ev.Sender, RoomID: ev.RoomID, ThreadID: threadOr(threads, ev.EventID), StreamPos: *ev.StreamPos})
	}
	e.store.AddOwnReads(b, reads)
	return nil
}

func threadOr(threads map[string]string, eventID string) string {
	if t, ok := threads[eventID]; ok {
		return t
	}
	return mainThread
}

// evaluateRoom decides the events of one room, in order, for each local
// member. It returns the notifying decisions and the events sent by
// local users.
//
// The room's context (members, power levels) is kept between batches,
// keyed by the state snapshot after the last event it was moved past: a
// batch whose first event was built on that same state reuses it instead
// of reading the membership again. Another instance's state change makes
// a new snapshot, so a stale context is never found. A kept context is
// cloned before a state event changes it, and kept again only once the
// transaction commits.
func (e *Engine) evaluateRoom(ctx context.Context, tx *storage.Tx, roomID string, evs []*rooms.Event, states map[string]userEntry) ([]pending, []sharedPending, []*rooms.Event, error) {
	var pr *rooms.PushRoom
	shared := false
	if before := evs[0].StateBefore; before != nil {
		if c, ok := e.roomCtx.Get(roomID); ok && c.state == *before {
			pr, shared = c.pr, true
		}
	}
	if pr == nil {
		var err error
		if pr, err = e.rooms.PushContext(ctx, roomID); err != nil {
			return nil, nil, nil, err
		}
	}
	var acts []pending
	var sharedRows []sharedPending
	var own []*rooms.Event
	members := pr.LocalJoined()
	if err := e.userStates(ctx, members, states); err != nil {
		return nil, nil, nil, err
	}
	decided := make([]*crule, 0, len(members)+1)
	for _, ev := range evs {
		if pr.IsLocal(ev.Sender) {
			own = append(own, ev)
		}
		targets := members
		if invitee := localInvitee(pr, ev); invitee != "" {
			targets = append(append([]string(nil), members...), invitee)
			if err := e.userStates(ctx, []string{invitee}, states); err != nil {
				return nil, nil, nil, err
			}
		}
		v := newView(ctx, ev, pr, e.names)
		decided = decided[:0]
		for _, u := range targets {
			var r *crule
			if st, ok := states[u]; ok && u != ev.Sender {
				if r = st.rules.match(v, u); r != nil && (!r.notify || st.ignored[ev.Sender]) {
					r = nil
				}
			}
			decided = append(decided, r)
		}
		a, sh := share(ev, targets, len(members), decided)
		acts = append(acts, a...)
		if sh != nil {
			sharedRows = append(sharedRows, *sh)
		}
		if pr.Changes(ev) {
			if shared {
				pr, shared = pr.Clone(), false
			}
			pr.Apply(ev)
			members = pr.LocalJoined()
			if err := e.userStates(ctx, members, states); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	if after := evs[len(evs)-1].StateAfter; after != nil {
		keep := roomContext{pr: pr, state: *after}
		if tx != nil {
			tx.AfterCommit(func() { e.roomCtx.Put(roomID, keep) })
		} else {
			e.roomCtx.Put(roomID, keep)
		}
	}
	return acts, sharedRows, own, nil
}

// share turns the decisions for one event (targets[i] got decided[i], nil
// for nothing; the first nMembers targets are the joined members) into
// rows: when enough members got the same actions, one shared row for them
// that skips the other members, and a row each for the rest who notify.
func share(ev *rooms.Event, targets []string, nMembers int, decided []*crule) ([]pending, *sharedPending) {
	type key struct {
		actions   string
		highlight bool
	}
	counts := map[key]int{}
	var best key
	bestN := 0
	for i := range nMembers {
		if r := decided[i]; r != nil {
			k := key{r.actions, r.highlight}
			counts[k]++
			if counts[k] > bestN {
				best, bestN = k, counts[k]
			}
		}
	}
	var acts []pending
	if bestN < minShared {
		for i, r := range decided {
			if r != nil {
				acts = append(acts, pending{ev: ev, user: targets[i], rule: r})
			}
		}
		return acts, nil
	}
	sh := &sharedPending{ev: ev}
	for i, r := range decided {
		inGroup := i < nMembers && r != nil && (key{r.actions, r.highlight}) == best
		switch {
		case inGroup:
			sh.rule = r
		case i < nMembers:
			sh.skips = append(sh.skips, targets[i])
			fallthrough
		default:
			if r != nil {
				acts = append(acts, pending{ev: ev, user: targets[i], rule: r})
			}
		}
	}
	return acts, sh
}

// localInvitee returns the local user an invite event is for, if any
// (they are not joined, yet .m.rule.invite_for_me is for them).
func localInvitee(pr *rooms.PushRoom, ev *rooms.Event) string {
	if ev.Type != "m.room.member" || ev.StateKey == nil || !pr.IsLocal(*ev.StateKey) {
		return ""
	}
	if gjson.GetBytes(ev.Content(), "membership").String() != "invite" {
		return ""
	}
	return *ev.StateKey
}

// threadsOf works out each event's thread: the root of an m.thread
// relation, or — following other relations up to three hops — the
// thread of the event related to; "main" otherwise (thread roots are in
// the main timeline). Related events are looked up in the batch first,
// then in storage, one query per hop for all events together.
func (e *Engine) threadsOf(ctx context.Context, evs []*rooms.Event, batch map[string]*rooms.Event) (map[string]string, error) {
	out := make(map[string]string, len(evs))
	// cursor: event → the event its chain has reached.
	cursor := map[string]rooms.Relation{}
	for _, ev := range evs {
		rel := relationOf(ev)
		switch {
		case rel.EventID == "":
			out[ev.EventID] = mainThread
		case rel.RelType == "m.thread":
			out[ev.EventID] = rel.EventID
		default:
			cursor[ev.EventID] = rel
		}
	}
	for hop := 0; hop < maxThreadHops && len(cursor) > 0; hop++ {
		known := map[string]rooms.Relation{}
		var lookup []string
		for _, rel := range cursor {
			if t, ok := batch[rel.EventID]; ok {
				known[rel.EventID] = relationOf(t)
			} else {
				lookup = append(lookup, rel.EventID)
			}
		}
		if len(lookup) > 0 {
			found, err := e.rooms.EventRelations(ctx, lookup)
			if err != nil {
				return nil, err
			}
			for id, rel := range found {
				known[id] = rel
			}
		}
		for id, rel := range cursor {
			next := known[rel.EventID]
			switch {
			case next.EventID == "":
				out[id] = mainThread
				delete(cursor, id)
			case next.RelType == "m.thread":
				out[id] = next.EventID
				delete(cursor, id)
			default:
				cursor[id] = next
			}
		}
	}
	for id := range cursor {
		out[id] = mainThread
	}
	return out, nil
}

func relationOf(ev *rooms.Event) rooms.Relation {
	if ev.RelatesTo == nil || *ev.RelatesTo == "" {
		return rooms.Relation{}
	}
	r := rooms.Relation{EventID: *ev.RelatesTo}
	if ev.RelType != nil {
		r.RelType = *ev.RelType
	}
	return r
}
