// Package sytest holds Parley's black-box tests. They build the real
// binary once, start it on SQLite and on PostgreSQL (a fresh database per
// server), and drive it over HTTP as clients and peer servers do. They use
// nothing from the project but its public API.
package sytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// binary is the parley binary TestMain builds.
var binary string

// raceSeen records that some server's log reported a data race.
var raceSeen atomic.Bool

// Main builds the binary, runs the tests, and stops shared servers.
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "parley-sytest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "parley")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		// The server gets the race detector too when the tests run with it.
		args = append(args, "-race")
	}
	args = append(args, "github.com/parley-chat/parley/cmd/parley")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "sytest: building parley:", err)
		return 1
	}
	code := m.Run()
	sharedMu.Lock()
	for _, s := range shared {
		s.stop()
	}
	sharedMu.Unlock()
	if raceSeen.Load() && code == 0 {
		fmt.Fprintln(os.Stderr, "sytest: a server reported a data race")
		code = 1
	}
	return code
}

// Dialects are the databases every black-box test runs on.
var Dialects = []string{"sqlite", "postgres"}

// PostgresURL is the PostgreSQL server tests create databases on.
func PostgresURL() string {
	if u := os.Getenv("PARLEY_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

var (
	pgOnce sync.Once
	pgErr  error
)

func requirePostgres(t testing.TB) {
	t.Helper()
	pgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, PostgresURL())
		if err == nil {
			err = c.Ping(ctx)
			_ = c.Close(ctx)
		}
		pgErr = err
		if err != nil && os.Getenv("CI") != "true" {
			fmt.Fprintf(os.Stderr, "\n*** PostgreSQL unreachable at %s (%v): SKIPPING PostgreSQL black-box tests ***\n\n", PostgresURL(), err)
		}
	})
	if pgErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required in CI: %v", pgErr)
		}
		t.Skipf("PostgreSQL unreachable: %v", pgErr)
	}
}

// ForEachDialect runs fn as a parallel subtest per database.
func ForEachDialect(t *testing.T, fn func(t *testing.T, dialect string)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(d, func(t *testing.T) {
			if d == "postgres" {
				requirePostgres(t)
			}
			fn(t, d)
		})
	}
}

// Options shape a server.
type Options struct {
	Dialect string
	// Env adds or overrides PARLEY_ variables.
	Env map[string]string
	// Database reuses an existing database URL (two instances on one
	// PostgreSQL, or a restart); empty creates a fresh one.
	Database string
	// DataDir reuses a data folder; empty makes a fresh one.
	DataDir string
}

// SharedSecret is the registration shared secret of test servers.
const SharedSecret = "sytest-shared-secret"

// Server is a running parley process.
type Server struct {
	URL      string
	Name     string // server_name
	Dialect  string
	Database string
	DataDir  string
	Env      map[string]string

	t        testing.TB
	cmd      *exec.Cmd
	logPath  string
	dropDB   func()
	ownsData bool
	exited   chan struct{}
	stopOnce sync.Once
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// createDatabase makes a fresh PostgreSQL database and returns its URL and
// a function that drops it.
func createDatabase(t testing.TB) (string, func()) {
	requirePostgres(t)
	ctx := context.Background()
	name := "parley_sytest_" + randHex(6)
	c, err := pgx.Connect(ctx, PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	u := PostgresURL()
	base, query, _ := strings.Cut(u, "?")
	base = base[:strings.LastIndex(base, "/")+1] + name
	if query != "" {
		base += "?" + query
	}
	return base, func() {
		c, err := pgx.Connect(ctx, PostgresURL())
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	}
}

// defaultEnv is what test servers run with: fast password hashing, no rate
// limits, open registration and a shared secret.
func defaultEnv() map[string]string {
	return map[string]string{
		"PARLEY_SERVER_NAME":                  "localhost",
		"PARLEY_RATE_LIMITS":                  "off",
		"PARLEY_REGISTRATION":                 "open",
		"PARLEY_REGISTRATION_SHARED_SECRET":   SharedSecret,
		"PARLEY_PASSWORD_HASHING_MEMORY_KIB":  "64",
		"PARLEY_PASSWORD_HASHING_ITERATIONS":  "1",
		"PARLEY_PASSWORD_HASHING_PARALLELISM": "1",
		"PARLEY_SQLITE_SYNCHRONOUS":           "NORMAL",
		"PARLEY_LOG_LEVEL":                    "debug",
	}
}

// StartServer starts a parley process for t; it is stopped (and its
// database dropped) when t ends.
func StartServer(t testing.TB, o Options) *Server {
	t.Helper()
	s := newServer(t, o)
	t.Cleanup(s.stop)
	return s
}

// StartPair starts two instances on one new PostgreSQL database.
func StartPair(t testing.TB) (a, b *Server) {
	t.Helper()
	a = StartServer(t, Options{Dialect: "postgres"})
	return a, StartServer(t, Options{Dialect: "postgres", Database: a.Database, DataDir: a.DataDir})
}

func newServer(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Dialect == "" {
		o.Dialect = "sqlite"
	}
	s := &Server{t: t, Dialect: o.Dialect, Env: defaultEnv(), DataDir: o.DataDir, Database: o.Database}
	for k, v := range o.Env {
		s.Env[k] = v
	}
	if s.DataDir == "" {
		dir, err := os.MkdirTemp("", "parley-data-")
		if err != nil {
			t.Fatal(err)
		}
		s.DataDir, s.ownsData = dir, true
	}
	if s.Database == "" {
		if o.Dialect == "postgres" {
			s.Database, s.dropDB = createDatabase(t)
		} else {
			s.Database = "sqlite://" + filepath.Join(s.DataDir, "parley.db")
		}
	}
	s.Name = s.Env["PARLEY_SERVER_NAME"]
	s.launch(t)
	return s
}

func (s *Server) launch(t testing.TB) {
	t.Helper()
	// A free port found here can be taken by someone else before the
	// server binds it: try again with another.
	for attempt := 0; ; attempt++ {
		if s.launchOnce(t, attempt < 3) {
			return
		}
	}
}

// launchOnce starts the process; with retry set it reports a lost port
// race (false) instead of failing.
func (s *Server) launchOnce(t testing.TB, retry bool) bool {
	t.Helper()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s.URL = "http://" + addr
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range s.Env {
		env = append(env, k+"="+v)
	}
	env = append(env, "PARLEY_DATA_DIR="+s.DataDir, "PARLEY_DATABASE="+s.Database, "PARLEY_LISTEN="+addr)
	s.logPath = filepath.Join(s.DataDir, fmt.Sprintf("server-%d.log", time.Now().UnixNano()))
	logFile, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(binary, "serve")
	s.cmd.Env = env
	s.cmd.Dir = s.DataDir
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-s.exited:
			if retry && strings.Contains(s.LogTail(4000), "address already in use") {
				return false
			}
			t.Fatalf("parley exited during start:\n%s", s.LogTail(4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("parley did not become ready:\n%s", s.LogTail(4000))
		}
		time.Sleep(15 * time.Millisecond)
	}
}

// LogTail returns the end of the server's log.
func (s *Server) LogTail(n int) string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Log returns the server's whole log.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// Kill stops the process with SIGKILL, as a crash would.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// Terminate stops the process with SIGTERM and waits for a clean exit.
func (s *Server) Terminate(t testing.TB) {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("parley did not stop after SIGTERM:\n%s", s.LogTail(4000))
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("parley exited with %d after SIGTERM:\n%s", code, s.LogTail(4000))
	}
}

// Restart stops the process (SIGTERM) and starts it again on the same data.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Terminate(t)
	s.launch(t)
}

// Start launches a stopped server again on the same data.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.launch(t)
}

func (s *Server) stop() {
	s.stopOnce.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			select {
			case <-s.exited:
			default:
				_ = s.cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-s.exited:
				case <-time.After(30 * time.Second):
					_ = s.cmd.Process.Kill()
					<-s.exited
				}
			}
		}
		if log := s.Log(); strings.Contains(log, "WARNING: DATA RACE") {
			fmt.Fprintf(os.Stderr, "--- DATA RACE in %s (%s) ---\n%s\n", s.URL, s.Dialect, log)
			raceSeen.Store(true)
			if tt, ok := s.t.(*testing.T); ok {
				tt.Errorf("the server reported a data race")
			}
		}
		if tt, ok := s.t.(*testing.T); ok && tt.Failed() {
			fmt.Fprintf(os.Stderr, "--- log of %s (%s) ---\n%s\n", s.URL, s.Dialect, s.LogTail(20000))
		}
		if s.dropDB != nil {
			s.dropDB()
		}
		if s.ownsData {
			_ = os.RemoveAll(s.DataDir)
		}
	})
}

var (
	sharedMu sync.Mutex
	shared   = map[string]*Server{}
)

// Shared returns a long-lived server for dialect, started on first use.
// Tests on it must not depend on global state (they register their own
// users); tests that restart servers or change configuration start their
// own.
func Shared(t *testing.T, dialect string) *Server {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if s, ok := shared[dialect]; ok {
		return s
	}
	if dialect == "postgres" {
		requirePostgres(t)
	}
	s := newServer(sharedTB{t}, Options{Dialect: dialect})
	shared[dialect] = s
	return s
}

// sharedTB lets a shared server outlive the test that started it.
type sharedTB struct{ *testing.T }

func (sharedTB) Cleanup(func()) {}

// Response is a decoded HTTP answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

// Errcode returns the body's errcode.
func (r *Response) Errcode() string {
	s, _ := r.JSON["errcode"].(string)
	return s
}

// Str returns a top-level string field.
func (r *Response) Str(key string) string {
	s, _ := r.JSON[key].(string)
	return s
}

func (r *Response) String() string {
	return fmt.Sprintf("%d %s", r.Status, r.Body)
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

// Do sends a request with an optional access token and body (a []byte or
// string is sent as is, anything else as JSON).
func (s *Server) Do(t testing.TB, method, path, token string, body any) *Response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	_ = json.Unmarshal(b, &r.JSON)
	return r
}

// Must fails t unless the response has the wanted status.
func Must(t testing.TB, r *Response, status int) *Response {
	t.Helper()
	if r.Status != status {
		_, file, line, _ := runtime.Caller(1)
		t.Fatalf("%s:%d: got %s, want status %d", filepath.Base(file), line, r, status)
	}
	return r
}

// MustErr fails t unless the response is a Matrix error with that status
// and errcode.
func MustErr(t testing.TB, r *Response, status int, errcode string) *Response {
	t.Helper()
	if r.Status != status || r.Errcode() != errcode {
		_, file, line, _ := runtime.Caller(1)
		t.Fatalf("%s:%d: got %s, want %d %s", filepath.Base(file), line, r, status, errcode)
	}
	if _, ok := r.JSON["error"].(string); !ok {
		t.Fatalf("error response without an error message: %s", r)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error response has Content-Type %q", ct)
	}
	return r
}
