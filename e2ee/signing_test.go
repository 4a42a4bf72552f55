package e2ee

import (
	"crypto/ed25519"
	"encoding/base64"
	"testing"

	"github.com/parley-chat/parley/storage"
)

// The appendix's test key: the seed below, entity "domain", key "ed25519:1".
func appendixKey(t *testing.T) (ed25519.PrivateKey, string) {
	t.Helper()
	seed, err := base64.RawStdEncoding.DecodeString("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
	if err != nil {
		t.Fatal(err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return priv, base64.RawStdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
}

// TestAppendixSigningVectors checks canonical JSON and signatures against
// the spec's "Cryptographic Test Vectors" (JSON Signing).
func TestAppendixSigningVectors(t *testing.T) {
	priv, pub := appendixKey(t)
	for _, tc := range []struct {
		name, in, sig string
	}{
		{"empty object", `{}`, "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"},
		{"data values", `{ "two": "Two", "one": 1 }`, "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseSigned([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			got := base64.RawStdEncoding.EncodeToString(ed25519.Sign(priv, o.payload))
			if got != tc.sig {
				t.Fatalf("signature of %s = %s, want %s", o.payload, got, tc.sig)
			}
			signed, err := o.withSignatures(map[string]map[string]string{"domain": {"ed25519:1": tc.sig}})
			if err != nil {
				t.Fatal(err)
			}
			// The signed form verifies, with unsigned data added or not.
			for _, doc := range []string{signed, signed[:len(signed)-1] + `,"unsigned":{"age_ts":922834800000}}`} {
				v, err := parseSigned([]byte(doc))
				if err != nil {
					t.Fatal(err)
				}
				if !v.verify("domain", "ed25519:1", pub) {
					t.Fatalf("%s does not verify", doc)
				}
				if v.verify("domain", "ed25519:2", pub) || v.verify("other", "ed25519:1", pub) {
					t.Fatal("verified a signature that is not there")
				}
			}
		})
	}
}

func TestSignedObjectRejects(t *testing.T) {
	priv, pub := appendixKey(t)
	good := `{"one":1,"signatures":{"domain":{"ed25519:1":"` +
		base64.RawStdEncoding.EncodeToString(ed25519.Sign(priv, []byte(`{"one":1}`))) + `"}}}`
	if o, err := parseSigned([]byte(good)); err != nil || !o.verify("domain", "ed25519:1", pub) {
		t.Fatalf("good object: %v", err)
	}
	for _, tc := range []struct{ name, doc string }{
		{"not an object", `[1]`},
		{"duplicate member", `{"one":1,"one":2}`},
		{"float", `{"one":1.5}`},
		{"integer out of range", `{"one":9007199254740993}`},
		{"signatures of the wrong shape", `{"signatures":{"domain":"x"}}`},
		{"invalid JSON", `{"one":`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseSigned([]byte(tc.doc)); err == nil {
				t.Fatalf("%s parsed", tc.doc)
			}
		})
	}
	for _, tc := range []struct{ name, doc, pub string }{
		{"tampered content", `{"one":2,"signatures":{"domain":{"ed25519:1":"` + goodSig(priv) + `"}}}`, pub},
		{"wrong key", good, base64.RawStdEncoding.EncodeToString(make([]byte, 32))},
		{"malformed key", good, "not base64!"},
		{"short key", good, "AAAA"},
		{"malformed signature", `{"one":1,"signatures":{"domain":{"ed25519:1":"%%%"}}}`, pub},
		{"short signature", `{"one":1,"signatures":{"domain":{"ed25519:1":"AAAA"}}}`, pub},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseSigned([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if o.verify("domain", "ed25519:1", tc.pub) {
				t.Fatal("verified")
			}
		})
	}
}

func goodSig(priv ed25519.PrivateKey) string {
	return base64.RawStdEncoding.EncodeToString(ed25519.Sign(priv, []byte(`{"one":1}`)))
}

func TestBetterBackupKey(t *testing.T) {
	type k = struct {
		verified     bool
		first, fwded int64
	}
	for _, tc := range []struct {
		name      string
		cur, cand k
		want      bool
	}{
		{"verified beats unverified", k{false, 0, 0}, k{true, 5, 5}, true},
		{"unverified never beats verified", k{true, 5, 5}, k{false, 0, 0}, false},
		{"lower first index wins", k{true, 3, 0}, k{true, 1, 9}, true},
		{"higher first index loses", k{false, 1, 0}, k{false, 3, 0}, false},
		{"lower forwarded count wins on equal index", k{false, 1, 2}, k{false, 1, 1}, true},
		{"higher forwarded count loses", k{false, 1, 1}, k{false, 1, 2}, false},
		{"a tie keeps the stored key", k{true, 1, 1}, k{true, 1, 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := storageKey(tc.cur.verified, tc.cur.first, tc.cur.fwded)
			cand := storageKey(tc.cand.verified, tc.cand.first, tc.cand.fwded)
			if got := betterBackupKey(cur, cand); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func storageKey(verified bool, first, forwarded int64) storage.BackupKey {
	return storage.BackupKey{IsVerified: verified, FirstMessageIndex: first, ForwardedCount: forwarded}
}
