package stateres

import (
	"context"
	"fmt"
	"maps"
	"testing"

	"maunium.net/go/mautrix/id"
)

// bigRoom is a public room with members joined users (plus alice, the creator)
// and two forks from its tip differing by 100 membership events: fork a has 40
// users leave and 10 kicked by alice; fork b has 25 other users leave and 25
// new users join. Every one of the 100 keys is conflicted.
func bigRoom(tb testing.TB, version id.RoomVersion, members int) (*testRoom, []StateMap) {
	r, main := newTestRoom(tb, version, nil)
	main.member("alice-join", alice, alice, "join")
	main.pl("pl0", alice, r.plContent(map[id.UserID]int{alice: 100}, nil))
	main.joinRules("jr-public", alice, "public")
	for i := range members {
		main.member(fmt.Sprintf("join-%d", i), bigRoomUser(i), bigRoomUser(i), "join", unchecked())
	}
	a, b := main.fork(), main.fork()
	for i := range 40 {
		a.member(fmt.Sprintf("a-leave-%d", i), bigRoomUser(i), bigRoomUser(i), "leave")
	}
	for i := 40; i < 50; i++ {
		a.member(fmt.Sprintf("a-kick-%d", i), alice, bigRoomUser(i), "leave")
	}
	for i := 50; i < 75; i++ {
		b.member(fmt.Sprintf("b-leave-%d", i), bigRoomUser(i), bigRoomUser(i), "leave")
	}
	for i := members; i < members+25; i++ {
		b.member(fmt.Sprintf("b-join-%d", i), bigRoomUser(i), bigRoomUser(i), "join")
	}
	return r, []StateMap{a.state, b.state}
}

// bigRoomUser is the i-th member of bigRoom.
func bigRoomUser(i int) id.UserID { return id.UserID(fmt.Sprintf("@user%05d:example.org", i)) }

func TestBigRoomResolution(t *testing.T) {
	// Every membership change is authorized in the merged state, so a's leaves
	// and kicks and b's leaves and joins all stand.
	const members = 2000
	for _, version := range []id.RoomVersion{id.RoomV11, id.RoomV12} {
		r, sets := bigRoom(t, version, members)
		want := maps.Clone(sets[0])
		for i := 50; i < 75; i++ {
			want[memberKey(bigRoomUser(i))] = id.EventID(fmt.Sprintf("$b-leave-%d", i))
		}
		for i := members; i < members+25; i++ {
			want[memberKey(bigRoomUser(i))] = id.EventID(fmt.Sprintf("$b-join-%d", i))
		}
		assertState(t, mustResolve(t, r, sets...), want)
	}
}

func BenchmarkResolve10kMembers100Conflicts(b *testing.B) {
	for _, version := range []id.RoomVersion{id.RoomV11, id.RoomV12} {
		b.Run("v"+string(version), func(b *testing.B) {
			r, sets := bigRoom(b, version, 10_000)
			src := r.source()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Resolve(ctx, version, sets, src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
