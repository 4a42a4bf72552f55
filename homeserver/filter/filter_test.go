package filter

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"empty", `{}`, true},
		{"full", `{"event_fields":["type"],"event_format":"client","room":{"timeline":{"limit":10,"types":["m.room.*"]},"state":{"lazy_load_members":true}}}`, true},
		{"bad format", `{"event_format":"xml"}`, false},
		{"negative limit", `{"room":{"timeline":{"limit":-1}}}`, false},
		{"wrong type", `{"room":{"rooms":"!a:b"}}`, false},
		{"not json", `{`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("Parse(%s) err = %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

func TestAllows(t *testing.T) {
	f := &EventFilter{Types: []string{"m.room.*"}, NotTypes: []string{"m.room.member"}, NotSenders: []string{"@spam:x"}}
	for _, tc := range []struct {
		typ, sender string
		want        bool
	}{
		{"m.room.message", "@a:x", true},
		{"m.room.member", "@a:x", false},
		{"m.reaction", "@a:x", false},
		{"m.room.message", "@spam:x", false},
	} {
		if got := f.Allows(tc.typ, tc.sender); got != tc.want {
			t.Errorf("Allows(%s, %s) = %v, want %v", tc.typ, tc.sender, got, tc.want)
		}
	}
	var nilF *EventFilter
	if !nilF.Allows("x", "y") {
		t.Error("nil filter must allow everything")
	}
}

func TestAllowsNone(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{`{}`, false},
		{`{"presence":{"types":[]}}`, true},
		{`{"presence":{"senders":[]}}`, true},
		{`{"presence":{"limit":0}}`, true},
		{`{"presence":{"types":["m.presence"]}}`, false},
		{`{"presence":{"not_types":["*"]}}`, false}, // excludes all too, but is not spotted: conservative
		{`{"presence":{"limit":5}}`, false},
	} {
		f, err := Parse([]byte(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Presence.AllowsNone(); got != tc.want {
			t.Errorf("%s: AllowsNone = %v, want %v", tc.in, got, tc.want)
		}
	}
}
