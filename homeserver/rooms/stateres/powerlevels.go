package stateres

import (
	"math"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/exgjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// infinitePower is the level of a room creator in room versions with privileged
// creators. Finite levels are clamped below it so creators always sort first.
const infinitePower = math.MaxInt64

// defaultCreatorPower is the creator's level in rooms without a power levels event.
const defaultCreatorPower = 100

// parseLevel reads one power level value per the room version's rules: v10+
// accepts only JSON numbers, older versions also accept what Python's int()
// accepts (numeric strings with surrounding spaces, booleans, and floats, which
// are truncated). ok is false for anything else.
func parseLevel(version id.RoomVersion, val gjson.Result) (level int64, ok bool) {
	switch val.Type {
	case gjson.Number:
		level, ok = val.Int(), true
	case gjson.String, gjson.True, gjson.False:
		if version.ValidatePowerLevelInts() {
			return 0, false
		}
		switch val.Type {
		case gjson.True:
			level, ok = 1, true
		case gjson.False:
			level, ok = 0, true
		default:
			parsed, err := strconv.ParseInt(strings.TrimSpace(val.Str), 10, 64)
			level, ok = parsed, err == nil
		}
	}
	if level == infinitePower {
		level = infinitePower - 1
	}
	return level, ok
}

// userLevel returns the level that power levels content gives user: their
// users entry, else users_default, else 0. Malformed values count as absent.
func userLevel(version id.RoomVersion, content []byte, user id.UserID) int64 {
	if level, ok := parseLevel(version, gjson.GetBytes(content, exgjson.Path("users", string(user)))); ok {
		return level
	}
	if level, ok := parseLevel(version, gjson.GetBytes(content, "users_default")); ok {
		return level
	}
	return 0
}

// isCreator reports whether user is a room creator per the create event:
// sender and additional_creators with privileged creators (v12+), the content's
// creator field before v11, and the sender in v11.
func isCreator(version id.RoomVersion, create *pdu.PDU, user id.UserID) bool {
	switch {
	case version.PrivilegedRoomCreators():
		if create.Sender == user {
			return true
		}
		found := false
		gjson.GetBytes(create.Content, "additional_creators").ForEach(func(_, value gjson.Result) bool {
			found = value.Type == gjson.String && id.UserID(value.Str) == user
			return !found
		})
		return found
	case version.CreatorInContent():
		creator := gjson.GetBytes(create.Content, "creator")
		return creator.Type == gjson.String && id.UserID(creator.Str) == user
	default:
		return create.Sender == user
	}
}

// isPowerEvent reports whether evt is a power event: power levels, join rules,
// a kick or ban (leave/ban of someone else), or the create event.
func isPowerEvent(evt *pdu.PDU) bool {
	if evt == nil || evt.StateKey == nil {
		return false
	}
	switch evt.Type {
	case "m.room.power_levels", "m.room.join_rules", "m.room.create":
		return true
	case memberType:
		membership := gjson.GetBytes(evt.Content, "membership").Str
		return (membership == "leave" || membership == "ban") && *evt.StateKey != string(evt.Sender)
	default:
		return false
	}
}
