package rooms

import (
	"context"
	"slices"
	"testing"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true},
		{"*", "anything.example", true},
		{"", "", true},
		{"", "a", false},
		{"evil.com", "evil.com", true},
		{"evil.com", "evil.co", false},
		{"evil.com", "notevil.com", false},
		{"*.evil.com", "a.b.evil.com", true},
		{"*.evil.com", "evil.com", false},
		{"ev?l.com", "evil.com", true},
		{"ev?l.com", "evl.com", false},
		{"?", "é", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"**", "x", true},
		{"a.com*", "a.com", true},
	} {
		if got := globMatch(c.pattern, c.name); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestServerHost(t *testing.T) {
	for _, c := range []struct {
		in, host string
		ip       bool
	}{
		{"example.org", "example.org", false},
		{"example.org:8448", "example.org", false},
		{"1.2.3.4", "1.2.3.4", true},
		{"1.2.3.4:80", "1.2.3.4", true},
		{"[::1]", "[::1]", true},
		{"[2001:db8::1]:8448", "[2001:db8::1]", true},
		{"::1", "::1", true},
		{"[not-ip]:1", "[not-ip]", false},
		{"[broken", "[broken", false},
	} {
		host, ip := serverHost(c.in)
		if host != c.host || ip != c.ip {
			t.Errorf("serverHost(%q) = %q, %v; want %q, %v", c.in, host, ip, c.host, c.ip)
		}
	}
}

func TestServerACLAllows(t *testing.T) {
	for _, c := range []struct {
		name    string
		content string
		server  string
		want    bool
	}{
		{"allow all", `{"allow":["*"]}`, "a.example", true},
		{"no allow list denies everyone", `{"deny":["evil.example"]}`, "a.example", false},
		{"empty content denies everyone", `{}`, "a.example", false},
		{"deny wins over allow", `{"allow":["*"],"deny":["evil.example"]}`, "evil.example", false},
		{"deny ignores the port", `{"allow":["*"],"deny":["evil.example"]}`, "evil.example:8448", false},
		{"deny glob", `{"allow":["*"],"deny":["*.evil.example"]}`, "sub.evil.example", false},
		{"case-insensitive", `{"allow":["*"],"deny":["EVIL.example"]}`, "evil.EXAMPLE", false},
		{"allow list only", `{"allow":["good.example"]}`, "good.example", true},
		{"not on the allow list", `{"allow":["good.example"]}`, "other.example", false},
		{"IP literals allowed by default", `{"allow":["*"]}`, "1.2.3.4", true},
		{"IP literals denied", `{"allow":["*"],"allow_ip_literals":false}`, "1.2.3.4:8448", false},
		{"IPv6 literals denied", `{"allow":["*"],"allow_ip_literals":false}`, "[::1]:8448", false},
		{"non-boolean allow_ip_literals is true", `{"allow":["*"],"allow_ip_literals":"no"}`, "1.2.3.4", true},
		{"names unaffected by allow_ip_literals", `{"allow":["*"],"allow_ip_literals":false}`, "a.example", true},
		{"non-string entries skipped", `{"allow":[5,null,"*"],"deny":[{"x":1}]}`, "a.example", true},
		{"non-array lists are empty", `{"allow":"*"}`, "a.example", false},
	} {
		if got := parseServerACL([]byte(c.content)).allows(c.server); got != c.want {
			t.Errorf("%s: allows(%q) = %v, want %v", c.name, c.server, got, c.want)
		}
	}
}

func TestServerACLOfRoom(t *testing.T) {
	forEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		e := newTestEngine(t, db)
		alice := "@alice:local.test"
		room, err := e.CreateRoom(ctx, alice, CreateRoomRequest{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		allow, deny, ipOK, err := e.ServerACL(ctx, room)
		if err != nil || !slices.Equal(allow, []string{"*"}) || deny != nil || !ipOK {
			t.Fatalf("no ACL: %v %v %v %v", allow, deny, ipOK, err)
		}
		if ok, err := e.ServerAllowed(ctx, room, "anyone.example"); err != nil || !ok {
			t.Fatalf("no ACL allows everyone: %v %v", ok, err)
		}
		_, err = e.Send(ctx, SendParams{RoomID: room, Sender: alice, Type: "m.room.server_acl", StateKey: ptr(""),
			Content: content(map[string]any{"allow": []string{"*"}, "deny": []string{"*.Evil.example"}, "allow_ip_literals": false})})
		if err != nil {
			t.Fatal(err)
		}
		allow, deny, ipOK, err = e.ServerACL(ctx, room)
		if err != nil || !slices.Equal(allow, []string{"*"}) || !slices.Equal(deny, []string{"*.Evil.example"}) || ipOK {
			t.Fatalf("ACL: %v %v %v %v", allow, deny, ipOK, err)
		}
		for server, want := range map[string]bool{"good.example": true, "a.evil.example:443": false, "10.0.0.1": false} {
			if ok, err := e.ServerAllowed(ctx, room, server); err != nil || ok != want {
				t.Errorf("ServerAllowed(%s) = %v, %v; want %v", server, ok, err, want)
			}
		}
		if _, err := e.ServerAllowed(ctx, "!unknown:local.test", "a.example"); !mxerr.IsCode(err, "M_NOT_FOUND") {
			t.Fatalf("unknown room: %v", err)
		}
	})
}
