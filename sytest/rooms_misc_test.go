package sytest

import (
	"context"
	"database/sql"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite"
)

// rxReports reads the reports a user made straight from the server's
// database (kind and reason): storing them is all the server does.
func rxReports(t *testing.T, s *Server, reporter string) []string {
	t.Helper()
	const q = `SELECT kind || ':' || COALESCE(reason, '') FROM reports WHERE reporter = $1 ORDER BY report_id`
	var out []string
	if strings.HasPrefix(s.Database, "sqlite://") {
		db, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(s.Database, "sqlite://")+"?mode=ro&_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.Query(strings.Replace(q, "$1", "?", 1), reporter)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		return out
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, s.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, q, reporter)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestReports(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "alice")
		bob := s.Register(t, "bob")
		outsider := s.Register(t, "outsider")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		ev := alice.rxSend(t, room, "offensive")
		reportEv := roomPath(room) + "/report/" + url.PathEscape(ev)

		t.Run("event", func(t *testing.T) {
			Must(t, bob.Do(t, "POST", reportEv, map[string]any{"reason": "spam", "score": -50}), 200)
			Must(t, bob.Do(t, "POST", reportEv, map[string]any{}), 200)
			Must(t, bob.Do(t, "POST", reportEv, map[string]any{"reason": strings.Repeat("é", 1000)}), 200)
			MustErr(t, bob.Do(t, "POST", reportEv, map[string]any{"reason": strings.Repeat("x", 1001)}), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "POST", reportEv, map[string]any{"score": 1}), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "POST", reportEv, map[string]any{"score": -101}), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "POST", reportEv, map[string]any{"reason": 5}), 400, "M_BAD_JSON")
			MustErr(t, bob.Do(t, "POST", reportEv, "{"), 400, "M_NOT_JSON")
			// Only joined members may report events, and only events they can see.
			MustErr(t, outsider.Do(t, "POST", reportEv, map[string]any{"reason": "x"}), 404, "M_NOT_FOUND")
			MustErr(t, bob.Do(t, "POST", roomPath(room)+"/report/$unknown", map[string]any{}), 404, "M_NOT_FOUND")
			MustErr(t, bob.Do(t, "POST", roomPath(room)+"/report/not-an-event", map[string]any{}), 400, "M_INVALID_PARAM")
			MustErr(t, bob.Do(t, "POST", roomPath("nope")+"/report/"+url.PathEscape(ev), map[string]any{}), 400, "M_INVALID_PARAM")
			MustErr(t, s.Do(t, "POST", reportEv, "", map[string]any{}), 401, "M_MISSING_TOKEN")
			got := rxReports(t, s, bob.ID)
			if len(got) != 3 || got[0] != "event:spam" || got[1] != "event:" {
				t.Fatalf("stored reports: %q", got)
			}
		})
		t.Run("room", func(t *testing.T) {
			// Reporting a room does not need membership.
			Must(t, outsider.Do(t, "POST", roomPath(room)+"/report", map[string]any{"reason": "bad room"}), 200)
			Must(t, outsider.Do(t, "POST", roomPath(room)+"/report", map[string]any{"reason": ""}), 200)
			MustErr(t, outsider.Do(t, "POST", roomPath(room)+"/report", map[string]any{}), 400, "M_MISSING_PARAM")
			MustErr(t, outsider.Do(t, "POST", roomPath(room)+"/report", map[string]any{"reason": strings.Repeat("x", 1001)}), 400, "M_INVALID_PARAM")
			MustErr(t, outsider.Do(t, "POST", roomPath("!unknown:"+s.Name)+"/report", map[string]any{"reason": "x"}), 404, "M_NOT_FOUND")
			MustErr(t, outsider.Do(t, "POST", roomPath("nope")+"/report", map[string]any{"reason": "x"}), 400, "M_INVALID_PARAM")
		})
		t.Run("user", func(t *testing.T) {
			path := v3 + "/users/" + url.PathEscape(alice.ID) + "/report"
			Must(t, outsider.Do(t, "POST", path, map[string]any{"reason": "rude"}), 200)
			Must(t, outsider.Do(t, "POST", v3+"/users/"+url.PathEscape("@someone:elsewhere.example")+"/report", map[string]any{"reason": ""}), 200)
			MustErr(t, outsider.Do(t, "POST", path, map[string]any{}), 400, "M_MISSING_PARAM")
			MustErr(t, outsider.Do(t, "POST", v3+"/users/not-a-user/report", map[string]any{"reason": "x"}), 400, "M_INVALID_PARAM")
			MustErr(t, outsider.Do(t, "POST", path, map[string]any{"reason": strings.Repeat("x", 1001)}), 400, "M_INVALID_PARAM")
			got := rxReports(t, s, outsider.ID)
			want := []string{"room:bad room", "room:", "user:rude", "user:"}
			if !slices.Equal(got, want) {
				t.Fatalf("stored reports: %q, want %q", got, want)
			}
		})
	})
}

func TestIgnoredUsers(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "alice")
		bob := s.Register(t, "bob")
		carol := s.Register(t, "carol")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		bob.join(t, room)
		carol.join(t, room)
		root := alice.rxSend(t, room, "root")
		bobReply := bob.rxSendEvent(t, room, "m.room.message", rxRel("m.thread", root, "bob in thread", nil))
		carolReply := carol.rxSendEvent(t, room, "m.room.message", rxRel("m.thread", root, "carol in thread", nil))
		bobRoot := bob.rxSend(t, room, "bob's root")
		carol.rxSendEvent(t, room, "m.room.message", rxRel("m.thread", bobRoot, "carol replies to bob", nil))
		bobOnly := carol.rxSend(t, room, "carol's root")
		bob.rxSendEvent(t, room, "m.room.message", rxRel("m.thread", bobOnly, "only bob here", nil))
		bobMsg := bob.rxSend(t, room, "hello from bob")
		bobState := bob.putState(t, room, "m.room.member", bob.ID, map[string]any{"membership": "join", "displayname": "Bob"})
		carolMsg := carol.rxSend(t, room, "hello from carol")
		bobLate := bob.rxSend(t, room, "bob again")
		ignore := func(t *testing.T, users map[string]any) {
			t.Helper()
			Must(t, alice.Do(t, "PUT", v3+"/user/"+url.PathEscape(alice.ID)+"/account_data/m.ignored_user_list",
				map[string]any{"ignored_users": users}), 200)
		}
		ids := func(r *Response) []string { return rxChunkIDs(r) }

		ignore(t, map[string]any{bob.ID: map[string]any{}})
		t.Run("messages and context hide the ignored user's events but not state", func(t *testing.T) {
			r := Must(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=50", nil), 200)
			got := ids(r)
			if slices.Contains(got, bobMsg) || slices.Contains(got, bobReply) || slices.Contains(got, bobRoot) || slices.Contains(got, bobLate) {
				t.Fatalf("bob's messages shown: %v", chunkBodies(r))
			}
			if !slices.Contains(got, bobState) || !slices.Contains(got, carolMsg) {
				t.Fatalf("state or carol missing: %v", got)
			}
			c := Must(t, alice.Do(t, "GET", roomPath(room)+"/context/"+url.PathEscape(carolMsg)+"?limit=20", nil), 200)
			for _, k := range []string{"events_before", "events_after"} {
				list, _ := c.JSON[k].([]any)
				for _, ev := range list {
					if rxDig(ev, "sender") == bob.ID && rxDig(ev, "state_key") == nil {
						t.Fatalf("%s holds bob's message: %v", k, ev)
					}
				}
			}
			MustErr(t, alice.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(bobMsg), nil), 404, "M_NOT_FOUND")
			MustErr(t, alice.Do(t, "GET", roomPath(room)+"/context/"+url.PathEscape(bobMsg), nil), 404, "M_NOT_FOUND")
			// Others still see bob.
			Must(t, carol.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(bobMsg), nil), 200)
		})
		t.Run("relations, aggregations and threads", func(t *testing.T) {
			r := Must(t, alice.Do(t, "GET", rxRoomV1(room)+"/relations/"+url.PathEscape(root), nil), 200)
			if got := ids(r); !slices.Equal(got, []string{carolReply}) {
				t.Fatalf("relations: %v", got)
			}
			rel := rxRelations(t, alice, room, root)
			if rxDig(rel, "m.thread", "count") != float64(1) || rxDig(rel, "m.thread", "latest_event", "event_id") != carolReply {
				t.Fatalf("thread aggregation counts bob: %v", rel)
			}
			th := Must(t, alice.Do(t, "GET", rxRoomV1(room)+"/threads", nil), 200)
			got := ids(th)
			if slices.Contains(got, bobOnly) || !slices.Contains(got, root) || !slices.Contains(got, bobRoot) {
				t.Fatalf("threads: %v", got)
			}
			chunk, _ := th.JSON["chunk"].([]any)
			for _, c := range chunk {
				if rxDig(c, "event_id") == bobRoot && rxDig(c, "content", "body") != nil {
					t.Fatalf("an ignored user's thread root is returned redacted: %v", c)
				}
			}
		})
		t.Run("timestamp_to_event skips ignored senders", func(t *testing.T) {
			ev := Must(t, alice.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(carolMsg), nil), 200)
			ts := int64(ev.JSON["origin_server_ts"].(float64))
			r := Must(t, alice.Do(t, "GET", rxRoomV1(room)+"/timestamp_to_event?dir=b&ts="+strconv.FormatInt(ts+60_000, 10), nil), 200)
			if r.Str("event_id") != carolMsg {
				t.Fatalf("newest event alice sees: %s", r)
			}
		})
		t.Run("unignoring applies at once", func(t *testing.T) {
			ignore(t, map[string]any{})
			Must(t, alice.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(bobMsg), nil), 200)
			r := Must(t, alice.Do(t, "GET", roomPath(room)+"/messages?dir=b&limit=50", nil), 200)
			if !slices.Contains(ids(r), bobMsg) {
				t.Fatalf("bob still hidden: %v", ids(r))
			}
		})
	})
}

func TestTimestampToEvent(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := Shared(t, dialect)
		alice := s.Register(t, "alice")
		bob := s.Register(t, "bob")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat", "initial_state": []any{map[string]any{
			"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})
		var ids []string
		var stamps []int64
		for i := range 3 {
			// Distinct timestamps make the expected answers exact.
			time.Sleep(3 * time.Millisecond)
			id := alice.rxSend(t, room, "m"+strconv.Itoa(i))
			ev := Must(t, alice.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(id), nil), 200)
			ids, stamps = append(ids, id), append(stamps, int64(ev.JSON["origin_server_ts"].(float64)))
		}
		path := func(dir string, ts int64) string {
			return rxRoomV1(room) + "/timestamp_to_event?dir=" + dir + "&ts=" + strconv.FormatInt(ts, 10)
		}

		t.Run("both directions", func(t *testing.T) {
			for _, c := range []struct {
				dir  string
				ts   int64
				want string
			}{
				{"f", stamps[1], ids[1]},
				{"b", stamps[1], ids[1]},
				{"f", stamps[0] + 1, ids[1]},
				{"b", stamps[2] - 1, ids[1]},
				{"b", stamps[2] + 3_600_000, ids[2]},
			} {
				r := Must(t, alice.Do(t, "GET", path(c.dir, c.ts), nil), 200)
				if r.Str("event_id") != c.want {
					t.Fatalf("dir=%s ts=%d: %s, want %s", c.dir, c.ts, r, c.want)
				}
				if _, ok := r.JSON["origin_server_ts"].(float64); !ok {
					t.Fatalf("no origin_server_ts: %s", r)
				}
			}
			MustErr(t, alice.Do(t, "GET", path("f", stamps[2]+3_600_000), nil), 404, "M_NOT_FOUND")
			r := Must(t, alice.Do(t, "GET", path("f", 0), nil), 200)
			ev := Must(t, alice.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(r.Str("event_id")), nil), 200)
			if ev.Str("type") != "m.room.create" {
				t.Fatalf("the first event is the create event: %s", ev)
			}
		})
		t.Run("only events the user may see", func(t *testing.T) {
			bob.join(t, room)
			// With joined visibility alice's messages are hidden from bob:
			// forwards the next event he sees is his join, backwards the
			// room's set-up.
			r := Must(t, bob.Do(t, "GET", path("f", stamps[0]), nil), 200)
			ev := Must(t, bob.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(r.Str("event_id")), nil), 200)
			if ev.Str("type") != "m.room.member" || ev.Str("state_key") != bob.ID {
				t.Fatalf("bob's first visible event after the messages is his join: %s", ev)
			}
			r = Must(t, bob.Do(t, "GET", path("b", stamps[2]), nil), 200)
			if slices.Contains(ids, r.Str("event_id")) {
				t.Fatalf("bob was shown a message he cannot see: %s", r)
			}
			ev = Must(t, bob.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(r.Str("event_id")), nil), 200)
			if ev.Str("state_key") != "" {
				t.Fatalf("expected a set-up state event: %s", ev)
			}
		})
		t.Run("bad input", func(t *testing.T) {
			base := rxRoomV1(room) + "/timestamp_to_event"
			MustErr(t, alice.Do(t, "GET", base+"?dir=f", nil), 400, "M_MISSING_PARAM")
			MustErr(t, alice.Do(t, "GET", base+"?ts=1", nil), 400, "M_MISSING_PARAM")
			MustErr(t, alice.Do(t, "GET", base+"?dir=x&ts=1", nil), 400, "M_INVALID_PARAM")
			MustErr(t, alice.Do(t, "GET", base+"?dir=f&ts=soon", nil), 400, "M_INVALID_PARAM")
			MustErr(t, alice.Do(t, "GET", base+"?dir=f&ts=-5", nil), 400, "M_INVALID_PARAM")
			MustErr(t, alice.Do(t, "GET", rxRoomV1("nope")+"/timestamp_to_event?dir=f&ts=1", nil), 400, "M_INVALID_PARAM")
			outsider := s.Register(t, "outsider")
			MustErr(t, outsider.Do(t, "GET", path("f", 0), nil), 403, "M_FORBIDDEN")
			MustErr(t, outsider.Do(t, "GET", rxRoomV1("!unknown:"+s.Name)+"/timestamp_to_event?dir=f&ts=1", nil), 403, "M_FORBIDDEN")
		})
	})
}
