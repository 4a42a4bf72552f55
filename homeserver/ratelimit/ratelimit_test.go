package ratelimit

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/mxerr"
)

func testLimiters(t *testing.T) map[string]*Limiter {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	out := map[string]*Limiter{"memory": New(true, nil, log)}
	addr := os.Getenv("PARLEY_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Redis at %s is required in CI: %v", addr, err)
		}
		t.Logf("*** Redis unreachable at %s: skipping the Redis limiter ***", addr)
	} else {
		t.Cleanup(func() { _ = rdb.Close() })
		out["redis"] = New(true, rdb, log)
	}
	return out
}

func TestBurstThenLimit(t *testing.T) {
	for name, l := range testLimiters(t) {
		t.Run(name, func(t *testing.T) {
			now := time.Unix(1_700_000_000, 0)
			l.now = func() time.Time { return now }
			rule := Rule{Name: "t" + time.Now().Format("150405.000000"), PerSecond: 1, Burst: 3}
			ctx := context.Background()
			for i := range 3 {
				if err := l.Allow(ctx, rule, "k"); err != nil {
					t.Fatalf("request %d within burst refused: %v", i, err)
				}
			}
			err := l.Allow(ctx, rule, "k")
			me, ok := mxerr.As(err)
			if !ok || me.Code != "M_LIMIT_EXCEEDED" || me.Status != 429 {
				t.Fatalf("4th request: %v, want M_LIMIT_EXCEEDED", err)
			}
			if ms := me.Extra["retry_after_ms"].(int64); ms < 900 || ms > 1000 {
				t.Fatalf("retry_after_ms = %d, want about 1000", ms)
			}
			if err := l.Allow(ctx, rule, "other"); err != nil {
				t.Fatalf("another key was limited: %v", err)
			}
			now = now.Add(time.Second)
			if err := l.Allow(ctx, rule, "k"); err != nil {
				t.Fatalf("after waiting: %v", err)
			}
		})
	}
}

func TestDisabledAllowsEverything(t *testing.T) {
	l := New(false, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for range 100 {
		if err := l.Allow(context.Background(), LoginPerIP, "x"); err != nil {
			t.Fatal(err)
		}
	}
}
