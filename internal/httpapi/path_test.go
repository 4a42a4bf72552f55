package httpapi

import (
	"net/url"
	"testing"
)

// TestRoutingPath checks that the path the router sees is the encoded
// one, decoding to the request's path, and that plain paths are kept.
func TestRoutingPath(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{"/_matrix/client/v3/rooms/!abc:example.org/send/m.room.message/t1", "/_matrix/client/v3/rooms/!abc:example.org/send/m.room.message/t1"},
		{"/_matrix/client/v3/rooms/%21abc%3Aexample.org/state/m.room.member/%40bob%3Aexample.org", "/_matrix/client/v3/rooms/%21abc%3Aexample.org/state/m.room.member/%40bob%3Aexample.org"},
		{"/_matrix/client/v3/rooms/!abc:example.org/state/m.custom/a%2Fb", "/_matrix/client/v3/rooms/!abc:example.org/state/m.custom/a%2Fb"},
		{"/_matrix/client/v3/directory/room/%23caf%C3%A9:example.org", "/_matrix/client/v3/directory/room/%23caf%C3%A9:example.org"},
		{"/_matrix/client/v3/user/@a:b/filter/with%20space", "/_matrix/client/v3/user/@a:b/filter/with%20space"},
		{"/_matrix/media/v3/download/example.org/abc%25def", "/_matrix/media/v3/download/example.org/abc%25def"},
	} {
		u, err := url.Parse(c.raw)
		if err != nil {
			t.Fatal(err)
		}
		decoded := u.Path
		routingPath(u)
		if u.Path != c.want || u.RawPath != "" {
			t.Errorf("%s: routed as %q (raw %q), want %q", c.raw, u.Path, u.RawPath, c.want)
		}
		if back, err := url.PathUnescape(u.Path); err != nil || back != decoded {
			t.Errorf("%s: %q decodes to %q, want %q", c.raw, u.Path, back, decoded)
		}
	}
}
