// Package httpapi is what the API packages (clientapi, federation, mediaapi)
// share: handlers that return errors, one adapter that turns those errors
// into Matrix error bodies, JSON in and out with size limits, request IDs,
// CORS, access logs and per-route metrics.
package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"

	"github.com/parley-chat/parley/internal/mxerr"
)

// Handler is an HTTP handler that returns an error instead of writing one.
type Handler func(w http.ResponseWriter, r *http.Request) error

type ctxKey int

// stateKey holds a request's *reqState.
const stateKey ctxKey = 0

// reqState is what the stack knows of a request, in one context value:
// one allocation per request rather than one per value, and the request
// copied once.
type reqState struct {
	id, ip string
	base   *slog.Logger
	// log is base with the request ID, made when first asked for.
	logOnce sync.Once
	log     *slog.Logger
	// attrs are what handlers add to the access log line.
	mu    sync.Mutex
	attrs []slog.Attr
}

func stateOf(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey).(*reqState)
	return st
}

func (st *reqState) logger() *slog.Logger {
	st.logOnce.Do(func() { st.log = st.base.With(slog.String("req", st.id)) })
	return st.log
}

// RequestID returns the request's ID, also sent as X-Request-Id.
func RequestID(ctx context.Context) string {
	if st := stateOf(ctx); st != nil {
		return st.id
	}
	return ""
}

// Logger returns the request-scoped logger.
func Logger(ctx context.Context) *slog.Logger {
	if st := stateOf(ctx); st != nil {
		return st.logger()
	}
	return slog.Default()
}

// SetLogUser records who made the request for the access log.
func SetLogUser(ctx context.Context, userID string) {
	if st := stateOf(ctx); st != nil {
		st.mu.Lock()
		st.attrs = append(st.attrs, slog.String("user", userID))
		st.mu.Unlock()
	}
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// requestIDs makes request IDs: a random per-process prefix and a
// counter, unique across instances and cheap (they need not be secret).
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return &requestIDs{prefix: strings.ToLower(idEncoding.EncodeToString(b))}
}

func (r *requestIDs) next() string {
	return r.prefix + "-" + strconv.FormatUint(r.n.Add(1), 36)
}

// Wrap adapts h to http.Handler, writing any returned error as a Matrix
// error. 5xx answers carry the request ID in the body so that an operator
// can find the log line.
func Wrap(h Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			WriteError(w, r, err)
		}
	})
}

// WriteError writes err as a Matrix error body.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	ctx := r.Context()
	me, ok := mxerr.As(err)
	if !ok {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			me = mxerr.TooLarge("Request body is larger than %d bytes", mbe.Limit)
		case isInvalidInput(err):
			me = mxerr.InvalidParam("The request holds a value that cannot be stored (a NUL byte or an oversized string)")
			me.Cause = err
		case errors.Is(err, context.Canceled) && ctx.Err() != nil:
			// The client went away; nobody reads the answer.
			me = mxerr.Custom(499, "M_UNKNOWN", "Request cancelled")
		default:
			me = mxerr.Custom(http.StatusInternalServerError, "M_UNKNOWN", "Internal server error")
			me.Cause = err
		}
	}
	body := map[string]any{}
	if me.Code != "" {
		// A user-interactive authentication challenge has no errcode
		// unless a stage failed.
		body["errcode"], body["error"] = me.Code, me.Msg
	}
	for k, v := range me.Extra {
		body[k] = v
	}
	if me.Status >= 500 {
		id := RequestID(ctx)
		body["error"] = fmt.Sprintf("%s (request %s)", me.Msg, id)
		Logger(ctx).ErrorContext(ctx, "request failed", slog.String("errcode", me.Code), slog.Any("err", err))
	} else if me.Cause != nil {
		Logger(ctx).DebugContext(ctx, "request refused", slog.String("errcode", me.Code), slog.Any("err", me.Cause))
	}
	if me.Code == "M_LIMIT_EXCEEDED" {
		if ms, ok := me.Extra["retry_after_ms"].(int64); ok {
			w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
		}
	}
	_ = JSON(w, me.Status, body)
}

// isInvalidInput reports whether err says the client's input could not be
// stored (storage marks such errors with an InvalidInput method).
func isInvalidInput(err error) bool {
	var ie interface{ InvalidInput() bool }
	return errors.As(err, &ie) && ie.InvalidInput()
}

// JSON writes v as a JSON response.
func JSON(w http.ResponseWriter, status int, v any) error {
	// Encoded into a pooled buffer rather than by json.Marshal, whose
	// result is a copy of its own buffer: every response is garbage the
	// moment it is written.
	buf := jsonBuffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledJSON {
			buf.Reset()
			jsonBuffers.Put(buf)
		}
	}()
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	return nil
}

// jsonBuffers pools JSON's encoding buffers; maxPooledJSON keeps the rare
// large answer (an initial sync) from being held by the pool.
var jsonBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledJSON = 64 << 10

// RawJSON writes already-encoded JSON.
func RawJSON(w http.ResponseWriter, status int, b []byte) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return nil
}

// OK writes 200 with an empty JSON object.
func OK(w http.ResponseWriter) error { return RawJSON(w, http.StatusOK, []byte("{}")) }

// ReadBody reads the request body, which the body-limit middleware has
// already bounded.
func ReadBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, mxerr.TooLarge("Request body is larger than %d bytes", mbe.Limit)
		}
		return nil, mxerr.Unknown("Could not read request body").Wrap(err)
	}
	return b, nil
}

// Decode reads a JSON object body into v. A body that is not JSON is
// M_NOT_JSON; JSON of the wrong shape is M_BAD_JSON; an empty body is
// treated as {} when allowEmpty is set.
func Decode(r *http.Request, v any) error {
	b, err := ReadBody(r)
	if err != nil {
		return err
	}
	return DecodeBytes(b, v)
}

// ReadObject reads a body that must be a JSON object (empty counts as {})
// and returns it as sent, for handlers that store or forward it whole:
// M_NOT_JSON or M_BAD_JSON as Decode would answer, without decoding it.
func ReadObject(r *http.Request) ([]byte, error) {
	b, err := ReadBody(r)
	if err != nil {
		return nil, err
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return b, nil
	}
	if !json.Valid(t) {
		return nil, mxerr.NotJSON("Request body is not valid JSON")
	}
	if t[0] != '{' {
		return nil, mxerr.BadJSON("Request body must be a JSON object")
	}
	return b, nil
}

// DecodeBytes is Decode on an already-read body.
func DecodeBytes(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		b = []byte("{}")
	}
	if !json.Valid(b) {
		return mxerr.NotJSON("Request body is not valid JSON")
	}
	if b[0] != '{' {
		return mxerr.BadJSON("Request body must be a JSON object")
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return mxerr.BadJSON("Field %q has the wrong type", te.Field)
		}
		return mxerr.BadJSON("Request body has the wrong shape: %v", err)
	}
	return nil
}

// Var returns a path variable, decoded. The router matches on the
// encoded path so that %2F inside a variable (a state key, say) does not
// split it.
func Var(r *http.Request, name string) string {
	v := mux.Vars(r)[name]
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}

// NotFound answers unknown paths with 404 M_UNRECOGNIZED.
func NotFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, mxerr.Unrecognized(http.StatusNotFound, "Unrecognized request"))
	})
}

// MethodNotAllowed answers a known path with the wrong method with 405
// M_UNRECOGNIZED.
func MethodNotAllowed() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, mxerr.Unrecognized(http.StatusMethodNotAllowed, "Method %s not allowed here", r.Method))
	})
}

// Group registers routes under one or more path prefixes. Routes go
// flat onto the root router rather than into gorilla subrouters, whose
// method mismatches surface as 404 instead of 405.
type Group struct {
	r        *mux.Router
	prefixes []string
}

// NewGroup returns a group of routes under prefixes (at least one).
func NewGroup(r *mux.Router, prefixes ...string) *Group {
	return &Group{r: r, prefixes: prefixes}
}

// Handle registers h for method on path under every prefix.
func (g *Group) Handle(method, path string, h http.Handler) {
	for _, p := range g.prefixes {
		g.r.Handle(p+path, h).Methods(method)
	}
}

// statusWriter records the status code and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	size   int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.size += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer
// (flushing, hijacking for WebSockets, deadlines).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ReadFrom keeps the server's sendfile path for file downloads.
func (s *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := s.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(s.ResponseWriter, r)
	}
	s.size += n
	return n, err
}

// RouteName returns the route template of a request ("unmatched" if none),
// which keeps metric labels bounded.
func RouteName(r *http.Request) string {
	if route := mux.CurrentRoute(r); route != nil {
		if t, err := route.GetPathTemplate(); err == nil {
			return t
		}
	}
	return "unmatched"
}

// Timing is a helper for access logs.
func since(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
