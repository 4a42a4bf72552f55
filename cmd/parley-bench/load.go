package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// WebSocket gateway details (docs/websocket.md).
const (
	wsPath = "/_matrix/client/unstable/org.parley.ws/v1/connect"
)

// registerAll registers n users, a few at a time.
func registerAll(ctx context.Context, c *client, o options, n int) ([]user, error) {
	users := make([]user, n)
	errs := make([]error, n)
	sem := make(chan struct{}, o.setupConns)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = retrying(ctx, func() error {
				u, err := c.register(ctx, fmt.Sprintf("%s-%d", o.prefix, i), o.sharedSecret)
				users[i] = u
				return err
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("registering users: %w", err)
	}
	return users, nil
}

// joinAll joins users to room, a few at a time.
func joinAll(ctx context.Context, c *client, o options, users []user, room string) error {
	errs := make([]error, len(users))
	sem := make(chan struct{}, o.setupConns)
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = retrying(ctx, func() error { return c.join(ctx, u, room) })
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("joining the room: %w", err)
	}
	return nil
}

// run is one load run's shared state.
type run struct {
	o      options
	c      *client
	room   string
	filter string
	errs   errorCounts
	putLat latencies
}

// receiver follows the room and records what arrives.
type receiver struct {
	r    *run
	u    user
	seen map[uint64]struct{}
	lat  []time.Duration
	got  atomic.Int64
	dups int
	// batches counts the sync answers (or frames) that brought messages.
	batches int64
}

func key(s stamp) uint64 { return uint64(s.sender)<<40 | uint64(s.seq) }

// take records the messages of one sync answer, received at at.
func (rc *receiver) take(b *syncBody, at time.Time, initial bool) {
	jr, ok := b.Rooms.Join[rc.r.room]
	if !ok {
		return
	}
	if jr.Timeline.Limited && !initial {
		// The server dropped part of an interval: those messages are lost
		// to this client unless it paginates, which the bench does not.
		rc.r.errs.add("receive: limited timeline")
	}
	n := rc.got.Load()
	defer func() {
		if rc.got.Load() > n {
			rc.batches++
		}
	}()
	for _, ev := range jr.Timeline.Events {
		if ev.Type != "m.room.message" {
			continue
		}
		s, ok := readStamp(ev.Content)
		if !ok {
			continue
		}
		k := key(s)
		if _, dup := rc.seen[k]; dup {
			rc.dups++
			rc.r.errs.add("receive: duplicate")
			continue
		}
		rc.seen[k] = struct{}{}
		rc.lat = append(rc.lat, at.Sub(s.sent))
		rc.got.Add(1)
	}
}

// followSync long-polls /sync until ctx ends.
func (rc *receiver) followSync(ctx context.Context, ready func()) {
	var since string
	for first := true; ctx.Err() == nil; {
		timeout := 30 * time.Second
		if first {
			timeout = 0
		}
		b, at, err := rc.r.c.sync(ctx, rc.u, since, rc.r.filter, timeout)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			rc.r.errs.add(kind("sync", err))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		rc.take(b, at, first)
		since = b.NextBatch
		if first {
			first = false
			ready()
		}
	}
}

// wsFrame is a server frame of the WebSocket gateway.
type wsFrame struct {
	Type        string          `json:"type"`
	NextBatch   string          `json:"next_batch"`
	AckRequired bool            `json:"ack_required"`
	Data        json.RawMessage `json:"data"`
	Errcode     string          `json:"errcode"`
}

func wsURL(base string) string {
	return "ws" + strings.TrimPrefix(base, "http") + wsPath
}

// followWS streams sync over the WebSocket gateway until ctx ends,
// reconnecting with the last next_batch when the socket drops.
func (rc *receiver) followWS(ctx context.Context, ready func()) {
	var since string
	first := true
	for ctx.Err() == nil {
		conn, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL(rc.r.o.url), http.Header{"Authorization": {"Bearer " + rc.u.Token}})
		if err != nil {
			if ctx.Err() == nil {
				rc.r.errs.add(kind("ws dial", err))
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		start := map[string]any{"type": "sync", "filter": json.RawMessage(rc.r.filter)}
		if since != "" {
			start["since"] = since
		}
		err = conn.WriteJSON(start)
		for err == nil {
			var mt int
			var data []byte
			mt, data, err = conn.ReadMessage()
			at := time.Now()
			if err == nil && mt != websocket.TextMessage {
				err = errors.New("binary frame")
			}
			if err != nil {
				break
			}
			var f wsFrame
			if err = json.Unmarshal(data, &f); err != nil {
				break
			}
			switch f.Type {
			case "sync":
				var b syncBody
				if err = json.Unmarshal(f.Data, &b); err != nil {
					break
				}
				rc.take(&b, at, first)
				since = f.NextBatch
				if f.AckRequired {
					err = conn.WriteJSON(map[string]string{"type": "ack", "next_batch": f.NextBatch})
				}
				if first {
					first = false
					ready()
				}
			case "error":
				rc.r.errs.add("ws: error " + f.Errcode)
			}
		}
		stop()
		conn.Close()
		if ctx.Err() != nil {
			return
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			rc.r.errs.add(fmt.Sprintf("ws: closed %d", ce.Code))
		} else {
			rc.r.errs.add(kind("ws", err))
		}
	}
}

// sender sends messages until the deadline, pacing itself to its share
// of the target rate.
func (r *run) sender(ctx context.Context, idx int, u user, start, deadline time.Time, sent *atomic.Int64) {
	var interval time.Duration
	next := start
	if r.o.rate > 0 {
		interval = time.Duration(float64(r.o.senders) / r.o.rate * float64(time.Second))
		next = start.Add(interval * time.Duration(idx) / time.Duration(r.o.senders))
	}
	var puts []time.Duration
	defer func() { r.putLat.add(puts...) }()
	for seq := int64(0); ctx.Err() == nil; seq++ {
		if interval > 0 {
			if d := time.Until(next); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
			next = next.Add(interval)
		}
		t0 := time.Now()
		if !t0.Before(deadline) {
			return
		}
		err := r.c.send(ctx, u, r.room, fmt.Sprintf("%s-%d-%d", r.o.prefix, idx, seq), newMessage(idx, seq, t0, r.o.size))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.errs.add(kind("send", err))
			var ae *apiError
			if errors.As(err, &ae) && ae.Retry > 0 {
				time.Sleep(ae.Retry)
			}
			continue
		}
		puts = append(puts, time.Since(t0))
		sent.Add(1)
	}
}

// loadResult is what a load run measured.
type loadResult struct {
	sent       int64
	sendTime   time.Duration
	delivered  int64
	expected   int64
	lat, put   summary
	mem        memory
	peakRSS    int64
	memErr     error
	setupTime  time.Duration
	catchUp    time.Duration
	duplicates int
	batches    int64
}

func runLoad(ctx context.Context, o options) error {
	setupStart := time.Now()
	c := newClient(o.url, o.senders+o.receivers+o.setupConns, o.timeout)
	n := o.senders + o.receivers
	logf("registering %d users on %s", n, o.url)
	users, err := registerAll(ctx, c, o, n)
	if err != nil {
		return err
	}
	var room string
	if err := retrying(ctx, func() (err error) { room, err = c.createRoom(ctx, users[0]); return err }); err != nil {
		return fmt.Errorf("creating the room: %w", err)
	}
	if err := joinAll(ctx, c, o, users[1:], room); err != nil {
		return err
	}
	r := &run{o: o, c: c, room: room, filter: benchFilter(room)}
	logf("room %s: %d receivers over %s, %d senders", room, o.receivers, o.transport, o.senders)

	recvCtx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	receivers := make([]*receiver, o.receivers)
	var ready, done sync.WaitGroup
	for i := range receivers {
		rc := &receiver{r: r, u: users[i], seen: map[uint64]struct{}{}}
		receivers[i] = rc
		ready.Add(1)
		var once sync.Once
		readyFn := func() { once.Do(ready.Done) }
		done.Go(func() {
			defer readyFn()
			if o.transport == "ws" {
				rc.followWS(recvCtx, readyFn)
			} else {
				rc.followSync(recvCtx, readyFn)
			}
		})
	}
	ready.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	res := loadResult{setupTime: time.Since(setupStart)}

	var sampler *rssSampler
	if o.pid > 0 {
		sampler = startRSSSampler(o.pid, 200*time.Millisecond)
	}
	logf("sending for %s at %s", o.duration, rateString(o.rate))
	var sent atomic.Int64
	start := time.Now()
	deadline := start.Add(o.duration)
	var senders sync.WaitGroup
	for i, u := range users[o.receivers:] {
		senders.Go(func() { r.sender(ctx, i, u, start, deadline, &sent) })
	}
	senders.Wait()
	res.sendTime = time.Since(start)
	res.sent = sent.Load()

	// Let the receivers catch up.
	drainStart := time.Now()
	for time.Since(drainStart) < o.drain && ctx.Err() == nil {
		behind := false
		for _, rc := range receivers {
			behind = behind || rc.got.Load() < res.sent
		}
		if !behind {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.catchUp = time.Since(drainStart)
	stopRecv()
	done.Wait()
	if sampler != nil {
		res.peakRSS, res.memErr = sampler.Stop()
		if res.memErr == nil {
			res.mem, res.memErr = readMemory(o.pid)
		}
	}

	var all []time.Duration
	for _, rc := range receivers {
		res.delivered += rc.got.Load()
		res.duplicates += rc.dups
		res.batches += rc.batches
		all = append(all, rc.lat...)
	}
	res.expected = res.sent * int64(o.receivers)
	res.lat = summarize(all)
	res.put = summarize(r.putLat.d)
	printLoad(o, r, res)
	return nil
}

func rateString(rate float64) string {
	if rate <= 0 {
		return "max"
	}
	return fmt.Sprintf("%g msgs/s", rate)
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func printLoad(o options, r *run, res loadResult) {
	tput := float64(res.sent) / res.sendTime.Seconds()
	fmt.Printf("parley-bench %s transport=%s senders=%d receivers=%d rate=%s duration=%s size=%d\n",
		o.url, o.transport, o.senders, o.receivers, rateString(o.rate), o.duration, o.size)
	fmt.Printf("  setup     %d users, room %s, ready in %s\n", o.senders+o.receivers, r.room, res.setupTime.Round(time.Millisecond))
	fmt.Printf("  send      %d messages in %s = %.1f msgs/s; PUT p50=%s p99=%s max=%s\n",
		res.sent, res.sendTime.Round(time.Millisecond), tput, ms(res.put.P50), ms(res.put.P99), ms(res.put.Max))
	fmt.Printf("  delivery  %d / %d (receivers × sent) = %.3f%%, caught up %s after sending stopped\n",
		res.delivered, res.expected, ratio(res.delivered, res.expected), res.catchUp.Round(time.Millisecond))
	if res.batches > 0 {
		fmt.Printf("  batches   %d sync answers brought messages, %.1f messages each, %.1f per receiver per second\n",
			res.batches, float64(res.delivered)/float64(res.batches), float64(res.batches)/float64(max(o.receivers, 1))/res.sendTime.Seconds())
	}
	fmt.Printf("  latency   send→receive over %d samples: p50=%s p95=%s p99=%s max=%s avg=%s\n",
		res.lat.N, ms(res.lat.P50), ms(res.lat.P95), ms(res.lat.P99), ms(res.lat.Max), ms(res.lat.Avg))
	errs := r.errs.String()
	if errs == "" {
		errs = "none"
	}
	fmt.Printf("  errors    %s\n", errs)
	mem := ""
	switch {
	case o.pid == 0:
	case res.memErr != nil:
		fmt.Printf("  server    memory unreadable: %v\n", res.memErr)
	default:
		fmt.Printf("  server    VmHWM=%s VmRSS=%s (peak VmRSS while sending %s)\n", mib(res.mem.HWM), mib(res.mem.RSS), mib(res.peakRSS))
		mem = fmt.Sprintf(" hwm=%s rss=%s", mib(res.mem.HWM), mib(res.mem.RSS))
	}
	fmt.Printf("summary: %s %s s=%d r=%d rate=%s: %.0f msgs/s, delivered %.2f%%, p50=%s p95=%s p99=%s max=%s, errors=%d%s\n",
		o.transport, o.url, o.senders, o.receivers, rateString(o.rate), tput, ratio(res.delivered, res.expected),
		ms(res.lat.P50), ms(res.lat.P95), ms(res.lat.P99), ms(res.lat.Max), r.errs.total(), mem)
}
