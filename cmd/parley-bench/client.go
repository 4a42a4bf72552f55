package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// client speaks the Matrix client-server API to any homeserver.
type client struct {
	base string
	http *http.Client
}

func newClient(base string, conns int, timeout time.Duration) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns
	tr.MaxIdleConnsPerHost = conns
	return &client{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: tr, Timeout: timeout}}
}

// apiError is a non-2xx answer.
type apiError struct {
	Status  int
	Errcode string
	Msg     string
	Retry   time.Duration
	Body    map[string]any
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Errcode, e.Msg)
}

// kind names an error for the error table: "429 M_LIMIT_EXCEEDED",
// "timeout", "connection refused"…
func kind(op string, err error) string {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return fmt.Sprintf("%s: %d %s", op, ae.Status, ae.Errcode)
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout"):
		return op + ": timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return op + ": connection refused"
	case strings.Contains(err.Error(), "connection reset"):
		return op + ": connection reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return op + ": EOF"
	}
	return op + ": " + err.Error()
}

// do sends a request and decodes a JSON answer into out (if not nil).
// The returned time is when the answer had been read in full.
func (c *client) do(ctx context.Context, method, path, token string, body, out any) (time.Time, error) {
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case []byte:
			rd = bytes.NewReader(b)
		default:
			j, err := json.Marshal(b)
			if err != nil {
				return time.Time{}, err
			}
			rd = bytes.NewReader(j)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return time.Time{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	at := time.Now()
	if err != nil {
		return at, err
	}
	if resp.StatusCode/100 != 2 {
		ae := &apiError{Status: resp.StatusCode}
		_ = json.Unmarshal(b, &ae.Body)
		ae.Errcode, _ = ae.Body["errcode"].(string)
		ae.Msg, _ = ae.Body["error"].(string)
		if ms, ok := ae.Body["retry_after_ms"].(float64); ok {
			ae.Retry = time.Duration(ms) * time.Millisecond
		} else if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			ae.Retry = time.Duration(s) * time.Second
		}
		return at, ae
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return at, fmt.Errorf("%s %s: bad JSON: %w", method, path, err)
		}
	}
	return at, nil
}

// retrying runs op until it succeeds, honouring rate limits, for setup
// steps that must not fail on a busy or rate-limiting server.
func retrying(ctx context.Context, op func() error) error {
	for attempt := 0; ; attempt++ {
		err := op()
		var ae *apiError
		if err == nil || !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || attempt > 50 {
			return err
		}
		wait := max(ae.Retry, 100*time.Millisecond)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// user is a registered account.
type user struct {
	ID, Token string
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// register creates a user: with a shared secret through Synapse's admin
// API (which Parley, Synapse and others implement), else through open
// registration with m.login.dummy.
func (c *client) register(ctx context.Context, name, secret string) (user, error) {
	pw := "bench-" + randomHex(8)
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	if secret != "" {
		var n struct {
			Nonce string `json:"nonce"`
		}
		if _, err := c.do(ctx, http.MethodGet, "/_synapse/admin/v1/register", "", nil, &n); err != nil {
			return user{}, err
		}
		m := hmac.New(sha1.New, []byte(secret))
		m.Write([]byte(n.Nonce + "\x00" + name + "\x00" + pw + "\x00notadmin"))
		body := map[string]any{"nonce": n.Nonce, "username": name, "password": pw, "admin": false, "mac": hex.EncodeToString(m.Sum(nil))}
		if _, err := c.do(ctx, http.MethodPost, "/_synapse/admin/v1/register", "", body, &out); err != nil {
			return user{}, err
		}
		return user{ID: out.UserID, Token: out.AccessToken}, nil
	}
	body := map[string]any{"username": name, "password": pw, "auth": map[string]any{"type": "m.login.dummy"}}
	_, err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/register", "", body, &out)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		// Servers that want the session of a user-interactive flow.
		if session, _ := ae.Body["session"].(string); session != "" {
			body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
			_, err = c.do(ctx, http.MethodPost, "/_matrix/client/v3/register", "", body, &out)
		}
	}
	if err != nil {
		return user{}, err
	}
	return user{ID: out.UserID, Token: out.AccessToken}, nil
}

func (c *client) createRoom(ctx context.Context, u user) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	_, err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", u.Token,
		map[string]any{"preset": "public_chat", "name": "parley-bench " + time.Now().Format(time.RFC3339)}, &out)
	return out.RoomID, err
}

func (c *client) join(ctx context.Context, u user, room string) error {
	_, err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(room), u.Token, map[string]any{}, nil)
	return err
}

func (c *client) send(ctx context.Context, u user, room, txn string, content []byte) error {
	_, err := c.do(ctx, http.MethodPut, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/"+txn, u.Token, content, nil)
	return err
}

// syncBody is the part of a /sync answer the bench reads.
type syncBody struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					Type    string          `json:"type"`
					Content json.RawMessage `json:"content"`
				} `json:"events"`
				Limited bool `json:"limited"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

func (c *client) sync(ctx context.Context, u user, since, filter string, timeout time.Duration) (*syncBody, time.Time, error) {
	q := url.Values{"filter": {filter}, "timeout": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
	if since != "" {
		q.Set("since", since)
	}
	var out syncBody
	at, err := c.do(ctx, http.MethodGet, "/_matrix/client/v3/sync?"+q.Encode(), u.Token, nil, &out)
	return &out, at, err
}

// benchFilter limits sync to the bench room's messages, with a timeline
// long enough that a busy interval is not cut short.
func benchFilter(room string) string {
	f := map[string]any{
		"room": map[string]any{
			"rooms":        []string{room},
			"timeline":     map[string]any{"limit": 500, "types": []string{"m.room.message"}},
			"state":        map[string]any{"types": []string{}, "lazy_load_members": true},
			"ephemeral":    map[string]any{"types": []string{}},
			"account_data": map[string]any{"types": []string{}},
		},
		"presence":     map[string]any{"types": []string{}},
		"account_data": map[string]any{"types": []string{}},
	}
	b, _ := json.Marshal(f)
	return string(b)
}

// stamp is what each bench message carries.
type stamp struct {
	sender int
	seq    int64
	sent   time.Time
}

// benchKey is the content key holding the stamp.
const benchKey = "org.parley.bench"

// newMessage builds a message's content, padded to about size bytes of body.
func newMessage(sender int, seq int64, sent time.Time, size int) []byte {
	body := fmt.Sprintf("bench %d/%d ", sender, seq)
	if pad := size - len(body); pad > 0 {
		body += strings.Repeat("x", pad)
	}
	b, _ := json.Marshal(map[string]any{
		"msgtype": "m.text", "body": body,
		// Microseconds: canonical JSON allows integers up to 2^53 only.
		benchKey: map[string]int64{"s": int64(sender), "q": seq, "t": sent.UnixMicro()},
	})
	return b
}

// readStamp finds the stamp in a message's content.
func readStamp(content []byte) (stamp, bool) {
	var c struct {
		B *struct {
			S int   `json:"s"`
			Q int64 `json:"q"`
			T int64 `json:"t"`
		} `json:"org.parley.bench"`
	}
	if json.Unmarshal(content, &c) != nil || c.B == nil {
		return stamp{}, false
	}
	return stamp{sender: c.B.S, seq: c.B.Q, sent: time.UnixMicro(c.B.T)}, true
}
