package stateres

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"
)

// errAuthPanicked marks an authorization that eventauth aborted with a panic.
var errAuthPanicked = errors.New("stateres: authorization panicked")

// errNoSigningKeys is what the getKey handed to eventauth answers: state
// resolution never verifies server signatures itself.
var errNoSigningKeys = errors.New("stateres: signing keys are not consulted during state resolution")

// authorize runs the authorization rules on evt against the given auth events,
// which the caller selected from the partially resolved state.
//
// A panic inside eventauth (it dereferences nil when a power levels event holds
// an unparsable user level next to an unchanged one) rejects the event instead
// of crashing the server: malformed input must not take resolution down.
func (r *resolver) authorize(evt *pdu.PDU, authEvents []*pdu.PDU) (err error) {
	defer func() {
		if rec := recover(); rec != nil {
			err = fmt.Errorf("%w: %v", errAuthPanicked, rec)
		}
	}()
	if authEvents == nil {
		// A nil slice would make eventauth load evt.AuthEvents instead.
		authEvents = []*pdu.PDU{}
	}
	target, getKey := r.countersignAuthoriser(evt)
	err = eventauth.Authorize(r.version, target, authEvents, r.getEvents, getKey)
	if errors.Is(err, eventauth.ErrThirdPartyInviteNotSigned) {
		// eventauth returns this only after every earlier 3PID rule passed, but
		// its rule 5.4.1.7 reads the keys from the member event and the signed
		// block as a string, so it can never succeed. Redo just that rule.
		err = verifyThirdPartyInvite(evt, authEvents)
	}
	return err
}

// getEvents serves eventauth's lookups (the create event, in rooms whose room ID
// is the create event's ID). Missing events are left out, as eventauth expects.
func (r *resolver) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	if err := r.g.load(ids); err != nil {
		return nil, err
	}
	out := make([]*pdu.PDU, 0, len(ids))
	for _, evtID := range ids {
		if evt := r.g.get(evtID); evt != nil {
			out = append(out, evt)
		}
	}
	return out, nil
}

// refuseKeys is the getKey for events whose authorization needs no signature check.
func refuseKeys(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
	return "", time.Time{}, errNoSigningKeys
}

// countersignKey is an ephemeral key used by countersignAuthoriser.
var countersignKey = sync.OnceValue(func() ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(fmt.Errorf("stateres: generating ephemeral key: %w", err))
	}
	return priv
})

const countersignKeyID = id.KeyID("ed25519:stateres")

// countersignAuthoriser prepares a restricted join for eventauth. Rule 5.2.1
// (the join is signed by the join_authorised_via_users_server's server) depends
// on the event alone, was enforced when the event was received, and is not part
// of state resolution; but eventauth always re-verifies it through getKey. So the
// event is handed over as a copy countersigned by an ephemeral key that getKey
// returns, which makes that one check pass and leaves every other rule intact.
func (r *resolver) countersignAuthoriser(evt *pdu.PDU) (*pdu.PDU, pdu.GetKeyFunc) {
	via := id.UserID(gjson.GetBytes(evt.Content, "join_authorised_via_users_server").Str)
	if evt.Type != memberType || via == "" {
		return evt, refuseKeys
	}
	server := via.Homeserver()
	priv := countersignKey()
	clone := evt.Clone()
	clone.Signatures = nil
	if err := clone.Sign(r.version, server, countersignKeyID, priv); err != nil {
		return evt, refuseKeys
	}
	pub := id.SigningKey(base64.RawStdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)))
	return clone, func(serverName string, keyID id.KeyID, eventTime time.Time) (id.SigningKey, time.Time, error) {
		if serverName != server || keyID != countersignKeyID {
			return refuseKeys(serverName, keyID, eventTime)
		}
		// Valid exactly until the event's timestamp, which the validity check accepts.
		return pub, eventTime, nil
	}
}

// verifyThirdPartyInvite applies auth rule 5.4.1.7: allow if any signature in
// content.third_party_invite.signed matches a public key of the
// m.room.third_party_invite event (public_key or public_keys[].public_key).
func verifyThirdPartyInvite(evt *pdu.PDU, authEvents []*pdu.PDU) error {
	signed := gjson.GetBytes(evt.Content, "third_party_invite.signed")
	token := signed.Get("token").Str
	var invite *pdu.PDU
	for _, ae := range authEvents {
		if key, ok := keyOf(ae); ok && key.Type == "m.room.third_party_invite" && key.StateKey == token {
			invite = ae
		}
	}
	if invite == nil || !signed.IsObject() {
		return eventauth.ErrThirdPartyInviteNotFound
	}
	keys := []string{gjson.GetBytes(invite.Content, "public_key").Str}
	gjson.GetBytes(invite.Content, "public_keys").ForEach(func(_, value gjson.Result) bool {
		keys = append(keys, value.Get("public_key").Str)
		return true
	})
	for _, key := range keys {
		if key == "" {
			continue
		}
		if signutil.VerifyJSONAny(normalizeKey(key), json.RawMessage(signed.Raw)) == nil {
			return nil
		}
	}
	return eventauth.ErrThirdPartyInviteNotSigned
}

// normalizeKey converts a padded or URL-safe base64 key to the unpadded
// standard encoding that signutil decodes.
func normalizeKey(key string) id.SigningKey {
	key = strings.TrimRight(key, "=")
	key = strings.NewReplacer("-", "+", "_", "/").Replace(key)
	return id.SigningKey(key)
}
