package rooms

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// authSelection lists the state keys an event's auth events come from.
func authSelection(version id.RoomVersion, p Proto) []storage.StateKey {
	stub := &pdu.PDU{Type: p.Type, StateKey: p.StateKey, Sender: id.UserID(p.Sender), Content: []byte(p.Content)}
	if len(stub.Content) == 0 {
		stub.Content = []byte("{}")
	}
	sel := stub.AuthEventSelection(version)
	out := make([]storage.StateKey, len(sel))
	for i, k := range sel {
		out[i] = storage.StateKey{Type: k.Type, StateKey: k.StateKey}
	}
	return out
}

// noKeys refuses signing-key lookups: local events and state resolution
// never need one except for restricted joins, which are checked on receipt.
func noKeys(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
	return "", time.Time{}, errors.New("signing keys are not available here")
}

// authorize runs the auth rules against the given auth events. create is
// the room's create event (room v12 finds it by room ID, not in auth_events).
// mautrix can panic on malformed power levels: that is a rejection.
func authorize(ev *Event, authEvents []*Event, create *Event) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("auth rules failed on malformed input: %v", r)
		}
	}()
	auths := make([]*pdu.PDU, 0, len(authEvents))
	for _, a := range authEvents {
		if a != nil {
			auths = append(auths, a.PDU)
		}
	}
	getEvents := func(ids []id.EventID) ([]*pdu.PDU, error) {
		var out []*pdu.PDU
		for _, want := range ids {
			if create != nil && string(want) == create.EventID {
				out = append(out, create.PDU)
			}
		}
		return out, nil
	}
	return eventauth.Authorize(ev.Version, ev.PDU, auths, getEvents, noKeys)
}

// authError turns an auth failure into the 403 clients see, naming the rule.
func authError(err error) error {
	var afe eventauth.AuthFailError
	if errors.As(err, &afe) {
		msg := afe.Message
		if msg == "" && afe.Wrapped != nil {
			msg = afe.Wrapped.Error()
		}
		return mxerr.Forbidden("%s (auth rule %s)", msg, afe.Index).Wrap(err)
	}
	return mxerr.Forbidden("Event not allowed: %v", err).Wrap(err)
}

func membershipOf(content []byte) string {
	return gjson.GetBytes(content, "membership").String()
}

// powerLevels is the part of m.room.power_levels the engine reads for its
// own checks (auth rules are eventauth's).
type powerLevels struct {
	Users         map[string]json.Number `json:"users"`
	UsersDefault  json.Number            `json:"users_default"`
	Events        map[string]json.Number `json:"events"`
	EventsDefault json.Number            `json:"events_default"`
	StateDefault  *json.Number           `json:"state_default"`
	Ban           *json.Number           `json:"ban"`
	Kick          *json.Number           `json:"kick"`
	Redact        *json.Number           `json:"redact"`
	Invite        *json.Number           `json:"invite"`
	Notifications map[string]json.Number `json:"notifications"`
}

func num(n *json.Number, def int64) int64 {
	if n == nil {
		return def
	}
	if v, err := n.Int64(); err == nil {
		return v
	}
	if f, err := n.Float64(); err == nil {
		return int64(f)
	}
	return def
}

// levels answers power questions about a room's state.
type levels struct {
	pl       *powerLevels
	creators map[string]bool // room v12: creators outrank everyone
	creator  string          // before v12 without power levels: the creator has 100
}

// newLevels reads the power levels and create events.
func newLevels(plEv, create *Event) levels {
	l := levels{creators: map[string]bool{}}
	if plEv != nil {
		var pl powerLevels
		if json.Unmarshal(plEv.Content(), &pl) == nil {
			l.pl = &pl
		}
	}
	if create != nil {
		if create.Version.PrivilegedRoomCreators() {
			l.creators[create.Sender] = true
			for _, c := range gjson.GetBytes(create.PDU.Content, "additional_creators").Array() {
				l.creators[c.String()] = true
			}
		}
		l.creator = create.Sender
		if c := gjson.GetBytes(create.PDU.Content, "creator").String(); c != "" && !create.Version.PrivilegedRoomCreators() {
			l.creator = c
		}
	}
	return l
}

// infinite stands for a v12 creator's unbounded power.
const infinite = int64(1) << 62

// user returns a user's power level.
func (l levels) user(u string) int64 {
	if l.creators[u] {
		return infinite
	}
	if l.pl == nil {
		if u == l.creator {
			return 100
		}
		return 0
	}
	if v, ok := l.pl.Users[u]; ok {
		n := v
		return num(&n, 0)
	}
	return num(&l.pl.UsersDefault, 0)
}

// event returns the level needed to send an event type.
func (l levels) event(typ string, state bool) int64 {
	if l.pl == nil {
		if state {
			return 50
		}
		return 0
	}
	if v, ok := l.pl.Events[typ]; ok {
		n := v
		return num(&n, 0)
	}
	if state {
		return num(l.pl.StateDefault, 50)
	}
	return num(&l.pl.EventsDefault, 0)
}

func (l levels) redact() int64 {
	if l.pl == nil {
		return 50
	}
	return num(l.pl.Redact, 50)
}

func (l levels) invite() int64 {
	if l.pl == nil {
		return 0
	}
	return num(l.pl.Invite, 0)
}

func (l levels) notification(key string) int64 {
	if l.pl != nil {
		if v, ok := l.pl.Notifications[key]; ok {
			n := v
			return num(&n, 50)
		}
	}
	return 50
}
