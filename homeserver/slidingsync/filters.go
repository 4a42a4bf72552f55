package slidingsync

import (
	"github.com/tidwall/gjson"

	"github.com/parley-chat/parley/homeserver/rooms"
)

// maxSpaceChildren bounds the children read of one space.
const maxSpaceChildren = 10_000

// filterData is what the lists' filters read, loaded only when a filter
// needs it.
type filterData struct {
	dm     map[string]bool
	kinds  map[string]rooms.RoomKind
	tags   map[string]map[string]bool
	spaces map[string]map[string]bool
}

func (b *builder) filterData(eligible []*rooms.SlidingRoomInfo) (*filterData, error) {
	f := &filterData{dm: b.dm, spaces: map[string]map[string]bool{}}
	var needKinds, needTags bool
	for _, l := range b.req.Lists {
		flt := l.Filters
		if flt == nil {
			continue
		}
		needKinds = needKinds || flt.IsEncrypted != nil || len(flt.RoomTypes) > 0 || len(flt.NotRoomTypes) > 0
		needTags = needTags || len(flt.Tags) > 0 || len(flt.NotTags) > 0
		for _, s := range flt.Spaces {
			if _, ok := f.spaces[s]; ok {
				continue
			}
			children, err := b.e.d.Rooms.SpaceChildren(b.ctx, b.req.UserID, s, maxSpaceChildren)
			if err != nil {
				return nil, err
			}
			set := make(map[string]bool, len(children))
			for _, c := range children {
				set[c] = true
			}
			f.spaces[s] = set
		}
	}
	if needKinds {
		ids := make([]string, len(eligible))
		for i, r := range eligible {
			ids[i] = r.RoomID
		}
		var err error
		if f.kinds, err = b.e.d.Rooms.SlidingRoomKinds(b.ctx, ids); err != nil {
			return nil, err
		}
	}
	if needTags {
		raw, err := b.e.store.RoomTags(b.ctx, b.req.UserID)
		if err != nil {
			return nil, err
		}
		f.tags = make(map[string]map[string]bool, len(raw))
		for room, c := range raw {
			set := map[string]bool{}
			gjson.Get(c, "tags").ForEach(func(k, _ gjson.Result) bool {
				set[k.String()] = true
				return true
			})
			f.tags[room] = set
		}
	}
	return f, nil
}

// typeIn reports whether a room type (nil: none) is among the filter's.
func typeIn(t *string, list []*string) bool {
	for _, x := range list {
		if (x == nil && t == nil) || (x != nil && t != nil && *x == *t) {
			return true
		}
	}
	return false
}

// passes reports whether a room passes a list's filters. An empty array
// filters nothing, as if absent.
func (f *filterData) passes(flt *Filters, r *rooms.SlidingRoomInfo) bool {
	if flt == nil {
		return true
	}
	if flt.IsDM != nil && f.dm[r.RoomID] != *flt.IsDM {
		return false
	}
	invited := flt.IsInvited
	if invited == nil {
		invited = flt.IsInvite
	}
	if invited != nil && (r.Membership == "invite") != *invited {
		return false
	}
	kind := f.kinds[r.RoomID]
	if flt.IsEncrypted != nil && kind.Encrypted != *flt.IsEncrypted {
		return false
	}
	if len(flt.RoomTypes) > 0 && !typeIn(kind.Type, flt.RoomTypes) {
		return false
	}
	if len(flt.NotRoomTypes) > 0 && typeIn(kind.Type, flt.NotRoomTypes) {
		return false
	}
	if len(flt.Spaces) > 0 {
		in := false
		for _, s := range flt.Spaces {
			in = in || f.spaces[s][r.RoomID]
		}
		if !in {
			return false
		}
	}
	tags := f.tags[r.RoomID]
	for _, t := range flt.NotTags {
		if tags[t] {
			return false
		}
	}
	if len(flt.Tags) > 0 {
		for _, t := range flt.Tags {
			if tags[t] {
				return true
			}
		}
		return false
	}
	return true
}
