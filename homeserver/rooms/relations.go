package rooms

import (
	"context"
	"encoding/json"

	"github.com/parley-chat/parley/storage"
)

// bundle adds m.relations to events that have edits, thread replies or
// references (the server-side aggregations of the spec).
func (e *Engine) bundle(ctx context.Context, user string, evs []*Event, out []*ClientEvent) error {
	ids := make([]string, 0, len(evs))
	for _, ev := range evs {
		if ev.RedactedBy == nil {
			ids = append(ids, ev.EventID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	children, err := e.relatedTo(ctx, ids)
	if err != nil {
		return err
	}
	for i, ev := range evs {
		rel := children[ev.EventID]
		if len(rel) == 0 {
			continue
		}
		agg := map[string]any{}
		var thread struct {
			count        int
			latest       *Event
			participated bool
		}
		var refs []map[string]string
		var edit *Event
		for _, c := range rel {
			switch deref2(c.RelType) {
			case "m.thread":
				thread.count++
				if thread.latest == nil || deref(c.StreamPos) > deref(thread.latest.StreamPos) {
					thread.latest = c
				}
				thread.participated = thread.participated || c.Sender == user
			case "m.replace":
				// Only the original sender's edits count.
				if c.Sender == ev.Sender && c.Type == ev.Type && (edit == nil || deref(c.StreamPos) > deref(edit.StreamPos)) {
					edit = c
				}
			case "m.reference":
				refs = append(refs, map[string]string{"event_id": c.EventID})
			}
		}
		if thread.count > 0 {
			latest, err := e.render(ctx, thread.latest, "", FormatOptions{NoBundle: true})
			if err != nil {
				return err
			}
			thread.participated = thread.participated || ev.Sender == user
			agg["m.thread"] = map[string]any{"latest_event": latest, "count": thread.count, "current_user_participated": thread.participated}
		}
		if edit != nil {
			rendered, err := e.render(ctx, edit, "", FormatOptions{NoBundle: true})
			if err != nil {
				return err
			}
			agg["m.replace"] = rendered
		}
		if len(refs) > 0 {
			agg["m.reference"] = map[string]any{"chunk": refs}
		}
		if len(agg) == 0 {
			continue
		}
		b, _ := json.Marshal(agg)
		if out[i].Unsigned == nil {
			out[i].Unsigned = &Unsigned{}
		}
		out[i].Unsigned.Relations = b
	}
	return nil
}

func deref2(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// relatedTo loads accepted timeline events relating to the given events,
// excluding redacted ones.
func (e *Engine) relatedTo(ctx context.Context, ids []string) (map[string][]*Event, error) {
	rows, err := e.store.RelatedEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := map[string][]*Event{}
	for _, row := range rows {
		if row.RedactedBy != nil || row.Status != storage.EventAccepted || row.StreamPos == nil {
			continue
		}
		m, err := e.metaByNID(ctx, e.db.Read(), row.RoomNID)
		if err != nil {
			return nil, err
		}
		ev, err := fromRow(row, m.Version, m.ID)
		if err != nil {
			return nil, err
		}
		out[*row.RelatesTo] = append(out[*row.RelatesTo], ev)
	}
	return out, nil
}
