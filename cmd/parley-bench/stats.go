package main

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// latencies collects send→receive latencies from every receiver.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d ...time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

// summary is the distribution of a set of latencies.
type summary struct {
	N                       int
	P50, P95, P99, Max, Avg time.Duration
}

// summarize sorts ds in place and summarizes it.
func summarize(ds []time.Duration) summary {
	if len(ds) == 0 {
		return summary{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return summary{
		N:   len(ds),
		P50: percentile(ds, 50),
		P95: percentile(ds, 95),
		P99: percentile(ds, 99),
		Max: ds[len(ds)-1],
		Avg: sum / time.Duration(len(ds)),
	}
}

// percentile is the nearest-rank percentile of sorted values: the
// smallest value with at least p% of the values at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[len(sorted)-1]
	}
	// ceil(p/100 × n), computed in integers to avoid float error
	// (p is given to at most 3 decimals).
	milli := int64(p*1000 + 0.5)
	n := int64(len(sorted))
	rank := (milli*n + 100_000 - 1) / 100_000
	return sorted[max(rank, 1)-1]
}

// errorCounts counts errors by kind.
type errorCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (e *errorCounts) add(kind string) {
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]int{}
	}
	e.m[kind]++
	e.mu.Unlock()
}

func (e *errorCounts) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, v := range e.m {
		n += v
	}
	return n
}

// String lists kinds by count, most frequent first: "kind=n, …".
func (e *errorCounts) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	keys := slices.Collect(maps.Keys(e.m))
	sort.Slice(keys, func(i, j int) bool {
		if e.m[keys[i]] != e.m[keys[j]] {
			return e.m[keys[i]] > e.m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", k, e.m[k])
	}
	return b.String()
}

// ms formats a duration in milliseconds with sensible precision.
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	switch {
	case f < 10:
		return fmt.Sprintf("%.2fms", f)
	case f < 100:
		return fmt.Sprintf("%.1fms", f)
	}
	return fmt.Sprintf("%.0fms", f)
}
