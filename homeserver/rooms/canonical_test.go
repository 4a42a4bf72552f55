package rooms

import (
	"testing"

	"github.com/parley-chat/parley/internal/mxerr"
)

func TestCheckCanonical(t *testing.T) {
	cases := []struct {
		name, in string
		ok       bool
	}{
		{"plain", `{"body":"hi","n":1,"l":[true,null,{"x":-5}]}`, true},
		{"largest safe integer", `{"n":9007199254740991}`, true},
		{"smallest safe integer", `{"n":-9007199254740991}`, true},
		{"2^53", `{"n":9007199254740992}`, false},
		{"-(2^53)", `{"n":-9007199254740992}`, false},
		{"beyond int64", `{"n":12345678901234567890}`, false},
		{"fraction", `{"n":1.5}`, false},
		{"integral fraction", `{"n":1.0}`, false},
		{"exponent", `{"n":1e3}`, false},
		{"nested float", `{"a":{"b":[1,2,0.5]}}`, false},
		{"duplicate key", `{"a":1,"a":2}`, false},
		{"lone surrogate", `{"s":"\ud800"}`, false},
		{"paired surrogates", `{"s":"\ud83d\ude00"}`, true},
		{"invalid UTF-8", "{\"s\":\"\xff\"}", false},
		{"truncated", `{"a":`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := checkCanonical([]byte(c.in))
			if c.ok != (err == nil) {
				t.Fatalf("%s: err %v, want ok=%v", c.in, err, c.ok)
			}
			if err != nil && !mxerr.IsCode(err, "M_BAD_JSON") {
				t.Fatalf("%s: %v is not M_BAD_JSON", c.in, err)
			}
		})
	}
}
