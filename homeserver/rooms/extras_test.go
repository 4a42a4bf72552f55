package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation/pdu"

	"github.com/parley-chat/parley/internal/mxerr"
)

func pduWithContent(c string) *pdu.PDU { return &pdu.PDU{Content: json.RawMessage(c)} }

// fakeAccountData serves one user's m.ignored_user_list and counts reads;
// during, when set, runs inside a read (to race an invalidation).
type fakeAccountData struct {
	content json.RawMessage
	err     error
	reads   int
	during  func()
}

func (f *fakeAccountData) AccountData(_ context.Context, _, roomID, typ string) (json.RawMessage, error) {
	f.reads++
	if f.during != nil {
		f.during()
	}
	if roomID != "" || typ != "m.ignored_user_list" {
		return nil, errors.New("unexpected account data read")
	}
	if f.err != nil {
		return nil, f.err
	}
	if f.content == nil {
		return nil, mxerr.NotFound("Account data not found")
	}
	return f.content, nil
}

func TestParseIgnored(t *testing.T) {
	for _, c := range []struct {
		content string
		want    []string
	}{
		{`{"ignored_users":{"@a:x":{},"@b:x":{}}}`, []string{"@a:x", "@b:x"}},
		{`{"ignored_users":{"@me:x":{}}}`, nil},
		{`{"ignored_users":[]}`, nil},
		{`{"ignored_users":{}}`, nil},
		{`not json`, nil},
		{``, nil},
	} {
		got := parseIgnored(json.RawMessage(c.content), "@me:x")
		if len(got) != len(c.want) {
			t.Errorf("%s: %v, want %v", c.content, got, c.want)
			continue
		}
		for _, u := range c.want {
			if !got[u] {
				t.Errorf("%s: %s not ignored", c.content, u)
			}
		}
	}
}

func TestIgnoredUsersCache(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	e := &Engine{now: func() time.Time { return now }}
	if got, err := e.IgnoredUsers(ctx, "@me:x"); err != nil || got != nil {
		t.Fatalf("without an account data source: %v %v", got, err)
	}
	f := &fakeAccountData{}
	e.SetAccountData(f)
	if got, err := e.IgnoredUsers(ctx, "@me:x"); err != nil || len(got) != 0 {
		t.Fatalf("unset list: %v %v", got, err)
	}
	f.content = json.RawMessage(`{"ignored_users":{"@bob:x":{}}}`)
	if got, _ := e.IgnoredUsers(ctx, "@me:x"); len(got) != 0 || f.reads != 1 {
		t.Fatalf("the unset list should be cached: %v after %d reads", got, f.reads)
	}
	e.AccountDataChanged("@me:x")
	if got, _ := e.IgnoredUsers(ctx, "@me:x"); !got["@bob:x"] || f.reads != 2 {
		t.Fatalf("after a change: %v after %d reads", got, f.reads)
	}
	if _, _ = e.IgnoredUsers(ctx, "@me:x"); f.reads != 2 {
		t.Fatalf("cached read hit storage: %d", f.reads)
	}
	// Another instance's change shows once the entry is old enough.
	f.content = json.RawMessage(`{"ignored_users":{}}`)
	now = now.Add(ignoredTTL)
	if got, _ := e.IgnoredUsers(ctx, "@me:x"); len(got) != 0 || f.reads != 3 {
		t.Fatalf("after the TTL: %v after %d reads", got, f.reads)
	}
	// A change during a read keeps that read out of the cache.
	f.content = json.RawMessage(`{"ignored_users":{"@carol:x":{}}}`)
	e.AccountDataChanged("@me:x")
	f.during = func() { e.AccountDataChanged("@me:x") }
	_, _ = e.IgnoredUsers(ctx, "@me:x")
	f.during = nil
	if _, _ = e.IgnoredUsers(ctx, "@me:x"); f.reads != 5 {
		t.Fatalf("a read racing a change was cached (%d reads)", f.reads)
	}
	f.err = errors.New("database down")
	e.AccountDataChanged("@me:x")
	if _, err := e.IgnoredUsers(ctx, "@me:x"); err == nil {
		t.Fatal("errors other than M_NOT_FOUND must surface")
	}
}

func TestHiddenByIgnore(t *testing.T) {
	key := ""
	msg := &Event{}
	msg.Sender = "@bob:x"
	state := &Event{}
	state.Sender, state.StateKey = "@bob:x", &key
	ignored := map[string]bool{"@bob:x": true}
	if !hiddenByIgnore(ignored, msg) || hiddenByIgnore(ignored, state) || hiddenByIgnore(nil, msg) {
		t.Fatal("messages of ignored users hide, their state does not")
	}
}

func TestPageLimit(t *testing.T) {
	for _, c := range []struct {
		in, want int
		err      bool
	}{{0, 5, false}, {1, 1, false}, {7, 7, false}, {5000, 1000, false}, {-1, 0, true}} {
		got, err := pageLimit(c.in, 5, 1000)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("pageLimit(%d) = %d, %v", c.in, got, err)
		}
	}
}

func TestValidEdit(t *testing.T) {
	key := ""
	mk := func(typ, c string, state bool) *Event {
		ev := &Event{PDU: pduWithContent(c)}
		ev.Type = typ
		if state {
			ev.StateKey = &key
		}
		return ev
	}
	for _, c := range []struct {
		ev   *Event
		want bool
	}{
		{mk("m.room.message", `{"m.new_content":{"body":"x"}}`, false), true},
		{mk("m.room.message", `{"body":"* x"}`, false), false},
		{mk("m.room.message", `{"m.new_content":"x"}`, false), false},
		{mk("m.room.encrypted", `{"ciphertext":"..."}`, false), true},
		{mk("m.room.message", `{"m.new_content":{}}`, true), false},
		{nil, false},
	} {
		if got := validEdit(c.ev); got != c.want {
			t.Errorf("validEdit(%v) = %v", c.ev, got)
		}
	}
}
