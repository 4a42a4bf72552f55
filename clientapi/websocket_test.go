package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/gorilla/websocket"

	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/filter"
	"github.com/parley-chat/parley/homeserver/ratelimit"
	"github.com/parley-chat/parley/homeserver/rooms"
	syncengine "github.com/parley-chat/parley/homeserver/sync"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

func TestParseFrame(t *testing.T) {
	long := strings.Repeat("i", maxRequestID+1)
	for _, tc := range []struct {
		name, in, code, id, typ string
	}{
		{"not JSON", `{nope`, "M_NOT_JSON", "", ""},
		{"empty", ``, "M_NOT_JSON", "", ""},
		{"array", `[1,2]`, "M_BAD_JSON", "", ""},
		{"string", `"sync"`, "M_BAD_JSON", "", ""},
		{"id not a string", `{"type":"send","id":5}`, "M_BAD_JSON", "", ""},
		{"id too long", `{"type":"send","id":"` + long + `"}`, "M_INVALID_PARAM", "", ""},
		{"wrong field type keeps the id", `{"type":"send","id":"a1","room_id":7}`, "M_BAD_JSON", "a1", ""},
		{"no type", `{"id":"a2"}`, "M_MISSING_PARAM", "a2", ""},
		{"ok", ` {"type":"send","id":"a3","room_id":"!r:x"} `, "", "a3", "send"},
		{"unknown fields are ignored", `{"type":"ack","next_batch":"s1","future":[1]}`, "", "", "ack"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseFrame([]byte(tc.in))
			if got := errcode(err); got != tc.code {
				t.Fatalf("errcode %q, want %q (%v)", got, tc.code, err)
			}
			if f.ID != tc.id || (tc.code == "" && f.Type != tc.typ) {
				t.Fatalf("frame %+v", f)
			}
		})
	}
}

func errcode(err error) string {
	if err == nil {
		return ""
	}
	if me, ok := mxerr.As(err); ok {
		return me.Code
	}
	return "not a Matrix error"
}

func TestFilterParam(t *testing.T) {
	for _, tc := range []struct{ in, want, code string }{
		{``, "", ""},
		{`null`, "", ""},
		{`"42"`, "42", ""},
		{`{"room":{}}`, `{"room":{}}`, ""},
		{`"{sneaky"`, "", "M_INVALID_PARAM"},
		{`7`, "", "M_BAD_JSON"},
		{`[]`, "", "M_BAD_JSON"},
	} {
		got, err := filterParam(json.RawMessage(tc.in))
		if got != tc.want || errcode(err) != tc.code {
			t.Errorf("filterParam(%s) = %q, %v; want %q, %s", tc.in, got, err, tc.want, tc.code)
		}
	}
}

func TestFrames(t *testing.T) {
	var m map[string]any
	_ = json.Unmarshal(errorFrame("x", mxerr.LimitExceeded(1500)), &m)
	if m["type"] != "error" || m["id"] != "x" || m["errcode"] != "M_LIMIT_EXCEEDED" || m["retry_after_ms"] != float64(1500) {
		t.Fatalf("rate limit error frame: %v", m)
	}
	m = nil
	_ = json.Unmarshal(errorFrame("", errors.New("disk on fire")), &m)
	if _, ok := m["id"]; ok || m["errcode"] != "M_UNKNOWN" || strings.Contains(fmt.Sprint(m), "disk") {
		t.Fatalf("internal error frame: %v", m)
	}
	m = nil
	_ = json.Unmarshal(responseFrame("r", map[string]string{"event_id": "$e"}), &m)
	if m["type"] != "response" || m["id"] != "r" || m["data"].(map[string]any)["event_id"] != "$e" {
		t.Fatalf("response frame: %v", m)
	}
}

func TestEmptyDelta(t *testing.T) {
	ev := &syncengine.Events{Events: []json.RawMessage{[]byte(`{}`)}}
	for _, tc := range []struct {
		name  string
		resp  syncengine.Response
		empty bool
	}{
		{"nothing", syncengine.Response{}, true},
		{"empty rooms", syncengine.Response{Rooms: &syncengine.Rooms{}}, true},
		{"a joined room", syncengine.Response{Rooms: &syncengine.Rooms{Join: map[string]*syncengine.JoinedRoom{"!r": {}}}}, false},
		{"account data", syncengine.Response{AccountData: ev}, false},
		{"to-device", syncengine.Response{ToDevice: ev}, false},
		{"device lists", syncengine.Response{DeviceLists: &syncengine.DeviceLists{Changed: []string{"@a:x"}}}, false},
		{"only key counts", syncengine.Response{OTKCounts: map[string]int{"signed_curve25519": 3}}, true},
	} {
		if got := emptyDelta(&tc.resp); got != tc.empty {
			t.Errorf("%s: empty %v", tc.name, got)
		}
	}
	fb := []string{"signed_curve25519"}
	a := keysDigest(&syncengine.Response{OTKCounts: map[string]int{"k": 1, "j": 2}, Fallback: &fb})
	if a != keysDigest(&syncengine.Response{OTKCounts: map[string]int{"j": 2, "k": 1}, Fallback: &[]string{"signed_curve25519"}}) {
		t.Error("equal key counts differ")
	}
	for _, r := range []*syncengine.Response{
		{OTKCounts: map[string]int{"k": 2, "j": 2}, Fallback: &fb},
		{OTKCounts: map[string]int{"k": 1, "j": 2}},
		{OTKCounts: map[string]int{"k": 1, "j": 2}, Fallback: &[]string{}},
	} {
		if keysDigest(r) == a {
			t.Errorf("different key counts are equal: %+v", r)
		}
	}
}

// fakeSync stands in for the sync engine: an initial sync answers at
// once; later ones wait for news pushed by the test.
type fakeSync struct {
	mu    sync.Mutex
	calls []syncengine.Request
	news  chan *syncengine.Response
	pos   int64
	gen   uint64
	wake  chan struct{}
}

func newFakeSync() *fakeSync {
	return &fakeSync{news: make(chan *syncengine.Response, 100), wake: make(chan struct{})}
}

// push makes news available and wakes waiters.
func (f *fakeSync) push(r *syncengine.Response) {
	f.news <- r
	f.mu.Lock()
	f.gen++
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// splitSync is a sync engine that also offers the notifier's wait.
type splitSync struct{ *fakeSync }

func (f splitSync) Generation(string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen
}

func (f splitSync) Wait(ctx context.Context, _ string, gen uint64, timeout time.Duration) bool {
	f.mu.Lock()
	if f.gen != gen {
		f.mu.Unlock()
		return true
	}
	wake := f.wake
	f.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-wake:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (f *fakeSync) ResolveFilter(_ context.Context, _, param string) (*filter.Filter, error) {
	if param == "missing" {
		return nil, mxerr.InvalidParam("Unknown filter %q", param)
	}
	return &filter.Filter{}, nil
}

func (f *fakeSync) Sync(ctx context.Context, req syncengine.Request) (*syncengine.Response, error) {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	f.mu.Unlock()
	if req.Since == nil {
		return f.delta(accountData("initial")), nil
	}
	if req.Timeout == 0 {
		select {
		case r := <-f.news:
			if r == nil {
				return nil, errors.New("database gone")
			}
			return r, nil
		default:
			return &syncengine.Response{NextBatch: req.Since.String(), Next: *req.Since}, nil
		}
	}
	t := time.NewTimer(req.Timeout)
	defer t.Stop()
	select {
	case r := <-f.news:
		if r == nil {
			return nil, errors.New("database gone")
		}
		return r, nil
	case <-t.C:
		return &syncengine.Response{NextBatch: req.Since.String(), Next: *req.Since}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeSync) lastCall() syncengine.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[len(f.calls)-1]
}

func (f *fakeSync) call(i int) syncengine.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[i]
}

func (f *fakeSync) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// delta numbers a response with the next position.
func (f *fakeSync) delta(r *syncengine.Response) *syncengine.Response {
	f.mu.Lock()
	f.pos++
	tok := syncengine.Token{Events: f.pos}
	f.mu.Unlock()
	r.Next, r.NextBatch = tok, tok.String()
	return r
}

func accountData(tag string) *syncengine.Response {
	return &syncengine.Response{AccountData: &syncengine.Events{Events: []json.RawMessage{
		json.RawMessage(`{"type":"org.example.tag","content":{"tag":"` + tag + `"}}`)}}}
}

type fakeRooms struct {
	mu   sync.Mutex
	txns map[string]string
	n    int
}

func (f *fakeRooms) Send(_ context.Context, p rooms.SendParams) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p.RoomID == "!forbidden:x" {
		return "", mxerr.Forbidden("not joined")
	}
	key := p.DeviceID + "|" + p.TxnID
	if id, ok := f.txns[key]; ok && p.TxnID != "" {
		return id, nil
	}
	f.n++
	id := fmt.Sprintf("$ev%d", f.n)
	if f.txns == nil {
		f.txns = map[string]string{}
	}
	f.txns[key] = id
	return id, nil
}

type fakeEphemeral struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeEphemeral) Set(_ context.Context, user, room string, typing bool, timeout *int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("typing %s %s %v %d", user, room, typing, deref(timeout)))
	return nil
}

func (f *fakeEphemeral) Send(_ context.Context, user, room, typ, event string, thread *string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("receipt %s %s %s %s %s", user, room, typ, event, deref(thread)))
	return nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func (f *fakeEphemeral) Touch(string)                {}
func (f *fakeEphemeral) SyncActivity(string, string) {}

// testGateway is a gateway on fakes behind the real middleware stack.
type testGateway struct {
	gw    *gateway
	sync  *fakeSync
	rooms *fakeRooms
	srv   *httptest.Server

	mu      sync.Mutex
	revoked bool
}

const goodToken = "pat_good"

// bothModes runs a test with a sync engine that waits inside Sync and
// with one that offers a separate wait (see nextDelta).
func bothModes(t *testing.T, fn func(t *testing.T, split bool)) {
	for _, split := range []bool{false, true} {
		t.Run(map[bool]string{false: "sync waits", true: "split wait"}[split], func(t *testing.T) { fn(t, split) })
	}
}

func split(gw *gateway) {
	f := gw.sync.(*fakeSync)
	gw.sync = splitSync{f}
	gw.waiter = splitSync{f}
}

func modeSetup(s bool) []func(*gateway) {
	if s {
		return []func(*gateway){split}
	}
	return nil
}

func newTestGateway(t *testing.T, limits wsLimiter, setup ...func(*gateway)) *testGateway {
	t.Helper()
	tg := &testGateway{sync: newFakeSync(), rooms: &fakeRooms{}}
	tg.gw = newGateway(tg.sync, tg.rooms, limits)
	for _, f := range setup {
		f(tg.gw)
	}
	tg.gw.t = wsTimings{ping: 50 * time.Millisecond, pong: 2 * time.Second, write: 300 * time.Millisecond,
		grace: 5 * time.Second, close: 300 * time.Millisecond, poll: time.Second}
	tg.gw.authenticate = func(_ context.Context, tok string) (*accounts.Device, error) {
		tg.mu.Lock()
		defer tg.mu.Unlock()
		if tok == "" {
			return nil, mxerr.MissingToken("Missing access token")
		}
		if tok != goodToken || tg.revoked {
			return nil, mxerr.UnknownToken(false, "Unrecognised access token")
		}
		return &accounts.Device{UserID: "@u:test", DeviceID: "DEV"}, nil
	}
	r := mux.NewRouter()
	r.Handle(WebSocketPath, httpapi.Wrap(tg.gw.serve)).Methods(http.MethodGet)
	stack := &httpapi.Stack{Logger: slog.New(slog.DiscardHandler), MaxBody: 1 << 20}
	tg.srv = httptest.NewServer(stack.Handler(r))
	t.Cleanup(func() {
		tg.gw.shutdown()
		tg.srv.Close()
		waitFor(t, "sockets to end", func() bool { return tg.gw.count() == 0 })
	})
	return tg
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (tg *testGateway) url(query string) string {
	u := "ws" + strings.TrimPrefix(tg.srv.URL, "http") + WebSocketPath
	if query != "" {
		u += "?" + query
	}
	return u
}

type testClient struct {
	t *testing.T
	c *websocket.Conn
}

func (tg *testGateway) dial(t *testing.T) *testClient {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(tg.url(""), http.Header{"Authorization": {"Bearer " + goodToken}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &testClient{t: t, c: c}
}

type frame struct {
	Type         string          `json:"type"`
	ID           string          `json:"id"`
	NextBatch    string          `json:"next_batch"`
	AckRequired  bool            `json:"ack_required"`
	Data         json.RawMessage `json:"data"`
	Errcode      string          `json:"errcode"`
	RetryAfterMS int64           `json:"retry_after_ms"`
}

func (tc *testClient) write(s string) {
	tc.t.Helper()
	if err := tc.c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		tc.t.Fatal(err)
	}
}

func (tc *testClient) read() frame {
	tc.t.Helper()
	_ = tc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := tc.c.ReadMessage()
	if err != nil {
		tc.t.Fatalf("read: %v", err)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		tc.t.Fatalf("%v: %s", err, b)
	}
	return f
}

// closeCode reads until the socket ends and returns its close code.
func (tc *testClient) closeCode() int {
	tc.t.Helper()
	_ = tc.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := tc.c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		tc.t.Fatalf("socket ended without a close frame: %v", err)
	}
}

func TestWebSocketAuth(t *testing.T) {
	tg := newTestGateway(t, nil)
	for _, tc := range []struct {
		name      string
		header    http.Header
		query     string
		protocols []string
		status    int
		code      string
	}{
		{"header", http.Header{"Authorization": {"Bearer " + goodToken}}, "", nil, 101, ""},
		{"query", nil, "access_token=" + goodToken, nil, 101, ""},
		{"subprotocol", nil, "", []string{WebSocketProtocol, WebSocketTokenProtocol + goodToken}, 101, ""},
		{"header wins over query", http.Header{"Authorization": {"Bearer nope"}}, "access_token=" + goodToken, nil, 401, "M_UNKNOWN_TOKEN"},
		{"bad token", http.Header{"Authorization": {"Bearer nope"}}, "", nil, 401, "M_UNKNOWN_TOKEN"},
		{"bad subprotocol token", nil, "", []string{WebSocketProtocol, WebSocketTokenProtocol + "nope"}, 401, "M_UNKNOWN_TOKEN"},
		{"no token", nil, "", nil, 401, "M_MISSING_TOKEN"},
		{"not bearer", http.Header{"Authorization": {"Basic dTpw"}}, "", nil, 401, "M_MISSING_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := websocket.Dialer{Subprotocols: tc.protocols}
			c, resp, err := d.Dial(tg.url(tc.query), tc.header)
			if tc.status == 101 {
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if tc.protocols != nil && c.Subprotocol() != WebSocketProtocol {
					t.Fatalf("selected subprotocol %q", c.Subprotocol())
				}
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("upgraded")
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tc.status || body["errcode"] != tc.code {
				t.Fatalf("got %d %v", resp.StatusCode, body)
			}
		})
	}
	// A plain GET is a Matrix error too.
	resp, err := http.Get(strings.Replace(tg.url("access_token="+goodToken), "ws", "http", 1))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "M_UNRECOGNIZED") {
		t.Fatalf("plain GET: %d %s", resp.StatusCode, b)
	}
}

func TestWebSocketDispatch(t *testing.T) {
	tg := newTestGateway(t, nil)
	c := tg.dial(t)
	for _, tc := range []struct {
		name, in string
		wantType string
		wantID   string
		code     string
		data     string
	}{
		{"malformed", `{"type":`, "error", "", "M_NOT_JSON", ""},
		{"unknown type", `{"type":"dance","id":"u1"}`, "error", "u1", "M_UNRECOGNIZED", ""},
		{"request without id", `{"type":"send","room_id":"!r:x","event_type":"m.room.message","txn_id":"t"}`, "error", "", "M_MISSING_PARAM", ""},
		{"send without room", `{"type":"send","id":"s0","event_type":"m.room.message","txn_id":"t"}`, "error", "s0", "M_MISSING_PARAM", ""},
		{"send to a bad room ID", `{"type":"send","id":"s1","room_id":"lobby","event_type":"m.room.message","txn_id":"t"}`, "error", "s1", "M_INVALID_PARAM", ""},
		{"send without txn", `{"type":"send","id":"s2","room_id":"!r:x","event_type":"m.room.message"}`, "error", "s2", "M_MISSING_PARAM", ""},
		{"send without type", `{"type":"send","id":"s3","room_id":"!r:x","txn_id":"t"}`, "error", "s3", "M_MISSING_PARAM", ""},
		{"content not an object", `{"type":"send","id":"s4","room_id":"!r:x","event_type":"m.room.message","txn_id":"t","content":[1]}`, "error", "s4", "M_BAD_JSON", ""},
		{"send", `{"type":"send","id":"s5","room_id":"!r:x","event_type":"m.room.message","txn_id":"t1","content":{"body":"hi"}}`, "response", "s5", "", `{"event_id":"$ev1"}`},
		{"send again", `{"type":"send","id":"s6","room_id":"!r:x","event_type":"m.room.message","txn_id":"t1","content":{"body":"hi"}}`, "response", "s6", "", `{"event_id":"$ev1"}`},
		{"send anew", `{"type":"send","id":"s7","room_id":"!r:x","event_type":"m.room.message","txn_id":"t2"}`, "response", "s7", "", `{"event_id":"$ev2"}`},
		{"engine error", `{"type":"send","id":"s8","room_id":"!forbidden:x","event_type":"m.room.message","txn_id":"t3"}`, "error", "s8", "M_FORBIDDEN", ""},
		{"state", `{"type":"state","id":"st","room_id":"!r:x","event_type":"m.room.topic","content":{"topic":"x"}}`, "response", "st", "", `{"event_id":"$ev3"}`},
		{"typing unwired", `{"type":"typing","id":"ty0","room_id":"!r:x","typing":true}`, "error", "ty0", "M_UNRECOGNIZED", ""},
		{"receipt unwired", `{"type":"receipt","id":"rc0","room_id":"!r:x","receipt_type":"m.read","event_id":"$e"}`, "error", "rc0", "M_UNRECOGNIZED", ""},
		{"bad sync", `{"type":"sync","id":"y0","since":"garbage"}`, "error", "y0", "M_INVALID_PARAM", ""},
		{"bad presence", `{"type":"sync","id":"y1","set_presence":"dancing"}`, "error", "y1", "M_INVALID_PARAM", ""},
		{"unknown filter", `{"type":"sync","id":"y2","filter":"missing"}`, "error", "y2", "M_INVALID_PARAM", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			c.write(tc.in)
			f := c.read()
			if f.Type != tc.wantType || f.ID != tc.wantID || f.Errcode != tc.code {
				t.Fatalf("got %+v", f)
			}
			if tc.data != "" && string(f.Data) != tc.data {
				t.Fatalf("data %s, want %s", f.Data, tc.data)
			}
		})
	}
	// Binary frames are refused.
	if err := c.c.WriteMessage(websocket.BinaryMessage, []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	c.t = t
	if f := c.read(); f.Type != "error" || f.Errcode != "M_NOT_JSON" {
		t.Fatalf("binary frame: %+v", f)
	}

}

func TestWebSocketEphemeral(t *testing.T) {
	eph := &fakeEphemeral{}
	tg := newTestGateway(t, nil, func(gw *gateway) { gw.typing, gw.receipts, gw.presence = eph, eph, eph })
	c := tg.dial(t)
	c.write(`{"type":"typing","id":"ty1","room_id":"!r:x","typing":true,"timeout":3000}`)
	if f := c.read(); f.Type != "response" || string(f.Data) != "{}" {
		t.Fatalf("typing: %+v", f)
	}
	c.write(`{"type":"typing","id":"ty2","room_id":"!r:x"}`)
	if f := c.read(); f.Errcode != "M_MISSING_PARAM" {
		t.Fatalf("typing without typing: %+v", f)
	}
	c.write(`{"type":"receipt","id":"rc1","room_id":"!r:x","receipt_type":"m.read","event_id":"$e","thread_id":"main"}`)
	if f := c.read(); f.Type != "response" {
		t.Fatalf("receipt: %+v", f)
	}
	c.write(`{"type":"receipt","id":"rc2","room_id":"!r:x","receipt_type":"m.read","event_id":"$e","thread_id":3}`)
	if f := c.read(); f.Errcode != "M_BAD_JSON" && f.Errcode != "M_INVALID_PARAM" {
		t.Fatalf("receipt with a numeric thread: %+v", f)
	}
	eph.mu.Lock()
	calls := strings.Join(eph.calls, "\n")
	eph.mu.Unlock()
	if calls != "typing @u:test !r:x true 3000\nreceipt @u:test !r:x m.read $e main" {
		t.Fatalf("engine calls:\n%s", calls)
	}
}

func TestWebSocketRateLimit(t *testing.T) {
	tg := newTestGateway(t, ratelimit.New(true, nil, slog.New(slog.DiscardHandler)))
	c := tg.dial(t)
	limited := 0
	for i := range ratelimit.MessagesPerUser.Burst + 10 {
		c.write(fmt.Sprintf(`{"type":"send","id":"m%d","room_id":"!r:x","event_type":"m.room.message","txn_id":"t%d"}`, i, i))
		f := c.read()
		if f.Type == "error" {
			if f.Errcode != "M_LIMIT_EXCEEDED" || f.RetryAfterMS <= 0 || f.ID != fmt.Sprintf("m%d", i) {
				t.Fatalf("rate limited: %+v", f)
			}
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("no send was rate limited")
	}
}

func TestWebSocketStream(t *testing.T) {
	bothModes(t, testWebSocketStream)
}

func testWebSocketStream(t *testing.T, split bool) {
	tg := newTestGateway(t, nil, modeSetup(split)...)
	c := tg.dial(t)
	c.write(`{"type":"sync","set_presence":"unavailable","filter":{"room":{"timeline":{"limit":3}}}}`)
	f := c.read()
	if f.Type != "sync" || f.NextBatch != "s1_0_0_0_0_0_0" || !strings.Contains(string(f.Data), `"initial"`) {
		t.Fatalf("first delta: %+v %s", f, f.Data)
	}
	if req := tg.sync.call(0); req.Since != nil || req.SetPresence != "unavailable" || req.UserID != "@u:test" || req.DeviceID != "DEV" {
		t.Fatalf("initial request %+v", req)
	}
	// News arrives as it exists; each Sync starts where the last delta
	// ended.
	for i := range 3 {
		tg.sync.push(tg.sync.delta(accountData(fmt.Sprint("news ", i))))
		f = c.read()
		if !strings.Contains(string(f.Data), fmt.Sprint("news ", i)) {
			t.Fatalf("delta %d: %s", i, f.Data)
		}
		var d map[string]any
		_ = json.Unmarshal(f.Data, &d)
		if d["next_batch"] != f.NextBatch {
			t.Fatalf("data next_batch %v, frame %s", d["next_batch"], f.NextBatch)
		}
	}
	waitFor(t, "the next Sync", func() bool {
		req := tg.sync.lastCall()
		return req.Since != nil && req.Since.Events == 4
	})
	// Timeouts with nothing new send nothing; the stream goes on.
	calls := tg.sync.numCalls()
	waitFor(t, "an idle poll to end", func() bool { return tg.sync.numCalls() > calls })
	// Restarting with a since token: the delta since it comes at once,
	// even empty.
	c.write(`{"type":"sync","since":"s2"}`)
	if f := c.read(); f.Type != "sync" || f.NextBatch != "s2_0_0_0_0_0_0" {
		t.Fatalf("restart: %+v", f)
	}
	tg.sync.push(tg.sync.delta(accountData("after restart")))
	if f := c.read(); !strings.Contains(string(f.Data), "after restart") {
		t.Fatalf("restarted stream: %s", f.Data)
	}
	// An internal error ends the socket with 1011; the client resumes.
	tg.sync.push(nil)
	if code := c.closeCode(); code != websocket.CloseInternalServerErr {
		t.Fatalf("close code %d", code)
	}
}

func TestWebSocketToDeviceAck(t *testing.T) {
	bothModes(t, testWebSocketToDeviceAck)
}

func testWebSocketToDeviceAck(t *testing.T, split bool) {
	tg := newTestGateway(t, nil, modeSetup(split)...)
	c := tg.dial(t)
	c.write(`{"type":"sync"}`)
	c.read()
	td := tg.sync.delta(&syncengine.Response{ToDevice: &syncengine.Events{Events: []json.RawMessage{json.RawMessage(`{"type":"m.room_key"}`)}}})
	tg.sync.push(td)
	f := c.read()
	if !f.AckRequired || f.NextBatch != td.NextBatch {
		t.Fatalf("to-device delta: %+v", f)
	}
	// Until the ack, the stream does not move on: moving on would delete
	// the messages.
	calls := tg.sync.numCalls()
	c.write(`{"type":"ack","next_batch":"s1"}`) // not the one awaited
	time.Sleep(100 * time.Millisecond)
	if n := tg.sync.numCalls(); n != calls {
		t.Fatalf("Sync called %d times before the ack", n-calls)
	}
	c.write(`{"type":"ack","next_batch":"` + td.NextBatch + `"}`)
	waitFor(t, "Sync after the ack", func() bool {
		req := tg.sync.lastCall()
		return tg.sync.numCalls() > calls && req.Since != nil && req.Since.String() == td.NextBatch
	})
	tg.sync.push(tg.sync.delta(accountData("later")))
	if f := c.read(); f.AckRequired || !strings.Contains(string(f.Data), "later") {
		t.Fatalf("later delta: %+v", f)
	}
}

func TestWebSocketOversizedFrame(t *testing.T) {
	tg := newTestGateway(t, nil)
	c := tg.dial(t)
	c.write(`{"type":"send","x":"` + strings.Repeat("x", WebSocketMaxFrame) + `"}`)
	if code := c.closeCode(); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d", code)
	}
}

func TestWebSocketTokenRevoked(t *testing.T) {
	bothModes(t, testWebSocketTokenRevoked)
}

func testWebSocketTokenRevoked(t *testing.T, split bool) {
	tg := newTestGateway(t, nil, modeSetup(split)...)
	c := tg.dial(t)
	c.write(`{"type":"sync"}`)
	c.read()
	tg.mu.Lock()
	tg.revoked = true
	tg.mu.Unlock()
	if code := c.closeCode(); code != CloseTokenInvalid {
		t.Fatalf("close code %d", code)
	}
}

// TestWebSocketSocketsPerDevice opens one socket more than a device may
// hold: the oldest is closed with 4009, the others stay open.
func TestWebSocketSocketsPerDevice(t *testing.T) {
	tg := newTestGateway(t, nil)
	var cs []*testClient
	for i := range DefaultSocketsPerDevice {
		cs = append(cs, tg.dial(t))
		waitFor(t, "the socket to register", func() bool { return tg.gw.count() == i+1 })
	}
	cs = append(cs, tg.dial(t))
	if code := cs[0].closeCode(); code != CloseReplaced {
		t.Fatalf("oldest socket: close code %d, want %d", code, CloseReplaced)
	}
	waitFor(t, "the oldest socket to end", func() bool { return tg.gw.count() == DefaultSocketsPerDevice })
	// The newest still works.
	last := cs[len(cs)-1]
	last.write(`{"type":"sync"}`)
	last.read()
}

func TestWebSocketShutdown(t *testing.T) {
	tg := newTestGateway(t, nil)
	c := tg.dial(t)
	waitFor(t, "the socket to register", func() bool { return tg.gw.count() == 1 })
	tg.gw.shutdown()
	if code := c.closeCode(); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d", code)
	}
	waitFor(t, "the socket to end", func() bool { return tg.gw.count() == 0 })
	// New sockets are turned away.
	c2 := tg.dial(t)
	if code := c2.closeCode(); code != websocket.CloseGoingAway {
		t.Fatalf("close code after shutdown %d", code)
	}
}

func TestWebSocketDeadPeer(t *testing.T) {
	tg := newTestGateway(t, nil)
	tg.gw.t.pong = 300 * time.Millisecond
	pings := make(chan struct{}, 10)
	c := tg.dial(t)
	c.c.SetPingHandler(func(string) error {
		select {
		case pings <- struct{}{}:
		default:
		}
		return nil // and no pong: the peer is "dead"
	})
	go func() {
		for {
			if _, _, err := c.c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	select {
	case <-pings:
	case <-time.After(5 * time.Second):
		t.Fatal("no ping")
	}
	waitFor(t, "the dead peer to be dropped", func() bool { return tg.gw.count() == 0 })
}

func TestWebSocketSlowReader(t *testing.T) {
	bothModes(t, testWebSocketSlowReader)
}

func testWebSocketSlowReader(t *testing.T, split bool) {
	tg := newTestGateway(t, nil, modeSetup(split)...)
	// A client with a tiny receive window and segment size (which also
	// keeps the server's send buffer small), that stops reading.
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1024)
		})
	}}).DialContext}
	conn, _, err := d.Dial(tg.url(""), http.Header{"Authorization": {"Bearer " + goodToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &testClient{t: t, c: conn}
	c.write(`{"type":"sync"}`)
	c.read()
	big := strings.Repeat("b", 200_000)
	go func() {
		for range 40 {
			tg.sync.push(tg.sync.delta(accountData(big)))
		}
	}()
	waitFor(t, "the server to find the client slow", func() bool {
		tg.gw.mu.Lock()
		defer tg.gw.mu.Unlock()
		for wc := range tg.gw.conns {
			if wc.nc.slow() {
				return true
			}
		}
		return false
	})
	if code := c.closeCode(); code != CloseTooSlow {
		t.Fatalf("close code %d", code)
	}
	// The server still serves others.
	c2 := tg.dial(t)
	c2.write(`{"type":"sync"}`)
	if f := c2.read(); f.Type != "sync" {
		t.Fatalf("after the slow reader: %+v", f)
	}
}
