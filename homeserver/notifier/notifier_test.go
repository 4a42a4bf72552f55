package notifier

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

type fakeMembers map[string][]string

func (f fakeMembers) LocalMembers(_ context.Context, room string) ([]string, error) {
	return f[room], nil
}

func TestWaitWakesOnNotify(t *testing.T) {
	n := New(slog.New(slog.NewTextHandler(io.Discard, nil)), fakeMembers{"!r": {"@a", "@b"}}, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		wake   func()
		user   string
		expect bool
	}{
		{"room wakes member", func() { n.NotifyRoom("!r") }, "@a", true},
		{"room does not wake stranger", func() { n.NotifyRoom("!r") }, "@c", false},
		{"extra user woken", func() { n.NotifyRoom("!r", "@c") }, "@c", true},
		{"user wake", func() { n.NotifyUsers("@d") }, "@d", true},
		{"wake all", n.WakeAll, "@zzz", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gen := n.Generation(tc.user)
			go func() {
				time.Sleep(20 * time.Millisecond)
				tc.wake()
			}()
			if got := n.Wait(ctx, tc.user, gen, 300*time.Millisecond); got != tc.expect {
				t.Fatalf("woken = %v, want %v", got, tc.expect)
			}
		})
	}
}

func TestNoLostWakeUp(t *testing.T) {
	n := New(slog.New(slog.NewTextHandler(io.Discard, nil)), nil, nil)
	gen := n.Generation("@a")
	n.NotifyUsers("@a") // happens between computing and waiting
	start := time.Now()
	if !n.Wait(context.Background(), "@a", gen, time.Second) || time.Since(start) > 100*time.Millisecond {
		t.Fatal("a change before Wait was lost")
	}
}
