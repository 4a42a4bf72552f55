// Command parley-bench measures a Matrix homeserver — Parley, Synapse,
// Dendrite, Conduit, Tuwunel or any other — over its client-server API,
// so that comparisons are like for like.
//
// Load mode (the default) registers senders+receivers users, creates one
// public room and joins everyone, then runs the senders for -duration,
// each with one request in flight, together at -rate messages per second
// (0: as fast as they can). Receivers follow the room over /sync
// long-polling (-transport sync) or over Parley's WebSocket gateway
// (-transport ws). Every message carries its send time; every receiver
// notes when each message arrives. It prints send throughput, send→receive
// latency percentiles over every receiver × message, the delivery ratio,
// errors by kind and, with -pid, the server's resident memory; then one
// summary line to paste into a note.
//
// Idle mode (-idle-ws N) opens N WebSocket connections spread over
// -idle-users users, each streaming sync and otherwise idle, holds them
// for -hold, and reports the server's resident memory before, after and
// per connection (-pid required). Each connection costs a file
// descriptor on both sides: the tool raises its own limit to the hard
// maximum, but the server needs `ulimit -n` above N too (and both hard
// limits must allow it). Each user's connections share one device, so a
// Parley server needs PARLEY_WEBSOCKET_SOCKETS_PER_DEVICE at or above
// N / -idle-users (8 by default; more close the oldest with 4009).
//
// Examples:
//
//	parley-bench -url http://127.0.0.1:8008 -shared-secret s3cret -pid $(pidof parley)
//	parley-bench -url http://127.0.0.1:8008 -rate 500 -transport ws -duration 30s
//	parley-bench -url http://127.0.0.1:8008 -idle-ws 10000 -pid $(pidof parley)
//
// The server must let the bench register users (open registration or a
// shared secret) and should have rate limits off, or the numbers measure
// the rate limiter. Setup retries requests answered 429.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// options are the command line.
type options struct {
	url          string
	sharedSecret string
	prefix       string
	pid          int

	senders    int
	receivers  int
	rate       float64
	duration   time.Duration
	drain      time.Duration
	size       int
	transport  string
	setupConns int
	timeout    time.Duration

	idleWS     int
	idleUsers  int
	hold       time.Duration
	idleSync   bool
	idleFilter string
	showFrames int
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("parley-bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: parley-bench [flags]\n\nLoad-tests a Matrix homeserver; see `go doc github.com/parley-chat/parley/cmd/parley-bench`.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8008", "homeserver base URL")
	fs.StringVar(&o.sharedSecret, "shared-secret", "", "registration shared secret (Synapse's /_synapse/admin/v1/register); empty: open registration with m.login.dummy")
	fs.StringVar(&o.prefix, "prefix", "", "user name prefix (default: bench-<random>)")
	fs.IntVar(&o.pid, "pid", 0, "server process ID, to report its memory from /proc/PID/status (same machine only)")

	fs.IntVar(&o.senders, "senders", 16, "concurrent senders, one request in flight each")
	fs.IntVar(&o.receivers, "receivers", 10, "receivers following the room")
	fs.Float64Var(&o.rate, "rate", 0, "target messages per second across all senders (0: as fast as possible)")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "how long the senders send")
	fs.DurationVar(&o.drain, "drain", 15*time.Second, "how long receivers may take to catch up after sending stops")
	fs.IntVar(&o.size, "size", 100, "message body size in bytes")
	fs.StringVar(&o.transport, "transport", "sync", "how receivers follow the room: sync (long-poll /sync) or ws (Parley's WebSocket gateway)")
	fs.IntVar(&o.setupConns, "setup-concurrency", 16, "concurrent requests while registering and joining")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "HTTP request timeout")

	fs.IntVar(&o.idleWS, "idle-ws", 0, "idle mode: open this many WebSocket connections and measure server memory per connection")
	fs.IntVar(&o.idleUsers, "idle-users", 100, "idle mode: users the connections are spread over")
	fs.DurationVar(&o.hold, "hold", 30*time.Second, "idle mode: how long to hold the connections before measuring")
	fs.BoolVar(&o.idleSync, "idle-sync", true, "idle mode: start a sync stream on each connection (false: connect only)")
	fs.StringVar(&o.idleFilter, "idle-filter", idleFilter, "idle mode: the sync filter of each stream (JSON; empty: none)")
	fs.IntVar(&o.showFrames, "show-frames", 0, "idle mode: log the first this many frames that arrive while holding")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case o.transport != "sync" && o.transport != "ws":
		return o, fmt.Errorf("-transport must be sync or ws")
	case o.idleWS == 0 && (o.senders < 1 || o.receivers < 0):
		return o, fmt.Errorf("need at least one sender")
	case o.rate < 0 || o.size < 0 || o.duration <= 0:
		return o, fmt.Errorf("-rate, -size and -duration must be positive")
	case o.idleWS < 0 || o.idleUsers < 1:
		return o, fmt.Errorf("-idle-ws and -idle-users must be positive")
	}
	if o.prefix == "" {
		o.prefix = "bench-" + randomHex(3)
	}
	o.url = strings.TrimRight(o.url, "/")
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if err.Error() == "flag: help requested" {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "parley-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.idleWS > 0 {
		err = runIdle(ctx, o)
	} else {
		err = runLoad(ctx, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley-bench:", err)
		os.Exit(1)
	}
}

// logf prints progress to stderr, keeping stdout for results.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}
