package sync

import "testing"

func TestTokenRoundTrip(t *testing.T) {
	tok := Token{Events: 12, AccountData: 3, Receipts: 4, ToDevice: 5, DeviceLists: 6, Typing: 1700000000000, Presence: 1700000000001}
	got, err := ParseToken(tok.String())
	if err != nil || got != tok {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range []string{"", "x1", "s", "s1_a", "s-1", "s1_2_3_4_5_6_7_8"} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
	if old, err := ParseToken("s42"); err != nil || old.Events != 42 || old.Receipts != 0 {
		t.Fatalf("short token: %+v %v", old, err)
	}
	if m := (Token{Events: 5, Typing: 1}).max(Token{Events: 3, Typing: 9}); m.Events != 5 || m.Typing != 9 {
		t.Fatalf("max: %+v", m)
	}
}
