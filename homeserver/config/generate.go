package config

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
)

// generated is the commented file that generate-config and a first start
// write. Every key of Config appears in it (a test checks), set to the
// value the server will use.
var generated = template.Must(template.New("parley.yaml").Funcs(template.FuncMap{
	"q":    func(s string) string { return fmt.Sprintf("%q", s) },
	"list": func(s []string) string { return "[" + strings.Join(quoteAll(s), ", ") + "]" },
	"sw": func(s Switch) string {
		if s {
			return "on"
		}
		return "off"
	},
}).Parse(`# Parley configuration.
# Every key can also be set from the environment: the variable is named after
# the key in capitals with a PARLEY_ prefix (server_name → PARLEY_SERVER_NAME,
# password_hashing.memory_kib → PARLEY_PASSWORD_HASHING_MEMORY_KIB).
# The environment wins over this file.

# The domain in your users' IDs (@alice:example.org). It cannot change once
# users exist.
server_name: {{q .ServerName}}

# Where the signing key, the SQLite database and local media live.
data_dir: {{q .DataDir}}

# Address of the client-server API (and federation).
listen: {{q .Listen}}

# The URL clients use to reach this server (served in /.well-known/matrix/client).
public_base_url: {{q .PublicBaseURL}}

# host:port other servers federate with, served in /.well-known/matrix/server
# when the server name is not where Parley listens. Empty serves nothing.
well_known_server: {{q .WellKnownServer}}

# sqlite:///path/to/parley.db (embedded default) or postgres://user@host/db.
# PostgreSQL sessions use generic plans (plan_cache_mode=force_generic_plan)
# unless the URL sets plan_cache_mode itself (?plan_cache_mode=auto).
database: {{q .Database}}
# Connections in the PostgreSQL pool, or SQLite readers.
database_max_conns: {{.DatabaseMaxConns}}
# SQLite durability: FULL survives power loss, NORMAL only a process crash.
sqlite_synchronous: {{q .SQLiteSynchronous}}

# Optional redis:// URL: shares rate limits and ephemeral data (typing,
# presence) between several Parley instances on one database.
redis: {{q .Redis}}

# Media storage, a gocloud blob URL: file://, s3://, gs://, azblob://, mem://.
media_store: {{q .MediaStore}}

# The server's ed25519 signing key; created when missing. Keep it safe.
signing_key_path: {{q .SigningKeyPath}}

# debug, info, warn or error; text or json.
log_level: {{q .LogLevel}}
log_format: {{q .LogFormat}}

# Who may create accounts: closed (only admins, with create-user or the
# shared secret), open, or token (a registration token is needed).
registration: {{q .Registration}}
# Enables Synapse-compatible /_synapse/admin/v1/register with HMAC-SHA1.
registration_shared_secret: {{q .RegistrationSharedSecret}}
# Allow guest accounts (kind=guest).
allow_guests: {{.AllowGuests}}

# Rate limits on login, registration and sending: on, or off for test
# harnesses and load tests.
rate_limits: {{sw .RateLimits}}

# Lifetime of an access token issued together with a refresh token. Tokens
# issued without one do not expire.
access_token_lifetime: {{.AccessTokenLifetime.Std}}

# Largest JSON request body accepted, in bytes.
max_request_bytes: {{.MaxRequestBytes}}

# Shortest password accepted.
min_password_length: {{.MinPasswordLength}}

# argon2id cost for password hashes. Raising it makes logins slower and
# guessing harder; existing hashes keep their own parameters.
password_hashing:
  memory_kib: {{.PasswordHashing.MemoryKiB}}
  iterations: {{.PasswordHashing.Iterations}}
  parallelism: {{.PasswordHashing.Parallelism}}

# Reverse proxies whose X-Forwarded-For is believed (IPs or CIDR ranges).
trusted_proxies: {{list .TrustedProxies}}

# Serve Prometheus metrics at /metrics.
metrics: {{sw .Metrics}}

# Presence (online / unavailable / offline and last seen).
presence: {{sw .Presence}}

# The most WebSocket connections one device may hold on this instance; a
# device opening more loses its oldest (close code 4009).
websocket_sockets_per_device: {{.WebSocketSocketsPerDevice}}

# Serve Go's /debug/pprof profiles on this address (empty: off). Keep it on
# loopback: profiles reveal the server's internals.
pprof_listen: {{q .PprofListen}}

# The media repository (its bytes go to media_store above).
media:
  # Largest upload in bytes, told to clients as m.upload.size.
  max_upload_bytes: {{.Media.MaxUploadBytes}}
  # Bytes one user may have uploaded in all; 0 is no quota.
  user_quota_bytes: {{.Media.UserQuotaBytes}}
  # Where users who reach their quota can read about it (then refused with
  # M_USER_LIMIT_EXCEEDED pointing there; M_FORBIDDEN when empty).
  quota_info_uri: {{q .Media.QuotaInfoURI}}
  # Created-but-not-uploaded media IDs (asynchronous uploads) per user, and
  # how long each waits for its upload.
  max_pending_uploads: {{.Media.MaxPendingUploads}}
  unused_expiry: {{.Media.UnusedExpiry.Std}}
  # Longest a download waits for media still being uploaded.
  max_download_wait: {{.Media.MaxDownloadWait.Std}}
  # Media uploaded (or remote media first cached) before this RFC 3339 time
  # stays downloadable from the deprecated unauthenticated
  # /_matrix/media/v3/download and /thumbnail endpoints; newer media only
  # from the authenticated /_matrix/client/v1/media ones. Empty freezes all.
  unauthenticated_before: {{q .Media.UnauthenticatedBefore}}
  # Larger images are not thumbnailed (decompression bombs, memory).
  max_thumbnail_pixels: {{.Media.MaxThumbnailPixels}}
  # Largest media fetched from another server.
  max_remote_bytes: {{.Media.MaxRemoteBytes}}
  # Delete cached remote media, and local uploads, not read for this long;
  # 0 keeps them.
  remote_retention: {{.Media.RemoteRetention.Std}}
  local_retention: {{.Media.LocalRetention.Std}}
  # URL previews (/_matrix/client/v1/media/preview_url). Private, loopback,
  # link-local, multicast and reserved addresses are never fetched, after
  # name resolution and on every redirect; denied_ranges adds to them and
  # allowed_ranges makes exceptions (keep it narrow).
  url_preview:
    enabled: {{sw .Media.URLPreview.Enabled}}
    max_bytes: {{.Media.URLPreview.MaxBytes}}
    timeout: {{.Media.URLPreview.Timeout.Std}}
    cache_ttl: {{.Media.URLPreview.CacheTTL.Std}}
    denied_ranges: {{list .Media.URLPreview.DeniedRanges}}
    allowed_ranges: {{list .Media.URLPreview.AllowedRanges}}
`))

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}

// Generate renders c as a commented YAML file.
func Generate(c *Config) ([]byte, error) {
	var b bytes.Buffer
	if err := generated.Execute(&b, c); err != nil {
		return nil, fmt.Errorf("config: render: %w", err)
	}
	return b.Bytes(), nil
}

// Keys lists every configuration key with its environment variable.
func Keys() [][2]string {
	var out [][2]string
	c := Default("")
	walkFieldsOf(c, func(key, env string) { out = append(out, [2]string{key, env}) })
	return out
}
