package slidingsync

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
)

// stateSpec is one rule's required_state with $ME resolved, in a
// canonical form that can be compared and stored.
type stateSpec struct {
	Include []elem `json:"i,omitempty"`
	Exclude []elem `json:"x,omitempty"`
	Lazy    bool   `json:"l,omitempty"`
}

// elem matches a (type, state key); nil fields match anything.
type elem struct {
	T *string `json:"t,omitempty"`
	K *string `json:"k,omitempty"`
}

func (e elem) matches(typ, key string) bool {
	return (e.T == nil || *e.T == typ) && (e.K == nil || *e.K == key)
}

func cmpPtr(a, b *string) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return cmp.Compare(*a, *b)
}

func cmpElem(a, b elem) int {
	if c := cmpPtr(a.T, b.T); c != 0 {
		return c
	}
	return cmpPtr(a.K, b.K)
}

func canonElems(in []StateElement, user string) []elem {
	out := make([]elem, 0, len(in))
	for _, el := range in {
		e := elem{T: el.Type, K: el.StateKey}
		if e.K != nil && *e.K == stateKeyMe {
			u := user
			e.K = &u
		}
		out = append(out, e)
	}
	slices.SortFunc(out, cmpElem)
	return slices.CompactFunc(out, func(a, b elem) bool { return cmpElem(a, b) == 0 })
}

// newSpec canonicalises a request's required_state for a user.
func newSpec(rs *RequiredState, user string) stateSpec {
	if rs == nil {
		return stateSpec{}
	}
	s := stateSpec{Lazy: rs.LazyMembers}
	var inc []StateElement
	for _, el := range rs.Include {
		if el.StateKey != nil && *el.StateKey == stateKeyLazy {
			if el.Type == nil || *el.Type == "m.room.member" {
				s.Lazy = true
			}
			continue
		}
		inc = append(inc, el)
	}
	s.Include = canonElems(inc, user)
	s.Exclude = canonElems(rs.Exclude, user)
	return s
}

// match reports whether the spec returns the state event (type, key).
// With lazy members, member events match only elements naming their state
// key: the rest come lazily.
func (s *stateSpec) match(typ, key string) bool {
	lazyMember := s.Lazy && typ == "m.room.member"
	in := false
	for _, e := range s.Include {
		if lazyMember && e.K == nil {
			continue
		}
		if e.matches(typ, key) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	for _, e := range s.Exclude {
		if e.matches(typ, key) {
			return false
		}
	}
	return true
}

// allMembers reports whether the spec returns every member event.
func (s *stateSpec) allMembers() bool {
	if s.Lazy {
		return false
	}
	covers := func(es []elem) bool {
		for _, e := range es {
			if e.K == nil && (e.T == nil || *e.T == "m.room.member") {
				return true
			}
		}
		return false
	}
	return covers(s.Include) && !slices.ContainsFunc(s.Exclude, func(e elem) bool { return e.T == nil || *e.T == "m.room.member" })
}

func cmpSpec(a, b stateSpec) int {
	if c := slices.CompareFunc(a.Include, b.Include, cmpElem); c != 0 {
		return c
	}
	if c := slices.CompareFunc(a.Exclude, b.Exclude, cmpElem); c != 0 {
		return c
	}
	switch {
	case a.Lazy == b.Lazy:
		return 0
	case a.Lazy:
		return 1
	}
	return -1
}

// roomSpec is the union of the specs of every rule a room matches: a
// state event is returned if any of them returns it.
type roomSpec []stateSpec

// add merges a spec in, keeping the union canonical.
func (r roomSpec) add(s stateSpec) roomSpec {
	if i, found := slices.BinarySearchFunc(r, s, cmpSpec); !found {
		r = slices.Insert(r, i, s)
	}
	return r
}

func (r roomSpec) match(typ, key string) bool {
	for i := range r {
		if r[i].match(typ, key) {
			return true
		}
	}
	return false
}

// lazy: members load lazily when some rule asks so and none returns
// every member anyway.
func (r roomSpec) lazy() bool {
	lazy := false
	for i := range r {
		if r[i].allMembers() {
			return false
		}
		lazy = lazy || r[i].Lazy
	}
	return lazy
}

// Bounds of the configs a connection remembers: larger ones, or more,
// are not remembered, and a room whose config grows from one of them gets
// all of the state the new config asks for.
const (
	maxStoredSpec = 16 << 10
	maxSpecs      = 200
)

// key is the spec's canonical JSON.
func (r roomSpec) key() string {
	if len(r) == 0 {
		return ""
	}
	b, _ := json.Marshal(r)
	return string(b)
}

// specDigest names a spec key in room state ("" for no spec).
func specDigest(key string) string {
	if key == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:12])
}

// parseSpec reads a spec key.
func parseSpec(key string) (roomSpec, bool) {
	if key == "" {
		return nil, true
	}
	var r roomSpec
	if json.Unmarshal([]byte(key), &r) != nil {
		return nil, false
	}
	return r, true
}
