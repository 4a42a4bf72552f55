package rooms

import (
	"strconv"
	"strings"

	"github.com/parley-chat/parley/internal/mxerr"
)

// Position is a place in a room's timeline: topological (depth, stream)
// or, from a sync token, a stream position only.
type Position struct {
	Depth, Stream int64
	// StreamOnly marks a position taken from a sync token.
	StreamOnly bool
}

// String encodes a topological position ("t<depth>_<stream>").
func (p Position) String() string {
	if p.StreamOnly {
		return "s" + strconv.FormatInt(p.Stream, 10)
	}
	return "t" + strconv.FormatInt(p.Depth, 10) + "_" + strconv.FormatInt(p.Stream, 10)
}

// ParsePosition accepts a /messages token, a prev_batch or a sync token
// (whose first field is the events stream position).
func ParsePosition(s string) (Position, error) {
	bad := mxerr.InvalidParam("Invalid pagination token %q", s)
	switch {
	case strings.HasPrefix(s, "t"):
		d, st, ok := strings.Cut(s[1:], "_")
		if !ok {
			return Position{}, bad
		}
		depth, err1 := strconv.ParseInt(d, 10, 64)
		stream, err2 := strconv.ParseInt(st, 10, 64)
		if err1 != nil || err2 != nil || depth < 0 || stream < 0 {
			return Position{}, bad
		}
		return Position{Depth: depth, Stream: stream}, nil
	case strings.HasPrefix(s, "s"):
		f := s[1:]
		if i := strings.IndexAny(f, "_."); i >= 0 {
			f = f[:i]
		}
		stream, err := strconv.ParseInt(f, 10, 64)
		if err != nil || stream < 0 {
			return Position{}, bad
		}
		return Position{Stream: stream, StreamOnly: true}, nil
	}
	return Position{}, bad
}
