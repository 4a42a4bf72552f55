package sytest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The WebSocket gateway as a client sees it (docs/websocket.md).
const (
	wsPath          = "/_matrix/client/unstable/org.parley.ws/v1/connect"
	wsProtocol      = "org.parley.ws.v1"
	wsTokenProtocol = "org.parley.access_token."
	wsCloseTooSlow  = 4008
)

// wsFrame is a server frame.
type wsFrame struct {
	Type         string          `json:"type"`
	ID           string          `json:"id"`
	NextBatch    string          `json:"next_batch"`
	AckRequired  bool            `json:"ack_required"`
	Data         json.RawMessage `json:"data"`
	Errcode      string          `json:"errcode"`
	Error        string          `json:"error"`
	RetryAfterMS int64           `json:"retry_after_ms"`
}

// wsClient is one socket of a test user.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
}

// wsDialOpts shape a dial.
type wsDialOpts struct {
	header    http.Header
	query     string
	protocols []string
	// rcvbuf pins the client's socket receive buffer (bytes) and makes
	// segments small, so that a client that stops reading fills the pipe
	// quickly.
	rcvbuf int
}

func wsURL(s *Server, query string) string {
	u := "ws" + strings.TrimPrefix(s.URL, "http") + wsPath
	if query != "" {
		u += "?" + query
	}
	return u
}

// dialWS opens a socket; a failed handshake returns the HTTP answer.
func dialWS(s *Server, o wsDialOpts) (*websocket.Conn, *Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Subprotocols: o.protocols}
	if o.rcvbuf > 0 {
		nd := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, o.rcvbuf)
				// A small segment size also keeps the server's send buffer
				// small: Linux sizes it from the peer's MSS, which on
				// loopback is otherwise 64 KiB.
				serr = errors.Join(serr, syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1024))
			})
			return errors.Join(err, serr)
		}}
		d.NetDialContext = nd.DialContext
	}
	conn, resp, err := d.Dial(wsURL(s, o.query), o.header)
	if err != nil && resp != nil {
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
		_ = json.Unmarshal(b, &r.JSON)
		return nil, r, err
	}
	return conn, nil, err
}

// ws opens a socket as u, authenticated with the Authorization header.
func (u *User) ws(t testing.TB) *wsClient {
	t.Helper()
	return u.wsWith(t, wsDialOpts{header: http.Header{"Authorization": {"Bearer " + u.Token}}})
}

func (u *User) wsWith(t testing.TB, o wsDialOpts) *wsClient {
	t.Helper()
	conn, r, err := dialWS(u.Server, o)
	if err != nil {
		t.Fatalf("dial: %v %v", err, r)
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn}
}

func (w *wsClient) write(v any) {
	w.t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := w.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		w.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame.
func (w *wsClient) read(timeout time.Duration) wsFrame {
	w.t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := w.conn.ReadMessage()
	if err != nil {
		w.t.Fatalf("read: %v", err)
	}
	var f wsFrame
	if err := json.Unmarshal(b, &f); err != nil {
		w.t.Fatalf("frame is not JSON: %v: %s", err, b)
	}
	return f
}

// next returns the next frame of a type, failing on anything else.
func (w *wsClient) next(typ string) wsFrame {
	w.t.Helper()
	f := w.read(20 * time.Second)
	if f.Type != typ {
		w.t.Fatalf("got a %q frame, want %q: %+v", f.Type, typ, f)
	}
	return f
}

// sync starts the stream.
func (w *wsClient) sync(since string, extra map[string]any) {
	w.t.Helper()
	m := map[string]any{"type": "sync"}
	if since != "" {
		m["since"] = since
	}
	for k, v := range extra {
		m[k] = v
	}
	w.write(m)
}

func (f wsFrame) sync(t testing.TB) syncResp {
	t.Helper()
	var s syncResp
	if err := json.Unmarshal(f.Data, &s); err != nil {
		t.Fatalf("sync frame data: %v", err)
	}
	if s.NextBatch != f.NextBatch || f.NextBatch == "" {
		t.Fatalf("frame next_batch %q, data next_batch %q", f.NextBatch, s.NextBatch)
	}
	return s
}

// collect reads sync frames until n message bodies of room arrived,
// returning them and the last frame's next_batch.
func (w *wsClient) collect(room string, n int) ([]string, string) {
	w.t.Helper()
	var got []string
	var next string
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < n {
		if time.Now().After(deadline) {
			w.t.Fatalf("only %d of %d messages arrived: %v", len(got), n, got)
		}
		f := w.next("sync")
		got = append(got, bodies(f.sync(w.t).Rooms.Join[room].Timeline.Events)...)
		next = f.NextBatch
	}
	return got, next
}

func (w *wsClient) request(v map[string]any) wsFrame {
	w.t.Helper()
	w.write(v)
	for {
		f := w.read(20 * time.Second)
		if f.Type == "sync" {
			continue
		}
		if f.ID != v["id"] {
			w.t.Fatalf("answer to %v has id %q: %+v", v["id"], f.ID, f)
		}
		return f
	}
}

func wsSendFrame(id, room, txn, body string) map[string]any {
	return map[string]any{"type": "send", "id": id, "room_id": room, "event_type": "m.room.message", "txn_id": txn,
		"content": map[string]any{"msgtype": "m.text", "body": body}}
}

func TestWebSocket(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "ws-alice")
		bob := s.Register(t, "ws-bob")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)

		t.Run("a message reaches the other side's socket", func(t *testing.T) {
			w := bob.ws(t)
			w.sync("", nil)
			init := w.next("sync").sync(t)
			if _, ok := init.Rooms.Join[room]; !ok {
				t.Fatal("the first delta of a fresh stream is not an initial sync")
			}
			// No sleep: the stream may be waiting already or not yet.
			alice.send(t, room, "hello socket")
			got, _ := w.collect(room, 1)
			if !slices.Equal(got, []string{"hello socket"}) {
				t.Fatalf("got %v", got)
			}
		})

		t.Run("send over the socket is idempotent per txn_id", func(t *testing.T) {
			w := alice.ws(t)
			r1 := w.request(wsSendFrame("c1", room, "ws-txn-1", "over ws"))
			if r1.Type != "response" {
				t.Fatalf("send: %+v", r1)
			}
			var d struct {
				EventID string `json:"event_id"`
			}
			_ = json.Unmarshal(r1.Data, &d)
			if !strings.HasPrefix(d.EventID, "$") {
				t.Fatalf("no event_id: %s", r1.Data)
			}
			r2 := w.request(wsSendFrame("c2", room, "ws-txn-1", "over ws"))
			if !strings.Contains(string(r2.Data), d.EventID) {
				t.Fatalf("a retried txn_id made another event: %s vs %s", r2.Data, d.EventID)
			}
			// HTTP with the same device and txn_id answers the same event.
			h := Must(t, alice.Do(t, "PUT", roomPath(room)+"/send/m.room.message/ws-txn-1",
				map[string]any{"msgtype": "m.text", "body": "over ws"}), 200)
			if h.Str("event_id") != d.EventID {
				t.Fatalf("HTTP retry got %s, socket %s", h.Str("event_id"), d.EventID)
			}
			r3 := w.request(wsSendFrame("c3", room, "ws-txn-2", "over ws"))
			if strings.Contains(string(r3.Data), d.EventID) || r3.Type != "response" {
				t.Fatalf("a new txn_id reused the event: %+v", r3)
			}
			m := Must(t, bob.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=10", nil), 200)
			if n := strings.Count(strings.Join(chunkBodies(m), "\n"), "over ws"); n != 2 {
				t.Fatalf("%d events for two transactions", n)
			}
			// State over the socket.
			st := w.request(map[string]any{"type": "state", "id": "s1", "room_id": room, "event_type": "m.room.topic",
				"state_key": "", "content": map[string]any{"topic": "socket topic"}})
			if st.Type != "response" || !strings.Contains(string(st.Data), "$") {
				t.Fatalf("state: %+v", st)
			}
			Must(t, bob.Do(t, "GET", roomPath(room)+"/state/m.room.topic", nil), 200)
		})

		t.Run("reconnecting with since loses and duplicates nothing", func(t *testing.T) {
			w := bob.ws(t)
			w.sync("", nil)
			since := w.next("sync").NextBatch
			var want []string
			for i := range 4 {
				b := fmt.Sprintf("resume %d", i)
				want = append(want, b)
				alice.send(t, room, b)
			}
			got, last := w.collect(room, 2)
			// Drop the socket mid-stream, without a close frame, and resume
			// from the last delta processed.
			w.conn.NetConn().Close()
			for i := 4; i < 8; i++ {
				b := fmt.Sprintf("resume %d", i)
				want = append(want, b)
				alice.send(t, room, b)
			}
			w2 := bob.ws(t)
			w2.sync(last, nil)
			more, _ := w2.collect(room, len(want)-len(got))
			got = append(got, more...)
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			// And a whole stream from an old token is the same history.
			w3 := bob.ws(t)
			w3.sync(since, map[string]any{"filter": map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 50}}}})
			all, _ := w3.collect(room, len(want))
			if !slices.Equal(all, want) {
				t.Fatalf("from the old token: %v", all)
			}
		})

		t.Run("authentication", func(t *testing.T) {
			_, r, err := dialWS(s, wsDialOpts{header: http.Header{"Authorization": {"Bearer pat_not_a_real_token"}}})
			if err == nil || r == nil {
				t.Fatalf("a bad token upgraded: %v", err)
			}
			MustErr(t, r, 401, "M_UNKNOWN_TOKEN")
			_, r, _ = dialWS(s, wsDialOpts{})
			MustErr(t, r, 401, "M_MISSING_TOKEN")
			_, r, _ = dialWS(s, wsDialOpts{protocols: []string{wsProtocol, wsTokenProtocol + "pat_nope"}})
			MustErr(t, r, 401, "M_UNKNOWN_TOKEN")

			// Browsers: the token as a subprotocol, or the query parameter.
			w := bob.wsWith(t, wsDialOpts{protocols: []string{wsProtocol, wsTokenProtocol + bob.Token}})
			if p := w.conn.Subprotocol(); p != wsProtocol {
				t.Fatalf("server selected subprotocol %q", p)
			}
			w.sync("", nil)
			w.next("sync")
			w = bob.wsWith(t, wsDialOpts{query: "access_token=" + url.QueryEscape(bob.Token)})
			w.sync("", nil)
			w.next("sync")

			// Not a WebSocket handshake: a Matrix error, not a hang.
			MustErr(t, bob.Do(t, "GET", wsPath, nil), 400, "M_UNRECOGNIZED")
		})

		t.Run("bad frames", func(t *testing.T) {
			w := bob.ws(t)
			w.write("{not json")
			if f := w.next("error"); f.Errcode != "M_NOT_JSON" {
				t.Fatalf("malformed JSON: %+v", f)
			}
			w.write(`["an","array"]`)
			if f := w.next("error"); f.Errcode != "M_BAD_JSON" {
				t.Fatalf("array: %+v", f)
			}
			if f := w.request(map[string]any{"type": "dance", "id": "d1"}); f.Type != "error" || f.Errcode != "M_UNRECOGNIZED" {
				t.Fatalf("unknown type: %+v", f)
			}
			if f := w.request(map[string]any{"type": "send", "id": "m1", "room_id": room, "event_type": "m.room.message"}); f.Errcode != "M_MISSING_PARAM" {
				t.Fatalf("send without txn_id: %+v", f)
			}
			if f := w.request(map[string]any{"type": "send", "id": "m2", "room_id": "nope", "event_type": "m.room.message", "txn_id": "x"}); f.Errcode != "M_INVALID_PARAM" {
				t.Fatalf("bad room ID: %+v", f)
			}
			if f := w.request(map[string]any{"type": "sync", "id": "y1", "since": "garbage"}); f.Errcode != "M_INVALID_PARAM" {
				t.Fatalf("bad since: %+v", f)
			}
			// The same errors as HTTP: not joined is M_FORBIDDEN.
			private := alice.createRoom(t, map[string]any{"preset": "private_chat"})
			if f := w.request(wsSendFrame("m3", private, "t-forbidden", "no")); f.Errcode != "M_FORBIDDEN" {
				t.Fatalf("send to a room not joined: %+v", f)
			}
			// Typing and receipts.
			if f := w.request(map[string]any{"type": "typing", "id": "ty1", "room_id": room, "typing": true, "timeout": 5000}); f.Type != "response" {
				t.Fatalf("typing: %+v", f)
			}
			ev := alice.send(t, room, "read me")
			if f := w.request(map[string]any{"type": "receipt", "id": "rc1", "room_id": room, "receipt_type": "m.read", "event_id": ev}); f.Type != "response" {
				t.Fatalf("receipt: %+v", f)
			}
			// Still usable after all that.
			w.sync("", nil)
			w.next("sync")
			// A frame over 1 MiB closes the socket with 1009.
			w.write(`{"type":"send","pad":"` + strings.Repeat("x", 1<<20) + `"}`)
			_ = w.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				_, _, err := w.conn.ReadMessage()
				if err == nil {
					continue
				}
				if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
					t.Fatalf("oversized frame: %v", err)
				}
				break
			}
		})
	})
}

// TestWebSocketSlowReader stops reading while large messages pile up:
// the server gives up on the client with close code 4008 and carries on.
func TestWebSocketSlowReader(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "wss-alice")
		bob := s.Register(t, "wss-bob")
		carol := s.Register(t, "wss-carol")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		carol.join(t, room)
		logFrom := logSize(s)

		slow := bob.wsWith(t, wsDialOpts{header: http.Header{"Authorization": {"Bearer " + bob.Token}}, rcvbuf: 4096})
		slow.sync("", map[string]any{"filter": map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 50}}}})
		slow.next("sync")
		// Carol keeps reading throughout.
		watcher := carol.ws(t)
		watcher.sync("", nil)
		watcher.next("sync")
		seen := make(chan string, 1000)
		go func() {
			defer close(seen)
			for {
				_, b, err := watcher.conn.ReadMessage()
				if err != nil {
					return
				}
				var f wsFrame
				var d syncResp
				if json.Unmarshal(b, &f) != nil || json.Unmarshal(f.Data, &d) != nil {
					return
				}
				for _, body := range bodies(d.Rooms.Join[room].Timeline.Events) {
					seen <- body
				}
			}
		}()

		// About 1.8 MB, far beyond what a 4 KiB receive window and the
		// server's send buffer hold. Bob reads nothing meanwhile.
		pad := strings.Repeat("p", 60_000)
		for i := range 30 {
			alice.sendEvent(t, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("big %d", i), "pad": pad})
		}
		waitLog(t, s, logFrom, 60*time.Second, "client too slow", bob.ID)

		// Reading again, bob drains what was in flight and then finds the
		// close frame.
		_ = slow.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		for {
			_, _, err := slow.conn.ReadMessage()
			if err == nil {
				continue
			}
			if !websocket.IsCloseError(err, wsCloseTooSlow) {
				t.Fatalf("slow reader: %v, want close %d", err, wsCloseTooSlow)
			}
			break
		}

		// The server is fine: carol's stream goes on, new sockets work.
		alice.send(t, room, "after the slow one")
		timeout := time.After(30 * time.Second)
		for found := false; !found; {
			select {
			case b, ok := <-seen:
				if !ok {
					t.Fatal("carol's socket ended")
				}
				found = b == "after the slow one"
			case <-timeout:
				t.Fatal("carol's stream stalled")
			}
		}
		again := bob.ws(t)
		again.sync("", nil)
		again.next("sync")
		Must(t, s.Do(t, "GET", "/_matrix/client/versions", "", nil), 200)
	})
}

func logSize(s *Server) int64 {
	fi, err := os.Stat(s.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// waitLog waits for a log line, written after offset from, holding every
// one of parts.
func waitLog(t *testing.T, s *Server, from int64, timeout time.Duration, parts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if f, err := os.Open(s.logPath); err == nil {
			_, _ = f.Seek(from, io.SeekStart)
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				line := sc.Text()
				ok := true
				for _, p := range parts {
					ok = ok && strings.Contains(line, p)
				}
				if ok {
					f.Close()
					return
				}
			}
			f.Close()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no log line with %q", parts)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
