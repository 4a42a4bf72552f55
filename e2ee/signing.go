package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
)

// signedObject is a JSON object that carries signatures, parsed the way
// the appendix "Signing JSON" checks them.
type signedObject struct {
	// canonical is the whole object in canonical JSON, unsigned dropped.
	canonical []byte
	// payload is what signatures cover: canonical JSON without signatures
	// and unsigned.
	payload []byte
	fields  map[string]json.RawMessage
	// signatures maps entity → key ID → unpadded base64 signature.
	signatures map[string]map[string]string
}

var errNotObject = errors.New("not a JSON object")

// parseSigned canonicalises raw (rejecting duplicate names, floats and
// out-of-range integers) and splits off its signatures.
func parseSigned(raw []byte) (*signedObject, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, errNotObject
	}
	c := json.RawMessage(bytes.Clone(raw))
	if err := canonicaljson.Canonicalize(&c); err != nil {
		return nil, fmt.Errorf("not canonicalisable JSON: %w", err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(c, &fields); err != nil {
		return nil, err
	}
	o := &signedObject{fields: fields, signatures: map[string]map[string]string{}}
	if s, ok := fields["signatures"]; ok {
		if err := json.Unmarshal(s, &o.signatures); err != nil {
			return nil, errors.New("signatures must map entities to key IDs to strings")
		}
		if o.signatures == nil {
			o.signatures = map[string]map[string]string{}
		}
	}
	var err error
	if _, ok := fields["unsigned"]; ok {
		if c, err = sjson.DeleteBytes(c, "unsigned"); err != nil {
			return nil, err
		}
		delete(o.fields, "unsigned")
	}
	o.canonical = c
	if o.payload, err = sjson.DeleteBytes(bytes.Clone(c), "signatures"); err != nil {
		return nil, err
	}
	return o, nil
}

// str returns a top-level string field, "" if absent or not a string.
func (o *signedObject) str(name string) string {
	var s string
	if raw, ok := o.fields[name]; ok {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}

// stringMap returns a top-level object of strings; ok is false if the
// field is missing or has another shape.
func (o *signedObject) stringMap(name string) (map[string]string, bool) {
	raw, ok := o.fields[name]
	if !ok {
		return nil, false
	}
	var m map[string]string
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return nil, false
	}
	return m, true
}

// stringList returns a top-level array of strings; ok is false if the
// field is missing or has another shape.
func (o *signedObject) stringList(name string) ([]string, bool) {
	raw, ok := o.fields[name]
	if !ok {
		return nil, false
	}
	var l []string
	if json.Unmarshal(raw, &l) != nil || l == nil {
		return nil, false
	}
	return l, true
}

// verify checks that entity signed the object with keyID ("ed25519:…"),
// whose public key is pub (unpadded base64).
func (o *signedObject) verify(entity, keyID, pub string) bool {
	sig, ok := o.signatures[entity][keyID]
	return ok && verifyEd25519(o.payload, sig, pub)
}

// withSignatures returns the object in canonical JSON carrying exactly the
// given signatures (none when sigs is empty).
func (o *signedObject) withSignatures(sigs map[string]map[string]string) (string, error) {
	if len(sigs) == 0 {
		return string(o.payload), nil
	}
	raw, err := json.Marshal(sigs)
	if err != nil {
		return "", err
	}
	out, err := sjson.SetRawBytes(bytes.Clone(o.payload), "signatures", raw)
	if err != nil {
		return "", err
	}
	c := json.RawMessage(out)
	if err := canonicaljson.Canonicalize(&c); err != nil {
		return "", err
	}
	return string(c), nil
}

// samePayload reports whether two objects are equal once signatures and
// unsigned are ignored.
func (o *signedObject) samePayload(other *signedObject) bool {
	return bytes.Equal(o.payload, other.payload)
}

// decodeBase64 accepts unpadded (and, leniently, padded) standard base64.
func decodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// validEd25519Key reports whether s is an unpadded base64 ed25519 key.
func validEd25519Key(s string) bool {
	b, err := decodeBase64(s)
	return err == nil && len(b) == ed25519.PublicKeySize
}

// verifyEd25519 checks a signature of payload; malformed keys or
// signatures simply do not verify.
func verifyEd25519(payload []byte, sig, pub string) bool {
	pk, err := decodeBase64(pub)
	if err != nil || len(pk) != ed25519.PublicKeySize {
		return false
	}
	sb, err := decodeBase64(sig)
	if err != nil || len(sb) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pk, payload, sb)
}

// mergeSignatures adds add's signatures to into (add wins on conflicts).
func mergeSignatures(into, add map[string]map[string]string) {
	for entity, keys := range add {
		if into[entity] == nil {
			into[entity] = map[string]string{}
		}
		maps.Copy(into[entity], keys)
	}
}

// sortedKeys returns a map's keys in order (stable responses and locks).
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
