package rooms

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"testing"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// The cryptographic test vectors of the spec's appendix.
var vectorKey = func() ed25519.PrivateKey {
	seed, err := base64.RawStdEncoding.DecodeString("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
	if err != nil {
		panic(err)
	}
	return ed25519.NewKeyFromSeed(seed)
}()

func TestJSONSigningVectors(t *testing.T) {
	for _, tc := range []struct{ in, sig string }{
		{`{}`, "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"},
		{`{"one": 1, "two": "Two"}`, "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"},
	} {
		canon := canon(t, []byte(tc.in))
		got := base64.RawStdEncoding.EncodeToString(ed25519.Sign(vectorKey, canon))
		if got != tc.sig {
			t.Errorf("signature of %s = %s, want %s", tc.in, got, tc.sig)
		}
	}
}

func TestEventSigningVectors(t *testing.T) {
	t.Run("minimal event", func(t *testing.T) {
		in := `{"room_id":"!x:domain","sender":"@a:domain","origin":"domain","origin_server_ts":1000000,
			"type":"X","content":{},"prev_events":[],"auth_events":[],"depth":3,"unsigned":{"age_ts":1000000}}`
		var p pdu.PDU
		if err := jsonv2.Unmarshal([]byte(in), &p); err != nil {
			t.Fatal(err)
		}
		if err := p.Sign(id.RoomV1, "domain", "ed25519:1", vectorKey); err != nil {
			t.Fatal(err)
		}
		if got := base64.RawStdEncoding.EncodeToString(p.Hashes.SHA256); got != "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos" {
			t.Errorf("content hash %s", got)
		}
		if got := p.Signatures["domain"]["ed25519:1"]; got != "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg" {
			t.Errorf("signature %s", got)
		}
	})
	t.Run("redactable event", func(t *testing.T) {
		// RoomV1PDU always writes prev_events/auth_events/depth, which this
		// vector lacks, so the algorithm is applied to the JSON object
		// itself: content hash over the event without signatures, unsigned
		// and hashes; signature over the redacted event.
		in := map[string]any{
			"content": map[string]any{"body": "Here is the message content"}, "event_id": "$0:domain", "origin": "domain",
			"origin_server_ts": 1000000, "type": "m.room.message", "room_id": "!r:domain", "sender": "@u:domain",
			"unsigned": map[string]any{"age_ts": 1000000},
		}
		forHash := map[string]any{}
		for k, v := range in {
			if k != "unsigned" && k != "signatures" && k != "hashes" {
				forHash[k] = v
			}
		}
		b, _ := jsonv2.Marshal(forHash)
		sum := sha256.Sum256(canon(t, b))
		if got := base64.RawStdEncoding.EncodeToString(sum[:]); got != "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g" {
			t.Fatalf("content hash %s", got)
		}
		redacted := map[string]any{"hashes": map[string]any{"sha256": base64.RawStdEncoding.EncodeToString(sum[:])}}
		for _, k := range []string{"event_id", "origin", "origin_server_ts", "type", "room_id", "sender"} {
			redacted[k] = in[k]
		}
		redacted["content"] = jsontextObject(pdu.RedactContent("m.room.message", []byte(`{"body":"Here is the message content"}`), id.RoomV1))
		b, _ = jsonv2.Marshal(redacted)
		sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(vectorKey, canon(t, b)))
		if sig != "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA" {
			t.Fatalf("signature %s", sig)
		}
	})
}

func jsontextObject(b []byte) map[string]any {
	var m map[string]any
	_ = jsonv2.Unmarshal(b, &m)
	return m
}

// canon returns the canonical JSON of b.
func canon(t *testing.T, b []byte) []byte {
	t.Helper()
	v := jsontext.Value(b)
	if err := canonicaljson.Canonicalize(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
