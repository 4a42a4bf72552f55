package sytest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// createRoom creates a room as u and returns its ID.
func (u *User) createRoom(t testing.TB, body map[string]any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	r := Must(t, u.Do(t, "POST", v3+"/createRoom", body), 200)
	id := r.Str("room_id")
	if id == "" {
		t.Fatalf("createRoom: %s", r)
	}
	return id
}

// send sends a message and returns its event ID.
func (u *User) send(t testing.TB, room, body string) string {
	t.Helper()
	return u.sendEvent(t, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
}

func (u *User) sendEvent(t testing.TB, room, typ string, content any) string {
	t.Helper()
	r := Must(t, u.Do(t, "PUT", v3+"/rooms/"+url.PathEscape(room)+"/send/"+typ+"/t"+randHex(6), content), 200)
	return r.Str("event_id")
}

func (u *User) putState(t testing.TB, room, typ, key string, content any) string {
	t.Helper()
	r := Must(t, u.Do(t, "PUT", v3+"/rooms/"+url.PathEscape(room)+"/state/"+typ+"/"+url.PathEscape(key), content), 200)
	return r.Str("event_id")
}

func (u *User) join(t testing.TB, room string) {
	t.Helper()
	Must(t, u.Do(t, "POST", v3+"/join/"+url.PathEscape(room), map[string]any{}), 200)
}

func roomPath(room string) string { return v3 + "/rooms/" + url.PathEscape(room) }

// messages returns the bodies of /messages's chunk.
func chunkBodies(r *Response) []string {
	var out []string
	chunk, _ := r.JSON["chunk"].([]any)
	for _, c := range chunk {
		ev := c.(map[string]any)
		if ev["type"] == "m.room.message" {
			content, _ := ev["content"].(map[string]any)
			b, _ := content["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func decodeJSON(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }
