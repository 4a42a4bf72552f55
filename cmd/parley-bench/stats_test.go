package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	seq := func(n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = time.Duration(i + 1)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", []time.Duration{7}, 99, 7},
		{"p0 is the minimum", seq(10), 0, 1},
		{"p100 is the maximum", seq(10), 100, 10},
		{"median of 10", seq(10), 50, 5},
		{"median of 11", seq(11), 50, 6},
		{"p95 of 100", seq(100), 95, 95},
		{"p99 of 100", seq(100), 99, 99},
		{"p99 of 1000", seq(1000), 99, 990},
		{"p99.9 of 1000", seq(1000), 99.9, 999},
		{"p99 of 10: the top value", seq(10), 99, 10},
		{"p1 of 10", seq(10), 1, 1},
		{"p10 of 10 exactly", seq(10), 10, 1},
		{"p10.001 of 10", seq(10), 10.001, 2},
	} {
		if got := percentile(tc.in, tc.p); got != tc.want {
			t.Errorf("%s: percentile(%v) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	if s := summarize(nil); s != (summary{}) {
		t.Fatalf("empty: %+v", s)
	}
	in := make([]time.Duration, 1000)
	for i := range in {
		in[i] = time.Duration(i+1) * time.Millisecond
	}
	rand.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
	s := summarize(in)
	want := summary{N: 1000, P50: 500 * time.Millisecond, P95: 950 * time.Millisecond, P99: 990 * time.Millisecond,
		Max: 1000 * time.Millisecond, Avg: 500500 * time.Microsecond}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	if !slices.IsSorted(in) {
		t.Fatal("summarize sorts in place")
	}
}

func TestLatenciesConcurrent(t *testing.T) {
	var l latencies
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			for i := range 1000 {
				l.add(time.Duration(g*1000 + i))
			}
			done <- struct{}{}
		}()
	}
	for range 8 {
		<-done
	}
	if s := summarize(l.d); s.N != 8000 || s.Max != 7999 {
		t.Fatalf("%+v", s)
	}
}

func TestErrorCounts(t *testing.T) {
	var e errorCounts
	if e.String() != "" || e.total() != 0 {
		t.Fatal("zero value")
	}
	for _, k := range []string{"b", "a", "c", "c", "a", "c"} {
		e.add(k)
	}
	if got := e.String(); got != "c=3, a=2, b=1" {
		t.Fatalf("got %q", got)
	}
	if e.total() != 6 {
		t.Fatalf("total %d", e.total())
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tparley\nVmPeak:\t  900000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t  100000 kB\nThreads:\t9\n"
	m, err := parseStatus(status)
	if err != nil {
		t.Fatal(err)
	}
	if m.HWM != 123456<<10 || m.RSS != 100000<<10 {
		t.Fatalf("%+v", m)
	}
	if _, err := parseStatus("Name:\tx\n"); err == nil {
		t.Fatal("missing fields accepted")
	}
}

func TestMessageStamp(t *testing.T) {
	now := time.Unix(1700000000, 123456000)
	body := newMessage(3, 42, now, 64)
	s, ok := readStamp(body)
	if !ok || s.sender != 3 || s.seq != 42 || !s.sent.Equal(now) {
		t.Fatalf("stamp %+v %v", s, ok)
	}
	if _, ok := readStamp([]byte(`{"msgtype":"m.text","body":"hello"}`)); ok {
		t.Fatal("a foreign message read as a bench message")
	}
}
