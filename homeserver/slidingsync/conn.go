package slidingsync

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// unknownPos is the error that makes a client start a new connection.
func unknownPos() *mxerr.Error {
	return mxerr.Custom(400, "M_UNKNOWN_POS", "Unknown or expired pos: start a new connection without one")
}

// posToken is a decoded pos: "s<events>_<connection>_<seq>". The events
// position comes first so that /messages and /relations accept a pos as
// they accept a /sync next_batch.
type posToken struct {
	Events, Conn, Seq int64
}

func (p posToken) String() string {
	return fmt.Sprintf("s%d_%d_%d", p.Events, p.Conn, p.Seq)
}

func parsePos(s string) (posToken, bool) {
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return posToken{}, false
	}
	parts := strings.Split(rest, "_")
	if len(parts) != 3 {
		return posToken{}, false
	}
	var v [3]int64
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 || (i > 0 && n == 0) {
			return posToken{}, false
		}
		v[i] = n
	}
	return posToken{Events: v[0], Conn: v[1], Seq: v[2]}, true
}

// streams are where the extensions had reached at a pos; an extension
// that was off has no entry.
type streams struct {
	AccountData *int64 `json:"ad,omitempty"`
	Receipts    *int64 `json:"rc,omitempty"`
	Typing      *int64 `json:"ty,omitempty"`
	ToDevice    *int64 `json:"td,omitempty"`
	DeviceLists *int64 `json:"dl,omitempty"`
}

// connection is what the request's pos says the client holds.
type connection struct {
	isNew     bool
	nid, seq  int64
	eventsPos int64
	streams   streams
	// scope are the hashes of the rooms the extensions covered.
	scope []uint64
}

// roomState is what the client holds of one room. It is stored as JSON,
// one row per room and response that changed it.
type roomState struct {
	// Pos is the events position the client's copy of the room reaches.
	Pos int64 `json:"p"`
	// Stripped: the client holds the stripped state only.
	Stripped bool `json:"s,omitempty"`
	// Have is how many of the newest events up to Pos the client holds
	// without a gap (-1: every event).
	Have int `json:"h"`
	// Spec is the digest of the required_state the room was last sent
	// with.
	Spec string `json:"c,omitempty"`
	DM   bool   `json:"d,omitempty"`
	// Lazy are the members the client holds from lazy loading.
	Lazy []string `json:"l,omitempty"`
	// Heroes is a digest of the heroes last sent.
	Heroes string `json:"e,omitempty"`
}

// maxLazyRemembered bounds the lazily loaded members remembered per room;
// forgetting some only means sending them again.
const maxLazyRemembered = 100

func decodeRoomState(s string) (*roomState, error) {
	var st roomState
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return nil, fmt.Errorf("sliding sync: stored room state: %w", err)
	}
	return &st, nil
}

func (st *roomState) encode() string {
	b, _ := json.Marshal(st)
	return string(b)
}

func digest(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// roomHash is a room's entry in a scope.
func roomHash(room string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(room))
	return h.Sum64()
}

func encodeScope(rooms []string) []byte {
	hs := make([]uint64, 0, len(rooms))
	for _, r := range rooms {
		hs = append(hs, roomHash(r))
	}
	slices.Sort(hs)
	hs = slices.Compact(hs)
	out := make([]byte, 0, 8*len(hs))
	for _, h := range hs {
		out = binary.BigEndian.AppendUint64(out, h)
	}
	return out
}

func decodeScope(b []byte) []uint64 {
	out := make([]uint64, 0, len(b)/8)
	for len(b) >= 8 {
		out = append(out, binary.BigEndian.Uint64(b))
		b = b[8:]
	}
	return out
}

// inScope reports whether a room was in the scope of the client's pos.
func (c *connection) inScope(room string) bool {
	if c.isNew {
		return false
	}
	_, ok := slices.BinarySearch(c.scope, roomHash(room))
	return ok
}

// open reads the connection a request's pos names.
func (e *Engine) open(ctx context.Context, req *Request) (*connection, error) {
	if req.Pos == "" {
		return &connection{isNew: true}, nil
	}
	t, ok := parsePos(req.Pos)
	if !ok {
		return nil, unknownPos()
	}
	p, err := e.store.PositionGet(ctx, t.Conn, t.Seq)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, unknownPos()
	}
	if err != nil {
		return nil, err
	}
	// A pos is not a secret: it must belong to this user, device and
	// connection.
	if p.UserID != req.UserID || p.DeviceID != req.DeviceID || p.ConnID != req.ConnID || p.EventsPos != t.Events {
		return nil, unknownPos()
	}
	now := e.now().UnixMilli()
	if now-p.UsedTS > e.cfg.ConnectionLifetime.Milliseconds() {
		return nil, unknownPos()
	}
	if now-p.UsedTS > touchEvery.Milliseconds() {
		if err := e.store.Touch(ctx, p.ConnNID, now); err != nil {
			return nil, err
		}
	}
	c := &connection{nid: p.ConnNID, seq: p.Seq, eventsPos: p.EventsPos, scope: decodeScope(p.Scope)}
	if err := json.Unmarshal([]byte(p.Streams), &c.streams); err != nil {
		return nil, fmt.Errorf("sliding sync: stored streams: %w", err)
	}
	return c, nil
}
