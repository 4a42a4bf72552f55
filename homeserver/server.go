// Package homeserver assembles Parley: it reads the configuration, opens
// storage, builds the engines and the HTTP API, and runs them until told
// to stop.
//
//	config ──► storage (SQL + River) ──► engines (accounts, rooms, sync, …)
//	                                         ▲
//	HTTP (clientapi, federation, media) ─────┘
//
// Shutdown runs in the reverse order: HTTP drains, background workers
// stop, the job queue stops, the database closes.
package homeserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"sync"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"

	"github.com/parley-chat/parley/clientapi"
	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/config"
	"github.com/parley-chat/parley/homeserver/notifier"
	"github.com/parley-chat/parley/homeserver/presence"
	"github.com/parley-chat/parley/homeserver/push"
	"github.com/parley-chat/parley/homeserver/ratelimit"
	"github.com/parley-chat/parley/homeserver/receipts"
	"github.com/parley-chat/parley/homeserver/rooms"
	syncengine "github.com/parley-chat/parley/homeserver/sync"
	"github.com/parley-chat/parley/homeserver/typing"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/storage"
)

// SpecVersions are the client-server API versions /versions advertises.
var SpecVersions = []string{
	"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
	"v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
}

// Server is one Parley instance.
type Server struct {
	cfg  *config.Config
	log  *slog.Logger
	db   *storage.DB
	jobs *storage.Jobs
	bus  *storage.Bus
	rdb  *redis.Client
	key  SigningKey
	reg  *prometheus.Registry

	accounts *accounts.Engine
	rooms    *rooms.Engine
	notifier *notifier.Notifier
	receipts *receipts.Engine
	typing   *typing.Engine
	presence *presence.Engine
	push     *push.Engine
	syncer   *syncengine.Engine
	limiter  *ratelimit.Limiter
	client   *clientapi.API

	// What the wire* functions contribute, each in its own file.
	workers  *river.Workers
	queues   map[string]river.QueueConfig
	periodic []*river.PeriodicJob
	routes   []func(r *mux.Router)
	services []service
	unstable map[string]bool
	deps     clientapi.Deps

	handler  http.Handler
	httpSrv  *http.Server
	pprofSrv *http.Server
	listener net.Listener
	ready    bool
	started  []service
	stopOnce sync.Once
	mu       sync.Mutex
}

// service is a background part of the server: Start returns at once,
// Stop blocks until it has stopped and is idempotent.
type service interface {
	Start(ctx context.Context) error
	Stop()
}

// New builds a server: it opens and migrates the database, loads the
// signing key and wires the engines. Nothing listens until Start.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (s *Server, err error) {
	s = &Server{
		cfg: cfg, log: log, reg: prometheus.NewRegistry(),
		workers:  river.NewWorkers(),
		queues:   map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 10}},
		unstable: map[string]bool{},
	}
	defer func() {
		if err != nil {
			s.closeStorage()
		}
	}()
	key, created, err := LoadOrCreateSigningKey(cfg.SigningKeyPath)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created signing key", "path", cfg.SigningKeyPath, "key_id", key.ID)
	}
	s.key = key
	s.db, err = storage.Open(ctx, cfg.Database, storage.Options{MaxConns: cfg.DatabaseMaxConns, SQLiteSynchronous: cfg.SQLiteSynchronous, Logger: s.log})
	if err != nil {
		return nil, err
	}
	applied, err := s.db.Migrate(ctx)
	if err != nil {
		return nil, err
	}
	if len(applied) > 0 {
		log.Info("applied database migrations", "count", len(applied), "dialect", s.db.Dialect())
	}
	if cfg.Redis != "" {
		opts, err := redis.ParseURL(cfg.Redis)
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		s.rdb = redis.NewClient(opts)
		if err := s.rdb.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
	}
	s.jobs = s.db.Jobs()
	s.bus = s.db.NewBus(log.With("component", "bus"))
	s.limiter = ratelimit.New(bool(cfg.RateLimits), s.rdb, log.With("component", "ratelimit"))
	// Each area wires itself in its own file; order matters only where an
	// engine uses another's.
	for _, wire := range []func() error{
		s.wireAccounts,
		s.wireRooms,
		s.wireNotifier,
		s.wireEphemeral,
		s.wirePush,
		s.wireE2EE,
		s.wireSync,
		s.wireSlidingSync,
		s.wireMedia,
		s.wireFederation,
	} {
		if err := wire(); err != nil {
			return nil, err
		}
	}
	s.client = clientapi.New(clientapi.Config{
		ServerName:         cfg.ServerName,
		PublicBaseURL:      cfg.PublicBaseURL,
		WellKnownServer:    cfg.WellKnownServer,
		Versions:           SpecVersions,
		UnstableFeatures:   s.unstable,
		RoomVersions:       roomVersions(),
		DefaultRoomVersion: string(rooms.DefaultVersion),
		SocketsPerDevice:   cfg.WebSocketSocketsPerDevice,
	}, s.deps)
	s.routes = append(s.routes, s.client.Routes)
	if err := s.jobs.Build(storage.JobsConfig{
		Workers:  s.workers,
		Queues:   s.queues,
		Periodic: s.periodic,
		Logger:   log.With("component", "river"),
	}); err != nil {
		return nil, err
	}
	s.handler = s.buildHTTP()
	s.registerMetrics()
	return s, nil
}

// NewAccountsEngine builds the accounts engine alone (admin commands).
func NewAccountsEngine(cfg *config.Config, db *storage.DB, log *slog.Logger) (*accounts.Engine, error) {
	return accounts.New(accounts.Config{
		ServerName:          cfg.ServerName,
		AccessTokenLifetime: cfg.AccessTokenLifetime.Std(),
		MinPasswordLength:   cfg.MinPasswordLength,
		Argon2: argon2id.Params{Memory: cfg.PasswordHashing.MemoryKiB, Iterations: cfg.PasswordHashing.Iterations,
			Parallelism: cfg.PasswordHashing.Parallelism, SaltLength: 16, KeyLength: 32},
		AllowGuests:  cfg.AllowGuests,
		Registration: cfg.Registration,
		SharedSecret: cfg.RegistrationSharedSecret,
	}, db, log.With("engine", "accounts"))
}

// periodicJob schedules args every interval (and once at start).
func (s *Server) periodicJob(every time.Duration, args func() river.JobArgs) {
	s.periodic = append(s.periodic, river.NewPeriodicJob(river.PeriodicInterval(every),
		func() (river.JobArgs, *river.InsertOpts) { return args(), nil },
		&river.PeriodicJobOpts{RunOnStart: true}))
}

func (s *Server) buildHTTP() http.Handler {
	// Paths arrive encoded (httpapi.Stack sets Path so): variables decode
	// in httpapi.Var.
	r := mux.NewRouter()
	r.NotFoundHandler = httpapi.NotFound()
	r.MethodNotAllowedHandler = httpapi.MethodNotAllowed()
	r.Handle("/health", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("OK"))
	})).Methods(http.MethodGet)
	r.Handle("/ready", http.HandlerFunc(s.readyHandler)).Methods(http.MethodGet)
	if s.cfg.Metrics {
		r.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	}
	for _, add := range s.routes {
		add(r)
	}
	var proxies []netip.Prefix
	for _, p := range s.cfg.TrustedProxies {
		if pfx, err := netip.ParsePrefix(p); err == nil {
			proxies = append(proxies, pfx)
		} else if a, err := netip.ParseAddr(p); err == nil {
			proxies = append(proxies, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	stack := &httpapi.Stack{
		Logger:    s.log,
		Metrics:   httpapi.NewMetrics(s.reg),
		MaxBody:   s.cfg.MaxRequestBytes,
		Unlimited: []string{"/_matrix/media/", "/_matrix/client/v1/media/"},
		Proxies:   proxies,
	}
	return stack.Handler(r)
}

func (s *Server) registerMetrics() {
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func() float64) {
		s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	gauge("parley_db_connections_open", "Open database connections.", func() float64 { return float64(s.db.Stats().OpenConns) })
	gauge("parley_db_connections_in_use", "Database connections in use.", func() float64 { return float64(s.db.Stats().InUse) })
	gauge("parley_db_connections_idle", "Idle database connections.", func() float64 { return float64(s.db.Stats().Idle) })
	gauge("parley_job_queue_depth", "Jobs waiting to run.", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := s.db.QueueDepth(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	})
}

func (s *Server) readyHandler(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if !ready || s.db.Ping(ctx) != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready"))
		return
	}
	_, _ = w.Write([]byte("ready"))
}

// Handler is the server's whole HTTP handler (for tests and benchmarks).
func (s *Server) Handler() http.Handler { return s.handler }

// Accounts exposes the accounts engine to admin commands.
func (s *Server) Accounts() *accounts.Engine { return s.accounts }

// Addr is the address the server listens on, once started.
func (s *Server) Addr() string {
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

// Start begins serving and working jobs; it returns once listening.
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	s.listener = ln
	if err := s.bus.Start(ctx); err != nil {
		_ = ln.Close()
		return err
	}
	for _, svc := range s.services {
		if err := svc.Start(context.WithoutCancel(ctx)); err != nil {
			_ = ln.Close()
			s.stopServices()
			return err
		}
		s.started = append(s.started, svc)
	}
	if err := s.jobs.Start(context.WithoutCancel(ctx)); err != nil {
		_ = ln.Close()
		s.stopServices()
		return err
	}
	s.httpSrv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 20 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server stopped", "err", err)
		}
	}()
	if s.cfg.PprofListen != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		s.pprofSrv = &http.Server{Addr: s.cfg.PprofListen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := s.pprofSrv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("pprof server stopped", "err", err)
			}
		}()
	}
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	return nil
}

// Stop shuts down in order: HTTP requests drain, the job queue finishes
// running jobs, then the database closes. It is idempotent.
func (s *Server) Stop(ctx context.Context) error {
	var errs []error
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.ready = false
		s.mu.Unlock()
		if s.httpSrv != nil {
			if err := s.httpSrv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("http: %w", err))
			}
		}
		if s.pprofSrv != nil {
			_ = s.pprofSrv.Close()
		}
		if s.client != nil {
			// Shutdown leaves hijacked connections alone.
			s.client.CloseSockets(ctx)
		}
		s.stopServices()
		if s.jobs != nil {
			if err := s.jobs.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("jobs: %w", err))
			}
		}
		s.closeStorage()
	})
	return errors.Join(errs...)
}

// stopServices stops background services in reverse order of start.
func (s *Server) stopServices() {
	for i := len(s.started) - 1; i >= 0; i-- {
		s.started[i].Stop()
	}
	s.started = nil
	if s.bus != nil {
		s.bus.Stop()
	}
}

func (s *Server) closeStorage() {
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
	if s.db != nil {
		_ = s.db.Close()
	}
}

// roomVersions is the m.room_versions capability: every supported version
// is stable.
func roomVersions() map[string]string {
	out := map[string]string{}
	for _, v := range rooms.SupportedVersions {
		out[string(v)] = "stable"
	}
	return out
}
