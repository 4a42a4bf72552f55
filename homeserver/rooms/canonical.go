package rooms

import (
	"bytes"
	"encoding/json/jsontext"
	"errors"
	"io"
	"strconv"

	"github.com/parley-chat/parley/internal/mxerr"
)

// Canonical JSON (appendices: "Canonical JSON") allows only integers in
// [-(2^53)+1, 2^53-1], no fractions or exponents, no duplicate keys and
// valid UTF-8. Content that breaks these rules cannot be hashed and signed.
const maxSafeInteger = 1<<53 - 1

// checkCanonical returns an M_BAD_JSON error naming the first thing in b
// that canonical JSON cannot carry.
func checkCanonical(b []byte) error {
	// The decoder rejects duplicate object names and invalid UTF-8,
	// unpaired surrogate escapes included, by default.
	dec := jsontext.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.ReadToken()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			var se *jsontext.SyntacticError
			if errors.As(err, &se) {
				return mxerr.BadJSON("Content is not valid JSON at %s: %v", se.JSONPointer, se.Err)
			}
			return mxerr.BadJSON("Content is not valid JSON: %v", err)
		}
		if tok.Kind() != '0' {
			continue
		}
		lit := tok.String()
		if bytes.ContainsAny([]byte(lit), ".eE") {
			return mxerr.BadJSON("Number %s at %s is not an integer: canonical JSON has no fractions or exponents", lit, dec.StackPointer())
		}
		n, err := strconv.ParseInt(lit, 10, 64)
		if err != nil || n > maxSafeInteger || n < -maxSafeInteger {
			return mxerr.BadJSON("Integer %s at %s is outside [-(2^53)+1, 2^53-1]", lit, dec.StackPointer())
		}
	}
}
