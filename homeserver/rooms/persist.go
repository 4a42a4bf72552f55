package rooms

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/lru"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// persistLock is the advisory lock that serialises event persistence
// across the instances sharing a PostgreSQL database.
const persistLock = 8200401

// maxBatch bounds how many requests one transaction carries.
const maxBatch = 256

// request asks the persister to append events to a room.
type request struct {
	roomID string
	protos []Proto
	// txn makes the request idempotent (only with one proto).
	txn *storage.TxnKey
	// check runs after an event is built and authorised, before it is
	// written: the engine's own rules beyond the auth rules.
	check func(ctx context.Context, h *head, ev *Event) error
	// create starts a new room with this version; protos[0] is its
	// m.room.create event. Creations run in a transaction of their own.
	create id.RoomVersion
	// aliases are created with the room (creation only), atomically.
	aliases []string
	// publish lists the room in the directory (creation only).
	publish bool
	// remote is an event from another server to take in (Ingest).
	remote     *Event
	remoteOpts IngestOptions
	done       chan result
}

type result struct {
	events []*Event
	// dup is the event an earlier request with the same txn ID produced.
	dup    string
	ingest IngestResult
	err    error
}

// head is what appending to a room needs to know about it: its current
// state, extremities and depth, cached between batches while the room's
// newest event is unchanged.
type head struct {
	meta      *roomMeta
	stateNID  int64
	maxDepth  int64
	lastEvent int64
	extrem    []*Event
	state     map[storage.StateKey]*Event // current state cache; nil value: known unset
	// stateShared is set when state is shared with a clone: it is copied
	// before it is written.
	stateShared bool
	create      *Event

	// Within a batch: the extremities the database holds (as loaded),
	// whether the head moved, and the newest stream position it reached.
	// The batch writes extremities and the room row once per room at its
	// end (flushHeads), not once per event.
	dbExtrem   []int64
	moved      bool
	lastStream int64
}

func (h *head) clone() *head {
	// The state cache is shared until either side writes to it (setState,
	// unsetState): a batch clones the head of every request it applies,
	// to roll back to, and copying the room's state each time was the
	// persister's largest allocation.
	h.stateShared = true
	c := *h
	c.extrem = append([]*Event(nil), h.extrem...)
	return &c
}

// setState records a current state event (nil: known unset).
func (h *head) setState(k storage.StateKey, ev *Event) {
	h.ownState()
	h.state[k] = ev
}

// unsetState forgets a cached current state event.
func (h *head) unsetState(k storage.StateKey) {
	h.ownState()
	delete(h.state, k)
}

// ownState copies the state cache if it is shared with a clone.
func (h *head) ownState() {
	if h.stateShared {
		h.state = maps.Clone(h.state)
		h.stateShared = false
	}
}

type persister struct {
	e     *Engine
	in    chan *request
	quit  chan struct{}
	done  chan struct{}
	heads *lru.Cache[int64, *head]

	mu      sync.Mutex
	running bool
	once    sync.Once
}

func newPersister(e *Engine) *persister {
	return &persister{e: e, in: make(chan *request, 4096), quit: make(chan struct{}), done: make(chan struct{}),
		heads: lru.New[int64, *head](2000)}
}

func (p *persister) start(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		return nil
	}
	p.running = true
	go p.loop()
	return nil
}

func (p *persister) stop() {
	p.once.Do(func() {
		p.mu.Lock()
		running := p.running
		p.mu.Unlock()
		close(p.quit)
		if running {
			<-p.done
		}
	})
}

var errShuttingDown = mxerr.Custom(http.StatusServiceUnavailable, "M_UNKNOWN", "The server is shutting down")

// submit queues a request and waits for its result. A request whose
// client went away is still persisted: a retry with its txn ID finds it.
func (p *persister) submit(ctx context.Context, r *request) result {
	r.done = make(chan result, 1)
	select {
	case p.in <- r:
	case <-p.quit:
		return result{err: errShuttingDown}
	case <-ctx.Done():
		return result{err: ctx.Err()}
	}
	select {
	case res := <-r.done:
		return res
	case <-ctx.Done():
		return result{err: ctx.Err()}
	}
}

func (p *persister) loop() {
	defer close(p.done)
	for {
		var first *request
		select {
		case first = <-p.in:
		case <-p.quit:
			p.drain()
			return
		}
		batch := []*request{first}
		if first.create == "" {
		collect:
			for len(batch) < maxBatch {
				select {
				case r := <-p.in:
					if r.create != "" {
						p.process(batch)
						batch = []*request{r}
						break collect
					}
					batch = append(batch, r)
				default:
					break collect
				}
			}
		}
		p.process(batch)
	}
}

// drain answers whatever is still queued at shutdown.
func (p *persister) drain() {
	for {
		select {
		case r := <-p.in:
			r.done <- result{err: errShuttingDown}
		default:
			return
		}
	}
}

// process persists a batch in one transaction. If the transaction fails
// for a reason other than a request's own rejection, each request is
// retried alone so that one bad request cannot sink the others.
func (p *persister) process(reqs []*request) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	results, events, err := p.run(ctx, reqs)
	var abort *abortCreate
	if errors.As(err, &abort) {
		reqs[0].done <- result{err: abort.err}
		return
	}
	if err != nil && len(reqs) > 1 {
		for _, r := range reqs {
			p.process([]*request{r})
		}
		return
	}
	if err != nil {
		p.e.log.Error("persisting events failed", "err", err, "room", reqs[0].roomID)
		results = []result{{err: err}}
	} else if len(events) > 0 && p.e.hooks.Persisted != nil {
		p.e.hooks.Persisted(events)
	}
	for i, r := range reqs {
		r.done <- results[i]
	}
}

func (p *persister) run(ctx context.Context, reqs []*request) ([]result, []*Event, error) {
	results := make([]result, len(reqs))
	var events []*Event
	var heads map[int64]*head
	err := p.e.db.WriteLocked(ctx, persistLock, func(tx *storage.Tx) error {
		b := newBatch(ctx, p, tx, reqs)
		if err := b.start(); err != nil {
			return err
		}
		for i, r := range reqs {
			res, err := b.apply(r)
			if err != nil {
				if _, ok := mxerr.As(err); !ok {
					return err
				}
				if r.create != "" {
					// A failed creation may have written rows directly:
					// roll the whole transaction back.
					return &abortCreate{err: err}
				}
				results[i] = result{err: err}
				continue
			}
			results[i] = res
		}
		b.flushHeads()
		if p.e.hooks.InTx != nil {
			if err := p.e.hooks.InTx(ctx, tx, b.sql, Span{First: b.streamFirst, End: b.streamEnd}, b.events); err != nil {
				return err
			}
		}
		// The rows go with COMMIT (one round trip on PostgreSQL).
		if err := tx.ExecAtCommit(ctx, b.sql); err != nil {
			return err
		}
		events, heads = b.events, b.heads
		first, end := b.streamFirst, b.streamEnd
		tx.AfterCommit(func() { p.e.news.commit(first, end, events) })
		for _, ev := range b.events {
			ev := ev
			tx.AfterCommit(func() { p.e.events.Put(ev.NID, ev) })
		}
		for _, t := range b.redacted {
			t := t
			tx.AfterCommit(func() { p.e.events.Remove(t) })
		}
		return nil
	})
	if err != nil {
		// Heads touched by a failed transaction are unknown now.
		for _, r := range reqs {
			if m, ok := p.e.metaByID.Load(r.roomID); ok {
				p.heads.Remove(m.(*roomMeta).NID)
			}
		}
		return nil, nil, err
	}
	for nid, h := range heads {
		p.heads.Put(nid, h)
	}
	return results, events, nil
}

// abortCreate rolls back a room creation that was refused.
type abortCreate struct{ err error }

func (a *abortCreate) Error() string { return a.err.Error() }

// batch is one persisting transaction in progress.
type batch struct {
	ctx      context.Context
	p        *persister
	e        *Engine
	tx       *storage.Tx
	sql      *storage.Batch
	ov       map[int64]*Event
	sov      overlay
	heads    map[int64]*head
	events   []*Event
	redacted []int64
	txns     map[storage.TxnKey]string
	reqs     []*request
	// rooms are room rows read when the batch started (start).
	rooms map[int64]storage.Room

	nid, nidEnd       int64
	stream, streamEnd int64
	// streamFirst is the first events-stream position the batch reserved:
	// its reservations are one run [streamFirst, streamEnd).
	streamFirst   int64
	snap, snapEnd int64
}

func newBatch(ctx context.Context, p *persister, tx *storage.Tx, reqs []*request) *batch {
	return &batch{ctx: ctx, p: p, e: p.e, tx: tx, sql: &storage.Batch{}, ov: map[int64]*Event{}, sov: overlay{},
		heads: map[int64]*head{}, txns: map[storage.TxnKey]string{}, reqs: reqs}
}

// start finds which requests repeat an earlier transaction, reserves the
// numbers a batch of this size usually needs and reads the rows of the
// rooms it appends to, in one go.
func (b *batch) start() error {
	var keys []storage.TxnKey
	for _, r := range b.reqs {
		if r.txn != nil {
			keys = append(keys, *r.txn)
		}
	}
	// The rows of the rooms already known, to check their cached heads.
	var rooms []int64
	seen := map[int64]bool{}
	for _, r := range b.reqs {
		if m, ok := b.e.metaByID.Load(r.roomID); ok && !seen[m.(*roomMeta).NID] {
			seen[m.(*roomMeta).NID] = true
			rooms = append(rooms, m.(*roomMeta).NID)
		}
	}
	nids, streams := b.reserveSizes()
	st, err := b.e.store.StartPersist(b.ctx, b.tx, keys, nids, streams, rooms)
	if err != nil {
		return err
	}
	b.txns, b.rooms = st.Txns, st.Rooms
	b.nid, b.nidEnd = st.FirstNID, st.FirstNID+nids
	b.stream, b.streamEnd = st.FirstStream, st.FirstStream+streams
	b.streamFirst = st.FirstStream
	return nil
}

// reserveSizes are how many nids and events-stream positions the batch
// reserves at a time.
func (b *batch) reserveSizes() (nids, streams int64) {
	return int64(len(b.reqs)) * 4, int64(len(b.reqs)) * 2
}

// alloc hands out reserved numbers, reserving more when needed.
func (b *batch) alloc(kind string, next, end *int64) (int64, error) {
	if *next == 0 || *next >= *end {
		n, _ := b.reserveSizes()
		first, err := b.e.store.ReserveNIDs(b.ctx, b.tx, kind, n)
		if err != nil {
			return 0, err
		}
		*next, *end = first, first+n
	}
	v := *next
	*next++
	return v, nil
}

func (b *batch) nextStream() (int64, error) {
	if b.stream == 0 || b.stream >= b.streamEnd {
		_, n := b.reserveSizes()
		first, err := b.tx.NextStreamPos(b.ctx, storage.EventsStream, n)
		if err != nil {
			return 0, err
		}
		b.stream, b.streamEnd = first, first+n
	}
	v := b.stream
	b.stream++
	return v, nil
}

func (b *batch) snapWriter() *snapWriter {
	return &snapWriter{q: b.tx, ov: b.sov, batch: b.sql, tx: b.tx,
		alloc: func() (int64, error) { return b.alloc("snapshot", &b.snap, &b.snapEnd) }}
}

// head returns a room's head inside this transaction.
func (b *batch) head(m *roomMeta) (*head, error) {
	if h, ok := b.heads[m.NID]; ok {
		return h, nil
	}
	room, ok := b.rooms[m.NID]
	if !ok {
		var err error
		if room, err = b.e.store.RoomForUpdate(b.ctx, b.tx, m.NID); err != nil {
			return nil, err
		}
	}
	if h, ok := b.p.heads.Get(m.NID); ok && h.lastEvent == room.LastEvent && h.stateNID == room.StateNID {
		h = h.clone()
		h.dbExtrem, h.moved, h.lastStream = extremNIDs(h.extrem), false, 0
		b.heads[m.NID] = h
		return h, nil
	}
	h := &head{meta: m, stateNID: room.StateNID, maxDepth: room.MaxDepth, lastEvent: room.LastEvent,
		state: map[storage.StateKey]*Event{}}
	ext, err := b.e.store.Extremities(b.ctx, b.tx, m.NID)
	if err != nil {
		return nil, err
	}
	// More than a handful of extremities happen only with federation; a
	// new event names the newest ten (the resolved current state stands
	// for all of them).
	if len(ext) > 10 {
		ext = ext[:10]
	}
	nids := make([]int64, len(ext))
	for i, x := range ext {
		nids[i] = x.NID
	}
	evs, err := b.e.eventsByNID(b.ctx, b.tx, b.ov, nids)
	if err != nil {
		return nil, err
	}
	for _, n := range nids {
		if ev, ok := evs[n]; ok {
			h.extrem = append(h.extrem, ev)
		}
	}
	h.dbExtrem = extremNIDs(h.extrem)
	b.heads[m.NID] = h
	return h, nil
}

func extremNIDs(evs []*Event) []int64 {
	out := make([]int64, len(evs))
	for i, ev := range evs {
		out[i] = ev.NID
	}
	return out
}

// flushHeads queues, for each room the batch moved, the change of its
// extremities from what the database holds and the update of its row.
func (b *batch) flushHeads() {
	for _, h := range b.heads {
		if !h.moved {
			continue
		}
		now := extremNIDs(h.extrem)
		var removed []int64
		for _, x := range h.dbExtrem {
			if !slices.Contains(now, x) {
				removed = append(removed, x)
			}
		}
		var added []int64
		for _, x := range now {
			if !slices.Contains(h.dbExtrem, x) {
				added = append(added, x)
			}
		}
		b.e.store.AddExtremities(b.sql, h.meta.NID, removed, added)
		b.e.store.AddRoomHead(b.sql, h.meta.NID, h.stateNID, h.maxDepth, h.lastEvent, h.lastStream)
	}
}

// stateGet returns a current state event of the head's room (nil: unset).
func (b *batch) stateGet(h *head, k storage.StateKey) (*Event, error) {
	if ev, ok := h.state[k]; ok {
		return ev, nil
	}
	ev, err := b.e.currentStateEvent(b.ctx, b.tx, h.meta.NID, k.Type, k.StateKey)
	if err != nil {
		return nil, err
	}
	h.setState(k, ev)
	return ev, nil
}

// createEvent returns the room's create event.
func (b *batch) createEvent(h *head) (*Event, error) {
	if h.create != nil {
		return h.create, nil
	}
	ev, err := b.stateGet(h, storage.StateKey{Type: "m.room.create"})
	h.create = ev
	return ev, err
}

// apply runs one request: every proto or none.
func (b *batch) apply(r *request) (result, error) {
	if r.remote != nil {
		m, err := b.e.meta(b.ctx, r.roomID)
		if err != nil {
			return result{}, err
		}
		h, err := b.head(m)
		if err != nil {
			return result{}, err
		}
		saved, mark, nEvents := h.clone(), b.sql.Mark(), len(b.events)
		res, err := b.ingest(r)
		if err != nil {
			b.sql.Rewind(mark)
			b.events = b.events[:nEvents]
			b.heads[m.NID] = saved
			return result{}, err
		}
		return result{ingest: res}, nil
	}
	if r.txn != nil {
		if ev, ok := b.txns[*r.txn]; ok {
			return result{dup: ev}, nil
		}
	}
	mark := b.sql.Mark()
	nEvents := len(b.events)
	var m *roomMeta
	var h *head
	var err error
	if r.create != "" {
		m, h, err = b.createRoom(r)
	} else {
		if m, err = b.e.meta(b.ctx, r.roomID); err == nil {
			h, err = b.head(m)
		}
	}
	if err != nil {
		return result{}, err
	}
	saved := h.clone()
	var out []*Event
	for i, p := range r.protos {
		if r.create != "" && i == 0 {
			out = append(out, h.extrem[0])
			continue
		}
		ev, err := b.append(h, p, r)
		if err != nil {
			if _, ok := mxerr.As(err); ok {
				// Undo this request's queued writes and head changes.
				b.sql.Rewind(mark)
				b.events = b.events[:nEvents]
				b.heads[m.NID] = saved
			}
			return result{}, err
		}
		out = append(out, ev)
	}
	if r.txn != nil && len(out) == 1 {
		b.e.store.AddTxn(b.sql, r.txn.UserID, r.txn.DeviceID, r.txn.Scope, r.txn.TxnID, out[0].EventID, b.e.now().UnixMilli())
		b.txns[*r.txn] = out[0].EventID
	}
	return result{events: out}, nil
}

// append builds, authorises and queues one local event.
func (b *batch) append(h *head, p Proto, r *request) (*Event, error) {
	m := h.meta
	create, err := b.createEvent(h)
	if err != nil {
		return nil, err
	}
	if create == nil {
		return nil, ErrUnknownRoom
	}
	var auth []*Event
	for _, k := range authSelection(m.Version, p) {
		ev, err := b.stateGet(h, k)
		if err != nil {
			return nil, err
		}
		if ev != nil {
			auth = append(auth, ev)
		}
	}
	depth := h.maxDepth + 1
	for _, x := range h.extrem {
		depth = max(depth, x.Depth+1)
	}
	ev, err := b.e.cfg.Signer.build(m.Version, m.ID, p, h.extrem, auth, depth, b.e.now().UnixMilli())
	if err != nil {
		return nil, err
	}
	if err := authorize(ev, auth, create); err != nil {
		return nil, authError(err)
	}
	if r.check != nil {
		if err := r.check(b.ctx, h, ev); err != nil {
			return nil, err
		}
	}
	if r.txn != nil && len(r.protos) == 1 {
		ev.TxnDevice, ev.TxnID = &r.txn.DeviceID, &r.txn.TxnID
	}
	authNIDs := make([]int64, len(auth))
	for i, a := range auth {
		authNIDs[i] = a.NID
	}
	if err := b.write(h, ev, authNIDs); err != nil {
		return nil, err
	}
	return ev, nil
}

// write assigns numbers to an accepted event, derives its state and
// queues its rows.
func (b *batch) write(h *head, ev *Event, authNIDs []int64) error {
	var err error
	if ev.NID, err = b.alloc("event", &b.nid, &b.nidEnd); err != nil {
		return err
	}
	pos, err := b.nextStream()
	if err != nil {
		return err
	}
	ev.StreamPos = &pos
	ev.RoomNID = h.meta.NID
	before := h.stateNID
	ev.StateBefore = &before
	after := before
	if ev.IsState() {
		k := ev.Key()
		kn, err := b.e.keyNID(b.ctx, b.tx, b.tx, k)
		if err != nil {
			return err
		}
		if after, err = b.e.snaps.derive(b.ctx, b.snapWriter(), before, map[int64]int64{kn: ev.NID}); err != nil {
			return err
		}
		h.setState(k, ev)
		b.e.store.AddCurrentState(b.sql, h.meta.NID, k.Type, k.StateKey, ev.NID, ev.Membership)
		if k.Type == "m.room.create" {
			h.create = ev
		}
	}
	ev.StateAfter = &after
	b.e.store.AddEvent(b.sql, &ev.Event)
	prevIDs := make([]string, len(ev.PDU.PrevEvents))
	for i, pid := range ev.PDU.PrevEvents {
		prevIDs[i] = string(pid)
	}
	b.e.store.AddEdges(b.sql, ev.NID, prevIDs, authNIDs)
	h.extrem = []*Event{ev}
	h.stateNID = after
	h.maxDepth = max(h.maxDepth, ev.Depth)
	h.lastEvent = ev.NID
	h.moved, h.lastStream = true, max(h.lastStream, pos)
	if ev.Type == "m.room.redaction" {
		if err := b.applyRedaction(h, ev); err != nil {
			return err
		}
	}
	b.ov[ev.NID] = ev
	b.events = append(b.events, ev)
	return nil
}

// applyRedaction marks the target redacted when the redaction may apply:
// the redacter has the power, or redacts their own event.
func (b *batch) applyRedaction(h *head, red *Event) error {
	target := red.redactsTarget()
	if target == "" {
		return nil
	}
	evs, err := b.e.eventsByID(b.ctx, b.tx, []string{target})
	if err != nil {
		return err
	}
	t, ok := evs[target]
	if !ok {
		for _, x := range b.events {
			if x.EventID == target {
				t = x
			}
		}
	}
	if t == nil || t.RoomNID != h.meta.NID || t.RedactedBy != nil {
		return nil
	}
	pl, err := b.stateGet(h, storage.StateKey{Type: "m.room.power_levels"})
	if err != nil {
		return err
	}
	lv := newLevels(pl, h.create)
	if t.Sender != red.Sender && lv.user(red.Sender) < lv.redact() {
		return nil
	}
	b.e.store.AddRedactedBy(b.sql, target, red.EventID)
	if t.IsState() {
		// The head's cached copy is the unredacted event.
		h.unsetState(t.Key())
	}
	redactedBy := red.EventID
	cp := *t
	cp.RedactedBy = &redactedBy
	b.ov[t.NID] = &cp
	b.redacted = append(b.redacted, t.NID)
	return nil
}

// createRoom builds the create event of a new room and its row.
func (b *batch) createRoom(r *request) (*roomMeta, *head, error) {
	version := r.create
	p := r.protos[0]
	roomID := r.roomID
	ev, err := b.e.cfg.Signer.build(version, roomID, p, nil, nil, 1, b.e.now().UnixMilli())
	if err != nil {
		return nil, nil, err
	}
	if err := authorize(ev, nil, nil); err != nil {
		return nil, nil, authError(err)
	}
	roomID = ev.RoomID
	nid, err := b.e.store.RoomCreate(b.ctx, b.tx, roomID, string(version), b.e.now().UnixMilli())
	if errors.Is(err, storage.ErrConflict) {
		return nil, nil, mxerr.Custom(http.StatusBadRequest, "M_ROOM_IN_USE", "Room ID already exists")
	}
	if err != nil {
		return nil, nil, err
	}
	for _, alias := range r.aliases {
		err := b.e.store.AliasCreateTx(b.ctx, b.tx, alias, nid, p.Sender, b.e.now().UnixMilli())
		if errors.Is(err, storage.ErrConflict) {
			return nil, nil, mxerr.Custom(http.StatusBadRequest, "M_ROOM_IN_USE", "Room alias %s is already taken", alias)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	if r.publish {
		if err := b.e.store.RoomPublishTx(b.ctx, b.tx, nid); err != nil {
			return nil, nil, err
		}
	}
	m := &roomMeta{NID: nid, ID: roomID, Version: version}
	b.tx.AfterCommit(func() {
		b.e.metas.Store(nid, m)
		b.e.metaByID.Store(roomID, m)
	})
	h := &head{meta: m, state: map[storage.StateKey]*Event{}}
	b.heads[nid] = h
	r.roomID = roomID
	if err := b.write(h, ev, nil); err != nil {
		return nil, nil, err
	}
	h.create = ev
	return m, h, nil
}
