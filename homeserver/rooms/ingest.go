package rooms

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	jsonv2 "encoding/json/v2"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/homeserver/rooms/stateres"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// KeyRing finds other servers' signing keys to verify their events.
type KeyRing interface {
	// VerifyKey returns the public key of serverName with keyID and how
	// long it is valid; a zero key means it is unknown.
	VerifyKey(ctx context.Context, serverName string, keyID id.KeyID, minValidUntil time.Time) (ed25519.PublicKey, time.Time, error)
}

// SetKeyRing installs the key ring used to verify remote events.
func (e *Engine) SetKeyRing(k KeyRing) { e.keyring = k }

// IngestOptions tune how a remote event is taken in.
type IngestOptions struct {
	// Outlier stores the event without its state: only the checks against
	// its own auth events run (events of an auth chain or state fetched
	// from another server).
	Outlier bool
	// StateBefore gives the state before the event when its prev events
	// are unknown (from /state_ids); nil when they are known.
	StateBefore map[storage.StateKey]string
}

// IngestResult says what became of a remote event.
type IngestResult struct {
	EventID string
	// Status is storage.EventAccepted, EventRejected, EventSoftFailed or
	// EventOutlier.
	Status int
	Reason string
	// Duplicate is set when the event was already stored.
	Duplicate bool
}

// ErrMissingEvents reports auth or prev events the server must fetch first.
type ErrMissingEvents struct{ IDs []string }

func (e *ErrMissingEvents) Error() string {
	return fmt.Sprintf("missing events: %s", strings.Join(e.IDs, ", "))
}

// Ingest takes in an event received from another server, running the
// checks the server-server spec performs on receipt of a PDU:
//
//  1. a valid event: format, content hash (a mismatch redacts the event),
//     signatures of the sending server;
//  2. it passes the auth rules against its own auth_events, else it is
//     rejected;
//  3. it passes the auth rules against the state before it, else it is
//     rejected;
//  4. it passes the auth rules against the room's current state, else it
//     is soft-failed: stored, but neither shown to clients nor built upon.
//
// Every outcome is stored and flagged; nothing is dropped.
func (e *Engine) Ingest(ctx context.Context, roomID string, raw []byte, opts IngestOptions) (IngestResult, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return IngestResult{}, err
	}
	ev, err := e.parseRemote(ctx, m, raw)
	if err != nil {
		return IngestResult{}, err
	}
	res := e.persister.submit(ctx, &request{roomID: m.ID, remote: ev, remoteOpts: opts})
	if res.err != nil {
		return IngestResult{}, res.err
	}
	return res.ingest, nil
}

// parseRemote checks the format, content hash and signatures of a PDU.
func (e *Engine) parseRemote(ctx context.Context, m *roomMeta, raw []byte) (*Event, error) {
	if len(raw) > MaxEventBytes {
		return nil, mxerr.TooLarge("Event is larger than %d bytes", MaxEventBytes)
	}
	var eventID string
	var p *pdu.PDU
	if m.Version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(raw, &v1); err != nil {
			return nil, mxerr.BadJSON("Malformed event: %v", err)
		}
		eventID = string(v1.EventID)
		var err error
		if p, err = parsePDU(raw, m.Version, eventID); err != nil {
			return nil, mxerr.BadJSON("Malformed event: %v", err)
		}
	} else {
		p = &pdu.PDU{}
		if err := jsonv2.Unmarshal(raw, p); err != nil {
			return nil, mxerr.BadJSON("Malformed event: %v", err)
		}
		p.InternalMeta = pdu.InternalMeta{}
		evID, err := p.GetEventID(m.Version)
		if err != nil {
			return nil, mxerr.BadJSON("Cannot compute the event ID: %v", err)
		}
		eventID = string(evID)
		p.InternalMeta.EventID = evID
	}
	if p.Type == "" || p.Sender == "" || (p.RoomID != "" && string(p.RoomID) != m.ID) {
		return nil, mxerr.BadJSON("Event is missing fields or belongs to another room")
	}
	if err := e.verifySignatures(ctx, m, p); err != nil {
		return nil, mxerr.Forbidden("Event signature check failed: %v", err).Wrap(err)
	}
	if !p.VerifyContentHash() {
		// The spec: an event whose content hash does not match is redacted
		// before it is processed further.
		p.Content = pdu.RedactContent(p.Type, p.Content, m.Version)
		red, err := jsonv2.Marshal(p)
		if err == nil {
			raw = red
		}
	}
	row := storage.Event{EventID: eventID, Type: p.Type, StateKey: p.StateKey, Sender: string(p.Sender),
		Depth: p.Depth, OriginTS: p.OriginServerTS, JSON: raw}
	if p.Type == "m.room.member" && p.StateKey != nil {
		mem := membershipOf(p.Content)
		row.Membership = &mem
	}
	if rel, typ := relation(p.Content); rel != "" {
		row.RelatesTo = &rel
		if typ != "" {
			row.RelType = &typ
		}
	}
	return &Event{Event: row, Version: m.Version, PDU: p, RoomID: m.ID}, nil
}

// verifySignatures checks the signature of the sender's server.
func (e *Engine) verifySignatures(ctx context.Context, m *roomMeta, p *pdu.PDU) error {
	_, server, ok := stringsCut(string(p.Sender))
	if !ok {
		return fmt.Errorf("sender %q has no server name", p.Sender)
	}
	if server == e.cfg.ServerName {
		pub := e.cfg.Signer.Key.Public().(ed25519.PublicKey)
		return p.VerifySignature(m.Version, server, func(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
			return id.SigningKey(base64.RawStdEncoding.EncodeToString(pub)), time.Now().Add(time.Hour), nil
		})
	}
	if e.keyring == nil {
		return fmt.Errorf("no key ring to verify %s's signature", server)
	}
	return p.VerifySignature(m.Version, server, func(srv string, keyID id.KeyID, minValid time.Time) (id.SigningKey, time.Time, error) {
		key, until, err := e.keyring.VerifyKey(ctx, srv, keyID, minValid)
		if err != nil || key == nil {
			return "", time.Time{}, err
		}
		return id.SigningKey(base64.RawStdEncoding.EncodeToString(key)), until, nil
	})
}

// ingest is the persister's half of Ingest, inside the transaction.
func (b *batch) ingest(r *request) (IngestResult, error) {
	ev := r.remote
	res := IngestResult{EventID: ev.EventID}
	existing, err := b.e.eventsByID(b.ctx, b.tx, []string{ev.EventID})
	if err != nil {
		return res, err
	}
	if old, ok := existing[ev.EventID]; ok {
		res.Status, res.Duplicate = old.Status, true
		return res, nil
	}
	m, err := b.e.meta(b.ctx, r.roomID)
	if err != nil {
		return res, err
	}
	h, err := b.head(m)
	if err != nil {
		return res, err
	}
	ev.RoomNID = m.NID
	byID, err := b.eventsForAuth(ev)
	if err != nil {
		return res, err
	}
	// Check 2: the event's own auth events.
	if err := eventauth.Authorize(m.Version, ev.PDU, nil, lookupIn(byID), noKeys); err != nil {
		return b.store(h, ev, storage.EventRejected, err.Error(), nil)
	}
	if r.remoteOpts.Outlier {
		return b.store(h, ev, storage.EventOutlier, "", nil)
	}
	// Check 3: the state before the event.
	before, err := b.stateBefore(h, ev, r.remoteOpts.StateBefore)
	if err != nil {
		return res, err
	}
	if reason := b.authAgainst(h, ev, before); reason != "" {
		return b.store(h, ev, storage.EventRejected, reason, &before)
	}
	// Check 4: the current state; failing it soft-fails the event.
	if reason := b.authAgainst(h, ev, h.stateNID); reason != "" {
		return b.store(h, ev, storage.EventSoftFailed, reason, &before)
	}
	return b.store(h, ev, storage.EventAccepted, "", &before)
}

// eventsForAuth loads the event's auth events (and, in v12, the create
// event); missing ones are reported for the caller to fetch.
func (b *batch) eventsForAuth(ev *Event) (map[id.EventID]*Event, error) {
	ids := make([]string, 0, len(ev.PDU.AuthEvents)+1)
	for _, a := range ev.PDU.AuthEvents {
		ids = append(ids, string(a))
	}
	if ev.Version.RoomIDIsCreateEventID() && ev.Type != "m.room.create" {
		ids = append(ids, "$"+strings.TrimPrefix(ev.RoomID, "!"))
	}
	found, err := b.byID(ids)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, i := range ids {
		if _, ok := found[id.EventID(i)]; !ok {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		return nil, mxerr.Custom(400, "M_MISSING_EVENTS", "%v", &ErrMissingEvents{IDs: missing})
	}
	return found, nil
}

// byID loads events by ID, including those written earlier in the batch.
func (b *batch) byID(ids []string) (map[id.EventID]*Event, error) {
	out := map[id.EventID]*Event{}
	var rest []string
	for _, i := range ids {
		found := false
		for _, x := range b.events {
			if x.EventID == i {
				out[id.EventID(i)], found = x, true
			}
		}
		if !found {
			rest = append(rest, i)
		}
	}
	if len(rest) > 0 {
		m, err := b.e.eventsByID(b.ctx, b.tx, rest)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			out[id.EventID(k)] = v
		}
	}
	return out, nil
}

func lookupIn(m map[id.EventID]*Event) eventauth.GetEventsFunc {
	return func(ids []id.EventID) ([]*pdu.PDU, error) {
		out := make([]*pdu.PDU, len(ids))
		for i, x := range ids {
			if ev, ok := m[x]; ok {
				p := ev.PDU
				p.InternalMeta.Rejected = ev.Status == storage.EventRejected
				out[i] = p
			}
		}
		return out, nil
	}
}

// authAgainst authorises ev with auth events selected from a snapshot;
// it returns why it failed, or "".
func (b *batch) authAgainst(h *head, ev *Event, snap int64) string {
	var auth []*Event
	for _, k := range authSelection(ev.Version, Proto{Type: ev.Type, StateKey: ev.StateKey, Sender: ev.Sender, Content: ev.PDU.Content}) {
		kn, err := b.e.keyNID(b.ctx, b.tx, nil, k)
		if err != nil || kn == 0 {
			continue
		}
		nid, err := b.e.snaps.lookup(b.ctx, b.tx, b.sov, snap, kn)
		if err != nil || nid == 0 {
			continue
		}
		a, err := b.e.eventByNID(b.ctx, b.tx, b.ov, nid)
		if err != nil {
			return err.Error()
		}
		auth = append(auth, a)
	}
	create, _ := b.createEvent(h)
	if err := authorize(ev, auth, create); err != nil {
		return err.Error()
	}
	return ""
}

// stateBefore computes the state before a remote event from its prev
// events (resolving when they disagree), or from the state given.
func (b *batch) stateBefore(h *head, ev *Event, given map[storage.StateKey]string) (int64, error) {
	prevIDs := make([]string, len(ev.PDU.PrevEvents))
	for i, p := range ev.PDU.PrevEvents {
		prevIDs[i] = string(p)
	}
	prevs, err := b.byID(prevIDs)
	if err != nil {
		return 0, err
	}
	var snaps []int64
	var missing []string
	for _, pid := range prevIDs {
		p, ok := prevs[id.EventID(pid)]
		if !ok || p.StateAfter == nil {
			missing = append(missing, pid)
			continue
		}
		snaps = append(snaps, *p.StateAfter)
	}
	if given != nil {
		return b.snapshotOf(h, given)
	}
	if len(missing) > 0 {
		return 0, mxerr.Custom(400, "M_MISSING_EVENTS", "%v", &ErrMissingEvents{IDs: missing})
	}
	return b.resolveSnapshots(h, snaps)
}

// snapshotOf stores a snapshot for a state given by event IDs.
func (b *batch) snapshotOf(h *head, st map[storage.StateKey]string) (int64, error) {
	ids := make([]string, 0, len(st))
	for _, v := range st {
		ids = append(ids, v)
	}
	evs, err := b.byID(ids)
	if err != nil {
		return 0, err
	}
	full := StateMap{}
	for k, v := range st {
		ev, ok := evs[id.EventID(v)]
		if !ok {
			return 0, mxerr.Custom(400, "M_MISSING_EVENTS", "%v", &ErrMissingEvents{IDs: []string{v}})
		}
		kn, err := b.e.keyNID(b.ctx, b.tx, b.tx, k)
		if err != nil {
			return 0, err
		}
		full[kn] = ev.NID
	}
	return b.e.snaps.deriveFull(b.ctx, b.snapWriter(), h.stateNID, full)
}

// resolveSnapshots runs state resolution over several snapshots.
func (b *batch) resolveSnapshots(h *head, snaps []int64) (int64, error) {
	uniq := map[int64]bool{}
	var list []int64
	for _, s := range snaps {
		if !uniq[s] {
			uniq[s] = true
			list = append(list, s)
		}
	}
	if len(list) == 0 {
		return 0, nil
	}
	if len(list) == 1 {
		return list[0], nil
	}
	sets := make([]stateres.StateMap, 0, len(list))
	for _, s := range list {
		sm, err := b.toStateRes(s)
		if err != nil {
			return 0, err
		}
		sets = append(sets, sm)
	}
	resolved, err := stateres.Resolve(b.ctx, h.meta.Version, sets, &engineSource{b: b})
	if err != nil {
		return 0, fmt.Errorf("state resolution: %w", err)
	}
	given := make(map[storage.StateKey]string, len(resolved))
	for k, v := range resolved {
		given[storage.StateKey{Type: k.Type, StateKey: k.StateKey}] = string(v)
	}
	return b.snapshotOf(h, given)
}

// toStateRes converts a snapshot to stateres's form.
func (b *batch) toStateRes(snap int64) (stateres.StateMap, error) {
	full, err := b.e.snaps.full(b.ctx, b.tx, b.sov, snap)
	if err != nil {
		return nil, err
	}
	keyNIDs := make([]int64, 0, len(full))
	evNIDs := make([]int64, 0, len(full))
	for k, v := range full {
		keyNIDs = append(keyNIDs, k)
		evNIDs = append(evNIDs, v)
	}
	keys, err := b.e.keysByNID(b.ctx, b.tx, keyNIDs)
	if err != nil {
		return nil, err
	}
	ids, err := b.e.store.EventIDsByNID(b.ctx, b.tx, evNIDs)
	if err != nil {
		return nil, err
	}
	for _, x := range b.events {
		ids[x.NID] = x.EventID
	}
	out := make(stateres.StateMap, len(full))
	for k, v := range full {
		if i, ok := ids[v]; ok {
			key := keys[k]
			out[stateres.StateKey{Type: key.Type, StateKey: key.StateKey}] = id.EventID(i)
		}
	}
	return out, nil
}

// engineSource gives state resolution the room's events from storage.
type engineSource struct{ b *batch }

func (s *engineSource) Events(ctx context.Context, ids []id.EventID) (map[id.EventID]*pdu.PDU, error) {
	strs := make([]string, len(ids))
	for i, x := range ids {
		strs[i] = string(x)
	}
	evs, err := s.b.byID(strs)
	if err != nil {
		return nil, err
	}
	out := make(map[id.EventID]*pdu.PDU, len(evs))
	for k, v := range evs {
		p := v.PDU
		p.InternalMeta.Rejected = v.Status == storage.EventRejected
		out[k] = p
	}
	return out, nil
}

// AuthChain walks auth edges level by level through storage.
func (s *engineSource) AuthChain(ctx context.Context, ids []id.EventID) (map[id.EventID]struct{}, error) {
	evs, err := s.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	chain := map[id.EventID]struct{}{}
	var frontier []string
	for _, ev := range evs {
		for _, a := range ev.AuthEvents {
			if _, ok := chain[a]; !ok {
				chain[a] = struct{}{}
				frontier = append(frontier, string(a))
			}
		}
	}
	for len(frontier) > 0 {
		next, err := s.b.byID(frontier)
		if err != nil {
			return nil, err
		}
		frontier = frontier[:0]
		for _, ev := range next {
			for _, a := range ev.PDU.AuthEvents {
				if _, ok := chain[a]; !ok {
					chain[a] = struct{}{}
					frontier = append(frontier, string(a))
				}
			}
		}
	}
	return chain, nil
}

// store writes a remote event with its outcome, updating the room's
// state and extremities when it is accepted.
func (b *batch) store(h *head, ev *Event, status int, reason string, before *int64) (IngestResult, error) {
	res := IngestResult{EventID: ev.EventID, Status: status, Reason: reason}
	var err error
	if ev.NID, err = b.alloc("event", &b.nid, &b.nidEnd); err != nil {
		return res, err
	}
	ev.Status = status
	if reason != "" {
		ev.RejectReason = &reason
	}
	authNIDs := []int64{}
	auth, _ := b.byID(idsOf(ev.PDU.AuthEvents))
	for _, a := range auth {
		authNIDs = append(authNIDs, a.NID)
	}
	prevIDs := idsOf(ev.PDU.PrevEvents)
	if before != nil && status != storage.EventRejected {
		ev.StateBefore = before
		after := *before
		if ev.IsState() {
			kn, err := b.e.keyNID(b.ctx, b.tx, b.tx, ev.Key())
			if err != nil {
				return res, err
			}
			if after, err = b.e.snaps.derive(b.ctx, b.snapWriter(), *before, map[int64]int64{kn: ev.NID}); err != nil {
				return res, err
			}
		}
		ev.StateAfter = &after
	}
	b.ov[ev.NID] = ev
	if status == storage.EventAccepted {
		pos, err := b.nextStream()
		if err != nil {
			return res, err
		}
		ev.StreamPos = &pos
		if err := b.advanceHead(h, ev, prevIDs); err != nil {
			return res, err
		}
	}
	b.e.store.AddEvent(b.sql, &ev.Event)
	b.e.store.AddEdges(b.sql, ev.NID, prevIDs, authNIDs)
	b.events = append(b.events, ev)
	return res, nil
}

func idsOf(ids []id.EventID) []string {
	out := make([]string, len(ids))
	for i, x := range ids {
		out[i] = string(x)
	}
	return out
}

// advanceHead moves the room's extremities and current state past an
// accepted remote event, resolving state when it forks from the head.
func (b *batch) advanceHead(h *head, ev *Event, prevIDs []string) error {
	prevSet := map[string]bool{}
	for _, p := range prevIDs {
		prevSet[p] = true
	}
	var kept []*Event
	extendsAll := true
	for _, x := range h.extrem {
		if !prevSet[x.EventID] {
			kept = append(kept, x)
			extendsAll = false
		}
	}
	h.extrem = append(kept, ev)
	newState := *ev.StateAfter
	if !extendsAll && h.stateNID != 0 && h.stateNID != newState {
		var err error
		if newState, err = b.resolveSnapshots(h, []int64{h.stateNID, *ev.StateAfter}); err != nil {
			return err
		}
	}
	if err := b.setCurrentState(h, newState); err != nil {
		return err
	}
	h.maxDepth = max(h.maxDepth, ev.Depth)
	h.lastEvent = ev.NID
	h.moved, h.lastStream = true, max(h.lastStream, deref(ev.StreamPos))
	if ev.Type == "m.room.redaction" {
		return b.applyRedaction(h, ev)
	}
	return nil
}

// setCurrentState replaces the room's current state, updating the flat
// current_state table for the keys that changed.
func (b *batch) setCurrentState(h *head, snap int64) error {
	if snap == h.stateNID {
		return nil
	}
	oldState, err := b.e.snaps.full(b.ctx, b.tx, b.sov, h.stateNID)
	if err != nil {
		return err
	}
	newState, err := b.e.snaps.full(b.ctx, b.tx, b.sov, snap)
	if err != nil {
		return err
	}
	var changed []int64
	for k, v := range newState {
		if oldState[k] != v {
			changed = append(changed, k)
		}
	}
	for k := range oldState {
		if _, ok := newState[k]; !ok {
			changed = append(changed, k)
		}
	}
	keys, err := b.e.keysByNID(b.ctx, b.tx, changed)
	if err != nil {
		return err
	}
	for _, kn := range changed {
		k := keys[kn]
		nid := newState[kn]
		h.unsetState(k)
		if nid == 0 {
			b.e.store.AddCurrentState(b.sql, h.meta.NID, k.Type, k.StateKey, 0, nil)
			continue
		}
		ev, err := b.e.eventByNID(b.ctx, b.tx, b.ov, nid)
		if err != nil {
			return err
		}
		b.e.store.AddCurrentState(b.sql, h.meta.NID, k.Type, k.StateKey, nid, ev.Membership)
		if k.Type == "m.room.create" {
			h.create = ev
		}
	}
	h.stateNID = snap
	return nil
}
