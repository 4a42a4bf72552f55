package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// raiseFileLimit lifts the soft limit on open files towards need, up to
// the hard limit, and returns the limit in force.
func raiseFileLimit(need uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur >= need {
		return rl.Cur, nil
	}
	rl.Cur = min(need, rl.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return rl.Cur, nil
}

// processFileLimit reads a process's soft limit on open files.
func processFileLimit(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Max open files"); ok {
			fs := strings.Fields(rest)
			if len(fs) > 0 {
				if fs[0] == "unlimited" {
					return ^uint64(0), nil
				}
				return strconv.ParseUint(fs[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no open files limit in /proc/%d/limits", pid)
}

// idleFilter is -idle-filter's default: it keeps each stream's initial
// sync small.
const idleFilter = `{"room":{"timeline":{"limit":1},"state":{"types":[]}},"presence":{"types":[]}}`

func runIdle(ctx context.Context, o options) error {
	if o.pid == 0 {
		return fmt.Errorf("-idle-ws needs -pid to read the server's memory")
	}
	n := o.idleWS
	limit, err := raiseFileLimit(uint64(n) + 256)
	if err != nil {
		return fmt.Errorf("raising the open files limit: %w", err)
	}
	if limit < uint64(n)+64 {
		return fmt.Errorf("open files limit %d is too low for %d connections: raise the hard limit (ulimit -Hn)", limit, n)
	}
	if sl, err := processFileLimit(o.pid); err == nil && sl < uint64(n)+64 {
		logf("warning: the server's open files limit is %d, below %d connections: start it with a higher `ulimit -n`", sl, n)
	}
	c := newClient(o.url, o.setupConns, o.timeout)
	nu := min(o.idleUsers, n)
	logf("registering %d users on %s", nu, o.url)
	users, err := registerAll(ctx, c, o, nu)
	if err != nil {
		return err
	}
	// One initial sync per user, so that each socket starts from a token
	// and the server holds streams, not initial syncs.
	since := make([]string, nu)
	if o.idleSync {
		for i, u := range users {
			b, _, err := c.sync(ctx, u, "", o.idleFilter, 0)
			if err != nil {
				return fmt.Errorf("initial sync: %w", err)
			}
			since[i] = b.NextBatch
		}
	}
	before, err := settledMemory(ctx, o.pid)
	if err != nil {
		return err
	}
	logf("server VmRSS before: %s; opening %d connections", mib(before.RSS), n)

	conns := make([]*websocket.Conn, n)
	var errs errorCounts
	var opened, frames atomic.Int64
	var holding atomic.Bool
	shown := make(chan struct{}, o.showFrames)
	sem := make(chan struct{}, 64)
	var wg, readers sync.WaitGroup
	dialer := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	openStart := time.Now()
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			u := users[i%nu]
			conn, err := openIdle(ctx, dialer, o.url, u, since[i%nu], o.idleFilter, o.idleSync)
			if err != nil {
				errs.add(kind("open", err))
				return
			}
			conns[i] = conn
			if k := opened.Add(1); k%1000 == 0 {
				logf("%d connections open", k)
			}
			// Reading answers the server's pings.
			readers.Go(func() {
				for {
					_, b, err := conn.ReadMessage()
					if err != nil {
						return
					}
					frames.Add(1)
					if holding.Load() {
						select {
						case shown <- struct{}{}:
							logf("frame while holding: %.400s", b)
						default:
						}
					}
				}
			})
		})
	}
	wg.Wait()
	openTime := time.Since(openStart)
	afterOpen, err := readMemory(o.pid)
	if err != nil {
		return err
	}
	logf("%d connections open in %s; server VmRSS %s; holding %s", opened.Load(), openTime.Round(time.Millisecond), mib(afterOpen.RSS), o.hold)
	framesBefore := frames.Load()
	holding.Store(true)
	sampler := startRSSSampler(o.pid, time.Second)
	select {
	case <-time.After(o.hold):
	case <-ctx.Done():
	}
	peak, _ := sampler.Stop()
	after, err := readMemory(o.pid)
	if err != nil {
		return err
	}
	heldFrames := frames.Load() - framesBefore
	for _, conn := range conns {
		if conn != nil {
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			conn.Close()
		}
	}
	readers.Wait()

	k := opened.Load()
	per := func(m int64) string {
		if k == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.1fKiB", float64(m-before.RSS)/float64(k)/1024)
	}
	errText := errs.String()
	if errText == "" {
		errText = "none"
	}
	fmt.Printf("parley-bench %s idle-ws=%d users=%d sync=%v hold=%s\n", o.url, n, nu, o.idleSync, o.hold)
	fmt.Printf("  open      %d connections in %s; errors: %s; %d frames arrived while holding\n", k, openTime.Round(time.Millisecond), errText, heldFrames)
	fmt.Printf("  server    VmRSS before %s, all open %s (%s/conn), after holding %s (%s/conn), peak %s; VmHWM %s\n",
		mib(before.RSS), mib(afterOpen.RSS), per(afterOpen.RSS), mib(after.RSS), per(after.RSS), mib(peak), mib(after.HWM))
	// The difference can be low when the connections reuse memory the
	// server already held; the whole process charged to the connections
	// is a bound that nothing of the kind can lower.
	whole := "n/a"
	if k > 0 {
		whole = fmt.Sprintf("%.1fKiB", float64(peak)/float64(k)/1024)
	}
	fmt.Printf("  bound     the whole server at its peak, charged to the connections: %s/conn\n", whole)
	fmt.Printf("summary: idle-ws %s: %d conns (sync=%v), %s per conn after %s (%s right after opening, at most %s), rss %s→%s\n",
		o.url, k, o.idleSync, per(after.RSS), o.hold, per(afterOpen.RSS), whole, mib(before.RSS), mib(after.RSS))
	return nil
}

// openIdle opens one socket and, with sync, starts its stream. The
// server answers a sync frame at once with a first sync frame, and a
// probe frame of an unknown type with an error: both seen, the socket and
// its stream are up.
func openIdle(ctx context.Context, d websocket.Dialer, base string, u user, since, filter string, withSync bool) (*websocket.Conn, error) {
	conn, _, err := d.DialContext(ctx, wsURL(base), http.Header{"Authorization": {"Bearer " + u.Token}})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*websocket.Conn, error) {
		conn.Close()
		return nil, err
	}
	if withSync {
		start := map[string]any{"type": "sync"}
		if filter != "" {
			start["filter"] = json.RawMessage(filter)
		}
		if since != "" {
			start["since"] = since
		}
		if err := conn.WriteJSON(start); err != nil {
			return fail(err)
		}
	}
	if err := conn.WriteJSON(map[string]string{"type": "org.parley.bench.probe", "id": "probe"}); err != nil {
		return fail(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	for synced, probed := !withSync, false; !synced || !probed; {
		var f struct {
			Type, ID, Errcode string
		}
		if err := conn.ReadJSON(&f); err != nil {
			return fail(err)
		}
		switch {
		case f.Type == "sync":
			synced = true
		case f.Type == "error" && f.ID == "probe":
			probed = true
		case f.Type == "error":
			return fail(fmt.Errorf("sync refused: %s", f.Errcode))
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn, nil
}

// Settling: the server's memory is read every settleEvery until it moved
// by less than settleBand over settleSpan, or settleMax passed.
const (
	settleEvery = time.Second
	settleSpan  = 10 * time.Second
	settleBand  = 1 << 20
	settleMax   = 3 * time.Minute
)

// settledMemory waits for the server's resident memory to settle before
// reading it: registration hashes passwords with memory-hard functions,
// and a garbage-collected server hands that memory back to the system
// over the next minute or two, which would otherwise count against the
// connections opened after it.
func settledMemory(ctx context.Context, pid int) (memory, error) {
	start := time.Now()
	var window []memory
	for {
		m, err := readMemory(pid)
		if err != nil {
			return m, err
		}
		window = append(window, m)
		if len(window) > int(settleSpan/settleEvery) {
			window = window[1:]
			lo, hi := m.RSS, m.RSS
			for _, w := range window {
				lo, hi = min(lo, w.RSS), max(hi, w.RSS)
			}
			if hi-lo < settleBand {
				logf("server memory settled at %s after %s", mib(m.RSS), time.Since(start).Round(time.Second))
				return m, nil
			}
		}
		if time.Since(start) > settleMax {
			logf("server memory still moving after %s (%s); measuring from here", settleMax, mib(m.RSS))
			return m, nil
		}
		select {
		case <-ctx.Done():
			return m, ctx.Err()
		case <-time.After(settleEvery):
		}
	}
}
