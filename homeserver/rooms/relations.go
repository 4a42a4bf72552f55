package rooms

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/storage"
)

// Limits of bundled aggregations.
const (
	// maxBundledReferences bounds the m.reference chunk of one event;
	// GET /relations lists them all.
	maxBundledReferences = 1000
	// editCandidates is how many of the newest edits per (event, sender,
	// type) are looked at to find the newest valid one.
	editCandidates = 5
)

// bundle adds m.relations (the server-side aggregations of m.thread,
// m.replace and m.reference) to rendered events, as the spec describes:
//
//   - state events, edits and annotations get none;
//   - m.thread: only on events that are not themselves relations; count,
//     latest_event (topologically newest, with its own aggregations) and
//     current_user_participated, leaving out ignored users' replies;
//   - m.replace: the newest valid edit by origin_server_ts, then event ID
//     (same sender and type, m.new_content present unless encrypted); none
//     on a redacted event;
//   - m.reference: the referencing event IDs.
//
// Children count only if they are in the parent's room, accepted, in the
// timeline and not redacted.
func (e *Engine) bundle(ctx context.Context, user string, at int64, evs []*Event, out []*ClientEvent) error {
	byRoom := map[int64][]int{}
	for i, ev := range evs {
		if ev.IsState() {
			continue
		}
		switch deref2(ev.RelType) {
		case "m.replace", "m.annotation":
			continue
		}
		byRoom[ev.RoomNID] = append(byRoom[ev.RoomNID], i)
	}
	if len(byRoom) == 0 {
		return nil
	}
	ignored, err := e.IgnoredUsers(ctx, user)
	if err != nil {
		return err
	}
	for roomNID, idx := range byRoom {
		parents := make([]*Event, len(idx))
		for j, i := range idx {
			parents[j] = evs[i]
		}
		aggs, err := e.aggregate(ctx, user, ignored, roomNID, at, parents)
		if err != nil {
			return err
		}
		for j, i := range idx {
			agg := aggs[j]
			if len(agg) == 0 {
				continue
			}
			b, err := json.Marshal(agg)
			if err != nil {
				return err
			}
			if out[i].Unsigned == nil {
				out[i].Unsigned = &Unsigned{}
			}
			out[i].Unsigned.Relations = b
		}
	}
	return nil
}

// threadAggregation is the m.thread bundle.
type threadAggregation struct {
	LatestEvent  *ClientEvent `json:"latest_event"`
	Count        int          `json:"count"`
	Participated bool         `json:"current_user_participated"`
}

// aggregate computes the aggregations of events of one room, in order,
// from children up to the committed position at (0: all).
func (e *Engine) aggregate(ctx context.Context, user string, ignored map[string]bool, roomNID, at int64, parents []*Event) ([]map[string]any, error) {
	out := make([]map[string]any, len(parents))
	for i := range out {
		out[i] = map[string]any{}
	}
	all := make([]string, len(parents))
	for i, p := range parents {
		all[i] = p.EventID
	}
	// The parents are one window of one room; the members woken by one
	// commit ask for the same window at the same position.
	key := strconv.FormatInt(at, 10) + "\x00" + strings.Join(all, "\x00")
	having, err := finalAt(e.bundled, key, at > 0, func() (map[string]bool, error) {
		if at > 0 {
			if having, ok := e.news.withBundled(parents, at, e.isLocal); ok {
				return having, nil
			}
		}
		return e.store.WithBundledRelations(ctx, all, at)
	})
	if err != nil || len(having) == 0 {
		return out, err
	}
	var ids, roots, editable []string
	for _, p := range parents {
		if !having[p.EventID] {
			continue
		}
		ids = append(ids, p.EventID)
		if p.RelType == nil {
			roots = append(roots, p.EventID)
		}
		if p.RedactedBy == nil {
			editable = append(editable, p.EventID)
		}
	}
	if err := e.aggregateThreads(ctx, user, ignored, roomNID, parents, roots, out); err != nil {
		return nil, err
	}
	if err := e.aggregateEdits(ctx, ignored, roomNID, parents, editable, out); err != nil {
		return nil, err
	}
	refs, err := e.store.References(ctx, roomNID, ids, maxBundledReferences)
	if err != nil {
		return nil, err
	}
	chunks := map[string][]map[string]string{}
	slices.SortStableFunc(refs, func(a, b storage.Reference) int { return comparePos(a.Depth, a.Stream, b.Depth, b.Stream) })
	for _, r := range refs {
		if !ignored[r.Sender] {
			chunks[r.ParentID] = append(chunks[r.ParentID], map[string]string{"event_id": r.EventID})
		}
	}
	for i, p := range parents {
		if c := chunks[p.EventID]; len(c) > 0 {
			out[i]["m.reference"] = map[string]any{"chunk": c}
		}
	}
	return out, nil
}

func (e *Engine) aggregateThreads(ctx context.Context, user string, ignored map[string]bool, roomNID int64, parents []*Event, roots []string, out []map[string]any) error {
	if len(roots) == 0 {
		return nil
	}
	sums, err := e.store.ThreadSummaries(ctx, roomNID, roots)
	if err != nil {
		return err
	}
	type thread struct {
		count        int
		latest       *storage.ThreadSummary
		participated bool
	}
	threads := map[string]*thread{}
	for i := range sums {
		s := &sums[i]
		if ignored[s.Sender] {
			continue
		}
		t := threads[s.RootID]
		if t == nil {
			t = &thread{}
			threads[s.RootID] = t
		}
		t.count += s.Count
		t.participated = t.participated || s.Sender == user
		if t.latest == nil || comparePos(s.LatestDepth, s.LatestStream, t.latest.LatestDepth, t.latest.LatestStream) > 0 {
			t.latest = s
		}
	}
	if len(threads) == 0 {
		return nil
	}
	var nids []int64
	for _, t := range threads {
		nids = append(nids, t.latest.LatestNID)
	}
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, nids)
	if err != nil {
		return err
	}
	// The latest events carry their own aggregations (their edits); they
	// are thread replies, so this goes no deeper.
	var latest []*Event
	for _, n := range nids {
		if ev, ok := evs[n]; ok {
			latest = append(latest, ev)
		}
	}
	rendered, err := e.renderAll(ctx, latest, nil, FormatOptions{User: user})
	if err != nil {
		return err
	}
	byNID := make(map[int64]*ClientEvent, len(latest))
	for i, ev := range latest {
		byNID[ev.NID] = rendered[i]
	}
	for i, p := range parents {
		t := threads[p.EventID]
		if t == nil || byNID[t.latest.LatestNID] == nil {
			continue
		}
		out[i]["m.thread"] = threadAggregation{
			LatestEvent:  byNID[t.latest.LatestNID],
			Count:        t.count,
			Participated: t.participated || p.Sender == user,
		}
	}
	return nil
}

func (e *Engine) aggregateEdits(ctx context.Context, ignored map[string]bool, roomNID int64, parents []*Event, editable []string, out []map[string]any) error {
	if len(editable) == 0 {
		return nil
	}
	cands, err := e.store.EditCandidates(ctx, roomNID, editable, editCandidates)
	if err != nil {
		return err
	}
	byParent := map[string][]storage.Edit{}
	var nids []int64
	for _, c := range cands {
		byParent[c.ParentID] = append(byParent[c.ParentID], c)
		nids = append(nids, c.NID)
	}
	if len(nids) == 0 {
		return nil
	}
	evs, err := e.eventsByNID(ctx, e.db.Read(), nil, nids)
	if err != nil {
		return err
	}
	for i, p := range parents {
		var valid []storage.Edit
		for _, c := range byParent[p.EventID] {
			if c.Sender == p.Sender && c.Type == p.Type && !ignored[c.Sender] && p.RedactedBy == nil && validEdit(evs[c.NID]) {
				valid = append(valid, c)
			}
		}
		if len(valid) == 0 {
			continue
		}
		newest := slices.MaxFunc(valid, func(a, b storage.Edit) int {
			if a.OriginTS != b.OriginTS {
				return cmpInt(a.OriginTS, b.OriginTS)
			}
			return strings.Compare(a.EventID, b.EventID)
		})
		rendered, err := e.render(ctx, evs[newest.NID], "", FormatOptions{NoBundle: true})
		if err != nil {
			return err
		}
		out[i]["m.replace"] = rendered
	}
	return nil
}

// validEdit checks what the spec asks of a replacement event itself: it
// carries m.new_content (an encrypted one carries it in its ciphertext).
func validEdit(ev *Event) bool {
	if ev == nil || ev.IsState() {
		return false
	}
	if ev.Type == "m.room.encrypted" {
		return true
	}
	return gjson.GetBytes(ev.PDU.Content, `m\.new_content`).IsObject()
}

// comparePos orders topological positions.
func comparePos(d1, s1, d2, s2 int64) int {
	if d1 != d2 {
		return cmpInt(d1, d2)
	}
	return cmpInt(s1, s2)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func deref2(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
