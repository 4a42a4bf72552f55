package httpapi

import (
	"net/url"
	"testing"
)

// TestCacheEscapedPath checks that EscapedPath answers as before, without
// allocating for the paths Matrix clients send.
func TestCacheEscapedPath(t *testing.T) {
	for _, raw := range []string{
		"/_matrix/client/v3/rooms/!abc:example.org/send/m.room.message/t1",
		"/_matrix/client/v3/rooms/%21abc%3Aexample.org/state/m.room.member/%40bob%3Aexample.org",
		"/_matrix/client/v3/rooms/!abc:example.org/state/m.custom/a%2Fb",
		"/_matrix/client/v3/profile/@alice:example.org/displayname",
		"/_matrix/client/v3/directory/room/%23caf%C3%A9:example.org",
		"/_matrix/client/v3/user/@a:b/filter/with%20space",
		"/_matrix/media/v3/download/example.org/abc%25def",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		want := u.EscapedPath()
		wantPath := u.Path
		cacheEscapedPath(u)
		if got := u.EscapedPath(); got != want && unescapeOr(got) != unescapeOr(want) {
			t.Errorf("%s: EscapedPath %q, was %q", raw, got, want)
		}
		if u.Path != wantPath {
			t.Errorf("%s: Path changed to %q", raw, u.Path)
		}
	}
	u, _ := url.Parse("/_matrix/client/v3/rooms/!abc:example.org/send/m.room.message/t1")
	cacheEscapedPath(u)
	if n := testing.AllocsPerRun(100, func() { _ = u.EscapedPath() }); n != 0 {
		t.Errorf("EscapedPath allocates %v times", n)
	}
}

func unescapeOr(s string) string {
	u, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return u
}
