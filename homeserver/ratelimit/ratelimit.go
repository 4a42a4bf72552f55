// Package ratelimit enforces request rates with the generic cell rate
// algorithm (GCRA): per-key state is one timestamp, kept in process or, when
// several instances share a Redis, in Redis so that the limit is global.
package ratelimit

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/parley-chat/parley/internal/mxerr"
)

// Rule is a rate: PerSecond sustained, with bursts of Burst.
type Rule struct {
	Name      string
	PerSecond float64
	Burst     int
}

func (r Rule) interval() time.Duration {
	return time.Duration(float64(time.Second) / r.PerSecond)
}

// The rules Parley applies, close to Synapse's defaults.
var (
	LoginPerIP       = Rule{Name: "login_ip", PerSecond: 0.17, Burst: 3}
	LoginPerAccount  = Rule{Name: "login_account", PerSecond: 0.17, Burst: 3}
	LoginFailures    = Rule{Name: "login_failed", PerSecond: 0.17, Burst: 3}
	RegisterPerIP    = Rule{Name: "register_ip", PerSecond: 0.17, Burst: 3}
	MessagesPerUser  = Rule{Name: "message", PerSecond: 10, Burst: 50}
	UIAPasswordFails = Rule{Name: "uia_password", PerSecond: 0.17, Burst: 5}
)

// Limiter decides whether a request may proceed.
type Limiter struct {
	enabled bool
	rdb     *redis.Client
	log     *slog.Logger
	now     func() time.Time

	mu    sync.Mutex
	tat   map[string]time.Time
	calls int
}

// New builds a limiter; rdb may be nil (in-process only).
func New(enabled bool, rdb *redis.Client, log *slog.Logger) *Limiter {
	return &Limiter{enabled: enabled, rdb: rdb, log: log, now: time.Now, tat: make(map[string]time.Time)}
}

// Enabled reports whether limits are enforced.
func (l *Limiter) Enabled() bool { return l != nil && l.enabled }

// Allow takes one unit for key under rule, or returns M_LIMIT_EXCEEDED
// with the time to wait.
func (l *Limiter) Allow(ctx context.Context, rule Rule, key string) error {
	if !l.Enabled() {
		return nil
	}
	k := rule.Name + ":" + key
	var wait time.Duration
	if l.rdb != nil {
		w, err := l.allowRedis(ctx, rule, k)
		if err == nil {
			wait = w
		} else {
			l.log.WarnContext(ctx, "rate limit: Redis unavailable, limiting in process", "err", err)
			wait = l.allowMemory(rule, k)
		}
	} else {
		wait = l.allowMemory(rule, k)
	}
	if wait > 0 {
		return mxerr.LimitExceeded(int64(math.Ceil(float64(wait) / float64(time.Millisecond))))
	}
	return nil
}

// Peek reports whether a unit is available without taking it.
func (l *Limiter) Peek(rule Rule, key string) error {
	if !l.Enabled() {
		return nil
	}
	k := rule.Name + ":" + key
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	tat := l.tat[k]
	if tat.Before(now) {
		return nil
	}
	if over := tat.Add(rule.interval()).Sub(now) - time.Duration(rule.Burst)*rule.interval(); over > 0 {
		return mxerr.LimitExceeded(over.Milliseconds() + 1)
	}
	return nil
}

func (l *Limiter) allowMemory(rule Rule, k string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.calls++
	if l.calls%4096 == 0 {
		for key, t := range l.tat {
			if t.Before(now) {
				delete(l.tat, key)
			}
		}
	}
	tat := l.tat[k]
	if tat.Before(now) {
		tat = now
	}
	iv := rule.interval()
	next := tat.Add(iv)
	if over := next.Sub(now) - time.Duration(rule.Burst)*iv; over > 0 {
		return over
	}
	l.tat[k] = next
	return 0
}

// gcra runs GCRA atomically in Redis. KEYS[1] holds the TAT in ms;
// ARGV: now ms, interval ms, burst. Returns ms to wait (0: allowed).
var gcra = redis.NewScript(`
local now = tonumber(ARGV[1])
local iv = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + iv
local over = (nxt - now) - burst * iv
if over > 0 then return over end
redis.call('SET', KEYS[1], nxt, 'PX', math.ceil(nxt - now) + 1000)
return 0
`)

func (l *Limiter) allowRedis(ctx context.Context, rule Rule, k string) (time.Duration, error) {
	ms, err := gcra.Run(ctx, l.rdb, []string{"parley:rl:" + k},
		l.now().UnixMilli(), rule.interval().Milliseconds(), rule.Burst).Int64()
	if err != nil {
		return 0, err
	}
	return time.Duration(ms) * time.Millisecond, nil
}
