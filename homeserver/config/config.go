// Package config holds Parley's configuration: one YAML file whose every
// key can also be set from the environment (PARLEY_…), validated once at
// start with every problem reported by key name.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration. Field comments are the user
// documentation; the env tag names the variable that overrides each key.
type Config struct {
	// ServerName is the domain in user IDs (@alice:example.org). It cannot
	// change once users exist.
	ServerName string `yaml:"server_name" env:"PARLEY_SERVER_NAME"`
	// DataDir holds the signing key, the SQLite database and local media.
	DataDir string `yaml:"data_dir" env:"PARLEY_DATA_DIR"`
	// Listen is the address of the client-server API (and, unless
	// FederationListen is set, of federation).
	Listen string `yaml:"listen" env:"PARLEY_LISTEN"`
	// PublicBaseURL is where clients reach this server, advertised in
	// /.well-known/matrix/client.
	PublicBaseURL string `yaml:"public_base_url" env:"PARLEY_PUBLIC_BASE_URL"`
	// WellKnownServer is the host:port other servers should federate with,
	// served in /.well-known/matrix/server; empty serves nothing there.
	WellKnownServer string `yaml:"well_known_server" env:"PARLEY_WELL_KNOWN_SERVER"`
	// Database is sqlite://path (the embedded default) or postgres://….
	Database string `yaml:"database" env:"PARLEY_DATABASE"`
	// DatabaseMaxConns bounds the PostgreSQL pool or the SQLite read pool.
	DatabaseMaxConns int `yaml:"database_max_conns" env:"PARLEY_DATABASE_MAX_CONNS"`
	// SQLiteSynchronous is FULL (survives power loss) or NORMAL (survives
	// a process crash, faster).
	SQLiteSynchronous string `yaml:"sqlite_synchronous" env:"PARLEY_SQLITE_SYNCHRONOUS"`
	// Redis is an optional redis:// URL that shares rate limits and
	// ephemeral data between instances.
	Redis string `yaml:"redis" env:"PARLEY_REDIS"`
	// MediaStore is a gocloud blob URL: file://, s3://, gs://, azblob://, mem://.
	MediaStore string `yaml:"media_store" env:"PARLEY_MEDIA_STORE"`
	// SigningKeyPath is the server's ed25519 signing key, created if missing.
	SigningKeyPath string `yaml:"signing_key_path" env:"PARLEY_SIGNING_KEY_PATH"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level" env:"PARLEY_LOG_LEVEL"`
	// LogFormat is text or json.
	LogFormat string `yaml:"log_format" env:"PARLEY_LOG_FORMAT"`
	// Registration is closed (admins create users), open, or token
	// (a registration token is required).
	Registration string `yaml:"registration" env:"PARLEY_REGISTRATION"`
	// RegistrationSharedSecret enables /_synapse/admin/v1/register.
	RegistrationSharedSecret string `yaml:"registration_shared_secret" env:"PARLEY_REGISTRATION_SHARED_SECRET" secret:"true"`
	// AllowGuests lets clients register guest accounts.
	AllowGuests bool `yaml:"allow_guests" env:"PARLEY_ALLOW_GUESTS"`
	// RateLimits is on (default) or off, for test harnesses and load tests.
	RateLimits Switch `yaml:"rate_limits" env:"PARLEY_RATE_LIMITS"`
	// AccessTokenLifetime is how long an access token issued with a refresh
	// token lives; tokens without a refresh token never expire.
	AccessTokenLifetime Duration `yaml:"access_token_lifetime" env:"PARLEY_ACCESS_TOKEN_LIFETIME"`
	// MaxRequestBytes bounds every JSON request body.
	MaxRequestBytes int64 `yaml:"max_request_bytes" env:"PARLEY_MAX_REQUEST_BYTES"`
	// MinPasswordLength is the shortest password accepted.
	MinPasswordLength int `yaml:"min_password_length" env:"PARLEY_MIN_PASSWORD_LENGTH"`
	// PasswordHashing sets argon2id's cost.
	PasswordHashing PasswordHashing `yaml:"password_hashing"`
	// TrustedProxies are the addresses (or CIDR ranges) whose
	// X-Forwarded-For header is believed for rate limiting and logs.
	TrustedProxies []string `yaml:"trusted_proxies" env:"PARLEY_TRUSTED_PROXIES"`
	// Metrics serves Prometheus metrics at /metrics when on.
	Metrics Switch `yaml:"metrics" env:"PARLEY_METRICS"`
	// Presence is on (default) or off.
	Presence Switch `yaml:"presence" env:"PARLEY_PRESENCE"`
	// WebSocketSocketsPerDevice bounds one device's sockets on an
	// instance; a device opening more loses its oldest.
	WebSocketSocketsPerDevice int `yaml:"websocket_sockets_per_device" env:"PARLEY_WEBSOCKET_SOCKETS_PER_DEVICE"`
	// PprofListen serves Go's /debug/pprof profiles on this address when
	// set (keep it on loopback: profiles reveal internals).
	PprofListen string `yaml:"pprof_listen" env:"PARLEY_PPROF_LISTEN"`
	// Media configures the media repository (media_store is where its
	// bytes go).
	Media MediaConfig `yaml:"media"`
}

// MediaConfig configures the media repository.
type MediaConfig struct {
	// MaxUploadBytes bounds one upload; clients are told it as m.upload.size.
	MaxUploadBytes int64 `yaml:"max_upload_bytes" env:"PARLEY_MEDIA_MAX_UPLOAD_BYTES"`
	// UserQuotaBytes bounds the bytes one user may have uploaded in all;
	// 0 is no quota.
	UserQuotaBytes int64 `yaml:"user_quota_bytes" env:"PARLEY_MEDIA_USER_QUOTA_BYTES"`
	// QuotaInfoURI, when set, is where users who hit their quota can read
	// about it (the refusal is then M_USER_LIMIT_EXCEEDED pointing there,
	// otherwise M_FORBIDDEN).
	QuotaInfoURI string `yaml:"quota_info_uri" env:"PARLEY_MEDIA_QUOTA_INFO_URI"`
	// MaxPendingUploads bounds a user's created-but-not-uploaded media IDs
	// (asynchronous uploads).
	MaxPendingUploads int `yaml:"max_pending_uploads" env:"PARLEY_MEDIA_MAX_PENDING_UPLOADS"`
	// UnusedExpiry is how long a created media ID waits for its upload.
	UnusedExpiry Duration `yaml:"unused_expiry" env:"PARLEY_MEDIA_UNUSED_EXPIRY"`
	// MaxDownloadWait caps how long a download waits for media still being
	// uploaded (the client's timeout_ms).
	MaxDownloadWait Duration `yaml:"max_download_wait" env:"PARLEY_MEDIA_MAX_DOWNLOAD_WAIT"`
	// UnauthenticatedBefore is an RFC 3339 time: media uploaded (or remote
	// media first cached) before it can still be fetched from the
	// deprecated unauthenticated /_matrix/media/v3/download and /thumbnail
	// endpoints; newer media only from the authenticated ones. Empty
	// freezes all media.
	UnauthenticatedBefore string `yaml:"unauthenticated_before" env:"PARLEY_MEDIA_UNAUTHENTICATED_BEFORE"`
	// MaxThumbnailPixels refuses to thumbnail larger images (decompression
	// bombs); it bounds the memory one thumbnail takes.
	MaxThumbnailPixels int64 `yaml:"max_thumbnail_pixels" env:"PARLEY_MEDIA_MAX_THUMBNAIL_PIXELS"`
	// MaxRemoteBytes bounds media fetched from other servers.
	MaxRemoteBytes int64 `yaml:"max_remote_bytes" env:"PARLEY_MEDIA_MAX_REMOTE_BYTES"`
	// RemoteRetention deletes cached remote media not read for this long;
	// 0 keeps it.
	RemoteRetention Duration `yaml:"remote_retention" env:"PARLEY_MEDIA_REMOTE_RETENTION"`
	// LocalRetention deletes local uploads not read for this long; 0 (the
	// default) keeps them.
	LocalRetention Duration `yaml:"local_retention" env:"PARLEY_MEDIA_LOCAL_RETENTION"`
	// URLPreview configures URL previews.
	URLPreview URLPreviewConfig `yaml:"url_preview"`
}

// URLPreviewConfig configures URL previews.
type URLPreviewConfig struct {
	// Enabled serves /_matrix/client/v1/media/preview_url.
	Enabled Switch `yaml:"enabled" env:"PARLEY_MEDIA_URL_PREVIEW_ENABLED"`
	// MaxBytes bounds a fetched page or image.
	MaxBytes int64 `yaml:"max_bytes" env:"PARLEY_MEDIA_URL_PREVIEW_MAX_BYTES"`
	// Timeout bounds one preview, redirects and its image included.
	Timeout Duration `yaml:"timeout" env:"PARLEY_MEDIA_URL_PREVIEW_TIMEOUT"`
	// CacheTTL is how long a preview is reused.
	CacheTTL Duration `yaml:"cache_ttl" env:"PARLEY_MEDIA_URL_PREVIEW_CACHE_TTL"`
	// DeniedRanges (IPs or CIDR ranges) are refused in addition to the
	// built-in private, loopback, link-local, multicast and reserved ones.
	DeniedRanges []string `yaml:"denied_ranges" env:"PARLEY_MEDIA_URL_PREVIEW_DENIED_RANGES"`
	// AllowedRanges may be fetched even inside the denied ranges (an
	// intranet wiki, test fixtures). Keep it as narrow as you can.
	AllowedRanges []string `yaml:"allowed_ranges" env:"PARLEY_MEDIA_URL_PREVIEW_ALLOWED_RANGES"`
}

// PasswordHashing is argon2id's cost.
type PasswordHashing struct {
	// MemoryKiB is the memory per hash in KiB.
	MemoryKiB uint32 `yaml:"memory_kib" env:"PARLEY_PASSWORD_HASHING_MEMORY_KIB"`
	// Iterations is the number of passes.
	Iterations uint32 `yaml:"iterations" env:"PARLEY_PASSWORD_HASHING_ITERATIONS"`
	// Parallelism is the number of lanes.
	Parallelism uint8 `yaml:"parallelism" env:"PARLEY_PASSWORD_HASHING_PARALLELISM"`
}

// Switch is a boolean written on/off (true/false and yes/no also work).
type Switch bool

// UnmarshalYAML accepts on/off/true/false/yes/no.
func (s *Switch) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseSwitch(n.Value)
	if err != nil {
		return err
	}
	*s = Switch(v)
	return nil
}

// MarshalYAML writes on or off.
func (s Switch) MarshalYAML() (any, error) {
	if s {
		return "on", nil
	}
	return "off", nil
}

func parseSwitch(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "on", "true", "yes", "1":
		return true, nil
	case "off", "false", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not on or off", v)
}

// Duration is a time.Duration written as "5m", "1h30m".
type Duration time.Duration

// UnmarshalYAML parses Go duration syntax.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes Go duration syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns the time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Default returns the configuration used when nothing is set, rooted at
// dataDir.
func Default(dataDir string) *Config {
	return &Config{
		ServerName:                "localhost",
		DataDir:                   dataDir,
		Listen:                    "127.0.0.1:8008",
		DatabaseMaxConns:          16,
		SQLiteSynchronous:         "FULL",
		LogLevel:                  "info",
		LogFormat:                 "text",
		Registration:              "closed",
		RateLimits:                true,
		AccessTokenLifetime:       Duration(5 * time.Minute),
		MaxRequestBytes:           1 << 20,
		MinPasswordLength:         8,
		PasswordHashing:           PasswordHashing{MemoryKiB: 19 * 1024, Iterations: 2, Parallelism: 1},
		Metrics:                   true,
		Presence:                  true,
		WebSocketSocketsPerDevice: 8,
		Media: MediaConfig{
			MaxUploadBytes:     100 << 20,
			MaxPendingUploads:  10,
			UnusedExpiry:       Duration(24 * time.Hour),
			MaxDownloadWait:    Duration(time.Minute),
			MaxThumbnailPixels: 32 << 20,
			MaxRemoteBytes:     100 << 20,
			RemoteRetention:    Duration(90 * 24 * time.Hour),
			URLPreview: URLPreviewConfig{
				Enabled:  true,
				MaxBytes: 10 << 20,
				Timeout:  Duration(10 * time.Second),
				CacheTTL: Duration(time.Hour),
			},
		},
	}
}

// fillDerived sets the values that default to places under the data dir.
func (c *Config) fillDerived() {
	if c.Database == "" {
		c.Database = "sqlite://" + filepath.Join(c.DataDir, "parley.db")
	}
	if c.MediaStore == "" {
		abs, err := filepath.Abs(filepath.Join(c.DataDir, "media"))
		if err != nil {
			abs = filepath.Join(c.DataDir, "media")
		}
		c.MediaStore = "file://" + abs
	}
	if c.SigningKeyPath == "" {
		c.SigningKeyPath = filepath.Join(c.DataDir, "signing.key")
	}
	if c.PublicBaseURL == "" {
		host := c.Listen
		if h, p, err := net.SplitHostPort(c.Listen); err == nil && (h == "" || h == "0.0.0.0" || h == "::") {
			host = net.JoinHostPort("localhost", p)
		}
		c.PublicBaseURL = "http://" + host + "/"
	}
	if !strings.HasSuffix(c.PublicBaseURL, "/") {
		c.PublicBaseURL += "/"
	}
}

// Load reads the YAML file at path (if it exists), then applies the
// environment, then fills derived defaults and validates. Unknown keys,
// unknown PARLEY_ variables and invalid values are errors naming the key.
func Load(path string, environ []string) (*Config, error) {
	env := envMap(environ)
	dataDir := "./data"
	if v, ok := env["PARLEY_DATA_DIR"]; ok && v != "" {
		dataDir = v
	}
	c := Default(dataDir)
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := decodeYAML(b, c); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(c, env); err != nil {
		return nil, err
	}
	c.fillDerived()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeYAML(b []byte, c *Config) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return err
	}
	return nil
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string)
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, "PARLEY_") {
			m[k] = v
		}
	}
	return m
}

// ignoredEnv are PARLEY_ variables that are not configuration keys.
var ignoredEnv = map[string]bool{"PARLEY_CONFIG": true}

// applyEnv sets every field whose env variable is present.
func applyEnv(c *Config, env map[string]string) error {
	known := map[string]bool{}
	var errs []error
	walkFields(reflect.ValueOf(c).Elem(), "", func(f reflect.Value, sf reflect.StructField, key string) {
		name := sf.Tag.Get("env")
		known[name] = true
		v, ok := env[name]
		if !ok {
			return
		}
		if err := setFromString(f, v); err != nil {
			errs = append(errs, fmt.Errorf("config: %s (%s): %w", name, key, err))
		}
	})
	for k := range env {
		if !known[k] && !ignoredEnv[k] && !strings.HasPrefix(k, "PARLEY_TEST_") {
			errs = append(errs, fmt.Errorf("config: unknown environment variable %s", k))
		}
	}
	return errors.Join(errs...)
}

// walkFields calls fn for every leaf field, with its dotted YAML key.
func walkFields(v reflect.Value, prefix string, fn func(f reflect.Value, sf reflect.StructField, key string)) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		key := strings.Split(sf.Tag.Get("yaml"), ",")[0]
		if prefix != "" {
			key = prefix + "." + key
		}
		f := v.Field(i)
		if f.Kind() == reflect.Struct && sf.Tag.Get("env") == "" {
			walkFields(f, key, fn)
			continue
		}
		fn(f, sf, key)
	}
}

func setFromString(f reflect.Value, s string) error {
	switch f.Interface().(type) {
	case Switch:
		b, err := parseSwitch(s)
		if err != nil {
			return err
		}
		f.SetBool(b)
		return nil
	case Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(d))
		return nil
	case []string:
		var out []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		f.Set(reflect.ValueOf(out))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := parseSwitch(s)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		f.SetInt(n)
	case reflect.Uint8, reflect.Uint32:
		n, err := strconv.ParseUint(s, 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("%q is not a non-negative integer that fits", s)
		}
		f.SetUint(n)
	default:
		return fmt.Errorf("cannot set %s from the environment", f.Type())
	}
	return nil
}

// Validate checks every value and reports all problems at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.ServerName == "" {
		bad("server_name", "must be set")
	} else if !validServerName(c.ServerName) {
		bad("server_name", "%q is not a valid server name (host or host:port)", c.ServerName)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port", c.Listen)
	}
	if !strings.HasPrefix(c.PublicBaseURL, "http://") && !strings.HasPrefix(c.PublicBaseURL, "https://") {
		bad("public_base_url", "%q must start with http:// or https://", c.PublicBaseURL)
	}
	if c.PprofListen != "" {
		if _, _, err := net.SplitHostPort(c.PprofListen); err != nil {
			bad("pprof_listen", "%q is not host:port", c.PprofListen)
		}
	}
	if c.WellKnownServer != "" && !validServerName(c.WellKnownServer) {
		bad("well_known_server", "%q is not host or host:port", c.WellKnownServer)
	}
	switch {
	case strings.HasPrefix(c.Database, "sqlite:"), strings.HasPrefix(c.Database, "postgres://"), strings.HasPrefix(c.Database, "postgresql://"):
	default:
		bad("database", "must start with sqlite:// or postgres://")
	}
	if c.DatabaseMaxConns < 1 || c.DatabaseMaxConns > 1000 {
		bad("database_max_conns", "%d is outside 1–1000", c.DatabaseMaxConns)
	}
	if s := strings.ToUpper(c.SQLiteSynchronous); s != "FULL" && s != "NORMAL" {
		bad("sqlite_synchronous", "%q is not FULL or NORMAL", c.SQLiteSynchronous)
	}
	if c.Redis != "" && !strings.HasPrefix(c.Redis, "redis://") && !strings.HasPrefix(c.Redis, "rediss://") && !strings.HasPrefix(c.Redis, "unix://") {
		bad("redis", "must start with redis://, rediss:// or unix://")
	}
	if scheme, _, ok := strings.Cut(c.MediaStore, "://"); !ok || !map[string]bool{"file": true, "s3": true, "gs": true, "azblob": true, "mem": true}[scheme] {
		bad("media_store", "%q is not a file://, s3://, gs://, azblob:// or mem:// URL", c.MediaStore)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format", "%q is not text or json", c.LogFormat)
	}
	switch c.Registration {
	case "closed", "open", "token":
	default:
		bad("registration", "%q is not closed, open or token", c.Registration)
	}
	if c.AccessTokenLifetime.Std() < time.Second {
		bad("access_token_lifetime", "%s is shorter than a second", c.AccessTokenLifetime.Std())
	}
	if c.MaxRequestBytes < 64<<10 {
		bad("max_request_bytes", "%d is below 65536, the size of one event", c.MaxRequestBytes)
	}
	if c.WebSocketSocketsPerDevice < 1 {
		bad("websocket_sockets_per_device", "must be at least 1")
	}
	if c.MinPasswordLength < 1 {
		bad("min_password_length", "must be at least 1")
	}
	ph := c.PasswordHashing
	if ph.MemoryKiB < 8 {
		bad("password_hashing.memory_kib", "must be at least 8")
	}
	if ph.Iterations < 1 {
		bad("password_hashing.iterations", "must be at least 1")
	}
	if ph.Parallelism < 1 {
		bad("password_hashing.parallelism", "must be at least 1")
	}
	for _, p := range c.TrustedProxies {
		if net.ParseIP(p) == nil {
			if _, _, err := net.ParseCIDR(p); err != nil {
				bad("trusted_proxies", "%q is not an IP address or CIDR range", p)
			}
		}
	}
	c.Media.validate(bad)
	return errors.Join(errs...)
}

// validate checks the media keys.
func (m *MediaConfig) validate(bad func(key, format string, args ...any)) {
	if m.MaxUploadBytes < 1 {
		bad("media.max_upload_bytes", "must be at least 1")
	}
	if m.UserQuotaBytes < 0 {
		bad("media.user_quota_bytes", "must not be negative (0 is no quota)")
	}
	if m.QuotaInfoURI != "" && !strings.HasPrefix(m.QuotaInfoURI, "https://") && !strings.HasPrefix(m.QuotaInfoURI, "http://") {
		bad("media.quota_info_uri", "%q is not an http(s) URL", m.QuotaInfoURI)
	}
	if m.MaxPendingUploads < 1 {
		bad("media.max_pending_uploads", "must be at least 1")
	}
	if m.UnusedExpiry.Std() < time.Second {
		bad("media.unused_expiry", "%s is shorter than a second", m.UnusedExpiry.Std())
	}
	if m.MaxDownloadWait.Std() < 0 || m.MaxDownloadWait.Std() > 10*time.Minute {
		bad("media.max_download_wait", "%s is outside 0–10m", m.MaxDownloadWait.Std())
	}
	if m.UnauthenticatedBefore != "" {
		if _, err := time.Parse(time.RFC3339, m.UnauthenticatedBefore); err != nil {
			bad("media.unauthenticated_before", "%q is not an RFC 3339 time (2024-09-01T00:00:00Z)", m.UnauthenticatedBefore)
		}
	}
	if m.MaxThumbnailPixels < 1 {
		bad("media.max_thumbnail_pixels", "must be at least 1")
	}
	if m.MaxRemoteBytes < 1 {
		bad("media.max_remote_bytes", "must be at least 1")
	}
	if m.RemoteRetention.Std() < 0 {
		bad("media.remote_retention", "must not be negative (0 keeps remote media)")
	}
	if m.LocalRetention.Std() < 0 {
		bad("media.local_retention", "must not be negative (0 keeps local media)")
	}
	p := m.URLPreview
	if p.MaxBytes < 1 {
		bad("media.url_preview.max_bytes", "must be at least 1")
	}
	if p.Timeout.Std() < 100*time.Millisecond {
		bad("media.url_preview.timeout", "%s is shorter than 100ms", p.Timeout.Std())
	}
	if p.CacheTTL.Std() < 0 {
		bad("media.url_preview.cache_ttl", "must not be negative")
	}
	for _, list := range []struct {
		key    string
		ranges []string
	}{{"media.url_preview.denied_ranges", p.DeniedRanges}, {"media.url_preview.allowed_ranges", p.AllowedRanges}} {
		for _, r := range list.ranges {
			if _, err := netip.ParsePrefix(r); err != nil && net.ParseIP(r) == nil {
				bad(list.key, "%q is not an IP address or CIDR range", r)
			}
		}
	}
}

func validServerName(s string) bool {
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return false
		}
		host = h
	} else if strings.HasPrefix(s, "[") {
		return false
	}
	if host == "" || len(host) > 255 {
		return false
	}
	if net.ParseIP(strings.Trim(host, "[]")) != nil {
		return true
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Redacted returns a copy with secrets replaced, safe to log.
func (c *Config) Redacted() Config {
	cp := *c
	walkFields(reflect.ValueOf(&cp).Elem(), "", func(f reflect.Value, sf reflect.StructField, _ string) {
		if sf.Tag.Get("secret") == "true" && f.Kind() == reflect.String && f.String() != "" {
			f.SetString("<redacted>")
		}
	})
	if u := cp.Database; strings.Contains(u, "@") {
		cp.Database = redactUserinfo(u)
	}
	if u := cp.Redis; strings.Contains(u, "@") {
		cp.Redis = redactUserinfo(u)
	}
	return cp
}

func redactUserinfo(u string) string {
	i := strings.Index(u, "://")
	j := strings.LastIndex(u, "@")
	if i < 0 || j < i {
		return u
	}
	return u[:i+3] + "<redacted>" + u[j:]
}

func walkFieldsOf(c *Config, fn func(key, env string)) {
	walkFields(reflect.ValueOf(c).Elem(), "", func(_ reflect.Value, sf reflect.StructField, key string) {
		fn(key, sf.Tag.Get("env"))
	})
}
