package sync

import (
	"strconv"
	"strings"

	"github.com/parley-chat/parley/internal/mxerr"
)

// Token is a position in every stream sync reads. It is opaque to
// clients; its first field is the events stream position, so /messages
// accepts it as a pagination token.
type Token struct {
	Events      int64
	AccountData int64
	Receipts    int64
	ToDevice    int64
	DeviceLists int64
	// Typing and Presence are millisecond timestamps of the newest change.
	Typing   int64
	Presence int64
}

const tokenFields = 7

// String encodes the token as "s<events>_<account data>_…".
func (t Token) String() string {
	var b strings.Builder
	b.WriteByte('s')
	for i, v := range t.fields() {
		if i > 0 {
			b.WriteByte('_')
		}
		b.WriteString(strconv.FormatInt(v, 10))
	}
	return b.String()
}

func (t Token) fields() [tokenFields]int64 {
	return [tokenFields]int64{t.Events, t.AccountData, t.Receipts, t.ToDevice, t.DeviceLists, t.Typing, t.Presence}
}

// ParseToken decodes a since token; tokens from before a stream existed
// (fewer fields) read the missing streams as zero.
func ParseToken(s string) (Token, error) {
	bad := mxerr.InvalidParam("Invalid since token %q", s)
	if !strings.HasPrefix(s, "s") || len(s) > 200 {
		return Token{}, bad
	}
	parts := strings.Split(s[1:], "_")
	if len(parts) == 0 || len(parts) > tokenFields {
		return Token{}, bad
	}
	var f [tokenFields]int64
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 {
			return Token{}, bad
		}
		f[i] = v
	}
	return Token{Events: f[0], AccountData: f[1], Receipts: f[2], ToDevice: f[3], DeviceLists: f[4], Typing: f[5], Presence: f[6]}, nil
}

// max returns the field-wise maximum of two tokens.
func (t Token) max(o Token) Token {
	a, b := t.fields(), o.fields()
	for i := range a {
		a[i] = max(a[i], b[i])
	}
	return Token{Events: a[0], AccountData: a[1], Receipts: a[2], ToDevice: a[3], DeviceLists: a[4], Typing: a[5], Presence: a[6]}
}
