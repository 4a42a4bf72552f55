package clientapi

// The WebSocket gateway: one socket per client carries the sync stream
// (server → client) and requests (send, state, typing, receipt; client →
// server). The protocol is written down in docs/websocket.md; this file
// is its only implementation.
//
//	socket ──► reader ──► frame goroutine: parse, dispatch ──► engines
//	           (waits for it: one request at a time, in order)
//	                              │ response / error
//	                              ▼
//	stream goroutine ── delta ──► wmu ──► socket
//	  next delta only once the last is written: Sync (builds and
//	  waits), or Wait here and build on a short-lived goroutine
//	ping timer (time.AfterFunc) ── WriteControl ──► socket
//
// A socket holds two goroutines while it streams (reader and stream) and
// one before; frames, builds and pings run on goroutines that end with
// them, so the deep stacks of SQL and JSON are not kept by idle sockets.
// Write buffers come from a pool and are held only while a frame is
// written.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// WebSocket endpoint, subprotocols and limits.
const (
	// WebSocketPath is the gateway's endpoint.
	WebSocketPath = "/_matrix/client/unstable/org.parley.ws/v1/connect"
	// WebSocketProtocol is the subprotocol the server selects when the
	// client offers it (browsers must, to pass a token as a subprotocol).
	WebSocketProtocol = "org.parley.ws.v1"
	// WebSocketTokenProtocol prefixes an access token passed as a
	// subprotocol: "org.parley.access_token.<token>".
	WebSocketTokenProtocol = "org.parley.access_token."
	// WebSocketMaxFrame caps a client frame; larger ones close the socket
	// with 1009.
	WebSocketMaxFrame = 1 << 20

	// CloseTokenInvalid closes a socket whose access token stopped being
	// valid (logout, expiry, deactivation).
	CloseTokenInvalid = 4001
	// CloseTooSlow closes a socket whose client did not read a frame
	// within the write timeout.
	CloseTooSlow = 4008
	// CloseReplaced closes a device's oldest socket when it opens more
	// than its limit on one instance.
	CloseReplaced = 4009
	// DefaultSocketsPerDevice bounds one device's sockets on an instance
	// unless configured otherwise: a client that leaks sockets loses its
	// oldest ones, not the server its memory.
	DefaultSocketsPerDevice = 8

	wsReadBuffer  = 512
	wsWriteBuffer = 8 << 10
	maxRequestID  = 255
)

// wsTimings are the gateway's clocks; tests shrink them.
type wsTimings struct {
	ping  time.Duration // server ping interval
	pong  time.Duration // read deadline, refreshed by any frame or pong
	write time.Duration // a frame not written by then marks the reader too slow
	grace time.Duration // extra time to finish that frame and say why we close
	close time.Duration // wait for the client's close frame before cutting TCP
	// poll is how long one Sync call of the stream waits for news. Each
	// call costs a (usually empty) build, so it is long; presence, which
	// needs renewing more often than that, is renewed at each ping.
	poll time.Duration
}

var defaultWSTimings = wsTimings{
	ping:  25 * time.Second,
	pong:  60 * time.Second,
	write: 10 * time.Second,
	grace: 15 * time.Second,
	close: 2 * time.Second,
	poll:  syncengine.MaxTimeout,
}

// What the gateway calls, declared here so that tests can stand in.
type (
	wsSyncer interface {
		Sync(ctx context.Context, req syncengine.Request) (*syncengine.Response, error)
		ResolveFilter(ctx context.Context, userID, param string) (*filter.Filter, error)
	}
	wsSender interface {
		Send(ctx context.Context, p rooms.SendParams) (string, error)
	}
	// wsTyping sets or clears a user's typing notification in a room
	// (timeoutMS nil: the engine's default).
	wsTyping interface {
		Set(ctx context.Context, userID, roomID string, typing bool, timeoutMS *int64) error
	}
	// wsReceipts records a receipt (threadID nil: unthreaded).
	wsReceipts interface {
		Send(ctx context.Context, userID, roomID, receiptType, eventID string, threadID *string) error
	}
	// wsPresence hears of a socket's activity: Touch for each request,
	// SyncActivity while a stream runs.
	wsPresence interface {
		Touch(user string)
		SyncActivity(user, setPresence string)
	}
	wsLimiter interface {
		Allow(ctx context.Context, rule ratelimit.Rule, key string) error
	}
	// wsWaiter waits for news for a user without building a response:
	// the notifier's generation protocol (take Generation before
	// computing, Wait on it after).
	wsWaiter interface {
		Generation(user string) uint64
		Wait(ctx context.Context, user string, gen uint64, timeout time.Duration) bool
	}
)

// gateway serves the WebSocket endpoint and tracks its connections.
type gateway struct {
	// authenticate checks a token; touch (optional) records device
	// activity at connect time.
	authenticate func(ctx context.Context, token string) (*accounts.Device, error)
	touch        func(r *http.Request, d *accounts.Device)
	sync         wsSyncer
	rooms        wsSender
	typing       wsTyping   // nil: "typing" frames answer M_UNRECOGNIZED
	receipts     wsReceipts // nil: "receipt" frames answer M_UNRECOGNIZED
	presence     wsPresence // may be nil
	limits       wsLimiter  // nil: no rate limits
	// waiter, when the sync engine offers one, lets streams wait apart
	// from building (see nextDelta); builds then take one of the builds
	// slots, maxBuilds in all.
	waiter   wsWaiter
	builds   chan struct{}
	t        wsTimings
	upgrader websocket.Upgrader

	mu           sync.Mutex
	conns        map[*wsConn]struct{}
	byDevice     map[string][]*wsConn // "user|device" → sockets, oldest first
	perDevice    int
	shuttingDown bool
	hookOnce     sync.Once
}

// websocketRoutes registers the WebSocket gateway.
func (a *API) websocketRoutes(r *mux.Router) {
	gw := newGateway(a.deps.Sync, a.deps.Rooms, a.limits)
	gw.authenticate = a.accounts.Authenticate
	gw.touch = a.touch
	gw.perDevice = a.cfg.SocketsPerDevice
	a.gw = gw
	// Typed nils must not become non-nil interfaces.
	if a.deps.Typing != nil {
		gw.typing = a.deps.Typing
	}
	if a.deps.Receipts != nil {
		gw.receipts = a.deps.Receipts
	}
	if a.deps.Presence != nil {
		gw.presence = a.deps.Presence
	}
	r.Handle(WebSocketPath, httpapi.Wrap(gw.serve)).Methods(http.MethodGet)
}

func newGateway(s wsSyncer, rs wsSender, limits wsLimiter) *gateway {
	gw := &gateway{sync: s, rooms: rs, limits: limits, t: defaultWSTimings, conns: map[*wsConn]struct{}{},
		builds: make(chan struct{}, maxBuilds())}
	if w, ok := s.(wsWaiter); ok {
		gw.waiter = w
	}
	gw.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   wsReadBuffer,
		WriteBufferSize:  wsWriteBuffer,
		// Idle sockets hold no write buffer: one is taken from the pool
		// for each frame and given back once it is flushed.
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{WebSocketProtocol},
		// Matrix clients are web apps on other origins (CORS allows any);
		// the access token, never a cookie, authenticates, so a foreign
		// page gains nothing from opening a socket.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			httpapi.WriteError(w, r, mxerr.Unrecognized(status, "Not a WebSocket handshake: %v", reason))
		},
	}
	return gw
}

// maxBuilds bounds the sync responses built at once for sockets (with a
// waiter): a wake-up of many sockets at once then queues, rather than
// running thousands of builds against the database together.
func maxBuilds() int { return 4 * runtime.GOMAXPROCS(0) }

// wsAccessToken finds the access token of an upgrade request: the
// Authorization header, else a subprotocol "org.parley.access_token.<t>",
// else the access_token query parameter.
func wsAccessToken(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		t, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return "", mxerr.MissingToken("Authorization header must use the Bearer scheme")
		}
		return strings.TrimSpace(t), nil
	}
	for _, p := range websocket.Subprotocols(r) {
		if t, ok := strings.CutPrefix(p, WebSocketTokenProtocol); ok {
			return t, nil
		}
	}
	return r.URL.Query().Get("access_token"), nil
}

// serve authenticates, upgrades, and hands the socket to a reader
// goroutine of its own; the handler returns at once so that net/http's
// per-request state (buffers, handler stack) is not kept for the
// socket's lifetime.
func (gw *gateway) serve(w http.ResponseWriter, r *http.Request) error {
	tok, err := wsAccessToken(r)
	if err != nil {
		return err
	}
	d, err := gw.authenticate(r.Context(), tok)
	if err != nil {
		return err
	}
	httpapi.SetLogUser(r.Context(), d.UserID)
	if gw.touch != nil {
		gw.touch(r, d)
	}
	gw.hookShutdown(r)
	// The connect request's logger (with its request ID) serves the
	// socket's whole life.
	c := &wsConn{gw: gw, dev: *d, token: tok, log: httpapi.Logger(r.Context())}
	hw := hijackWriter{ResponseWriter: w, wrap: func(nc net.Conn) net.Conn {
		c.nc = &drainConn{Conn: nc, grace: gw.t.grace, onSlow: c.tooSlow}
		return c.nc
	}}
	ws, err := gw.upgrader.Upgrade(hw, r, nil)
	if err != nil {
		// The upgrader has answered (or the connection is gone).
		return nil
	}
	c.ws = ws
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if !gw.track(c) {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		_ = ws.Close()
		c.cancel()
		return nil
	}
	c.log.Debug("websocket: connected", c.logAttrs()...)
	// Armed only now, so that the timer's callback sees c.ping set.
	c.ping = time.AfterFunc(time.Hour, c.pingTick)
	c.ping.Reset(gw.t.ping)
	go c.readLoop()
	return nil
}

// hookShutdown makes the HTTP server's Shutdown, which leaves hijacked
// connections alone, close the sockets with 1001.
func (gw *gateway) hookShutdown(r *http.Request) {
	gw.hookOnce.Do(func() {
		if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok {
			srv.RegisterOnShutdown(gw.shutdown)
		}
	})
}

func (gw *gateway) track(c *wsConn) bool {
	gw.mu.Lock()
	if gw.shuttingDown {
		gw.mu.Unlock()
		return false
	}
	gw.conns[c] = struct{}{}
	if gw.byDevice == nil {
		gw.byDevice = map[string][]*wsConn{}
	}
	k := c.deviceKey()
	socks := append(gw.byDevice[k], c)
	var evict []*wsConn
	if limit := cmp.Or(gw.perDevice, DefaultSocketsPerDevice); len(socks) > limit {
		evict = append(evict, socks[:len(socks)-limit]...)
		socks = append([]*wsConn(nil), socks[len(socks)-limit:]...)
	}
	gw.byDevice[k] = socks
	gw.mu.Unlock()
	for _, old := range evict {
		old.closeWith(CloseReplaced, "too many sockets for this device")
	}
	return true
}

func (gw *gateway) forget(c *wsConn) {
	gw.mu.Lock()
	delete(gw.conns, c)
	k := c.deviceKey()
	socks := slices.DeleteFunc(gw.byDevice[k], func(x *wsConn) bool { return x == c })
	if len(socks) == 0 {
		delete(gw.byDevice, k)
	} else {
		gw.byDevice[k] = socks
	}
	gw.mu.Unlock()
}

func (c *wsConn) deviceKey() string { return c.dev.UserID + "|" + c.dev.DeviceID }

// shutdown closes every socket with 1001 (going away); clients reconnect
// elsewhere with their last next_batch.
func (gw *gateway) shutdown() {
	gw.mu.Lock()
	gw.shuttingDown = true
	conns := make([]*wsConn, 0, len(gw.conns))
	for c := range gw.conns {
		conns = append(conns, c)
	}
	gw.mu.Unlock()
	for _, c := range conns {
		c.closeWith(websocket.CloseGoingAway, "server shutting down")
	}
}

// count is the number of open sockets.
func (gw *gateway) count() int {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	return len(gw.conns)
}

// hijackWriter lets gorilla's Upgrader, which looks for http.Hijacker on
// the writer itself, hijack through the middleware's wrappers (found by
// http.ResponseController via Unwrap), and wraps the connection.
type hijackWriter struct {
	http.ResponseWriter
	wrap func(net.Conn) net.Conn
}

func (h hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return h.wrap(nc), brw, nil
}

// drainConn is a socket's network connection with the slow-reader
// policy. A write that misses its deadline marks the client too slow;
// rather than leave half a frame on the wire, the write gets one grace
// period to finish, and every later write (the close frame saying why)
// shares that same deadline. A client that is merely slow thus reads a
// clean close frame with code 4008; one that is gone is cut off when the
// grace period ends.
type drainConn struct {
	net.Conn
	grace  time.Duration
	onSlow func()

	mu        sync.Mutex
	slowUntil time.Time
}

func (c *drainConn) slow() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.slowUntil.IsZero()
}

// SetWriteDeadline keeps the grace deadline once the client is slow.
func (c *drainConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	if !c.slowUntil.IsZero() {
		t = c.slowUntil
	}
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *drainConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return n, err
	}
	c.mu.Lock()
	first := c.slowUntil.IsZero()
	if first {
		c.slowUntil = time.Now().Add(c.grace)
	}
	until := c.slowUntil
	c.mu.Unlock()
	if !first {
		return n, err
	}
	if c.onSlow != nil {
		c.onSlow()
	}
	if err := c.Conn.SetWriteDeadline(until); err != nil {
		return n, err
	}
	m, err := c.Conn.Write(p[n:])
	return n + m, err
}

// wsConn is one socket.
type wsConn struct {
	gw    *gateway
	ws    *websocket.Conn
	nc    *drainConn
	dev   accounts.Device
	token string
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	// wmu serialises data frames. The only data writers are the reader
	// goroutine (responses, in request order) and the sync loop (one
	// delta at a time), so a mutex costs nothing where a writer
	// goroutine with its queue would cost a stack and a buffer per idle
	// socket and need a bound of its own; pings and close frames go
	// through WriteControl, which gorilla allows concurrently.
	wmu sync.Mutex

	ping      *time.Timer
	closeOnce sync.Once

	mu     sync.Mutex
	stream *wsStream
}

// wsStream is a running sync loop.
type wsStream struct {
	cancel      context.CancelFunc
	done        chan struct{}
	setPresence string

	mu       sync.Mutex
	awaiting string // next_batch of a delta the client must ack
	acked    chan struct{}
}

func (c *wsConn) logAttrs() []any {
	return []any{"user", c.dev.UserID, "device", c.dev.DeviceID}
}

func (c *wsConn) tooSlow() {
	c.log.Info("websocket: client too slow, closing", c.logAttrs()...)
}

// readLoop reads frames until the socket ends, handling each request
// before reading the next: requests from one client run in order (two
// sends land in the timeline as sent), and a client cannot have more
// than one request in flight on a socket.
func (c *wsConn) readLoop() {
	defer c.teardown()
	t := c.gw.t
	c.ws.SetReadLimit(WebSocketMaxFrame)
	_ = c.ws.SetReadDeadline(time.Now().Add(t.pong))
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(t.pong)) })
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			c.log.Debug("websocket: disconnected", append(c.logAttrs(), "reason", err)...)
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(t.pong))
		if !c.serveFrame(mt, data) {
			return
		}
	}
}

// serveFrame answers a frame on a goroutine of its own and waits for it:
// requests still run one at a time and in order, but the deep stack that
// engine calls (SQL) grow is gone with that goroutine instead of staying
// with the reader, which waits on the socket for the connection's life.
// It reports whether the socket is still usable.
func (c *wsConn) serveFrame(mt int, data []byte) bool {
	ok := make(chan bool, 1)
	go func() {
		var out []byte
		if mt != websocket.TextMessage {
			out = errorFrame("", mxerr.NotJSON("Frames must be JSON text frames"))
		} else {
			out = c.handle(data)
		}
		err := error(nil)
		if out != nil {
			err = c.writeFrame(out)
		}
		// Too slow: the close frame is on its way, and the reader waits
		// for the client's answer (closeWith set its deadline).
		ok <- err == nil || errors.Is(err, errTooSlow)
	}()
	return <-ok
}

// teardown ends the connection and waits for its sync loop.
func (c *wsConn) teardown() {
	c.cancel()
	c.ping.Stop()
	_ = c.ws.Close()
	c.stopSync()
	c.gw.forget(c)
}

// closeWith sends a close frame and lets the reader end the connection
// when the client answers or after a short wait.
func (c *wsConn) closeWith(code int, reason string) {
	c.closeOnce.Do(func() {
		c.cancel()
		c.mu.Lock()
		if c.stream != nil {
			c.stream.cancel()
		}
		c.mu.Unlock()
		deadline := time.Now().Add(c.gw.t.close)
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline)
		_ = c.nc.SetReadDeadline(deadline)
		c.log.Debug("websocket: closing", append(c.logAttrs(), "code", code, "reason", reason)...)
	})
}

// abort ends a socket that can no longer be written to: the reader
// fails at once and tears down.
func (c *wsConn) abort() {
	c.cancel()
	c.mu.Lock()
	if c.stream != nil {
		c.stream.cancel()
	}
	c.mu.Unlock()
	_ = c.nc.SetReadDeadline(time.Now())
}

// pingTick pings the client, checks that its token still holds and
// renews the presence of a running stream.
func (c *wsConn) pingTick() {
	if c.ctx.Err() != nil {
		return
	}
	if p := c.gw.presence; p != nil {
		c.mu.Lock()
		st := c.stream
		c.mu.Unlock()
		if st != nil {
			p.SyncActivity(c.dev.UserID, st.setPresence)
		}
	}
	if _, err := c.gw.authenticate(c.ctx, c.token); err != nil {
		if me, ok := mxerr.As(err); ok && (me.Code == "M_UNKNOWN_TOKEN" || me.Code == "M_MISSING_TOKEN") {
			c.closeWith(CloseTokenInvalid, me.Code)
			return
		}
		// A database hiccup is no reason to drop the client.
	}
	// A ping stuck behind a data frame gives up quietly (the frame's
	// deadline deals with the client); one that itself could not get
	// through in time means the client stopped reading.
	_ = c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.gw.t.write))
	if c.nc.slow() {
		c.closeWith(CloseTooSlow, "too slow")
		return
	}
	if c.ctx.Err() == nil {
		c.ping.Reset(c.gw.t.ping)
	}
}

// writeFrame writes one data frame.
func (c *wsConn) writeFrame(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.gw.t.write))
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return err
	}
	return c.afterWrite()
}

// errTooSlow ends a socket whose client fell behind.
var errTooSlow = errors.New("websocket: client too slow")

// afterWrite closes the socket with 4008 if the frame just written only
// got through in the grace period.
func (c *wsConn) afterWrite() error {
	if c.nc.slow() {
		c.closeWith(CloseTooSlow, "too slow")
		return errTooSlow
	}
	return nil
}

// encodeDelta encodes a sync frame:
// {"type":"sync","next_batch":…[,"ack_required":true],"data":<response>}.
func encodeDelta(resp *syncengine.Response, ack bool) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"type":"sync","next_batch":`)
	b.Write(strconv.AppendQuote(nil, resp.NextBatch))
	if ack {
		b.WriteString(`,"ack_required":true`)
	}
	b.WriteString(`,"data":`)
	if err := json.NewEncoder(&b).Encode(resp); err != nil {
		return nil, err
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// wsFrame is any client frame; each type reads its own fields.
type wsFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	// sync
	Filter        json.RawMessage `json:"filter"`
	Since         string          `json:"since"`
	SetPresence   string          `json:"set_presence"`
	UseStateAfter bool            `json:"use_state_after"`
	FullState     bool            `json:"full_state"`
	// ack
	NextBatch string `json:"next_batch"`
	// send, state, typing, receipt
	RoomID    string          `json:"room_id"`
	EventType string          `json:"event_type"`
	TxnID     string          `json:"txn_id"`
	StateKey  *string         `json:"state_key"`
	Content   json.RawMessage `json:"content"`
	Typing    *bool           `json:"typing"`
	Timeout   *int64          `json:"timeout"`
	// receipt
	ReceiptType string          `json:"receipt_type"`
	EventID     string          `json:"event_id"`
	ThreadID    json.RawMessage `json:"thread_id"`
}

// parseFrame decodes a client frame. The returned frame carries the
// request ID whenever one could be read, so that errors can name it.
func parseFrame(data []byte) (*wsFrame, error) {
	f := &wsFrame{}
	data = bytes.TrimSpace(data)
	if !json.Valid(data) {
		return f, mxerr.NotJSON("Frame is not valid JSON")
	}
	if len(data) == 0 || data[0] != '{' {
		return f, mxerr.BadJSON("Frame must be a JSON object")
	}
	// The envelope first, so that a badly typed field elsewhere still
	// gets an error carrying the request's ID.
	var env struct {
		Type json.RawMessage `json:"type"`
		ID   json.RawMessage `json:"id"`
	}
	_ = json.Unmarshal(data, &env)
	if len(env.ID) > 0 && string(env.ID) != "null" {
		if err := json.Unmarshal(env.ID, &f.ID); err != nil {
			return f, mxerr.BadJSON("id must be a string")
		}
		if len(f.ID) > maxRequestID {
			id := f.ID
			f.ID = ""
			return f, mxerr.InvalidParam("id is longer than %d bytes (%.16q…)", maxRequestID, id)
		}
	}
	id := f.ID
	if err := json.Unmarshal(data, f); err != nil {
		f.ID = id
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return f, mxerr.BadJSON("Field %q has the wrong type", te.Field)
		}
		return f, mxerr.BadJSON("Frame has the wrong shape: %v", err)
	}
	if f.Type == "" {
		return f, mxerr.MissingParam("type is required")
	}
	return f, nil
}

// handle answers one client frame; nil means no answer is due.
func (c *wsConn) handle(data []byte) []byte {
	f, err := parseFrame(data)
	if err != nil {
		return errorFrame(f.ID, err)
	}
	res, err := c.dispatch(f)
	if err != nil {
		if _, ok := mxerr.As(err); !ok && c.ctx.Err() == nil {
			c.log.Error("websocket: request failed", append(c.logAttrs(), "type", f.Type, "err", err)...)
		}
		return errorFrame(f.ID, err)
	}
	if res == nil {
		return nil
	}
	return responseFrame(f.ID, res)
}

// dispatch runs a frame's request and returns the response data (nil
// for frames that get no response).
func (c *wsConn) dispatch(f *wsFrame) (any, error) {
	switch f.Type {
	case "sync":
		return nil, c.onSync(f)
	case "ack":
		c.onAck(f)
		return nil, nil
	case "send", "state", "typing", "receipt":
		if f.ID == "" {
			return nil, mxerr.MissingParam("id is required on %s frames", f.Type)
		}
	default:
		return nil, mxerr.Unrecognized(http.StatusBadRequest, "Unknown frame type %q", f.Type)
	}
	// A request runs as the same user and token as the socket; a token
	// revoked meanwhile fails the request as it would over HTTP.
	if _, err := c.gw.authenticate(c.ctx, c.token); err != nil {
		return nil, err
	}
	if c.gw.presence != nil {
		c.gw.presence.Touch(c.dev.UserID)
	}
	if f.RoomID == "" {
		return nil, mxerr.MissingParam("room_id is required")
	}
	if !rooms.ValidRoomID(f.RoomID) {
		return nil, mxerr.InvalidParam("%q is not a valid room ID", f.RoomID)
	}
	switch f.Type {
	case "send":
		return c.onSend(f)
	case "state":
		return c.onState(f)
	case "typing":
		return c.onTyping(f)
	default:
		return c.onReceipt(f)
	}
}

// eventContent checks an event's content, which like an HTTP body may be
// absent (an empty object).
func eventContent(raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage("{}"), nil
	}
	if raw[0] != '{' {
		return nil, mxerr.BadJSON("content must be a JSON object")
	}
	return raw, nil
}

// allowMessage applies the per-user message rate limit
// (ratelimit.MessagesPerUser).
func (c *wsConn) allowMessage() error {
	if c.gw.limits == nil {
		return nil
	}
	return c.gw.limits.Allow(c.ctx, ratelimit.MessagesPerUser, c.dev.UserID)
}

func (c *wsConn) onSend(f *wsFrame) (any, error) {
	if f.EventType == "" {
		return nil, mxerr.MissingParam("event_type is required")
	}
	if f.TxnID == "" {
		return nil, mxerr.MissingParam("txn_id is required")
	}
	content, err := eventContent(f.Content)
	if err != nil {
		return nil, err
	}
	if err := c.allowMessage(); err != nil {
		return nil, err
	}
	// The same transaction scope as PUT /send: a txn_id retried over
	// HTTP or another socket of the device yields the same event.
	id, err := c.gw.rooms.Send(c.ctx, rooms.SendParams{
		RoomID: f.RoomID, Sender: c.dev.UserID, DeviceID: c.dev.DeviceID, TxnID: f.TxnID,
		Type: f.EventType, Content: content,
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": id}, nil
}

func (c *wsConn) onState(f *wsFrame) (any, error) {
	if f.EventType == "" {
		return nil, mxerr.MissingParam("event_type is required")
	}
	content, err := eventContent(f.Content)
	if err != nil {
		return nil, err
	}
	key := ""
	if f.StateKey != nil {
		key = *f.StateKey
	}
	if err := c.allowMessage(); err != nil {
		return nil, err
	}
	id, err := c.gw.rooms.Send(c.ctx, rooms.SendParams{
		RoomID: f.RoomID, Sender: c.dev.UserID, Type: f.EventType, StateKey: &key, Content: content,
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": id}, nil
}

func (c *wsConn) onTyping(f *wsFrame) (any, error) {
	if c.gw.typing == nil {
		return nil, mxerr.Unrecognized(http.StatusBadRequest, "typing frames are not available on this server")
	}
	if f.Typing == nil {
		return nil, mxerr.MissingParam("typing is required")
	}
	if err := c.gw.typing.Set(c.ctx, c.dev.UserID, f.RoomID, *f.Typing, f.Timeout); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (c *wsConn) onReceipt(f *wsFrame) (any, error) {
	if c.gw.receipts == nil {
		return nil, mxerr.Unrecognized(http.StatusBadRequest, "receipt frames are not available on this server")
	}
	if f.ReceiptType == "" {
		return nil, mxerr.MissingParam("receipt_type is required")
	}
	if f.EventID == "" {
		return nil, mxerr.MissingParam("event_id is required")
	}
	var thread *string
	if len(f.ThreadID) > 0 && string(f.ThreadID) != "null" {
		var s string
		if err := json.Unmarshal(f.ThreadID, &s); err != nil {
			return nil, mxerr.InvalidParam("thread_id must be a string")
		}
		thread = &s
	}
	if err := c.gw.receipts.Send(c.ctx, c.dev.UserID, f.RoomID, f.ReceiptType, f.EventID, thread); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// onSync validates a sync frame and (re)starts the stream; a frame that
// fails validation leaves a running stream alone.
func (c *wsConn) onSync(f *wsFrame) error {
	// Pings renew presence (pingTick): the stream's waits need not.
	req := syncengine.Request{UserID: c.dev.UserID, DeviceID: c.dev.DeviceID, FullState: f.FullState, UseStateAfter: f.UseStateAfter,
		PresenceKept: true}
	if f.Since != "" {
		t, err := syncengine.ParseToken(f.Since)
		if err != nil {
			return err
		}
		req.Since = &t
	}
	switch f.SetPresence {
	case "", "online", "offline", "unavailable":
		req.SetPresence = f.SetPresence
	default:
		return mxerr.InvalidParam("set_presence must be online, offline or unavailable")
	}
	param, err := filterParam(f.Filter)
	if err != nil {
		return err
	}
	if req.Filter, err = c.gw.sync.ResolveFilter(c.ctx, c.dev.UserID, param); err != nil {
		return err
	}
	c.startSync(req, f.ID)
	return nil
}

// filterParam turns a frame's filter (an ID string or an inline filter
// object) into /sync's filter parameter.
func filterParam(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch raw[0] {
	case '{':
		return string(raw), nil
	case '"':
		var id string
		if err := json.Unmarshal(raw, &id); err != nil {
			return "", mxerr.BadJSON("filter must be a filter ID or a filter object")
		}
		if strings.HasPrefix(id, "{") {
			return "", mxerr.InvalidParam("filter ID %q is not valid", id)
		}
		return id, nil
	}
	return "", mxerr.BadJSON("filter must be a filter ID or a filter object")
}

// onAck releases a stream waiting for the client to confirm a delta
// carrying to-device messages. Acks of other deltas are ignored.
func (c *wsConn) onAck(f *wsFrame) {
	c.mu.Lock()
	st := c.stream
	c.mu.Unlock()
	if st == nil || f.NextBatch == "" {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.awaiting != "" && st.awaiting == f.NextBatch {
		st.awaiting = ""
		select {
		case st.acked <- struct{}{}:
		default:
		}
	}
}

// startSync stops the running stream, if any, and starts another.
func (c *wsConn) startSync(req syncengine.Request, id string) {
	c.stopSync()
	// Not derived from c.ctx: a child context costs its parent a map, and
	// every path that ends the socket stops the stream itself.
	ctx, cancel := context.WithCancel(context.Background())
	st := &wsStream{cancel: cancel, done: make(chan struct{}), setPresence: req.SetPresence, acked: make(chan struct{}, 1)}
	c.mu.Lock()
	c.stream = st
	c.mu.Unlock()
	go c.syncLoop(ctx, st, req, id)
}

func (c *wsConn) stopSync() {
	c.mu.Lock()
	st := c.stream
	c.stream = nil
	c.mu.Unlock()
	if st != nil {
		st.cancel()
		<-st.done
	}
}

// syncLoop streams deltas. It computes the next delta only after the
// previous one is written: at most one delta per socket exists at a
// time, and a slow client slows its own stream instead of queueing
// memory; the token chain makes this lossless, as the next Sync starts
// where the last written delta ended.
//
// A delta carrying to-device messages waits for the client's ack before
// the stream moves on, because moving on (Sync with that delta's token)
// deletes those messages on the server: a socket that died with the
// delta unread would otherwise lose them.
func (c *wsConn) syncLoop(ctx context.Context, st *wsStream, req syncengine.Request, id string) {
	defer close(st.done)
	first := true
	var lastKeys uint64
	// worth tells a response to send from one that only moves the token:
	// the first goes at once, whatever it holds (an initial sync, or the
	// delta since the client's token, which confirms the stream runs);
	// later ones when they carry news or new key counts.
	worth := func(r *syncengine.Response) bool {
		return first || !emptyDelta(r) || keysDigest(r) != lastKeys
	}
	for {
		d, err := c.gw.nextDelta(ctx, req, first, worth)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.streamFailed(id, err)
			return
		}
		if d.frame != nil {
			if d.ack {
				st.mu.Lock()
				st.awaiting = d.nextBatch
				st.mu.Unlock()
			}
			if err := c.writeFrame(d.frame); err != nil {
				if !errors.Is(err, errTooSlow) {
					c.abort()
				}
				return
			}
			lastKeys = d.keys
			if d.ack {
				select {
				case <-st.acked:
				case <-ctx.Done():
					return
				}
			}
		}
		first = false
		// A copy: a pointer into d would keep the frame alive.
		next := d.next
		req.Since = &next
		req.FullState = false
	}
}

// delta is the outcome of one step of a stream.
type delta struct {
	frame     []byte // the encoded sync frame; nil: nothing worth sending
	ack       bool   // the frame carries to-device messages
	nextBatch string
	next      syncengine.Token // where the stream goes on from
	keys      uint64           // keysDigest of the response
}

// prepare decides whether resp is worth sending and encodes it.
func prepare(resp *syncengine.Response, worth func(*syncengine.Response) bool) (delta, error) {
	d := delta{next: resp.Next, nextBatch: resp.NextBatch}
	if !worth(resp) {
		return d, nil
	}
	d.ack = resp.ToDevice != nil && len(resp.ToDevice.Events) > 0
	d.keys = keysDigest(resp)
	var err error
	d.frame, err = encodeDelta(resp, d.ack)
	return d, err
}

// nextDelta takes req's stream one step: the next response worth sending
// (encoded), waiting up to the poll time for one, or, without one, the
// position reached.
//
// Building and encoding a response take a deep stack (SQL, reflection),
// and a goroutine keeps the stack it grew while it then waits for news.
// With a waiter, the stream's goroutine only waits and writes, and builds
// run on short-lived goroutines, at most maxBuilds at once, whose stacks
// go with them: an idle socket holds two shallow goroutines. Without one,
// Sync builds and waits on the stream's goroutine, whose stack stays as
// deep as its deepest build until the garbage collector shrinks it.
func (gw *gateway) nextDelta(ctx context.Context, req syncengine.Request, first bool, worth func(*syncengine.Response) bool) (delta, error) {
	// Only a stream's first build must see what the client may have
	// written through another instance; later ones follow the news.
	req.Continued = !first
	if gw.waiter == nil {
		req.Timeout = gw.t.poll
		if first {
			req.Timeout = 0
		}
		resp, err := gw.sync.Sync(ctx, req)
		if err != nil {
			return delta{}, err
		}
		return prepare(resp, worth)
	}
	req.Timeout = 0
	deadline := time.Now().Add(gw.t.poll)
	for {
		// The generation is taken before the build, so that news
		// committed during the build ends the wait below at once.
		gen := gw.waiter.Generation(req.UserID)
		d, err := gw.build(ctx, req, worth)
		if err != nil || d.frame != nil {
			return d, err
		}
		remaining := time.Until(deadline)
		if remaining <= 0 || !gw.waiter.Wait(ctx, req.UserID, gen, remaining) {
			return d, ctx.Err()
		}
		req.Continued = true
	}
}

// build runs one Sync that does not wait, and prepares its answer, on a
// goroutine of its own.
func (gw *gateway) build(ctx context.Context, req syncengine.Request, worth func(*syncengine.Response) bool) (delta, error) {
	select {
	case gw.builds <- struct{}{}:
	case <-ctx.Done():
		return delta{}, ctx.Err()
	}
	type result struct {
		d   delta
		err error
	}
	ch := make(chan result, 1)
	go func() {
		defer func() { <-gw.builds }()
		resp, err := gw.sync.Sync(ctx, req)
		if err != nil {
			ch <- result{err: err}
			return
		}
		d, err := prepare(resp, worth)
		ch <- result{d, err}
	}()
	r := <-ch
	return r.d, r.err
}

// streamFailed reports a failed Sync. A Matrix error goes to the client
// as an error frame (the stream stops; the client may send another sync
// frame); anything else closes the socket with 1011 so that the client
// reconnects with its last next_batch.
func (c *wsConn) streamFailed(id string, err error) {
	if _, ok := mxerr.As(err); ok {
		_ = c.writeFrame(errorFrame(id, err))
		return
	}
	c.log.Error("websocket: sync failed", append(c.logAttrs(), "err", err)...)
	c.closeWith(websocket.CloseInternalServerErr, "internal error")
}

// emptyDelta reports whether a response holds nothing a client waits
// for (the sync engine's own notion, which it does not export).
func emptyDelta(r *syncengine.Response) bool {
	return (r.Rooms == nil || (len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 && len(r.Rooms.Knock) == 0)) &&
		r.AccountData == nil && r.Presence == nil && r.ToDevice == nil && r.DeviceLists == nil
}

// keysDigest sums up the per-device key counts every /sync answer
// carries, which a socket sends again only when they change. A digest,
// not a copy, is what a stream keeps between deltas.
func keysDigest(r *syncengine.Response) uint64 {
	h := fnv.New64a()
	for _, k := range slices.Sorted(maps.Keys(r.OTKCounts)) {
		fmt.Fprintf(h, "%s=%d\x00", k, r.OTKCounts[k])
	}
	if r.Fallback != nil {
		h.Write([]byte{1})
		for _, k := range *r.Fallback {
			fmt.Fprintf(h, "%s\x00", k)
		}
	}
	return h.Sum64()
}

// responseFrame encodes {"type":"response","id":…,"data":…}.
func responseFrame(id string, data any) []byte {
	b, err := json.Marshal(struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Data any    `json:"data"`
	}{"response", id, data})
	if err != nil {
		return errorFrame(id, err)
	}
	return b
}

// errorFrame encodes {"type":"error","id":…,"errcode":…,"error":…} with
// the error's extra fields (retry_after_ms, soft_logout), as HTTP would
// answer. Non-Matrix errors become M_UNKNOWN.
func errorFrame(id string, err error) []byte {
	me, ok := mxerr.As(err)
	if !ok {
		me = mxerr.Custom(http.StatusInternalServerError, "M_UNKNOWN", "Internal server error")
	}
	m := make(map[string]any, 4+len(me.Extra))
	maps.Copy(m, me.Extra)
	m["type"] = "error"
	if id != "" {
		m["id"] = id
	}
	m["errcode"], m["error"] = me.Code, me.Msg
	b, _ := json.Marshal(m)
	return b
}
