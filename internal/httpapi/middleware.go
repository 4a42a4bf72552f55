package httpapi

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the per-route HTTP metrics.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inflight prometheus.Gauge
	// Resolved label sets, so that the hot path skips label hashing.
	counters   sync.Map // [3]string → prometheus.Counter
	histograms sync.Map // [2]string → prometheus.Observer
}

func (m *Metrics) observe(route, method string, status int, d time.Duration) {
	ck := [3]string{route, method, statusText(status)}
	c, ok := m.counters.Load(ck)
	if !ok {
		c, _ = m.counters.LoadOrStore(ck, m.requests.WithLabelValues(ck[0], ck[1], ck[2]))
	}
	c.(prometheus.Counter).Inc()
	hk := [2]string{route, method}
	h, ok := m.histograms.Load(hk)
	if !ok {
		h, _ = m.histograms.LoadOrStore(hk, m.latency.WithLabelValues(route, method))
	}
	h.(prometheus.Observer).Observe(d.Seconds())
}

// NewMetrics registers the HTTP metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "parley_http_request_duration_seconds", Help: "HTTP request latency by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_http_requests_in_flight", Help: "HTTP requests being served.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.inflight)
	return m
}

// Stack is the middleware every API request passes through, outermost
// first: request ID and logger, CORS, body limit, access log and metrics.
type Stack struct {
	Logger  *slog.Logger
	Metrics *Metrics
	// MaxBody bounds request bodies; routes that stream (media upload)
	// are listed in Unlimited by path prefix and apply their own limit.
	MaxBody   int64
	Unlimited []string
	// Proxies are trusted to set X-Forwarded-For.
	Proxies []netip.Prefix

	idsOnce sync.Once
	ids     *requestIDs
}

// Handler wraps next with the stack. The router must be next so that the
// route template is known when metrics are recorded.
func (s *Stack) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.idsOnce.Do(func() { s.ids = newRequestIDs() })
		id := s.ids.next()
		st := &reqState{id: id, ip: s.clientIP(r), base: s.Logger}
		ctx := context.WithValue(r.Context(), stateKey, st)
		r = r.WithContext(ctx)

		h := w.Header()
		h.Set("X-Request-Id", id)
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			// The spec forbids running endpoint logic for OPTIONS.
			w.WriteHeader(http.StatusOK)
			return
		}
		if r.Body != nil && s.MaxBody > 0 && !s.unlimited(r.URL.Path) {
			r.Body = http.MaxBytesReader(w, r.Body, s.MaxBody)
		}
		routingPath(r.URL)
		sw := &statusWriter{ResponseWriter: w}
		if s.Metrics != nil {
			s.Metrics.inflight.Inc()
		}
		next.ServeHTTP(sw, r)
		if s.Metrics != nil {
			s.Metrics.inflight.Dec()
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		route := RouteName(r)
		if s.Metrics != nil {
			s.Metrics.observe(route, r.Method, sw.status, time.Since(start))
		}
		level := slog.LevelDebug
		if sw.status >= 500 {
			level = slog.LevelWarn
		}
		if !s.Logger.Enabled(ctx, level) {
			return
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("route", route),
			slog.Int("status", sw.status),
			slog.Float64("ms", since(start)),
			slog.Int64("bytes", sw.size),
			slog.String("ip", ClientIP(ctx)),
		}
		st.mu.Lock()
		attrs = append(attrs, st.attrs...)
		st.mu.Unlock()
		st.logger().LogAttrs(ctx, level, "request", attrs...)
	})
}

func (s *Stack) unlimited(path string) bool {
	for _, p := range s.Unlimited {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// ClientIP returns the client's address, believing X-Forwarded-For only
// from trusted proxies.
func ClientIP(ctx context.Context) string {
	if st := stateOf(ctx); st != nil {
		return st.ip
	}
	return ""
}

func (s *Stack) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !s.trusted(addr) {
		return host
	}
	// Walk X-Forwarded-For from the right, skipping trusted proxies.
	xff := strings.Split(r.Header.Get("X-Forwarded-For"), ",")
	for i := len(xff) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(xff[i]))
		if err != nil {
			break
		}
		if !s.trusted(a) {
			return a.String()
		}
		host = a.String()
	}
	return host
}

func (s *Stack) trusted(a netip.Addr) bool {
	for _, p := range s.Proxies {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

func statusText(code int) string {
	switch {
	case code < 200:
		return "1xx"
	case code < 300:
		return "2xx"
	case code < 400:
		return "3xx"
	case code == 404:
		return "404"
	case code == 429:
		return "429"
	case code < 500:
		return "4xx"
	}
	return "5xx"
}

// routingPath makes Path the encoded path, which the router matches
// against and Var decodes, so that an escaped '/' inside a path variable
// (a state key, say) stays inside it. Most paths are already valid
// encodings of themselves and are left alone. Asking net/url for the
// encoded path once per route tried instead was a tenth of the server's
// CPU and a quarter of its allocations.
func routingPath(u *url.URL) {
	if u.RawPath == "" && !strings.Contains(u.Path, "%") {
		plain := true
		for i := 0; i < len(u.Path) && plain; i++ {
			c := u.Path[i]
			switch {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			case strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0:
			default:
				plain = false
			}
		}
		if plain {
			return
		}
	}
	u.Path, u.RawPath = u.EscapedPath(), ""
}
